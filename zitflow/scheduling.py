"""Which jobs of a multirun share GPU work, so a launcher can keep them on one worker.

A sweep such as ``seed=range(16) stages.sharpen.amount=0.4,0.8`` has 32 jobs but 16 generations:
the two jobs of a seed differ only after the decode. Hydra orders them seed by seed, so two
workers taking jobs in that order would take both jobs of one seed at once; the second then waits
on the store's key lock while the first generates (each latent is still made once, but one GPU
idles). Grouping the jobs by the keys of their model stages (encode, denoise, decode: everything
that loads a model) and giving each group to one worker keeps every GPU generating.

Computing a job's keys composes the job and plans it (:func:`zitflow.executor.plan`); that
resolves where the model's weights are but loads none. A job whose plan cannot be computed here
(weights absent on the launching host, a bad override) gets a group of its own and fails, or
runs, on its worker as it would have.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Iterable, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("zitflow")


def gpu_work_key(sweep_config: DictConfig) -> str | None:
    """A digest of the keys of the model stages of the job ``sweep_config`` describes (a composed
    multirun job config, ``hydra`` node included); None when the job uses no model or cannot be
    planned in this process."""
    from hydra.core.hydra_config import HydraConfig

    from .executor import plan
    from .job import make_job

    try:
        HydraConfig.instance().set_config(sweep_config)  # for ${hydra:...} in the job's config
        recipe = str(sweep_config.hydra.runtime.choices.get("recipe") or "?")
        overrides = list(sweep_config.hydra.overrides.task)
        cfg = OmegaConf.create(OmegaConf.to_container(sweep_config, resolve=False))
        with open_dict(cfg):
            del cfg["hydra"]
        job = make_job(cfg, recipe, overrides)
        planned = plan(job.graph, job.store, job.ctx)
    except Exception as e:  # noqa: BLE001 - the worker reports the job's own error
        log.debug("no GPU-work key for a job (%s: %s); it runs on its own", type(e).__name__, e)
        return None
    keys = sorted(p.key for name, p in planned.items() if job.graph.stages[name].cls.uses_model)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest() if keys else None


def group_jobs(keys: Sequence[str | None]) -> list[list[int]]:
    """Indices of jobs grouped by equal keys, groups in order of their first job, jobs in order;
    a job with no key (None) is a group of its own.

    ``group_jobs(["a", "a", "b", None, "b"]) == [[0, 1], [2, 4], [3]]``
    """
    groups: dict[str, list[int]] = {}
    out: list[list[int]] = []
    for i, key in enumerate(keys):
        if key is None:
            out.append([i])
        elif key in groups:
            groups[key].append(i)
        else:
            groups[key] = [i]
            out.append(groups[key])
    return out


def gpu_work_groups(sweep_configs: Iterable[DictConfig]) -> list[list[int]]:
    """:func:`group_jobs` of the jobs' :func:`gpu_work_key`; one group per job if none has a key."""
    return group_jobs([gpu_work_key(c) for c in sweep_configs])
