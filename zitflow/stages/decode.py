"""``decode``: latents through the VAE into an RGB image, exactly as ZImagePipeline finishes.

The pipeline's last lines, in its order: latents to the VAE's dtype, ``latents /
scaling_factor + shift_factor``, ``vae.decode``, then ``VaeImageProcessor.postprocess`` and its
``numpy_to_pil`` rounding (``(x * 255).round()`` as uint8). The image is the pipeline's PIL image
as an (H, W, 3) uint8 array, H and W = 8 x the latent size. The rounding runs where the decode ran
(:func:`to_pixels`), so a GPU decode copies 3 bytes a pixel instead of 12 and leaves the CPU out;
float32 multiplication and round-half-to-even are the same on either side, so the pixels are the
pipeline's bit for bit.

Large sizes may decode in 512-pixel tiles (overlap 1/4, blended) when the memory plan says so
(``runtime.vae_tiling``: auto picks tiling when the untiled decode would not fit). Tiling changes
pixels slightly; like the device and dtype it is a runtime choice, recorded in the manifest notes
(``memory_plan``) rather than in the cache key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..artifacts import Image, Tensors
from ..registry import register
from ..stage import Stage


@dataclass
class DecodeParams:
    pass


def to_pixels(image, processor) -> np.ndarray:
    """(1, 3, H, W) decoder output in [-1, 1] (any float dtype, any device) -> (H, W, 3) uint8.

    ``processor.postprocess``'s denormalisation, then ``pt_to_numpy``'s float32 and
    ``numpy_to_pil``'s ``(x * 255).round()``, computed on ``image``'s device.
    """
    import torch

    x = processor.postprocess(image, output_type="pt")[0]  # (3, H, W) in [0, 1], image's dtype
    return x.float().mul_(255).round_().to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()


def decode_latents(vae, latents, device, tiling: bool, tile_px: int = 512) -> np.ndarray:
    """(1|None, C, h, w) latents -> (8h, 8w, 3) uint8, the pipeline's ``output_type="pil"`` pixels."""
    import torch
    from diffusers.image_processor import VaeImageProcessor

    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    if tiling:
        vae.enable_tiling()
        vae.tile_sample_min_size = tile_px
        vae.tile_latent_min_size = tile_px // vae_scale
    else:
        vae.disable_tiling()
    if latents.ndim == 3:
        latents = latents[None]
    latents = latents.to(device=device, dtype=vae.dtype)
    latents = (latents / vae.config.scaling_factor) + vae.config.shift_factor
    with torch.no_grad():
        image = vae.decode(latents, return_dict=False)[0]
    return to_pixels(image, VaeImageProcessor(vae_scale_factor=vae_scale * 2))


@register
class Decode(Stage):
    kind = "decode"
    version = 1
    Params = DecodeParams
    inputs = {"latents": Tensors}
    output = Image
    uses_model = True

    def identity(self, params: DecodeParams, ctx):
        from ..models.pool import pool_of

        pool = pool_of(ctx)
        return pool.identity(*pool.settings(ctx))

    def run(self, params: DecodeParams, inputs, ctx) -> Image:
        from ..models import compile as zcompile
        from ..models.memory import VAE_TILE_PX
        from ..models.placement import run_planned
        from ..models.pool import pool_of

        pool = pool_of(ctx)
        config, runtime = pool.settings(ctx)
        stage = ctx.stage_name or self.kind
        tensors = inputs["latents"].tensors
        latents = tensors.get("latents")
        if latents is None or latents.ndim not in (3, 4) or (latents.ndim == 4 and latents.shape[0] != 1):
            raise ValueError(f"stage '{stage}', input 'latents': needs a 'latents' tensor of shape (C, h, w) "
                             f"(a denoise stage's output), got "
                             f"{'no latents' if latents is None else tuple(latents.shape)}")
        scale = pool.vae_scale_factor(config, runtime)
        width, height = latents.shape[-1] * scale, latents.shape[-2] * scale

        def work(plan, device):
            vae = pool.vae(config, runtime)
            if runtime.compile and plan.name in zcompile.COMPILED_PLANS:
                fingerprint = pool.resolve(config).fingerprint
                zcompile.compile_vae_decoder(vae, runtime, fingerprint, device)
                with zcompile.saving_new_graphs(runtime, fingerprint, device), zcompile.independent_sizes():
                    return decode_latents(vae, latents, device, plan.vae_tiling, VAE_TILE_PX)
            return decode_latents(vae, latents, device, plan.vae_tiling, VAE_TILE_PX)

        return Image(run_planned(ctx, pool, "vae", work, width=width, height=height))
