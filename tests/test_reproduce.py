"""``python -m zitflow reproduce IMAGE``: a zitflow export re-made from its own metadata (with the
cache present nothing is generated again and the pixels are identical), A1111 'parameters' text
from other tools mapped onto a recipe, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from tests.conftest import REPO
from tests.test_recipes import run_recipe
from zitflow import metadata
from zitflow.commands import cmd_reproduce
from zitflow.reproduce import GENERATION_KINDS, ReproduceError, hydra_quote, plan, reproduce


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One low_vram run (512x512, the cheapest recipe) on the tiny model: (image, store)."""
    root = tmp_path_factory.mktemp("repro")
    _, _, written = run_recipe("low_vram", root / "run", root / "store")
    return Path(written["export"]), root / "store"


def test_reproduce_hits_every_generation_stage_and_gives_identical_pixels(made, tmp_path):
    image, store = made
    res = reproduce(image, tmp_path / "again", ["runtime=cpu", "runtime.progress=off", f"cache.dir={store}"])
    status = {r.name: (r.kind, r.status) for r in res.manifest.stages}
    assert [k for k, s in status.values() if k in GENERATION_KINDS] == list(GENERATION_KINDS)
    assert all(s == "hit" for _, s in status.values()), status  # export too: same job, same metadata
    out = Path(res.written["export"])
    assert out.read_bytes() == image.read_bytes()
    assert res.match == str(out) and res.plan.source == "zitflow" and res.plan.notes == []


def test_reproduce_without_the_cache_makes_the_same_pixels(made, tmp_path):
    image, _ = made
    res = reproduce(image, tmp_path / "fresh", ["runtime=cpu", "runtime.progress=off", f"cache.dir={tmp_path}/s"])
    assert {r.status for r in res.manifest.stages} == {"run"}
    assert np.array_equal(np.asarray(PILImage.open(res.written["export"])), np.asarray(PILImage.open(image)))


def test_recorded_stages_win_over_a_changed_or_missing_recipe(made, tmp_path):
    """The image carries its resolved stages: a record naming a recipe that is not on the search
    path still reproduces, and says so."""
    image, store = made
    rec = metadata.parse(image)["zitflow"]
    rec["recipe"] = "gone_recipe"
    moved = tmp_path / "moved.png"
    with PILImage.open(image) as im:
        info = PngInfo()
        info.add_text("parameters", metadata.parse(image)["parameters"])
        info.add_itxt("zitflow", json.dumps(rec), zip=True)
        im.save(moved, pnginfo=info)
    p = plan(moved, ["runtime=cpu", f"cache.dir={store}"])
    assert p.cfg.stages.size.width == 512 and "not on this search path" in p.notes[0]
    res = reproduce(moved, tmp_path / "out", ["runtime=cpu", "runtime.progress=off", f"cache.dir={store}"])
    assert {r.name: r.status for r in res.manifest.stages}["denoise"] == "hit"
    assert res.match is not None


def test_reproduce_refuses_overrides_that_change_the_image(made):
    image, _ = made
    with pytest.raises(ReproduceError, match=r"seed=3 would change it.*recipe=low_vram"):
        plan(image, ["seed=3"])


def test_a1111_parameters_map_onto_a_recipe_and_ignored_fields_are_named(tmp_path, capsys):
    text = ("a red kite over ${dunes}, it's windy\nNegative prompt: blurry, text\n"
            "Steps: 3, Sampler: DPM++ 2M Karras, CFG scale: 0, Seed: 1234, Size: 320x256, "
            "Model hash: 6ce0161689, Model: sdxl_base, Denoising strength: 0.4, Version: v1.7.0")
    src = tmp_path / "a1111.png"
    info = PngInfo()
    info.add_text("parameters", text)
    PILImage.fromarray(np.full((256, 320, 3), 128, np.uint8)).save(src, pnginfo=info)
    code = cmd_reproduce([str(src), "--recipe", "poster", "--out", str(tmp_path / "out"), "model=tiny",
                          "runtime=cpu", "runtime.progress=off", f"cache.dir={tmp_path}/store"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    assert "ignored: Sampler (" in out and "Model hash (" in out and "Model (zitflow runs Z-Image-Turbo)" in out
    assert "Denoising strength (no zitflow equivalent)" in out and "Version (" in out
    files = list((tmp_path / "out").glob("*.png"))
    assert len(files) == 1
    rec = metadata.parse(files[0])["zitflow"]
    assert rec["prompt"] == "a red kite over ${dunes}, it's windy" and rec["negative_prompt"] == "blurry, text"
    assert rec["seed"] == 1234 and rec["recipe"] == "poster"
    assert rec["config"]["stages"]["denoise"]["steps"] == 3
    assert rec["config"]["stages"]["denoise"]["guidance_scale"] == 0.0
    assert (rec["width"], rec["height"]) == (320, 256) and PILImage.open(files[0]).size == (320, 256)


def test_hydra_quote_round_trips_through_the_override_grammar():
    from zitflow.catalog import compose_recipe

    for text in ["a, b's \"x\"", "水墨竹林，晨雾", "cost: $5 ${not_a_key}", "back\\slash", "end\\", "q\\'s"]:
        assert compose_recipe("poster", [f"prompt={hydra_quote(text)}"]).prompt == text


@pytest.mark.parametrize("make, words", [
    (lambda d: d / "missing.png", "no such file"),
    (lambda d: (d / "notes.png").write_text("not an image") and d / "notes.png", "not an image zitflow can read"),
    (lambda d: PILImage.new("RGB", (8, 8)).save(d / "plain.png") or d / "plain.png", "no generation metadata"),
])
def test_bad_input_is_one_line_and_exit_2(make, words, tmp_path, capsys):
    path = make(tmp_path)
    assert cmd_reproduce([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("zitflow reproduce: ") and words in err, err


def test_command_line_exit_code(tmp_path):
    p = subprocess.run([sys.executable, "-m", "zitflow", "reproduce", str(tmp_path / "nope.png")], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().endswith("no such file") and "Traceback" not in p.stderr
