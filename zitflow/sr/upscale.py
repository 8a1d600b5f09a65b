"""Pure super-resolution functions: tiled inference, output-size semantics, alpha, resizing.

Conventions: pixels are numpy ``(H, W, C)`` arrays, C = 3 (RGB) or 4 (RGBA), dtype uint8 or
float32 in [0, 1]; sizes are ``(width, height)`` in pixels; a *tile function* maps an
``(h, w, 3)`` float32 RGB array in [0, 1] to ``(h*s, w*s, 3)`` float32 in [0, 1] for the
network's integer scale ``s`` (a torch model via :func:`torch_tile_fn`, or an ncnn model).

Scale semantics (the official ``RealESRGANer``'s ``outscale``): the network always runs at its
own scale (x4 for the built-in models); the result is then resized with Lanczos to the asked
size: ``(round(W*scale), round(H*scale))`` for a ``scale``, or exactly the ``target`` size
(``cover`` then centre crop, see :func:`plan_size`). Downscaling uses an antialiased Lanczos
(PIL), not OpenCV's fixed-support ``INTER_LANCZOS4``, which aliases when shrinking.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

TileFn = Callable[[np.ndarray], np.ndarray]

#: Default overlap (input pixels) on each side of a tile: the largest of the built-in models'
#: seamless overlaps (:data:`zitflow.sr.models.SEAMLESS_PAD`, measured in
#: docs/super_resolution.md), at which tiled output matches untiled within one 8-bit level.
DEFAULT_TILE_PAD = 80


# -- sizes ------------------------------------------------------------------------------------

def round_half_up(x: float) -> int:
    """Round to the nearest int, halves up (Python's round() rounds halves to even)."""
    return int(math.floor(x + 0.5))


@dataclass(frozen=True)
class SizePlan:
    """How an (W, H) input becomes the output.

    ``resize`` is the size the network's output is resized to (``None``: keep it),
    ``crop`` the ``(left, top, width, height)`` box cut from that afterwards (``None``: none),
    ``size`` the final (width, height), ``scale`` the effective scale factor.
    """

    size: tuple[int, int]
    resize: tuple[int, int] | None
    crop: tuple[int, int, int, int] | None
    scale: float


def plan_size(width: int, height: int, net_scale: int, scale: float | None = None,
              target: tuple[int, int] | None = None) -> SizePlan:
    """Output size for a ``width`` x ``height`` input and a network of scale ``net_scale``.

    * ``scale`` (float >= 1): output ``(round(W*scale), round(H*scale))``.
    * ``target = (tw, th)``: output exactly ``tw`` x ``th``. 0 in one of them means "keep the
      aspect ratio" (``th = round(H * tw / W)``). The picture is scaled by
      ``max(tw/W, th/H)`` to cover the target and centre-cropped (at most a rounding pixel when
      the aspect ratios agree); it is never stretched.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if target is not None and any(target):
        tw, th = (int(v) for v in target)
        if tw < 0 or th < 0:
            raise ValueError(f"field 'target': got {target}; allowed: non-negative sizes")
        if tw == 0:
            tw = max(1, round_half_up(width * th / height))
        if th == 0:
            th = max(1, round_half_up(height * tw / width))
        s = max(tw / width, th / height)
        rw, rh = max(tw, round_half_up(width * s)), max(th, round_half_up(height * s))
        crop = None if (rw, rh) == (tw, th) else ((rw - tw) // 2, (rh - th) // 2, tw, th)
        resize = None if (rw, rh) == (width * net_scale, height * net_scale) else (rw, rh)
        return SizePlan((tw, th), resize, crop, s)
    if scale is None:
        scale = float(net_scale)
    if not (scale >= 1 and math.isfinite(scale)):
        raise ValueError(f"field 'scale': got {scale!r}; allowed: a finite number >= 1")
    size = (max(1, round_half_up(width * scale)), max(1, round_half_up(height * scale)))
    resize = None if size == (width * net_scale, height * net_scale) else size
    return SizePlan(size, resize, None, scale)


def lanczos_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (H, W) or (H, W, C) to ``size = (width, height)`` with antialiased Lanczos.

    float32: per channel in PIL's 32-bit float mode; values may overshoot [0, 1] (clip
    afterwards). uint8 (1 or 3 channels): PIL's 8-bit Lanczos on the whole image at once,
    the order the official RealESRGANer uses (quantize the network output, then resize).
    """
    from PIL import Image as PILImage

    if (x.shape[1], x.shape[0]) == tuple(size):
        return x if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
    if x.dtype == np.uint8 and (x.ndim == 2 or x.shape[2] == 3):
        return np.asarray(PILImage.fromarray(np.ascontiguousarray(x)).resize(tuple(size), PILImage.LANCZOS))
    if x.ndim == 2:
        return lanczos_resize(x[..., None], size)[..., 0]
    planes = [np.asarray(PILImage.fromarray(np.ascontiguousarray(x[..., c], dtype=np.float32), "F")
                         .resize(tuple(size), PILImage.LANCZOS)) for c in range(x.shape[2])]
    return np.stack(planes, axis=2)


def apply_plan(x: np.ndarray, plan: SizePlan, resize_device: str | None = None) -> np.ndarray:
    """Resize then crop a network output (H, W[, C]) as ``plan`` says.

    float32 comes back clipped to [0, 1]; uint8 (already quantized) stays uint8. With
    ``resize_device`` the Lanczos resize runs there (:func:`zitflow.sr.resize.resize`: Pillow's
    float weights as matrix products; on a GPU a few ms instead of ~0.4 s for 4096 -> 2048).
    """
    if plan.resize is not None:
        resized = None
        if resize_device is not None:
            import torch

            from .resize import resize

            try:
                resized = resize(x, plan.resize, resize_device)
            except torch.OutOfMemoryError:  # a very large picture: Pillow on the CPU instead
                torch.cuda.empty_cache()
        x = resized if resized is not None else lanczos_resize(x, plan.resize)
    if plan.crop is not None:
        left, top, w, h = plan.crop
        x = x[top:top + h, left:left + w]
    return x if x.dtype == np.uint8 else np.clip(x, 0.0, 1.0)


# -- pixels -----------------------------------------------------------------------------------

def to_float01(pixels: np.ndarray) -> np.ndarray:
    """uint8 -> float32 / 255; float32 is clipped to [0, 1]."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255.0
    if pixels.dtype == np.float32:
        return np.clip(pixels, 0.0, 1.0)
    raise ValueError(f"pixels must be uint8 or float32, got {pixels.dtype}")


def from_float01(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float32 in [0, 1] (or uint8 levels) -> ``dtype`` (uint8: rounded to the nearest level)."""
    if x.dtype == np.uint8:
        return x if np.dtype(dtype) == np.uint8 else x.astype(np.float32) / 255.0
    if np.dtype(dtype) == np.uint8:
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


# -- tiling -----------------------------------------------------------------------------------

def tile_boxes(width: int, height: int, tile: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) core boxes covering the image in row-major order, each at most tile²."""
    return [(x0, y0, min(x0 + tile, width), min(y0 + tile, height))
            for y0 in range(0, height, tile) for x0 in range(0, width, tile)]


def tiled_apply(fn: TileFn, rgb: np.ndarray, net_scale: int, tile: int | None, tile_pad: int = DEFAULT_TILE_PAD,
                progress: bool = False, desc: str = "super-resolve") -> np.ndarray:
    """Run tile function ``fn`` over (H, W, 3) float32 ``rgb``; returns (H*s, W*s, 3) in the
    dtype ``fn`` returns (float32 in [0, 1], or uint8 levels for a quantizing ``fn``).

    ``tile`` None or 0, or a tile covering the image: one call. Otherwise each ``tile`` x
    ``tile`` core box is run with ``tile_pad`` pixels of real context on each side (clamped at
    the image border, where the network sees its own zero padding as untiled) and only the
    core's output is kept, so the seams carry no border effects (as RealESRGANer's
    ``tile_process``). A tqdm bar counts tiles unless ``progress`` is False.
    """
    h, w = rgb.shape[:2]
    s = int(net_scale)
    if not tile or (tile >= w and tile >= h):
        out = fn(rgb)
        _check_out(out, h, w, s)
        return out
    if tile < 1 or tile_pad < 0:
        raise ValueError(f"field 'tile'/'tile_pad': got {tile}/{tile_pad}; allowed: tile >= 1, tile_pad >= 0")
    boxes = tile_boxes(w, h, tile)
    out: np.ndarray | None = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(boxes), desc=desc, unit="tile", leave=False)
    try:
        for x0, y0, x1, y1 in boxes:
            px0, py0 = max(x0 - tile_pad, 0), max(y0 - tile_pad, 0)
            px1, py1 = min(x1 + tile_pad, w), min(y1 + tile_pad, h)
            res = fn(np.ascontiguousarray(rgb[py0:py1, px0:px1]))
            _check_out(res, py1 - py0, px1 - px0, s)
            ox, oy = (x0 - px0) * s, (y0 - py0) * s
            if out is None:
                out = np.empty((h * s, w * s, 3), res.dtype)
            out[y0 * s:y1 * s, x0 * s:x1 * s] = res[oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out


def _check_out(out: np.ndarray, h: int, w: int, s: int) -> None:
    if out.shape != (h * s, w * s, 3):
        raise RuntimeError(f"the network returned {out.shape} for a {h}x{w} input; expected "
                           f"{(h * s, w * s, 3)} (scale {s})")


#: Peak working memory per *input* pixel at 2 bytes per value (fp16/bf16), weights excluded.
#: From H100 measurements (bench/results/sr_bench_h100.json: x4plus fp16 1024² untiled 4.0 GiB,
#: tile 512 1.4 GiB) with margin; fp32 doubles it.
BYTES_PER_INPUT_PIXEL = {"ESRGAN": 6 * 1024, "RealESRGAN Compact": 2 * 1024}
UNKNOWN_ARCH_BYTES = 12 * 1024


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 4 << 30


def auto_tile(width: int, height: int, device: str, arch: str | None, value_bytes: int = 2,
              free_bytes: int | None = None, tile_pad: int = 0) -> int | None:
    """Tile size (input pixels) for ``device``, or None when the whole image fits.

    CUDA: budget 60% of free GPU memory (``torch.cuda.mem_get_info``). CPU: half the available
    RAM, at most 6 GiB (measured: x4plus fp32 peaks at ~9 KiB per input pixel), tiles at most
    768 px so the progress bar moves. The budget covers the tile with its ``tile_pad`` overlap
    on both sides. ``value_bytes`` is 4 for fp32, 2 for fp16/bf16; ``free_bytes`` overrides the
    probe (tests).
    """
    per_px = BYTES_PER_INPUT_PIXEL.get(arch or "", UNKNOWN_ARCH_BYTES) * value_bytes / 2
    cuda = str(device).startswith("cuda")
    if free_bytes is None:
        if cuda:
            import torch

            free_bytes = int(torch.cuda.mem_get_info(torch.device(device))[0])
        else:
            free_bytes = _available_ram()
    budget = free_bytes * 0.6 if cuda else min(free_bytes / 2, 6 << 30)
    max_px = budget / per_px
    cap = 4096 if cuda else 768
    if width * height <= max_px and max(width, height) <= cap:
        return None
    side = (int(math.sqrt(max_px)) - 2 * tile_pad) // 32 * 32
    return int(min(max(side, 64), cap))


# -- torch -------------------------------------------------------------------------------------

def torch_tile_fn(model, device: str = "cpu", dtype=None, channels_last: bool = True,
                  quantize: bool = False) -> TileFn:
    """A tile function running a spandrel ``ImageModelDescriptor`` (or any module taking
    (1, 3, h, w) and returning (1, 3, h*s, w*s)) already placed on ``device`` in ``dtype``.

    Input is (h, w, 3) float32 numpy in [0, 1]; the tensors use ``dtype`` (default float32) and
    the channels_last memory format. fp32 on CUDA turns TF32 off so results match the CPU.
    Output is (h*s, w*s, 3) float32 in [0, 1], or with ``quantize`` uint8 levels rounded on
    the device: a quarter of the bytes to copy back and no float passes on the host (on an
    H100 this is most of the end-to-end time of a 1024 -> 4096 upscale; see
    docs/super_resolution.md). Use it for uint8 pictures only.
    """
    import torch

    dtype = dtype or torch.float32
    strict_fp32 = dtype == torch.float32 and str(device).startswith("cuda")

    def fn(rgb: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].to(device=device, dtype=dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if strict_fp32:
                with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                    y = model(x)
            else:
                y = model(x)
            y = y[0].float().clamp_(0, 1)
            if quantize:
                y = y.mul_(255.0).round_().to(torch.uint8)
            return y.permute(1, 2, 0).contiguous().cpu().numpy()

    fn.quantized = quantize  # type: ignore[attr-defined]
    return fn


# -- the whole picture ---------------------------------------------------------------------

def upscale_pixels(pixels: np.ndarray, fn: TileFn, net_scale: int, *, scale: float | None = None,
                   target: tuple[int, int] | None = None, tile: int | None = None,
                   tile_pad: int = DEFAULT_TILE_PAD, alpha: str = "lanczos", progress: bool = False,
                   resize_device: str | None = None) -> np.ndarray:
    """Super-resolve (H, W, 3|4) uint8/float32 ``pixels``; returns the same channels and dtype.

    RGB goes through ``fn`` (tiled as :func:`tiled_apply`) then :func:`apply_plan`. Alpha
    (C = 4) is upscaled separately: ``alpha="lanczos"`` resizes it straight to the output size;
    ``alpha="model"`` runs it through the network as a grey RGB image and keeps the channel
    mean (RealESRGANer's ``alpha_upsampler='realesrgan'``), then resizes like RGB.
    """
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"pixels must have shape (H, W, 3|4), got {pixels.shape}")
    if alpha not in ("lanczos", "model"):
        raise ValueError(f"field 'alpha': got {alpha!r}; allowed: 'lanczos' or 'model'")
    h, w = pixels.shape[:2]
    plan = plan_size(w, h, net_scale, scale, target)
    if getattr(fn, "quantized", False) and pixels.dtype != np.uint8:
        raise ValueError("a quantizing tile function (uint8 output) needs uint8 pixels")
    x = to_float01(pixels)
    rgb = apply_plan(tiled_apply(fn, np.ascontiguousarray(x[..., :3]), net_scale, tile, tile_pad, progress), plan,
                     resize_device)
    rgb = from_float01(rgb, pixels.dtype)
    if pixels.shape[2] == 4:
        a = x[..., 3]
        if alpha == "model":
            a3 = np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))
            a_up = from_float01(tiled_apply(fn, a3, net_scale, tile, tile_pad, progress, "alpha"), np.float32)
            a_up = apply_plan(a_up.mean(axis=2), plan, resize_device)
        else:
            full = SizePlan(plan.size, plan.resize or (w * net_scale, h * net_scale), plan.crop, plan.scale)
            a_up = apply_plan(a, full, resize_device)
        rgb = np.concatenate([rgb, from_float01(a_up, pixels.dtype)[..., None]], axis=2)
    return rgb
