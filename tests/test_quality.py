"""The `quality` stage's no-reference measures move the way their definitions say on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageEnhance
from skimage import data

from zitflow.artifacts import Image
from zitflow.stages.quality import Quality, QualityParams, measures, score
from zitflow.stages.sharpen import unsharp_mask


def contrast(px: np.ndarray, c: float) -> np.ndarray:
    return np.asarray(ImageEnhance.Contrast(PILImage.fromarray(px)).enhance(c))


@pytest.mark.parametrize("photo", ["astronaut", "chelsea", "coffee"])
def test_sharpening_raises_sharpness_and_noise_blur_lowers_them(photo):
    src = getattr(data, photo)()
    base, sharp = measures(src), measures(unsharp_mask(src, 1.5, 1.5, 0))
    blur = measures(cv2.GaussianBlur(src, (0, 0), 2.0))
    assert sharp["sharpness"] > 1.5 * base["sharpness"] > 1.5 * 2 * blur["sharpness"]
    assert sharp["noise"] > base["noise"] > blur["noise"]


def test_noise_estimate_tracks_added_gaussian_noise():
    flat = np.full((256, 256, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    for sigma in (2.0, 5.0, 10.0):
        noisy = np.clip(128 + rng.normal(0, sigma, flat.shape[:2])[..., None], 0, 255).round().astype(np.uint8)
        assert measures(np.repeat(noisy, 3, axis=2))["noise"] == pytest.approx(sigma, rel=0.1)
    assert measures(flat)["noise"] == 0.0


def test_contrast_clips_and_grey_has_no_colour():
    src = data.chelsea()
    assert measures(src)["clipped"] < 0.1 < measures(contrast(src, 1.8))["clipped"]
    grey = np.repeat(data.camera()[..., None], 3, axis=2)
    assert measures(grey)["colorfulness"] == 0.0 < measures(src)["colorfulness"]


def test_score_has_an_interior_optimum_on_a_photo():
    """Not the strongest sharpening: noise and clipping charges win past a point."""
    src = data.chelsea()
    grid = {(a, c): score(measures(contrast(unsharp_mask(src, a, 1.5, 0), c)))
            for a in (0.0, 1.0, 3.0) for c in (0.8, 1.3, 1.8)}
    best = max(grid, key=grid.get)
    assert best not in ((3.0, 1.8), (0.0, 0.8)), grid


def test_stage_returns_measures_and_weighted_score():
    px = data.coffee()
    out = Quality().run(QualityParams(noise_weight=0.0, clip_weight=0.0, color_weight=0.0), {"image": Image(px)}, None)
    m = measures(px)
    assert out.value["score"] == pytest.approx(np.log2(m["sharpness"]), abs=1e-5)
    assert set(out.value) == {"sharpness", "noise", "clipped", "colorfulness", "score"}
    f = Quality().run(QualityParams(), {"image": Image(px.astype(np.float32) / 255)}, None)
    assert f.value["sharpness"] == pytest.approx(out.value["sharpness"], rel=1e-6)
    with pytest.raises(ValueError, match="at least 3x3"):
        measures(np.zeros((2, 2, 3), np.uint8))
