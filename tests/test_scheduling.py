"""Grouping multirun jobs by shared GPU work (zitflow.scheduling): which jobs share a generation.
That the Ray launcher runs each group on one worker, so no worker waits on another's latent, is
tested end to end by tests/test_multi_gpu_sweep.py."""

from __future__ import annotations

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
