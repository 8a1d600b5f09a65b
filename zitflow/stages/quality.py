"""``quality``: no-reference image measures and one score, as data (an objective for searches).

Measures of an (H, W, 3|4) image, on its RGB converted to 8-bit luminance (ITU-R 601):

* ``sharpness``  - variance of the 3x3 Laplacian (levels²; higher = more fine detail);
* ``noise``      - Immerkær's fast noise estimate sigma (levels; J. Immerkær, "Fast Noise
  Variance Estimation", CVIU 1996): the part of the Laplacian that flat areas also have;
* ``clipped``    - percent of pixels with a channel at 0 or 255 (crushed shadows, blown highlights);
* ``colorfulness`` - Hasler and Süsstrunk's M (2003), 0 for grey, ~100 for very vivid images.

``score = log2(sharpness) - noise_weight * log2(1 + noise) - clip_weight * clipped
+ color_weight * log2(1 + colorfulness)`` rewards detail and colour and charges for the noise and
clipping that over-sharpening and over-contrast bring, so a search over post parameters
(``hydra/sweeper=optuna``) finds an interior optimum rather than the largest amount. With the
default weights (2, 0.1, 2), over sharpen amount 0-3 x contrast 0.8-1.6 on skimage's photos the
best grid points were astronaut (1.5, 0.8), chelsea (1.0, 1.3), coffee (0, 1.0). It is a
heuristic with stated terms, not a perceptual model; the weights are parameters. Written here because the measures are a few lines of OpenCV each and the
established no-reference models (BRISQUE, NIQE) need trained data files or heavy packages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..artifacts import Data, Image
from ..params import param
from ..registry import register
from ..stage import Stage

#: Immerkær's noise mask: the difference of two Laplacians, insensitive to image structure.
NOISE_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)


@dataclass
class QualityParams:
    noise_weight: float = param(2.0, ge=0.0, le=10.0, help="score charge per doubling of (1 + noise sigma)")
    clip_weight: float = param(0.1, ge=0.0, le=10.0, help="score charge per percent of clipped pixels")
    color_weight: float = param(2.0, ge=0.0, le=10.0, help="score credit per doubling of (1 + colorfulness)")


def luminance(pixels: np.ndarray) -> np.ndarray:
    """(H, W) float64 luminance in 8-bit levels of (H, W, 3|4) uint8 or float32 [0, 1] pixels."""
    rgb = pixels[..., :3].astype(np.float64)
    if pixels.dtype != np.uint8:
        rgb = rgb * 255.0
    return rgb @ np.array([0.299, 0.587, 0.114])


def measures(pixels: np.ndarray) -> dict[str, float]:
    """The four measures (see the module doc) of (H, W, 3|4) pixels; images of at least 3x3."""
    if pixels.ndim != 3 or pixels.shape[0] < 3 or pixels.shape[1] < 3:
        raise ValueError(f"quality needs an (H, W, C) image of at least 3x3 pixels, got {pixels.shape}")
    y = luminance(pixels)
    lap = cv2.Laplacian(y, cv2.CV_64F, ksize=1)
    h, w = y.shape
    conv = cv2.filter2D(y, cv2.CV_64F, NOISE_MASK, borderType=cv2.BORDER_REFLECT_101)[1:-1, 1:-1]
    noise = math.sqrt(math.pi / 2) * np.abs(conv).sum() / (6.0 * (w - 2) * (h - 2))
    px8 = pixels[..., :3] if pixels.dtype == np.uint8 else np.clip(np.rint(pixels[..., :3] * 255), 0, 255)
    clipped = float(((px8 == 0) | (px8 == 255)).any(axis=2).mean() * 100.0)
    rgb = pixels[..., :3].astype(np.float64) * (255.0 if pixels.dtype != np.uint8 else 1.0)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    colorfulness = math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean())
    return {"sharpness": float(lap.var()), "noise": float(noise), "clipped": clipped,
            "colorfulness": float(colorfulness)}


def score(m: dict[str, float], noise_weight: float = 2.0, clip_weight: float = 0.1, color_weight: float = 2.0) -> float:
    """The module doc's score of :func:`measures` ``m`` (higher is better)."""
    return (math.log2(max(m["sharpness"], 1e-6)) - noise_weight * math.log2(1.0 + m["noise"])
            - clip_weight * m["clipped"] + color_weight * math.log2(1.0 + m["colorfulness"]))


@register
class Quality(Stage):
    """No-reference measures and a score of the input image, as :class:`Data` (a sink)."""

    kind = "quality"
    version = 1
    Params = QualityParams
    inputs = {"image": Image}
    output = Data

    def run(self, params: QualityParams, inputs, ctx) -> Data:
        m = measures(inputs["image"].pixels)
        return Data({**{k: round(v, 6) for k, v in m.items()},
                     "score": round(score(m, params.noise_weight, params.clip_weight, params.color_weight), 6)})
