"""Scheduling multirun jobs by shared GPU work (zitflow.scheduling): which jobs share a generation,
and the order that starts every generation first and its followers only once it exists. That the
Ray launcher's jobs then never wait on another worker's latent is tested end to end by
tests/test_multi_gpu_sweep.py."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from zitflow.app import CONFIG_DIR
from zitflow.scheduling import Schedule, gpu_work_key, gpu_work_keys


def handed_out(schedule: Schedule) -> list[int]:
    out = []
    while (i := schedule.take()) is not None:
        out.append(i)
    return out


def test_generations_first_then_followers_once_their_generation_exists():
    s = Schedule(["a", "a", "b", None, "b"])
    assert handed_out(s) == [0, 2, 3]  # 1 and 4 share the generations of 0 and 2, still running
    s.finished(2)
    assert handed_out(s) == [4]
    s.finished(3)
    assert handed_out(s) == [] and not s.exhausted
    s.finished(0)  # a failed job counts as finished too: its followers then generate themselves
    assert handed_out(s) == [1] and s.exhausted


def test_a_post_only_sweep_spreads_once_its_one_generation_exists():
    s = Schedule(["g"] * 4)  # one seed, four sharpen amounts
    assert handed_out(s) == [0]
    s.finished(0)
    assert handed_out(s) == [1, 2, 3]  # all at once, to as many workers as are free


def job_config(tmp_path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", return_hydra_config=True,
                       overrides=["recipe=poster", "model=tiny", "runtime=cpu", "prompt=a kite",
                                  f"cache.dir={tmp_path / 'cache'}", *overrides])


def test_post_variants_of_one_seed_share_their_gpu_work(tmp_path):
    cfgs = [job_config(tmp_path, f"seed={seed}", f"stages.sharpen.amount={amount}")
            for seed in (1, 2) for amount in (0.4, 0.8)]
    keys = gpu_work_keys(cfgs)
    assert all(keys) and keys[0] == keys[1] and keys[2] == keys[3] and keys[0] != keys[2]
    assert handed_out(Schedule(keys)) == [0, 2]
    other_prompt = job_config(tmp_path, "seed=1", "prompt=a boat")
    assert gpu_work_key(other_prompt) != keys[0]


def test_a_job_that_cannot_be_planned_or_uses_no_model_runs_alone(tmp_path):
    bad = job_config(tmp_path, "stages.sharpen.amount=99")  # out of range: the worker reports it
    retouch = job_config(tmp_path, "recipe=retouch")
    assert gpu_work_key(bad) is None and gpu_work_key(retouch) is None
    assert handed_out(Schedule(gpu_work_keys([bad, bad, retouch]))) == [0, 1, 2]
