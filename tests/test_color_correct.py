"""color_correct: the seeds' contrast 1.1, white balance, gamma, brightness, saturation on real photos."""

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageEnhance
from skimage import data

from zitflow.artifacts import Image
from zitflow.recipe import RecipeError, build_graph
from zitflow.stage import RunContext
from zitflow.stages.color_correct import ColorCorrect, ColorCorrectParams


def cc(pixels, **kw):
    return ColorCorrect().run(ColorCorrectParams(**kw), {"image": Image(pixels)}, RunContext()).pixels


def luma(pixels):
    return np.asarray(PILImage.fromarray(np.ascontiguousarray(pixels[..., :3])).convert("L"), dtype=np.float64)


def cast(pixels, gains=(1.25, 1.0, 0.75)):
    """A colour cast: warm light on a neutral scene."""
    return np.clip(pixels.astype(np.float64) * gains, 0, 255).astype(np.uint8)


def test_defaults_change_nothing():
    for photo in (data.astronaut(), data.chelsea()):
        out = cc(photo)
        assert np.array_equal(out, photo) and out is not photo


@pytest.mark.parametrize("photo", [data.astronaut, data.chelsea, data.coffee])
def test_contrast_1_1_raises_spread_by_about_ten_percent(photo):
    """The seeds' ImageEnhance.Contrast(img).enhance(1.1): the standard deviation grows ~10%."""
    src = photo()
    out = cc(src, contrast=1.1)
    ratio = luma(out).std() / luma(src).std()
    assert 1.05 < ratio < 1.105, ratio  # +10%, a little less where dark or bright pixels clip
    inside = (out > 0) & (out < 255)  # where nothing clipped, every level moves 1.1x away from the mean
    slope = np.polyfit(src[inside].astype(float), out[inside].astype(float), 1)[0]
    assert abs(slope - 1.1) < 0.01, slope
    seeds = np.asarray(ImageEnhance.Contrast(PILImage.fromarray(src)).enhance(1.1))  # the seeds' line
    assert np.array_equal(out, seeds)


def test_brightness_scales_levels():
    src = data.chelsea()
    out = cc(src, brightness=1.2)
    assert 1.15 < out.mean() / src.mean() < 1.21
    assert cc(src, brightness=0.0).max() == 0


def test_saturation_zero_is_gray_and_more_is_more_colourful():
    src = data.coffee()
    gray = cc(src, saturation=0.0).astype(int)
    assert np.abs(gray[..., 0] - gray[..., 1]).max() <= 1 and np.abs(gray[..., 1] - gray[..., 2]).max() <= 1
    chroma = lambda p: (p.max(axis=2).astype(int) - p.min(axis=2)).mean()  # noqa: E731
    assert chroma(cc(src, saturation=1.3)) > 1.2 * chroma(src)


def test_gamma_above_one_brightens_midtones_and_keeps_black_and_white():
    src = data.astronaut()
    bright, dark = cc(src, gamma=2.0), cc(src, gamma=0.5)
    assert bright.mean() > src.mean() + 20 and dark.mean() < src.mean() - 20
    ramp = np.tile(np.arange(256, dtype=np.uint8), (4, 1))[..., None].repeat(3, axis=2)
    out = cc(ramp, gamma=2.2)[0, :, 0].astype(int)
    assert out[0] == 0 and out[255] == 255 and (np.diff(out) >= 0).all()
    assert out[128] == round(255 * (128 / 255) ** (1 / 2.2))


@pytest.mark.parametrize("photo", [data.astronaut, data.coffee, data.chelsea])
def test_gray_world_brings_channel_means_together(photo):
    src = cast(photo())
    spread = lambda p: np.ptp(p.reshape(-1, 3).mean(axis=0))  # noqa: E731
    out = cc(src, white_balance="gray_world")
    assert spread(src) > 20
    assert spread(out) < 0.1 * spread(src)  # not zero: levels clipped at 255 by the cast stay clipped
    half = cc(src, white_balance="gray_world", wb_strength=0.5)
    assert spread(out) < spread(half) < spread(src)
    assert np.array_equal(cc(src, white_balance="gray_world", wb_strength=0.0), src)


def test_percentile_white_balance_maps_each_channel_percentile_to_white():
    src = cast(data.astronaut(), (0.8, 0.9, 0.7))
    out = cc(src, white_balance="percentile", wb_percentile=99.0)
    p99 = np.percentile(out.reshape(-1, 3), 99, axis=0)
    assert (p99 >= 250).all(), p99
    assert np.ptp(p99) < np.ptp(np.percentile(src.reshape(-1, 3), 99, axis=0))


def test_white_balance_ignores_transparent_pixels_and_keeps_alpha():
    src = cast(data.chelsea())
    alpha = np.full(src.shape[:2], 255, np.uint8)
    alpha[:, :100] = 0
    rgba = np.dstack([src, alpha])
    rgba[:, :100, :3] = [0, 0, 255]  # hidden blue must not drive the gains
    out = cc(rgba, white_balance="gray_world", contrast=1.1)
    assert out.shape == rgba.shape and np.array_equal(out[..., 3], alpha)
    means = out[:, 100:, :3].reshape(-1, 3).mean(axis=0)
    assert np.ptp(means) < 6.0


def test_float_input_and_order():
    src = data.coffee()
    a = cc(src.astype(np.float32) / 255.0, contrast=1.1, gamma=1.2)
    assert a.dtype == np.uint8 and np.array_equal(a, cc(src, contrast=1.1, gamma=1.2))


@pytest.mark.parametrize("entry, words", [
    ({"contrast": -1.0}, ["field 'contrast'", "got -1.0", "contrast >= 0.0"]),
    ({"gamma": 0.0}, ["field 'gamma'", "got 0.0", "gamma > 0.0"]),
    ({"white_balance": "auto"}, ["field 'white_balance'", "'auto'", "'none', 'gray_world', 'percentile'"]),
    ({"wb_percentile": 40.0}, ["field 'wb_percentile'", "got 40.0", "wb_percentile > 50.0"]),
    ({"wb_strength": 2.0}, ["field 'wb_strength'", "got 2.0", "wb_strength <= 1.0"]),
    ({"saturation": "vivid"}, ["field 'saturation'", "vivid", "float"]),
])
def test_param_errors_name_field_value_and_allowed(entry, words):
    with pytest.raises(RecipeError) as e:
        build_graph("r", {"src": {"kind": "t_source"}, "color": {"kind": "color_correct", "input": "src", **entry}})
    msg = str(e.value)
    assert "stage 'color'" in msg
    for w in words:
        assert w in msg, msg
