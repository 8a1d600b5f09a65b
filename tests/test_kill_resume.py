"""kill -9 of a real run (tiny model, CPU) at chosen moments, then a re-run: finished stages are
reused, nothing partial is stored or exported, the output equals an uninterrupted run's.

The default suite lands one kill at each point of ``bench/kill_test.py`` (model load, inside
the denoise loop, an entry's files in ``tmp/``, its record before the rename, the export's
``.part`` file) plus one at a random time: 6 kills. ``ZITFLOW_KILL_TESTS=N`` runs N kills at
random points and times instead (the bench script prints the same checks as a table).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from tests.conftest import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("kill_test", Path(REPO) / "bench" / "kill_test.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("kill_test", mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_killed_runs_resume_to_the_same_output(tmp_path):
    kt = _bench()
    models = Path(os.environ["ZITFLOW_MODELS_DIR"])
    n = int(os.environ.get("ZITFLOW_KILL_TESTS", "0"))
    if n:
        summary = kt.run(n, seed=n, work=tmp_path, models=models, warm=False)
    else:
        summary = kt.run(0, seed=1, work=tmp_path, models=models, warm=False,
                         schedule=[["load", "cache_files", "export"], ["denoise", "cache_record", "random"]])
    kt.print_table(summary)
    assert summary["damaged_entries_after_kills"] == 0
    assert summary["partial_exports"] == 0
    assert summary["stored_stages_rerun"] == 0
    assert summary["final_status_errors"] == []
    assert summary["final_damaged_entries"] == 0
    assert summary["final_runs_identical"] == summary["trials"]
    if not n:  # every pause point was reached (a kill after everything is stored still counts)
        assert {k["how"] for t in summary["trial_rows"] for k in t["kills"]} >= {"load", "denoise", "cache_files"}
