"""resolution: the seeds' sizes, native buckets, the max-pixels guard, the vram hook, explain()."""

import math
import sys
import types

import pytest

from zitflow.params import ParamError, build_params
from zitflow.recipe import RecipeError, build_graph
from zitflow.stage import RunContext
from zitflow.stages.resolution import (Resolution, ResolutionParams, decide, explain, native_buckets,
                                       native_size)

KEYS = {"gen_width", "gen_height", "target_width", "target_height", "fit", "strategy", "reason"}


def plan(**kw):
    params = build_params(ResolutionParams, kw)
    return Resolution().run(params, {}, RunContext()).value


def test_exact_snaps_the_seeds_4_3_size_to_64():
    d = plan(width=1152, height=864, strategy="exact")
    assert (d["gen_width"], d["gen_height"]) == (1152, 896)  # the seeds' table: 864 -> 896
    assert (d["target_width"], d["target_height"]) == (1152, 864)
    assert KEYS <= set(d) and "896" in d["reason"] and "64" in d["reason"]


def test_exact_vertical_cover_1080x1920():
    d = plan(width=1080, height=1920, strategy="exact", fit="cover")
    assert (d["gen_width"], d["gen_height"], d["fit"]) == (1088, 1920, "cover")
    assert d["strategy"] == "exact" and "1088x1920" in d["reason"]


def test_exact_on_grid_is_kept_and_needs_no_fit():
    d = plan(width=1024, height=1024, strategy="exact")
    assert (d["gen_width"], d["gen_height"]) == (1024, 1024) and "no fit needed" in d["reason"]


def test_exact_rounds_up_so_fit_never_enlarges():
    for w, h in [(1000, 700), (1025, 513), (64, 64), (1, 1), (1200, 1500)]:
        d = plan(width=w, height=h, strategy="exact")
        assert d["gen_width"] >= w and d["gen_height"] >= h
        assert d["gen_width"] - w < 64 and d["gen_height"] - h < 64
        assert d["gen_width"] % 64 == 0 and d["gen_height"] % 64 == 0


def test_grid_16_is_the_models_hard_rule():
    d = plan(width=1000, height=1000, strategy="exact", grid=16)
    assert (d["gen_width"], d["gen_height"]) == (1008, 1008)
    assert plan(width=1000, height=1000, strategy="exact")["gen_width"] == 1024


def test_square_is_1024_whatever_the_target():
    for w, h in [(1080, 1920), (1920, 1080), (800, 800), (1200, 1500)]:
        d = plan(width=w, height=h, strategy="square", fit="contain")
        assert (d["gen_width"], d["gen_height"], d["fit"]) == (1024, 1024, "contain")
        assert "seeds" in d["reason"]


def test_native_buckets_are_64_multiples_near_one_megapixel():
    buckets = native_buckets(1024 * 1024, 64)
    assert (1024, 1024) in buckets and (1344, 768) in buckets and (768, 1344) in buckets
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0
        assert abs(w * h / 2**20 - 1) <= 0.10 and 0.25 <= w / h <= 4


@pytest.mark.parametrize("target, expected", [
    ((1920, 1080), (1344, 768)), ((1080, 1920), (768, 1344)), ((1024, 1024), (1024, 1024)),
    ((1200, 1500), None), ((3000, 1000), None), ((1152, 864), None),
])
def test_native_picks_the_bucket_with_the_closest_aspect(target, expected):
    d = plan(width=target[0], height=target[1], strategy="native")
    gen = (d["gen_width"], d["gen_height"])
    if expected:
        assert gen == expected
    want = math.log(target[0] / target[1])
    best = min(abs(math.log(w / h) - want) for w, h in native_buckets(2**20, 64))
    assert abs(math.log(gen[0] / gen[1]) - want) <= best + 0.02  # within 2% of the best aspect
    assert gen[0] % 64 == 0 and gen[1] % 64 == 0 and abs(gen[0] * gen[1] / 2**20 - 1) <= 0.10


def test_native_clamps_extreme_aspects_with_a_note():
    d = decide(ResolutionParams(width=4000, height=100, strategy="native"))
    assert d.gen == (2048, 512) and any("1:4..4:1" in n for n in d.notes)


def test_max_pixels_error_names_the_field_the_size_and_what_fits():
    with pytest.raises(ParamError) as e:
        build_params(ResolutionParams, {"width": 4000, "height": 3000, "strategy": "exact"})
    msg = str(e.value)
    assert e.value.field == "max_pixels"
    assert "4032x3008" in msg and "max_pixels=4194304" in msg and "Sizes that fit" in msg
    assert "strategy=native -> 1216x896" in msg and "strategy=square -> 1024x1024" in msg
    assert "raise max_pixels" in msg


def test_max_pixels_error_through_a_recipe_names_recipe_and_stage():
    with pytest.raises(RecipeError) as e:
        build_graph("banner", {"size": {"kind": "resolution", "width": 1920, "height": 1080,
                                         "strategy": "exact", "max_pixels": 1500000}})
    msg = str(e.value)
    assert "recipe 'banner'" in msg and "stage 'size'" in msg and "field 'max_pixels'" in msg
    assert "1920x1088" in msg and "strategy=native -> 1344x768" in msg


def test_native_pixels_above_max_pixels_is_refused():
    with pytest.raises(ParamError) as e:
        build_params(ResolutionParams, {"native_pixels": 2**22, "max_pixels": 2**21})
    assert e.value.field == "native_pixels" and "at most max_pixels" in str(e.value)


@pytest.mark.parametrize("entry, words", [
    ({"grid": 48}, ["field 'grid'", "got 48", "one of 16, 32, 64"]),
    ({"strategy": "fill"}, ["field 'strategy'", "'fill'", "'square', 'native', 'exact'"]),
    ({"fit": "crop"}, ["field 'fit'", "'crop'", "'cover', 'contain', 'stretch'"]),
    ({"width": 0}, ["field 'width'", "got 0", "width > 0"]),
    ({"height": 99999}, ["field 'height'", "got 99999", "height <= 16384"]),
    ({"vram_gb": -1.0}, ["field 'vram_gb'", "got -1.0", "vram_gb > 0"]),
])
def test_param_errors_name_field_value_and_allowed(entry, words):
    with pytest.raises(RecipeError) as e:
        build_graph("r", {"size": {"kind": "resolution", **entry}})
    for w in words:
        assert w in str(e.value), str(e.value)


def test_vram_without_the_memory_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "zitflow.models.memory", None)  # as if absent
    with pytest.raises(ParamError) as e:
        build_params(ResolutionParams, {"vram_gb": 12.0})
    assert e.value.field == "vram_gb" and "zitflow.models.memory" in str(e.value) and "null" in str(e.value)


def test_vram_hook_steps_down_until_it_fits(monkeypatch):
    asked = []

    def fits(width, height, vram_gb):
        asked.append((width, height, vram_gb))
        return width * height <= 700_000

    monkeypatch.setitem(sys.modules, "zitflow.models.memory", types.SimpleNamespace(fits=fits))
    d = plan(width=1080, height=1920, strategy="native", vram_gb=8.0)
    gen = (d["gen_width"], d["gen_height"])
    assert asked[0] == (768, 1344, 8.0)
    assert gen[0] * gen[1] <= 700_000 and gen[0] % 64 == 0 and gen[1] % 64 == 0
    assert gen[0] / gen[1] < 0.7  # still portrait
    assert "would not fit in 8 GB" in d["reason"]
    small = plan(width=512, height=512, strategy="exact", vram_gb=8.0)  # 512x512 fits as it is
    assert (small["gen_width"], small["gen_height"]) == (512, 512) and "It fits in 8 GB" in small["reason"]


def test_vram_hook_that_never_fits_names_the_field(monkeypatch):
    monkeypatch.setitem(sys.modules, "zitflow.models.memory", types.SimpleNamespace(fits=lambda w, h, v: False))
    with pytest.raises(ParamError) as e:
        build_params(ResolutionParams, {"vram_gb": 1.0})
    assert e.value.field == "vram_gb" and "no size" in str(e.value)


def test_explain_shows_decision_fit_and_alternatives():
    text = explain(ResolutionParams(width=1080, height=1920, strategy="exact", fit="cover"))
    assert "target 1080x1920" in text and "generate  1088x1920" in text
    assert "crop 8 px of width" in text and "why       exact:" in text
    assert "strategy=native would generate 768x1344" in text  # the > 1.5 MP warning
    assert "native  768x1344" in text and "square  1024x1024" in text
    assert len(text.splitlines()) <= 25


def test_explain_with_keywords_and_errors_shows_them():
    text = explain(width=4000, height=3000, strategy="exact")
    assert "error" in text and "max_pixels" in text
    assert "pad 840 px of width" in explain(width=1920, height=1080, strategy="square", fit="contain")


def test_decision_is_pure():
    p = ResolutionParams(width=1200, height=1500, strategy="native")
    assert decide(p) == decide(p)
    assert native_size((1200, 1500), 2**20, 64) == decide(p).gen


def test_vram_hook_with_the_real_memory_planner():
    memory = pytest.importorskip("zitflow.models.memory")
    d = plan(width=1080, height=1920, strategy="native", vram_gb=80.0)
    assert (d["gen_width"], d["gen_height"]) == (768, 1344)
    answer = memory.fits(768, 1344, 80.0)
    assert answer and "It fits in 80 GB" in d["reason"]
    if isinstance(answer, str):
        assert f"memory plan '{answer}'" in d["reason"]
