"""``sharpen``: unsharp mask (amount, radius, threshold), or the seeds' 3x3 kernel as a preset."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..artifacts import Image
from ..params import param
from ..registry import register
from ..stage import Stage

#: The seeds' kernel: [[0,-1,0],[-1,5,-1],[0,-1,0]] (identity plus a 4-neighbour Laplacian).
SEED_KERNEL = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float32)


@dataclass
class SharpenParams:
    preset: str = param("unsharp", choices=("unsharp", "kernel3x3"),
                        help="unsharp mask, or the seeds' fixed 3x3 kernel (amount/radius/threshold unused)")
    amount: float = param(0.6, ge=0.0, le=5.0, help="strength: 1.0 adds the full difference to the blur")
    radius: float = param(1.5, gt=0.0, le=50.0, help="Gaussian sigma in pixels")
    threshold: int = param(0, ge=0, le=255, help="8-bit levels below which a difference is left alone")


def unsharp_mask(pixels: np.ndarray, amount: float, radius: float, threshold: int) -> np.ndarray:
    """Unsharp mask of (H, W, C) uint8 pixels; alpha (C=4) is left as is. Returns uint8.

    ``out = x + amount * (x - gaussian(x, sigma=radius))`` where ``|x - blur| >= threshold``
    (in 8-bit levels, 0..255; 0 sharpens everything); ``radius`` is the Gaussian sigma in pixels.
    """
    rgb = pixels[..., :3].astype(np.float32)
    blur = cv2.GaussianBlur(rgb, (0, 0), sigmaX=radius, sigmaY=radius, borderType=cv2.BORDER_REFLECT_101)
    detail = rgb - blur
    if threshold > 0:
        detail = np.where(np.abs(detail) >= threshold, detail, 0.0)
    out = np.clip(np.rint(rgb + amount * detail), 0, 255).astype(np.uint8)
    return np.concatenate([out, pixels[..., 3:]], axis=2) if pixels.shape[2] == 4 else out


def kernel3x3(pixels: np.ndarray) -> np.ndarray:
    """The seeds' ``cv2.filter2D(img, -1, SEED_KERNEL)`` on (H, W, C) uint8; alpha kept."""
    out = cv2.filter2D(pixels[..., :3], -1, SEED_KERNEL, borderType=cv2.BORDER_REFLECT_101)
    return np.concatenate([out, pixels[..., 3:]], axis=2) if pixels.shape[2] == 4 else out


@register
class Sharpen(Stage):
    kind = "sharpen"
    version = 1
    Params = SharpenParams
    inputs = {"image": Image}
    output = Image

    def run(self, params: SharpenParams, inputs, ctx) -> Image:
        src = inputs["image"].to_pil() if inputs["image"].pixels.dtype != np.uint8 else None
        pixels = np.asarray(src) if src is not None else inputs["image"].pixels
        if params.preset == "kernel3x3":
            return Image(kernel3x3(pixels))
        return Image(unsharp_mask(pixels, params.amount, params.radius, params.threshold))
