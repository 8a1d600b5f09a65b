"""``model=tiny``: Z-Image-Turbo's architecture at a tiny size, with seeded random weights.

The same classes as the real model - :class:`~diffusers.ZImageTransformer2DModel`, the Flux-style
:class:`~diffusers.AutoencoderKL` (16 latent channels, 8x stride), the
:class:`~diffusers.FlowMatchEulerDiscreteScheduler` with Z-Image-Turbo's settings, a
``transformers`` ``Qwen3Model`` text encoder, and a byte-level BPE tokenizer with a Qwen-style
chat template - shrunk so that a whole 256x256 generation takes well under a second on a CPU.

:func:`ensure_tiny` builds it once into ``<user cache>/zitflow/models/tiny-<seed>`` (or
``$ZITFLOW_MODELS_DIR/tiny-<seed>``) with ``save_pretrained``, written atomically, and from then
on it is an ordinary diffusers-layout folder (``model_index.json`` plus one subfolder per
component) loaded by exactly the code that loads the real weights. Nothing is downloaded.

Sizes that must agree (checked by diffusers' own asserts):

* transformer ``dim / n_heads == sum(axes_dims)`` (RoPE over frame, height, width), every
  ``axes_dims`` entry even; ``axes_lens[0]`` above the caption length (512) plus one;
* transformer ``cap_feat_dim`` == text encoder ``hidden_size``;
* transformer ``in_channels`` == VAE ``latent_channels`` (16);
* VAE with 4 blocks, so its scale factor is 8 and sizes are multiples of 16 as for the real one.

The pictures it makes are coloured noise: it proves the pipeline works, never quality.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

#: Bump when the tiny architecture or the weight recipe changes: old folders are rebuilt.
TINY_VERSION = 1
MARKER = "zitflow_tiny.json"

TINY_TEXT_ENCODER: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}

TINY_TRANSFORMER: dict[str, Any] = {
    "all_patch_size": [2],
    "all_f_patch_size": [1],
    "in_channels": 16,
    "dim": 32,
    "n_layers": 2,
    "n_refiner_layers": 1,
    "n_heads": 1,
    "n_kv_heads": 1,
    "norm_eps": 1e-5,
    "qk_norm": True,
    "cap_feat_dim": TINY_TEXT_ENCODER["hidden_size"],
    "rope_theta": 256.0,
    "t_scale": 1000.0,
    "axes_dims": [8, 12, 12],  # sum = 32 / 1 = head_dim
    "axes_lens": [1024, 512, 512],
}

#: Z-Image-Turbo's VAE is the Flux VAE: block_out_channels (128, 256, 512, 512), 2 layers per
#: block, 16 latent channels, no quant convs. The tiny one keeps the 4 blocks (8x stride).
TINY_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [4, 8, 8, 16],
    "layers_per_block": 1,
    "latent_channels": 16,
    "norm_num_groups": 4,
    "sample_size": 256,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "mid_block_add_attention": True,
    "force_upcast": True,
}

#: Z-Image-Turbo's scheduler settings (static shift 3.0, no dynamic shifting).
ZIMAGE_SCHEDULER: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False}

#: Qwen's chat format as the Z-Image pipeline uses it: ``apply_chat_template(messages,
#: add_generation_prompt=True, enable_thinking=True)`` gives
#: ``<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n``.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")


def models_root() -> Path:
    """Where locally built models live: ``$ZITFLOW_MODELS_DIR`` or ``<user cache>/zitflow/models``."""
    env = os.environ.get("ZITFLOW_MODELS_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("zitflow")) / "models"


def tiny_dir(seed: int = 0, root: Path | None = None) -> Path:
    return Path(root or models_root()) / f"tiny-{int(seed)}"


def ensure_tiny(seed: int = 0, root: Path | None = None) -> Path:
    """The tiny model's folder for ``seed``, built on first use (atomically) and reused after.

    Concurrent callers may both build; the first rename wins and the other copy is discarded.
    """
    folder = tiny_dir(seed, root)
    if _is_current(folder, seed):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.build-", dir=folder.parent))
    try:
        build_tiny(tmp, seed)
        if folder.exists() and not _is_current(folder, seed):  # an older version: move it aside
            stale = Path(tempfile.mkdtemp(prefix=f".{folder.name}.stale-", dir=folder.parent))
            os.replace(folder, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _is_current(folder, seed):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _is_current(folder: Path, seed: int) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("version") == TINY_VERSION and marker.get("seed") == int(seed)


def build_tokenizer():
    """A byte-level BPE tokenizer (256 byte symbols, no merges, Qwen's special tokens) wrapped as a
    ``transformers`` fast tokenizer with a Qwen-style chat template. Any Unicode text encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="right", model_max_length=131072)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def text_encoder_config(vocab_size: int, **overrides: Any):
    """A ``transformers.Qwen3Config`` (Qwen3-4B's settings for unspecified fields)."""
    from transformers import Qwen3Config

    values = dict(TINY_TEXT_ENCODER, vocab_size=vocab_size, **overrides)
    return Qwen3Config(rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, **values)


def randomize_(module, seed: int) -> None:
    """Overwrite every parameter of ``module`` with seeded random values, in name order.

    Matrices (ndim >= 2) get N(0, 1/fan_in) so activations keep their scale; vectors named like a
    norm weight get 1 + N(0, 0.02^2); other vectors N(0, 0.02^2). Independent of the library's own
    init, so the weights only change when this recipe or ``seed`` does.
    """
    import torch

    gen = torch.Generator("cpu").manual_seed(int(seed))
    with torch.no_grad():
        for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
            shape = tuple(p.shape)
            if p.ndim >= 2:
                value = torch.randn(shape, generator=gen) / max(math.prod(shape[1:]), 1) ** 0.5
            elif "norm" in name:
                value = 1.0 + 0.02 * torch.randn(shape, generator=gen)
            else:
                value = 0.02 * torch.randn(shape, generator=gen)
            p.copy_(value.to(p.dtype))


@contextlib.contextmanager
def _quiet_progress():
    """No library progress bars while saving a few kilobytes."""
    from diffusers.utils import logging as dlog

    was = dlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            dlog.enable_progress_bar()


def build_tiny(folder: Path, seed: int = 0) -> None:
    """Build the tiny model with weights from ``seed`` and ``save_pretrained`` it into ``folder``."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Model

    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        text_encoder = Qwen3Model(text_encoder_config(len(tokenizer)))
        transformer = ZImageTransformer2DModel(**TINY_TRANSFORMER)
        vae = AutoencoderKL(**TINY_VAE)
    randomize_(text_encoder, seed * 3 + 1)
    randomize_(transformer, seed * 3 + 2)
    randomize_(vae, seed * 3 + 3)
    scheduler = FlowMatchEulerDiscreteScheduler(**ZIMAGE_SCHEDULER)
    pipe = ZImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer,
                          transformer=transformer.eval())
    with _quiet_progress():
        pipe.save_pretrained(str(folder), safe_serialization=True)
    (folder / MARKER).write_text(json.dumps({"version": TINY_VERSION, "seed": int(seed),
                                             "what": "zitflow tiny Z-Image-Turbo: random weights, not a real model"}))
