"""sharpen: more high-frequency energy, the same mean; the seeds' 3x3 kernel reproduced exactly."""

import cv2
import numpy as np
import pytest
from skimage import data

from zitflow.artifacts import Image
from zitflow.recipe import RecipeError, build_graph
from zitflow.stage import RunContext
from zitflow.stages.sharpen import Sharpen, SharpenParams


def sharpen(pixels, **kw):
    return Sharpen().run(SharpenParams(**kw), {"image": Image(pixels)}, RunContext()).pixels


def hf_energy(pixels):
    """Variance of the Laplacian of the luminance: a standard no-reference sharpness measure."""
    gray = cv2.cvtColor(pixels[..., :3], cv2.COLOR_RGB2GRAY).astype(np.float64)
    return cv2.Laplacian(gray, cv2.CV_64F).var()


def soft(pixels):
    """A photo softened the way an upscaled or slightly blurry generation is."""
    return cv2.GaussianBlur(pixels, (0, 0), 1.2)


@pytest.mark.parametrize("photo", [data.astronaut, data.chelsea, data.coffee])
def test_unsharp_raises_high_frequency_energy_and_keeps_the_mean(photo):
    src = soft(photo())
    out = sharpen(src, amount=0.6, radius=1.5)
    assert out.shape == src.shape and out.dtype == np.uint8
    assert hf_energy(out) > 1.5 * hf_energy(src)
    assert abs(out.mean() - src.mean()) < 1.0
    assert np.abs(out.astype(int) - src).mean() > 1.0  # it did something


def test_more_amount_more_energy():
    src = soft(data.astronaut())
    energies = [hf_energy(sharpen(src, amount=a)) for a in (0.3, 0.6, 1.2, 2.0)]
    assert energies == sorted(energies) and energies[0] > hf_energy(src)


def test_amount_zero_is_identity():
    src = data.chelsea()
    assert np.array_equal(sharpen(src, amount=0.0), src)


def test_threshold_leaves_flat_areas_alone():
    src = soft(data.coffee())
    changed = lambda out: (out != src).any(axis=2).mean()  # noqa: E731
    assert changed(sharpen(src, amount=1.0, threshold=8)) < 0.5 * changed(sharpen(src, amount=1.0))


def test_kernel3x3_is_the_seeds_filter2d():
    src = data.astronaut()
    kernel = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
    seeds = cv2.filter2D(src, -1, kernel)  # the seeds' own line
    out = sharpen(src, preset="kernel3x3")
    assert np.array_equal(out, seeds)
    assert hf_energy(out) > 2 * hf_energy(src)
    assert abs(out.astype(float).mean() - src.mean()) < 2.0


def test_alpha_is_untouched():
    rgb = soft(data.astronaut())
    alpha = np.tile(np.arange(512, dtype=np.uint16).astype(np.uint8), (512, 1))
    out = sharpen(np.dstack([rgb, alpha]), amount=1.0)
    assert out.shape == (512, 512, 4) and np.array_equal(out[..., 3], alpha)
    assert np.array_equal(sharpen(np.dstack([rgb, alpha]), preset="kernel3x3")[..., 3], alpha)


def test_float_input_is_rounded_to_uint8():
    src = soft(data.chelsea())
    out = sharpen(src.astype(np.float32) / 255.0, amount=0.6)
    assert out.dtype == np.uint8 and np.array_equal(out, sharpen(src, amount=0.6))


@pytest.mark.parametrize("entry, words", [
    ({"amount": 6.0}, ["field 'amount'", "got 6.0", "amount <= 5.0"]),
    ({"radius": 0.0}, ["field 'radius'", "got 0.0", "radius > 0.0"]),
    ({"threshold": 300}, ["field 'threshold'", "got 300", "threshold <= 255"]),
    ({"preset": "laplace"}, ["field 'preset'", "'laplace'", "'unsharp', 'kernel3x3'"]),
])
def test_param_errors_name_field_value_and_allowed(entry, words):
    with pytest.raises(RecipeError) as e:
        build_graph("r", {"src": {"kind": "t_source"}, "sharpen": {"kind": "sharpen", "input": "src", **entry}})
    msg = str(e.value)
    assert "stage 'sharpen'" in msg
    for w in words:
        assert w in msg, msg
