"""bench/multi_gpu_sweep.py as a smoke run (CPU workers, tiny model): the real multirun command on
two Ray workers, one model per worker, each latent made once across them (the launcher starts a
seed's post variants only once its latent exists), read back from the manifests into the table's fields. The
GPU figures come from the same script on a multi-GPU host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytest.importorskip("ray", reason="ray is in the dev extra")


@pytest.mark.slow
def test_two_workers_make_each_latent_once(tmp_path):
    out = tmp_path / "multi.json"
    p = subprocess.run([sys.executable, str(Path(REPO) / "bench" / "multi_gpu_sweep.py"), "--cpu", "--gpus", "2",
                        "--seeds", "2", "--amounts", "0.4,0.8", "--override", "stages.size.width=256",
                        "--override", "stages.size.height=256", "--keep", str(tmp_path), "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["gpus"] == 2 and row["jobs"] == row["jobs_expected"] == 4
    assert row["denoise"] == {"run": 2, "hit": 2} and row["sharpen"] == {"run": 4}  # no "shared": nobody waited
    assert row["workers_used"] == 2 and sum(row["jobs_per_worker"]) == 4  # both generations started at once
    assert list(row["dit_builds_per_worker"].values()) == [1, 1]
    assert row["makespan_s"] <= row["wall_s"]
    assert "| 2 | 4 | 2 / 2 / 0 |" in p.stdout
    # Hydra numbers the jobs seed-major: (1, 0.4), (1, 0.8), (2, 0.4), (2, 0.8); the launcher
    # started 0 and 2 first, and 1 and 3 only once their seed's latent existed
    jobs = {int(f.parent.name): json.loads(f.read_text()) for f in (tmp_path / "sweep-2").glob("*/manifest.json")}
    when = {n: m["process"] for n, m in jobs.items()}
    assert sorted(when) == [0, 1, 2, 3]
    assert when[1]["started"] >= when[0]["finished"] and when[3]["started"] >= when[2]["finished"]
    status = {n: {s["name"]: s["status"] for s in m["stages"]} for n, m in jobs.items()}
    assert [status[n]["denoise"] for n in range(4)] == ["run", "hit", "run", "hit"]
