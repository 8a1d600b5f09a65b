"""bench/compile_bench.py as a CPU smoke run (``--tiny``): its three phases run in fresh processes
and the JSON records each phase's runs. On the CPU plan ``runtime.compile`` compiles nothing, so this
checks the script (phases, sizes, the JSON), not compilation; start-up seconds come from the GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_three_phases_each_in_its_process_with_their_runs(tmp_path):
    out = tmp_path / "compile.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "compile_bench.py"), "--tiny", "--sizes", "64x64",
                           "--decode", "--dynamic", "true", "--cache", str(tmp_path / "cc"), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["compile_dynamic"] is True and data["decode"] is True
    phases = {p["mode"]: p for p in data["phases"]}
    assert list(phases) == ["eager", "cold", "warm-cache"] and not any("error" in p for p in data["phases"])
    # one size: cold runs it twice (the compile, then a warm process), the other phases once
    assert [r["size"] for r in phases["cold"]["runs"]] == ["64x64", "64x64"]
    assert [r["size"] for r in phases["eager"]["runs"]] == [r["size"] for r in phases["warm-cache"]["runs"]] == ["64x64"]
    assert all(r["denoise_s"] > 0 and r["decode_s"] > 0 for p in data["phases"] for r in p["runs"])
    assert all(p["process_s"] > 0 and p["wall_s"] >= p["process_s"] for p in data["phases"])
