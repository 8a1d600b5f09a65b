"""``color_correct``: white balance, gamma, brightness, contrast and saturation, in that order.

Brightness, contrast and saturation are PIL's ``ImageEnhance`` (Brightness, Contrast, Color)
factors, so the seeds' ``ImageEnhance.Contrast(img).enhance(1.1)`` is ``contrast: 1.1`` and
gives the same pixels. Every default is neutral (1.0, ``white_balance: none``): the stage is an
exact copy unless a recipe asks for something; the recipes set the seeds' contrast 1.1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..artifacts import Image
from ..params import param
from ..registry import register
from ..stage import Stage

WHITE_BALANCE = ("none", "gray_world", "percentile")
#: per-channel white-balance gains are clipped to this range, so a near-empty channel cannot explode
MAX_GAIN = 4.0


@dataclass
class ColorCorrectParams:
    white_balance: str = param("none", choices=WHITE_BALANCE,
                               help="gray_world: equal channel means; percentile: each channel's "
                                    "wb_percentile-th value becomes 255")
    wb_percentile: float = param(99.0, gt=50.0, le=100.0, help="percentile white balance: the level taken as white")
    wb_strength: float = param(1.0, ge=0.0, le=1.0, help="blend of the white-balance gains with 1 (0 = off)")
    gamma: float = param(1.0, gt=0.0, le=10.0, help="out = in ** (1/gamma) on [0, 1]; > 1 brightens midtones")
    brightness: float = param(1.0, ge=0.0, le=5.0, help="PIL ImageEnhance.Brightness factor; 1 = unchanged")
    contrast: float = param(1.0, ge=0.0, le=5.0, help="PIL ImageEnhance.Contrast factor; the seeds use 1.1")
    saturation: float = param(1.0, ge=0.0, le=5.0, help="PIL ImageEnhance.Color factor; 0 = grayscale")


def white_balance_gains(rgb: np.ndarray, method: str, percentile: float = 99.0,
                        mask: np.ndarray | None = None) -> np.ndarray:
    """Per-channel gains (3,) float64 for (H, W, 3) uint8 ``rgb`` (``mask``: (H, W) bool of pixels
    to measure, e.g. the opaque ones).

    gray_world: ``mean(channel means) / channel mean`` (the scene is assumed gray on average).
    percentile: ``255 / percentile(channel, p)`` (white-patch with outliers ignored).
    Gains are clipped to [1/4, 4].
    """
    px = rgb.reshape(-1, 3).astype(np.float64)
    if mask is not None:
        px = px[mask.reshape(-1)]
    if px.size == 0:
        return np.ones(3)
    if method == "gray_world":
        means = px.mean(axis=0)
        gains = means.mean() / np.maximum(means, 1e-6)
    elif method == "percentile":
        whites = np.percentile(px, percentile, axis=0)
        gains = 255.0 / np.maximum(whites, 1e-6)
    else:
        return np.ones(3)
    return np.clip(gains, 1 / MAX_GAIN, MAX_GAIN)


def color_correct(pixels: np.ndarray, p: ColorCorrectParams) -> np.ndarray:
    """Apply ``p`` to (H, W, C) uint8 pixels (C = 3 or 4; alpha kept as is). Returns uint8."""
    from PIL import Image as PILImage
    from PIL import ImageEnhance

    rgb = pixels[..., :3]
    alpha = pixels[..., 3] if pixels.shape[2] == 4 else None
    out = rgb
    if p.white_balance != "none" and p.wb_strength > 0:
        gains = white_balance_gains(rgb, p.white_balance, p.wb_percentile, None if alpha is None else alpha > 0)
        gains = 1.0 + p.wb_strength * (gains - 1.0)
        out = np.clip(np.rint(out.astype(np.float32) * gains.astype(np.float32)), 0, 255).astype(np.uint8)
    if p.gamma != 1.0:
        lut = np.clip(np.rint(255.0 * (np.arange(256) / 255.0) ** (1.0 / p.gamma)), 0, 255).astype(np.uint8)
        out = lut[out]
    if (p.brightness, p.contrast, p.saturation) != (1.0, 1.0, 1.0):
        img = PILImage.fromarray(np.ascontiguousarray(out), "RGB")
        if p.brightness != 1.0:
            img = ImageEnhance.Brightness(img).enhance(p.brightness)
        if p.contrast != 1.0:
            img = ImageEnhance.Contrast(img).enhance(p.contrast)
        if p.saturation != 1.0:
            img = ImageEnhance.Color(img).enhance(p.saturation)
        out = np.asarray(img)
    out = np.array(out, dtype=np.uint8, copy=True)
    return np.concatenate([out, alpha[..., None]], axis=2) if alpha is not None else out


@register
class ColorCorrect(Stage):
    """(H, W, C) image in -> (H, W, C) uint8 out, C = 3 or 4 (alpha untouched).

    Float images are rounded to uint8 first. Order: white balance, gamma, brightness, contrast
    (PIL: blend with the mean luminance), saturation. Defaults change nothing.
    """

    kind = "color_correct"
    version = 1
    Params = ColorCorrectParams
    inputs = {"image": Image}
    output = Image

    def run(self, params: ColorCorrectParams, inputs, ctx) -> Image:
        img = inputs["image"]
        pixels = img.pixels if img.pixels.dtype == np.uint8 else np.asarray(img.to_pil())
        return Image(color_correct(pixels, params))
