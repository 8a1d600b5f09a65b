"""bench/speed_bench.py end to end on the tiny model (``--tiny``, CPU): every section runs, the
JSON holds what the table printed, zitflow's latents equal the stock pipeline's, and a section
cut by ``--max-seconds`` says so instead of vanishing, and a run killed midway leaves the sections
it finished in its JSON. The GPU numbers come from the same script
on the device machine; nothing here times anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def bench_command(out: Path, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "bench" / "speed_bench.py"), "--tiny", "--sizes", "128x128",
            "--at", "128x128", "--repeats", "1", "--lean", "--out", str(out), *args]


def run_bench(tmp_path, *args: str) -> dict:
    out = tmp_path / "speed.json"
    proc = subprocess.run(bench_command(out, *args), cwd=REPO, env=dict(os.environ), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["info"]["complete"] is True
    return data


@pytest.mark.slow
def test_every_section_runs_and_is_recorded(tmp_path):
    data = run_bench(tmp_path, "--plans", "staged", "--sweep", "2", "--batch", "2", "--variants", "eager,compile+fp8",
                     "--sweep-variant", "best,compile+fp8")
    row = data["rows"][0]
    assert row["size"] == "128x128" and row["parity_latents"]["equal"]  # zitflow's loop is the stock one
    assert [p["plan"] for p in data["plans"]] == ["resident", "staged"]
    assert all(p["same_prompt_total_s"] > 0 and p["vs_resident"] > 0 for p in data["plans"])
    eager, fp8 = data["variants"]
    assert eager["variant"] == "eager" and eager["deterministic"] and eager["latents_vs_eager_bf16"]["equal"]
    assert "compute capability" in fp8["error"]  # a variant that cannot run here is a result with its reason
    sweep = data["sweep"]
    assert sweep["variant"] == "eager" and sweep["seeds"] == 2 and sweep["zitflow_images_per_hour"] > 0
    assert [r["variant"] for r in sweep["zitflow"]] == ["eager", "compile+fp8"]  # 'best' named, then in order
    assert "compute capability" in sweep["zitflow"][1]["error"]
    assert data["batch"]["images"] == 2 and data["info"]["device"] == "cpu (tiny model)"


def test_sections_past_the_time_limit_say_they_were_skipped(tmp_path):
    data = run_bench(tmp_path, "--plans", "staged", "--sweep", "2", "--max-seconds", "0")
    assert data["rows"] == [{"size": "128x128", "skipped": "max-seconds reached"}]
    assert data["sweep"] == {"skipped": "--max-seconds 0.0 reached"}
    assert data["plans"] == {"skipped": "--max-seconds 0.0 reached"}


@pytest.mark.slow
def test_a_run_killed_midway_keeps_the_sections_it_finished(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.Popen(bench_command(out, "--sweep", "400"), cwd=REPO, env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        data, deadline = None, time.monotonic() + 300
        while data is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                data = json.loads(out.read_text())
            except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or mid-write
                data = None
        assert data is not None, "the size row was never written"
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode != 0  # killed during the 400-call stock sweep, not finished
    data = json.loads(out.read_text())
    assert data["info"]["complete"] is False
    assert data["rows"][0]["size"] == "128x128" and data["rows"][0]["parity_latents"]["equal"]


def test_a_bench_result_file_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    from results_json import write_json

    out = tmp_path / "speed.json"
    write_json(out, {"rows": [1, "宽"]})
    assert json.loads(out.read_text()) == {"rows": [1, "宽"]}
    with pytest.raises(TypeError):
        write_json(out, {"rows": [object()]})  # cannot be written: the last whole file stays
    assert json.loads(out.read_text()) == {"rows": [1, "宽"]} and os.listdir(tmp_path) == ["speed.json"]
