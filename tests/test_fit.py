"""fit: exact sizes, the right crop region, padding with the pad colour, alpha kept."""

import numpy as np
import pytest
from PIL import Image as PILImage
from skimage import data

from zitflow.artifacts import Data, Image
from zitflow.executor import Executor
from zitflow.recipe import RecipeError, build_graph
from zitflow.stage import RunContext
from zitflow.stages.fit import Fit, FitParams, fit_geometry


def fit(pixels, size=None, **kw):
    inputs = {"image": Image(pixels)}
    if size is not None:
        inputs["size"] = Data(size)
    return Fit().run(FitParams(**kw), inputs, RunContext()).pixels


def lanczos(pixels, w, h):
    return np.asarray(PILImage.fromarray(pixels).resize((w, h), PILImage.LANCZOS)).astype(int)


def seeds_resize_and_pad(pixels, target_w, target_h, pad_color=(255, 255, 255)):
    """The seeds' post_process.py, verbatim but for taking an array."""
    img = PILImage.fromarray(pixels).convert("RGB")
    scale = min(target_w / img.width, target_h / img.height)
    new_w = int(img.width * scale)
    new_h = int(img.height * scale)
    resized = img.resize((new_w, new_h), PILImage.LANCZOS)
    canvas = PILImage.new("RGB", (target_w, target_h), pad_color)
    x = (target_w - new_w) // 2
    y = (target_h - new_h) // 2
    canvas.paste(resized, (x, y))
    return np.asarray(canvas)


def test_contain_matches_the_seeds_resize_and_pad():
    src = data.astronaut()  # 512x512 -> 1080x1920: 1080x1080 centred, 420 white rows above and below
    out = fit(src, width=1080, height=1920, mode="contain", pad_color="white")
    assert out.shape == (1920, 1080, 3)
    assert np.array_equal(out, seeds_resize_and_pad(src, 1080, 1920))
    assert (out[:420] == 255).all() and (out[1500:] == 255).all()


def test_contain_pads_with_the_pad_colour_and_focus_places_it():
    src = data.chelsea()  # 451x300, wider than 400x400
    out = fit(src, width=400, height=400, mode="contain", pad_color="#102030")
    rows = np.where((out != [16, 32, 48]).any(axis=(1, 2)))[0]
    top, bottom = rows.min(), rows.max()
    assert bottom - top + 1 == round(300 * 400 / 451)  # 266 rows of cat
    assert top == (400 - 266) // 2 and (out[:top] == [16, 32, 48]).all() and (out[bottom + 1:] == [16, 32, 48]).all()
    top_focus = fit(src, width=400, height=400, mode="contain", pad_color="black", focus="top")
    assert top_focus[:266].mean() > 50 and (top_focus[266:] == 0).all()


def test_cover_focus_top_keeps_the_top_rows():
    src = data.astronaut()  # square source, wide target: cover crops rows
    top = fit(src, width=512, height=256, mode="cover", focus="top")
    bottom = fit(src, width=512, height=256, mode="cover", focus="bottom")
    assert np.array_equal(top, src[:256]) and np.array_equal(bottom, src[256:])  # scale 1: a pure crop
    center = fit(src, width=512, height=256, mode="cover")
    assert np.array_equal(center, src[128:384])


def test_cover_scaled_matches_the_source_scaled_then_cropped():
    src = data.astronaut()
    out = fit(src, width=256, height=128, mode="cover", focus="top").astype(int)
    scaled = lanczos(src, 256, 256)
    assert out.shape == (128, 256, 3)
    assert np.abs(out - scaled[:128]).mean() < 2.0  # the top half of the scaled source
    assert np.abs(out - scaled[128:]).mean() > 20.0  # and clearly not the bottom half


def test_cover_fractional_focus_and_left_right():
    src = data.coffee()  # 600x400 -> 400x400 keeps a 400-wide window
    assert np.array_equal(fit(src, width=400, height=400, mode="cover", focus="left"), src[:, :400])
    assert np.array_equal(fit(src, width=400, height=400, mode="cover", focus="right"), src[:, 200:])
    assert np.array_equal(fit(src, width=400, height=400, mode="cover", focus="0.25,0.5"), src[:, 50:450])
    assert np.array_equal(fit(src, width=400, height=400, mode="cover", focus="0,0"), src[:, :400])


def test_seeds_vertical_cover_from_exact_plan_crops_four_pixels_each_side():
    gen = np.ascontiguousarray(np.concatenate([data.astronaut()] * 4, axis=0)[:1920, :].repeat(3, axis=1)[:, :1088])
    plan = {"target_width": 1080, "target_height": 1920, "fit": "cover"}
    out = fit(gen, size=plan)
    assert out.shape == (1920, 1080, 3) and np.array_equal(out, gen[:, 4:1084])
    odd = np.ascontiguousarray(np.pad(gen, ((0, 0), (0, 1), (0, 0)), mode="edge"))  # 1089 wide: 4.5 px a side
    assert np.array_equal(fit(odd, size=plan), odd[:, 4:1084])  # whole pixels, no half-pixel resampling blur


def test_stretch_and_exact_sizes_for_awkward_targets():
    src = data.chelsea()
    for w, h in [(1, 1), (1, 1000), (1000, 1), (451, 300), (333, 777), (1088, 1920)]:
        for mode in ("cover", "contain", "stretch"):
            out = fit(src, width=w, height=h, mode=mode)
            assert out.shape == (h, w, 3) and out.dtype == np.uint8, (w, h, mode)
    assert np.array_equal(fit(src, width=451, height=300, mode="cover"), src)  # same size: untouched
    st = fit(src, width=200, height=300, mode="stretch").astype(int)
    assert np.abs(st - lanczos(src, 200, 300)).max() <= 1


def test_alpha_is_preserved():
    rgb = data.astronaut()
    alpha = np.zeros((512, 512), np.uint8)
    alpha[:, 256:] = 255
    rgba = np.dstack([rgb, alpha])
    out = fit(rgba, width=256, height=128, mode="cover")
    assert out.shape == (128, 256, 4)
    assert (out[:, :120, 3] == 0).all() and (out[:, 136:, 3] == 255).all()
    padded = fit(rgba, width=300, height=200, mode="contain", pad_color="white")
    assert padded.shape == (200, 300, 4) and (padded[:, :40, 3] == 255).all()  # opaque white padding


def test_transparent_pad_colour_gives_rgba():
    out = fit(data.chelsea(), width=500, height=500, mode="contain", pad_color="#00000000")
    assert out.shape == (500, 500, 4)
    assert (out[0, :, 3] == 0).all() and (out[250, :, 3] == 255).all()


def test_from_plan_takes_target_and_mode_from_size_input():
    plan = {"target_width": 300, "target_height": 300, "fit": "contain"}
    out = fit(data.chelsea(), size=plan, pad_color="white")
    assert out.shape == (300, 300, 3) and (out[0] == 255).all()
    override = fit(data.chelsea(), size=plan, mode="cover")
    assert (override[0] != 255).any()


def test_missing_size_input_is_a_clear_error():
    with pytest.raises(ValueError) as e:
        fit(data.chelsea())
    assert "input 'size' is not connected" in str(e.value) and "cover, contain, stretch" in str(e.value)
    with pytest.raises(ValueError) as e:
        fit(data.chelsea(), size={"target_width": 10, "target_height": 10, "fit": "zoom"})
    assert "'zoom'" in str(e.value)


def test_recipe_resolution_to_fit_through_the_executor(tmp_path, store):
    path = tmp_path / "cat.png"
    PILImage.fromarray(data.chelsea()).save(path)
    g = build_graph("retouch", {
        "load": {"kind": "load_image", "path": str(path)},
        "size": {"kind": "resolution", "width": 1080, "height": 1920, "strategy": "exact", "fit": "contain"},
        "fit": {"kind": "fit", "inputs": {"image": "load", "size": "size"}},
    })
    out = Executor(g, store, RunContext()).execute().outputs["fit"].pixels
    assert out.shape == (1920, 1080, 3) and (out[:100] == 255).all()


def test_geometry_describes_crop_and_pad():
    assert "crop 8 px of width" in fit_geometry((1088, 1920), (1080, 1920), "cover").describe((1088, 1920))
    assert "pad 840 px of width" in fit_geometry((1024, 1024), (1920, 1080), "contain").describe((1024, 1024))


@pytest.mark.parametrize("entry, words", [
    ({"focus": "middle"}, ["field 'focus'", "'middle'", "center", "'x,y'"]),
    ({"focus": "1.5,0"}, ["field 'focus'", "'1.5,0'", "fractions in [0, 1]"]),
    ({"pad_color": "blurple"}, ["field 'pad_color'", "'blurple'", "'white'"]),
    ({"mode": "fill"}, ["field 'mode'", "'fill'", "'from_plan', 'cover', 'contain', 'stretch'"]),
    ({"resample": "cubic"}, ["field 'resample'", "'cubic'", "'lanczos'"]),
    ({"width": 100}, ["field 'height'", "width=100, height=0", "both > 0"]),
    ({"width": -3, "height": 10}, ["field 'width'", "got -3", "width >= 0"]),
])
def test_param_errors_name_field_value_and_allowed(entry, words):
    with pytest.raises(RecipeError) as e:
        build_graph("r", {"src": {"kind": "t_source"}, "fit": {"kind": "fit", "input": "src", **entry}})
    msg = str(e.value)
    assert "stage 'fit'" in msg
    for w in words:
        assert w in msg, msg
