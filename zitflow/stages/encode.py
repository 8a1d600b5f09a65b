"""``encode``: the prompt through Z-Image-Turbo's text encoder (Qwen3-4B) into caption embeddings.

The stage calls the diffusers pipeline's own ``ZImagePipeline.encode_prompt`` with a pipeline
that holds only the tokenizer and text encoder: the prompt is wrapped in Qwen's chat template,
padded to ``max_sequence_length`` tokens, run through the encoder, and the second-to-last
hidden state is kept for the valid (unpadded) tokens only.

Output (:class:`~zitflow.artifacts.Tensors`):

* ``prompt_embeds`` - (L, D) in the run dtype (bf16 on CUDA, fp32 on CPU); L = valid tokens of
  the templated prompt (at most ``max_sequence_length``), D = the encoder's hidden size (2560);
* ``negative_prompt_embeds`` - (L', D), the same for ``negative_prompt`` (``""`` when empty),
  present when ``with_negative`` is true.

Where CFG lives: the *scale* is a denoise parameter (``guidance_scale``), the negative *text*
is encoded here. Encoding it by default (one more encoder pass, milliseconds) means a guidance
sweep never re-encodes; ``with_negative=false`` skips it, and denoise then refuses
``guidance_scale > 0`` with a message saying so. The negative prompt enters this stage's key
even when denoise ignores it (``guidance_scale=0``).

``runtime.compile_text_encoder`` compiles the encoder's layers (:mod:`zitflow.models.compile`);
the embeddings then agree with eager within bf16 rounding and keep the same cache key.

A run whose embeddings are cached never loads the text encoder (the executor loads nothing for
hits), which is what makes seed sweeps cheap.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from ..artifacts import Tensors
from ..params import param
from ..registry import register
from ..stage import Stage

log = logging.getLogger("zitflow")


@dataclass
class EncodeParams:
    prompt: str = param("", help="the text to draw")
    negative_prompt: str = param("", help="what to steer away from; used by denoise when guidance_scale > 0")
    with_negative: bool = param(True, help="also encode negative_prompt ('' when empty) so denoise can use "
                                           "guidance_scale > 0; false saves one text-encoder pass")
    max_sequence_length: int = param(512, ge=1, le=512,
                                     help="tokens the templated prompt is padded/truncated to (the pipeline's 512)")


def encode_prompt(tokenizer, text_encoder, prompt: str, negative_prompt: str | None, with_negative: bool,
                  max_sequence_length: int, device):
    """``ZImagePipeline.encode_prompt`` with only the text side loaded.

    Returns (prompt_embeds (L, D), negative_prompt_embeds (L', D) or None) on ``device``.
    """
    import torch
    from diffusers import ZImagePipeline

    pipe = ZImagePipeline(scheduler=None, vae=None, text_encoder=text_encoder, tokenizer=tokenizer, transformer=None)
    with torch.no_grad():
        pos, neg = pipe.encode_prompt(prompt=prompt, device=torch.device(device), do_classifier_free_guidance=with_negative,
                                      negative_prompt=negative_prompt, max_sequence_length=max_sequence_length)
    return pos[0], (neg[0] if with_negative else None)


@register
class Encode(Stage):
    kind = "encode"
    version = 1
    Params = EncodeParams
    output = Tensors
    uses_model = True

    def identity(self, params: EncodeParams, ctx):
        from ..models.pool import pool_of

        pool = pool_of(ctx)
        return pool.identity(*pool.settings(ctx))

    def run(self, params: EncodeParams, inputs, ctx) -> Tensors:
        from ..models import compile as zcompile
        from ..models.placement import run_planned
        from ..models.pool import pool_of

        pool = pool_of(ctx)
        config, runtime = pool.settings(ctx)
        if not params.prompt.strip():
            log.warning("stage '%s': the prompt is empty; the model will draw whatever it likes "
                        "(pass prompt=\"...\")", ctx.stage_name)

        def work(plan, device):
            tokenizer, text_encoder = pool.text_encoder(config, runtime)
            saving = contextlib.nullcontext()
            if runtime.compile_text_encoder and plan.name in zcompile.COMPILED_PLANS:
                fingerprint = pool.resolve(config).fingerprint
                zcompile.compile_text_encoder(text_encoder, runtime, fingerprint, device)
                saving = zcompile.saving_new_graphs(runtime, fingerprint, device)
            with saving:
                return encode_prompt(tokenizer, text_encoder, params.prompt, params.negative_prompt,
                                     params.with_negative, params.max_sequence_length, device)

        pos, neg = run_planned(ctx, pool, "text_encoder", work)
        tensors = {"prompt_embeds": pos.detach().cpu()}
        if neg is not None:
            tensors["negative_prompt_embeds"] = neg.detach().cpu()
        meta = {"prompt": params.prompt, "negative_prompt": params.negative_prompt if neg is not None else "",
                "has_negative": str(neg is not None).lower(), "dtype": str(pos.dtype).replace("torch.", ""),
                "max_sequence_length": str(params.max_sequence_length)}
        return Tensors(tensors, meta)
