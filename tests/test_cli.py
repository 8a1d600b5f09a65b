"""The Hydra app end to end in separate processes: cache across processes, errors, packs, sweeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACK_RECIPE = """\
# @package _global_
schema_version: 1
description: "test pack: gray square plus an offset"
level: 10
stages:
  src:
    _target_: tests.conftest.TestSource
    value: ${level}
  add:
    _target_: tests.conftest.TestAdd
    input: src
    amount: 5
  mean:
    _target_: tests.conftest.TestMean
    input: add
"""


def zitflow(*args: str, cache: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    e = dict(os.environ, ZITFLOW_CACHE_DIR=str(cache), HYDRA_FULL_ERROR="0", **(env or {}))
    p = subprocess.run([sys.executable, "-m", "zitflow", *args], cwd=REPO, env=e,
                       capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


@pytest.fixture
def pack(tmp_path):
    (tmp_path / "pack" / "recipe").mkdir(parents=True)
    (tmp_path / "pack" / "recipe" / "tpack.yaml").write_text(PACK_RECIPE)
    return tmp_path / "pack"


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def statuses(m: dict) -> dict:
    return {s["name"]: s["status"] for s in m["stages"]}


def test_second_process_does_no_stage_work(tmp_path, pack):
    common = (f"hydra.searchpath=[file://{pack}]", "recipe=tpack", "allow_modules=[tests]", "model=tiny")
    zitflow(*common, f"hydra.run.dir={tmp_path}/r1", cache=tmp_path / "c")
    zitflow(*common, f"hydra.run.dir={tmp_path}/r2", cache=tmp_path / "c")
    assert set(statuses(manifest(tmp_path / "r1")).values()) == {"run"}
    assert set(statuses(manifest(tmp_path / "r2")).values()) == {"hit"}
    zitflow(*common, "stages.add.amount=6", f"hydra.run.dir={tmp_path}/r3", cache=tmp_path / "c")
    assert statuses(manifest(tmp_path / "r3")) == {"src": "hit", "add": "run", "mean": "run"}
    cfg = json.loads((tmp_path / "r3" / "config.json").read_text())
    assert cfg["stages"]["add"]["amount"] == 6 and cfg["stages"]["src"]["value"] == 10


def test_bad_field_is_one_clear_message(tmp_path, pack):
    p = zitflow(f"hydra.searchpath=[file://{pack}]", "recipe=tpack", "allow_modules=[tests]", "model=tiny",
                "stages.add.amount=999", f"hydra.run.dir={tmp_path}/r", cache=tmp_path / "c", check=False)
    assert p.returncode == 2
    assert "recipe 'tpack', stage 'add', field 'amount'" in p.stderr and "got 999" in p.stderr
    assert "Traceback" not in p.stderr


def test_recipe_cannot_allow_its_own_modules(tmp_path, pack):
    text = PACK_RECIPE + "allow_modules: [tests]\n"
    (pack / "recipe" / "tpack.yaml").write_text(text)
    p = zitflow(f"hydra.searchpath=[file://{pack}]", "recipe=tpack", "model=tiny",
                f"hydra.run.dir={tmp_path}/r", cache=tmp_path / "c", check=False)
    assert p.returncode == 2 and "not allowed" in p.stderr
    assert "ignoring allow_modules" in p.stderr + p.stdout


def test_pack_from_environment_and_multirun(tmp_path, pack):
    p = zitflow("-m", "recipe=tpack", "allow_modules=[tests]", "model=tiny", "level=1,2",
                "stages.add.amount=1,3", f"hydra.sweep.dir={tmp_path}/sweep",
                cache=tmp_path / "c", env={"ZITFLOW_RECIPE_PATH": str(pack)})
    jobs = sorted((tmp_path / "sweep").glob("*/manifest.json"))
    assert len(jobs) == 4, p.stdout + p.stderr
    sources_run = sum(statuses(json.loads(j.read_text()))["src"] == "run" for j in jobs)
    assert sources_run == 2  # two levels -> two sources; the amount sweep reuses them


def test_cfg_job_and_help(tmp_path, pack):
    p = zitflow(f"hydra.searchpath=[file://{pack}]", "recipe=tpack", "model=tiny", "--cfg", "job", cache=tmp_path)
    assert "stages:" in p.stdout and "TestSource" in p.stdout
    p = zitflow("--help", cache=tmp_path)
    assert "zitflow" in p.stdout and "recipe=NAME" in p.stdout and "recipe:" in p.stdout


def test_kinds_lists_parameters(tmp_path):
    p = zitflow("kinds", "sharpen", cache=tmp_path)
    assert "sharpen v1" in p.stdout and "amount" in p.stdout and "kernel3x3" in p.stdout


def test_fast_runtime_on_a_cpu_is_one_line_before_anything_loads(tmp_path):
    p = zitflow("recipe=poster", "model=tiny", "runtime=fast", "runtime.device=cpu", "prompt=a kite",
                f"hydra.run.dir={tmp_path}/r", cache=tmp_path / "c", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "zitflow: runtime.precision=fp8: it needs a CUDA GPU of compute capability 8.9+" in p.stderr
    assert not (tmp_path / "c" / "objects").exists()  # refused before the encode stage ran
    p = zitflow("recipe=poster", "model=tiny", "runtime=fast", "--cfg", "job", "--package", "runtime",
                cache=tmp_path / "c")
    assert "compile: true" in p.stdout and "precision: fp8" in p.stdout


def test_fast_runtime_does_not_stop_a_recipe_without_the_dit(tmp_path):
    p = zitflow("recipe=retouch", "runtime=fast", "runtime.device=cpu", "runtime.progress=off",
                f"hydra.run.dir={tmp_path}/r", cache=tmp_path / "c")
    assert any((tmp_path / "r").glob("*.png")), p.stdout + p.stderr
