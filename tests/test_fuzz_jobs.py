"""Fuzzed whole jobs: the composed ``poster`` config with fuzzed top-level values, stage fields,
model and runtime settings goes through ``make_job`` (every check before anything runs) and,
when small enough, ``run_job`` on the tiny model. Every case ends in a valid run or one
ValueError whose message names the field, never an exception from deep inside torch or PIL.

``tests/test_fuzz_recipes.py`` fuzzes each stage kind's parameters through ``build_graph``;
this file fuzzes what a user types on the command line and what reaches the model and the export.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf, open_dict

from zitflow.app import CONFIG_DIR
from zitflow.job import make_job, run_job
from zitflow.progress import StageReporter

SMALL = {"stages.size.width": 64, "stages.size.height": 64, "stages.denoise.steps": 2}

WEIRD = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**12, max_value=10**12), st.sampled_from([0, -1, 1, 64, 100_000]),
    st.floats(allow_nan=True, allow_infinity=True), st.just(math.nan),
    st.text(max_size=30), st.just("x" * 10_000), st.just("🎨🖼️ 水墨竹林，晨雾"), st.just("مرحبا بالعالم שלום"),
    st.just("../../etc/passwd"), st.just("/abs/path.png"), st.just("C:\\Windows\\system32"), st.just("a\x00b\nc"),
    st.just("${oc.env:HOME}"), st.just("{prompt}/{seed}"),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)

FIELDS = ["prompt", "negative_prompt", "seed", "input",
          "stages.size.width", "stages.size.height", "stages.size.strategy", "stages.denoise.steps",
          "stages.denoise.guidance_scale", "stages.denoise.seed", "stages.sharpen.amount", "stages.sharpen.radius",
          "stages.color.contrast", "stages.export.name", "stages.export.format", "stages.export.quality",
          "stages.size.bogus_field", "stages.ghost.kind", "stages.encode.inputs",
          "model.dtype", "model.seed", "model.source", "runtime.vram_gb", "runtime.offload", "runtime.device",
          "runtime.bogus", "cache.dir"]


def base_config():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=["recipe=poster", "model=tiny", "runtime=cpu",
                                                        "runtime.progress=off", "prompt=fuzz"])


BASE = None


def fuzzed(changes: dict) -> tuple:
    global BASE
    if BASE is None:
        BASE = base_config()
    cfg = BASE.copy()
    with open_dict(cfg):
        for k, v in {**SMALL, **changes}.items():
            OmegaConf.update(cfg, k, v, force_add=True, merge=False)
    return cfg


def names_a_field(msg: str) -> bool:
    return any(w in msg for w in ("field '", "stage '", "config '", "recipe '")) and "Traceback" not in msg


def small_enough(changes: dict) -> bool:
    """Run the job only when its generation is still tiny (sizes and steps left small or rejected)."""
    for k in ("stages.size.width", "stages.size.height"):
        v = changes.get(k, 64)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 256:
            return False
    v = changes.get("stages.denoise.steps", 2)
    return not (isinstance(v, int) and v > 4)


def check(changes: dict, run: bool) -> str:
    """make_job (and run_job when ``run``): 'ok', or the clear error's message; anything else fails."""
    try:
        cfg = fuzzed(changes)
    except Exception as e:  # OmegaConf refusing the value itself is not zitflow's to judge
        return f"omegaconf: {type(e).__name__}"
    try:
        job = make_job(cfg, "poster", [f"{k}=..." for k in changes])
        if run and small_enough(changes):
            with tempfile.TemporaryDirectory() as out:
                run_job(job, Path(out), StageReporter("off"))
    except ValueError as e:
        assert names_a_field(str(e)), f"unclear error for {changes!r}: {e}"
        return str(e)
    return "ok"


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(FIELDS), WEIRD, min_size=1, max_size=3))
def test_fuzzed_jobs_plan_or_fail_naming_the_field(changes):
    check(changes, run=False)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(["prompt", "negative_prompt", "seed", "stages.export.name",
                                        "stages.sharpen.amount", "stages.color.contrast", "stages.export.format"]),
                       WEIRD, min_size=1, max_size=2))
def test_fuzzed_small_jobs_run_or_fail_naming_the_field(changes):
    check(changes, run=True)


@pytest.mark.parametrize("prompt", ["", "x" * 10_000, "🎨🖼️ 水墨竹林，晨雾 🐉", "مرحبا بالعالم — שלום עולם",
                                    "../../etc/passwd", "a\x00b\r\nc\t", "\u202eRTL override\u202c", "{seed}/{prompt}"])
def test_odd_prompts_make_a_valid_run(tmp_path, prompt):
    cfg = fuzzed({"prompt": prompt, "negative_prompt": prompt[::-1]})
    job = make_job(cfg, "poster", ["prompt=..."])
    manifest = run_job(job, tmp_path / "out", StageReporter("off"))
    files = list((tmp_path / "out").iterdir())
    assert {f.name for f in files} >= {"manifest.json", "config.json"}
    pngs = [f for f in files if f.suffix == ".png"]
    assert len(pngs) == 1 and pngs[0].parent == tmp_path / "out"
    assert manifest.count("run") == len(manifest.stages)
