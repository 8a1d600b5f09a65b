"""Grouping multirun jobs by shared GPU work (zitflow.scheduling): which jobs share a generation,
and that the Ray launcher runs each group on one worker so no worker waits on another's latent."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from hydra import compose, initialize_config_dir

from zitflow.app import CONFIG_DIR
from zitflow.scheduling import gpu_work_groups, gpu_work_key, group_jobs


def test_group_jobs_keeps_first_seen_order():
    assert group_jobs(["a", "a", "b", None, "b"]) == [[0, 1], [2, 4], [3]]
    assert group_jobs([None, None]) == [[0], [1]]
    assert group_jobs([]) == []


def job_config(tmp_path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", return_hydra_config=True,
                       overrides=["recipe=poster", "model=tiny", "runtime=cpu", "prompt=a kite",
                                  f"cache.dir={tmp_path / 'cache'}", *overrides])


def test_post_variants_of_one_seed_share_their_gpu_work(tmp_path):
    cfgs = [job_config(tmp_path, f"seed={seed}", f"stages.sharpen.amount={amount}")
            for seed in (1, 2) for amount in (0.4, 0.8)]
    keys = [gpu_work_key(c) for c in cfgs]
    assert all(keys) and keys[0] == keys[1] and keys[2] == keys[3] and keys[0] != keys[2]
    assert gpu_work_groups(cfgs) == [[0, 1], [2, 3]]
    other_prompt = job_config(tmp_path, "seed=1", "prompt=a boat")
    assert gpu_work_key(other_prompt) != keys[0]


def test_a_job_that_cannot_be_planned_or_uses_no_model_runs_alone(tmp_path):
    bad = job_config(tmp_path, "stages.sharpen.amount=99")  # out of range: the worker reports it
    retouch = job_config(tmp_path, "recipe=retouch")
    assert gpu_work_key(bad) is None and gpu_work_key(retouch) is None
    assert gpu_work_groups([bad, bad, retouch]) == [[0], [1], [2]]


@pytest.mark.slow
def test_ray_workers_never_wait_on_each_others_generation(tmp_path):
    pytest.importorskip("ray", reason="ray is in the dev extra")
    from tests.test_cli import zitflow
    from tests.test_sweep import SWEEP_RECIPE

    (tmp_path / "pack" / "recipe").mkdir(parents=True)
    (tmp_path / "pack" / "recipe" / "tsweep.yaml").write_text(SWEEP_RECIPE)
    p = zitflow("-m", "recipe=tsweep", "model=tiny", "runtime=cpu", "prompt=a kite", "seed=1,2",
                "stages.sharpen.amount=0.4,0.8", "hydra/launcher=ray", "hydra.launcher.workers=2",
                "+hydra.launcher.init.num_cpus=2", "+hydra.launcher.init.include_dashboard=false",
                f"hydra.sweep.dir={tmp_path}/out", cache=tmp_path / "cache",
                env={"ZITFLOW_RECIPE_PATH": str(tmp_path / "pack"), "ZITFLOW_MODELS_DIR": str(tmp_path / "models"),
                     "RAY_DEDUP_LOGS": "0"})
    assert "4 jobs in 2 group(s)" in p.stdout + p.stderr
    ms = {int(f.parent.name): json.loads(f.read_text()) for f in (tmp_path / "out").glob("*/manifest.json")}
    assert len(ms) == 4, p.stdout + p.stderr
    status = {n: {s["name"]: s["status"] for s in m["stages"]} for n, m in ms.items()}
    assert sorted(s["denoise"] for s in status.values()) == ["hit", "hit", "run", "run"]
    assert all(s["denoise"] != "shared" for s in status.values())  # "shared": it waited for another worker
    pid = {n: m["process"]["pid"] for n, m in ms.items()}
    assert pid[0] == pid[1] and pid[2] == pid[3]  # a seed's two post variants ran on one worker
    by_pid = defaultdict(list)
    for n, m in ms.items():
        by_pid[pid[n]].append(status[n]["sharpen"])
    assert sorted(sum(by_pid.values(), [])) == ["run"] * 4
