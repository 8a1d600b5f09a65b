"""bench/speed_bench.py end to end on the tiny model (``--tiny``, CPU): every section runs, the
JSON holds what the table printed, zitflow's latents equal the stock pipeline's, and a section
cut by ``--max-seconds`` says so instead of vanishing. The GPU numbers come from the same script
on the device machine; nothing here times anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_bench(tmp_path, *args: str) -> dict:
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "speed_bench.py"), "--tiny", "--sizes", "128x128",
                           "--at", "128x128", "--repeats", "1", "--lean", "--out", str(out), *args],
                          cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_every_section_runs_and_is_recorded(tmp_path):
    data = run_bench(tmp_path, "--plans", "staged", "--sweep", "2", "--batch", "2", "--variants", "eager,compile+fp8",
                     "--sweep-variant", "best")
    row = data["rows"][0]
    assert row["size"] == "128x128" and row["parity_latents"]["equal"]  # zitflow's loop is the stock one
    assert [p["plan"] for p in data["plans"]] == ["resident", "staged"]
    assert all(p["same_prompt_total_s"] > 0 and p["vs_resident"] > 0 for p in data["plans"])
    eager, fp8 = data["variants"]
    assert eager["variant"] == "eager" and eager["deterministic"] and eager["latents_vs_eager_bf16"]["equal"]
    assert "compute capability" in fp8["error"]  # a variant that cannot run here is a result with its reason
    sweep = data["sweep"]
    assert sweep["variant"] == "eager" and sweep["seeds"] == 2 and sweep["zitflow_images_per_hour"] > 0
    assert data["batch"]["images"] == 2 and data["info"]["device"] == "cpu (tiny model)"


def test_sections_past_the_time_limit_say_they_were_skipped(tmp_path):
    data = run_bench(tmp_path, "--plans", "staged", "--sweep", "2", "--max-seconds", "0")
    assert data["rows"] == [{"size": "128x128", "skipped": "max-seconds reached"}]
    assert data["sweep"] == {"skipped": "--max-seconds 0.0 reached"}
    assert data["plans"] == {"skipped": "--max-seconds 0.0 reached"}
