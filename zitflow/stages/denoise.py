"""``denoise``: the DiT's flow-matching loop from seeded noise to latents, as ZImagePipeline runs it.

Inputs: ``embeds`` (the encode stage's :class:`~zitflow.artifacts.Tensors`) and, optionally,
``size`` (the resolution stage's :class:`~zitflow.artifacts.Data` with ``gen_width`` and
``gen_height``; without it the ``width``/``height`` parameters give the size). Sides must be
multiples of 16 pixels (VAE factor 8 x patch 2).

The initial noise is drawn on the CPU from ``torch.Generator("cpu").manual_seed(seed)`` with the
pipeline's own ``prepare_latents``, so a seed gives the same starting point on any device. The
loop itself is the pipeline's: the stage calls ``ZImagePipeline.__call__`` (holding only the
DiT and a fresh scheduler) with the cached ``prompt_embeds``, those latents and
``output_type="latent"``. So the time shift (``calculate_shift``), the sigma schedule
(``linspace(1, 1/steps, steps)`` unless ``sigmas`` is given), ``retrieve_timesteps``, CFG with its
normalisation and truncation, and the Euler steps are diffusers' code, not a copy.

Output: ``latents`` (16, H/8, W/8) float32, before the VAE's scaling and shift.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import List, Optional

from ..artifacts import Data, Tensors
from ..params import ParamError, param
from ..registry import register
from ..stage import Stage

#: Sides must be multiples of this many pixels (VAE scale factor 8 x DiT patch 2).
MULTIPLE = 16


def check_side(field: str, value: int, where: str) -> None:
    """Raise :class:`ParamError` naming ``field`` unless ``value`` is a positive multiple of 16."""
    if value <= 0 or value % MULTIPLE:
        lo = max(MULTIPLE, value // MULTIPLE * MULTIPLE)
        raise ParamError(field, f"got {value}{where}; allowed: a multiple of {MULTIPLE} pixels "
                                f"(e.g. {lo} or {lo + MULTIPLE})")


@dataclass
class DenoiseParams:
    seed: int = param(0, ge=0, le=2**63 - 1, help="seed of the initial noise (a CPU generator: same on every device)")
    steps: int = param(9, ge=1, le=500, help="DiT forwards; the Turbo model card uses 9")
    guidance_scale: float = param(0.0, ge=0.0, le=50.0,
                                  help="classifier-free guidance; 0 for Turbo (distilled without it); > 0 runs the "
                                       "DiT twice per step on the encode stage's negative embeddings")
    cfg_normalization: float = param(0.0, ge=0.0, le=100.0,
                                     help="> 0: cap the guided prediction's norm at this multiple of the "
                                          "conditional one (0: off)")
    cfg_truncation: float = param(1.0, ge=0.0, le=1.0,
                                  help="guidance stops once (1000 - t) / 1000 exceeds this (1: never)")
    shift: Optional[float] = param(None, gt=0.0, le=100.0,
                                   help="the scheduler's timestep shift; null: the model's own (3.0 for Turbo)")
    sigmas: Optional[List[float]] = param(None, help="an explicit sigma schedule, decreasing in (0, 1]; replaces "
                                                      "steps; null: linspace(1, 1/steps, steps) as diffusers")
    width: Optional[int] = param(None, ge=MULTIPLE, le=8192,
                                 help="pixels, a multiple of 16; only when no size input is connected")
    height: Optional[int] = param(None, ge=MULTIPLE, le=8192,
                                  help="pixels, a multiple of 16; only when no size input is connected")

    def validate(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None:
                check_side(name, value, "")
        if (self.width is None) != (self.height is None):
            missing = "height" if self.height is None else "width"
            raise ParamError(missing, "is required when the other side is given; allowed: both width and height, "
                                      "or neither (the size input decides)")
        if self.sigmas is not None:
            s = list(self.sigmas)
            if not s:
                raise ParamError("sigmas", "got an empty list; allowed: null, or sigmas decreasing in (0, 1]")
            if any(not math.isfinite(x) or not 0.0 < x <= 1.0 for x in s):
                raise ParamError("sigmas", f"got {s}; allowed: values in (0, 1] (the final 0 is added by the scheduler)")
            if any(b >= a for a, b in zip(s, s[1:])):
                raise ParamError("sigmas", f"got {s}; allowed: strictly decreasing values")


def generation_size(params: DenoiseParams, size: Data | None, stage: str) -> tuple[int, int]:
    """(width, height) in pixels from the ``size`` input or the parameters; errors name the field."""
    if size is not None:
        if params.width is not None:
            raise ValueError(f"stage '{stage}': fields 'width'/'height' are set and a 'size' input is connected; "
                             f"drop one (the size input's gen_width x gen_height decides otherwise)")
        try:
            width, height = int(size.value["gen_width"]), int(size.value["gen_height"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"stage '{stage}', input 'size': needs integer keys gen_width and gen_height "
                             f"(a resolution stage's output), got keys {sorted(size.value)}") from None
        for field, value in (("gen_width", width), ("gen_height", height)):
            try:
                check_side(field, value, " from the 'size' input")
            except ParamError as e:
                raise ValueError(f"stage '{stage}', input 'size', {e}") from None
        return width, height
    if params.width is None:
        raise ValueError(f"stage '{stage}': no size; connect a resolution stage (inputs: {{size: <stage>}}) "
                         f"or set fields 'width' and 'height' (multiples of 16)")
    return params.width, params.height


def initial_noise(seed: int, channels: int, width: int, height: int, vae_scale_factor: int = 8):
    """(1, channels, H/8, W/8) float32 noise from a CPU generator, by ``ZImagePipeline.prepare_latents``."""
    import torch
    from diffusers import ZImagePipeline

    pipe = ZImagePipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None, transformer=None)
    pipe.vae_scale_factor = vae_scale_factor
    gen = torch.Generator("cpu").manual_seed(int(seed))
    return pipe.prepare_latents(1, channels, height, width, torch.float32, torch.device("cpu"), gen)


@register
class Denoise(Stage):
    kind = "denoise"
    version = 1
    Params = DenoiseParams
    inputs = {"embeds": Tensors, "size": Data}
    optional = frozenset({"size"})
    output = Tensors
    uses_model = True

    def identity(self, params: DenoiseParams, ctx):
        from ..models.pool import pool_of

        pool = pool_of(ctx)
        config, runtime = pool.settings(ctx)
        ident = pool.identity(config, runtime)
        if runtime.precision != "auto":  # FP8 changes the numbers beyond bf16 rounding
            ident["dit_precision"] = runtime.precision
        return ident

    def run(self, params: DenoiseParams, inputs, ctx) -> Tensors:
        import torch
        from diffusers import ZImagePipeline

        from ..models import compile as zcompile
        from ..models.placement import run_planned
        from ..models.pool import pool_of
        from ..models.precision import PrecisionError, apply_attention, apply_precision, check_precision
        from ..models.rope import use_real_rope
        from ..progress import interactive

        pool = pool_of(ctx)
        config, runtime = pool.settings(ctx)
        stage = ctx.stage_name or self.kind
        width, height = generation_size(params, inputs.get("size"), stage)
        embeds = inputs["embeds"].tensors
        if "prompt_embeds" not in embeds:
            raise ValueError(f"stage '{stage}', input 'embeds': no 'prompt_embeds' tensor (got {sorted(embeds)}); "
                             f"connect an encode stage")
        guided = params.guidance_scale > 0
        if guided and "negative_prompt_embeds" not in embeds:
            raise ValueError(f"stage '{stage}', field 'guidance_scale': {params.guidance_scale} needs negative "
                             f"embeddings, but the encode stage feeding 'embeds' ran with with_negative=false; "
                             f"set it to true there, or guidance_scale=0")
        if runtime.precision != "auto":
            check_precision(runtime.precision, runtime.resolved_device())
        vae_scale = pool.vae_scale_factor(config, runtime)
        show = runtime.progress != "off" and interactive(runtime.progress)

        def work(plan, device):
            dit = pool.transformer(config, runtime)
            if runtime.precision != "auto" and plan.name != "resident":
                raise PrecisionError(f"stage '{stage}': runtime.precision={runtime.precision} needs the DiT resident on "
                                     f"the GPU, but the memory plan is '{plan}'; set runtime.offload=resident "
                                     f"(the FP8 DiT takes ~half the bf16 memory) or runtime.precision=auto")
            apply_precision(dit, runtime.precision, device)
            apply_attention(dit, runtime.attention)
            saving = contextlib.nullcontext()
            if runtime.compile and plan.name in zcompile.COMPILED_PLANS:
                fingerprint = pool.resolve(config).fingerprint
                use_real_rope(dit)  # before the compile: the rotary embedding then fuses into the block's kernels
                zcompile.compile_dit(dit, runtime, fingerprint, device)
                saving = zcompile.saving_new_graphs(runtime, fingerprint, device)  # new sizes: kept for the next process
            overrides = {"shift": params.shift} if params.shift is not None else {}
            pipe = ZImagePipeline(scheduler=pool.scheduler(config, runtime, **overrides), vae=None, text_encoder=None,
                                  tokenizer=None, transformer=dit)
            pipe.vae_scale_factor = vae_scale
            pipe.set_progress_bar_config(disable=not show, desc=f"{stage} {width}x{height}", leave=False)
            latents = initial_noise(params.seed, dit.config.in_channels, width, height, vae_scale)
            dtype = dit.dtype
            pos = [embeds["prompt_embeds"].to(device=device, dtype=dtype)]
            neg = [embeds["negative_prompt_embeds"].to(device=device, dtype=dtype)] if guided else None
            with saving:
                out = pipe(prompt_embeds=pos, negative_prompt_embeds=neg, height=height, width=width,
                           num_inference_steps=params.steps, sigmas=list(params.sigmas) if params.sigmas else None,
                           guidance_scale=params.guidance_scale, cfg_normalization=params.cfg_normalization,
                           cfg_truncation=params.cfg_truncation, latents=latents, output_type="latent",
                           return_dict=False)[0]
            return out[0].detach().to("cpu", torch.float32)

        latents = run_planned(ctx, pool, "transformer", work, width=width, height=height, cfg=guided)
        meta = {"width": str(width), "height": str(height), "seed": str(params.seed), "steps": str(params.steps),
                "guidance_scale": repr(float(params.guidance_scale)), "vae_scale_factor": str(vae_scale)}
        return Tensors({"latents": latents.contiguous()}, meta)
