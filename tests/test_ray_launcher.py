"""hydra/launcher=ray: jobs on long-lived Ray workers (a local Ray started by the test) share the
cache and keep their model pools across jobs."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from tests.test_cli import zitflow
from tests.test_sweep import SWEEP_RECIPE

pytest.importorskip("ray", reason="ray is in the dev extra")


def test_sweep_on_two_ray_workers_loads_each_model_once_per_worker(tmp_path):
    (tmp_path / "pack" / "recipe").mkdir(parents=True)
    (tmp_path / "pack" / "recipe" / "tsweep.yaml").write_text(SWEEP_RECIPE)
    p = zitflow("-m", "recipe=tsweep", "model=tiny", "runtime=cpu", "prompt=a kite", "seed=1,2,3,4",
                "hydra/launcher=ray", "hydra.launcher.workers=2", "+hydra.launcher.init.num_cpus=2",
                "+hydra.launcher.init.include_dashboard=false", f"hydra.sweep.dir={tmp_path}/out",
                cache=tmp_path / "cache",
                env={"ZITFLOW_RECIPE_PATH": str(tmp_path / "pack"), "ZITFLOW_MODELS_DIR": str(tmp_path / "models"),
                     "RAY_DEDUP_LOGS": "0"})
    ms = [json.loads(f.read_text()) for f in sorted((tmp_path / "out").glob("*/manifest.json"))]
    assert len(ms) == 4, p.stdout + p.stderr
    assert sum(1 for m in ms for s in m["stages"] if s["name"] == "denoise" and s["status"] == "run") == 4
    assert sum(1 for m in ms for s in m["stages"] if s["name"] == "encode" and s["status"] == "run") == 1
    by_pid = defaultdict(list)
    for m in ms:
        by_pid[m["process"]["pid"]].append(m["process"]["model_loads"])
    assert 1 <= len(by_pid) <= 2                       # the jobs ran in the workers, not in the driver
    assert max(len(v) for v in by_pid.values()) >= 2   # some worker ran several jobs ...
    for loads in by_pid.values():                      # ... and loaded the DiT once for all of them
        assert max(x.get("transformer", 0) for x in loads) == 1
    assert (tmp_path / "out" / "index.html").exists()  # the summary callback ran in the driver


def test_worker_plan():
    from hydra_plugins.zitflow_ray_launcher.launcher import plan_workers

    assert plan_workers(16, {"GPU": 4, "CPU": 64}, None, None, 1) == (4, 1.0, 1.0)   # one per GPU
    assert plan_workers(3, {"GPU": 8, "CPU": 64}, None, None, 1) == (3, 1.0, 1.0)    # never more than jobs
    assert plan_workers(16, {"CPU": 8}, None, None, 1) == (4, 0.0, 1.0)              # CPU only: 2 CPUs each
    assert plan_workers(16, {"GPU": 2, "CPU": 8}, None, 0.5, 2) == (4, 0.5, 2.0)
    with pytest.raises(ValueError, match="gpus_per_worker"):
        plan_workers(4, {"CPU": 8}, None, 1.0, 1)
