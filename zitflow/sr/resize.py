"""Pillow's antialiased Lanczos resize as two matrix products, so it can run on the GPU.

Scale 2 or 3 with an x4 network ends in a Lanczos downscale of the network's output (as the
official RealESRGANer's ``outscale``). Pillow does it on one CPU core: about 0.38 s for
4096x4096 -> 2048x2048, more than the x4plus network itself on an H100. The same filter written as
separable weight matrices (``out = A_h @ img @ A_w.T`` per channel) runs on the device the picture
is already near. The weights are Pillow's (``ImagingResample``'s ``precompute_coeffs``): Lanczos-3,
stretched by the scale factor when shrinking, centred on ``(i + 0.5) * scale``, normalised per
output pixel; so the result equals Pillow's float ("F" mode) resize up to float32 rounding.
No library ships this filter for torch (torchvision and ``interpolate`` offer bilinear and
bicubic antialiasing only), hence these few lines.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SUPPORT = 3.0  # Lanczos-3


def _lanczos(x: np.ndarray) -> np.ndarray:
    """sinc(x) * sinc(x / 3) on |x| < 3, else 0 (numpy's sinc is the normalised one)."""
    return np.where(np.abs(x) < SUPPORT, np.sinc(x) * np.sinc(x / SUPPORT), 0.0)


@lru_cache(maxsize=32)
def lanczos_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 matrix of Pillow's Lanczos weights for one axis."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1, got {in_size} -> {out_size}")
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = SUPPORT * filterscale
    w = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        xs = np.arange(lo, hi)
        k = _lanczos((xs - center + 0.5) / filterscale)
        total = k.sum()
        w[i, lo:hi] = k / total if total != 0 else k
    return w


def resize(pixels: np.ndarray, size: tuple[int, int], device: str = "cpu") -> np.ndarray:
    """Resize (H, W) or (H, W, C) ``pixels`` to ``size = (width, height)`` with Pillow's Lanczos on
    ``device``. float32 comes back float32 (may overshoot [0, 1], as Pillow's); uint8 comes back
    uint8, rounded and clipped."""
    import torch

    width, height = size
    h, w = pixels.shape[:2]
    if (w, h) == (width, height):
        return pixels
    squeeze = pixels.ndim == 2
    src = pixels[..., None] if squeeze else pixels
    x = torch.from_numpy(np.ascontiguousarray(src)).to(device).permute(2, 0, 1).float()  # (C, H, W)
    a_h = torch.from_numpy(lanczos_weights(h, height)).to(device=device, dtype=torch.float32)
    a_w = torch.from_numpy(lanczos_weights(w, width)).to(device=device, dtype=torch.float32)
    with torch.inference_mode(), _no_tf32():
        y = a_h @ x @ a_w.T
        if pixels.dtype == np.uint8:
            y = y.round_().clamp_(0, 255).to(torch.uint8)
        out = y.permute(1, 2, 0).contiguous().cpu().numpy()
    return out[..., 0] if squeeze else out


class _no_tf32:
    """Full fp32 matmuls inside (TF32's 10-bit mantissa would cost about a level at 8 bits)."""

    def __enter__(self):
        import torch

        self.old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = self.old


def flops(in_hw: tuple[int, int], out_hw: tuple[int, int], channels: int = 3) -> float:
    """Multiply-adds x 2 of one :func:`resize` (dense matrices), for a throughput estimate."""
    (h, w), (oh, ow) = in_hw, out_hw
    return 2.0 * channels * (oh * h * w + oh * w * ow)

