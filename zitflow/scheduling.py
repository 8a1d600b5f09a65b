"""Which jobs of a multirun share GPU work, and an order that keeps every worker generating.

A sweep such as ``seed=range(16) stages.sharpen.amount=0.4,0.8`` has 32 jobs but 16 generations:
the two jobs of a seed differ only after the decode. Hydra orders them seed by seed, so two
workers taking jobs in that order would take both jobs of one seed at once; the second then waits
on the store's key lock while the first generates (each latent is still made once, but one GPU
idles). :class:`Schedule` hands out each generation's first job before any other and a job that
shares a generation only once that first job has finished, so no job waits on another's
generation and the followers (post-processing on cached latents) spread over all workers.

Jobs share a generation when the keys of their model stages (encode, denoise, decode: everything
that loads a model) are equal. Computing them composes each job and plans it
(:func:`zitflow.executor.plan`); that resolves where the model's weights are but loads none. A
job whose plan cannot be computed here (weights absent on the launching host, a bad override)
counts as a generation of its own and fails, or runs, on its worker as it would have.
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


class Schedule:
    """The order to hand out jobs given their GPU-work keys (None: shares with nobody).

    :meth:`take` gives the next job that may start now: first every generation's first job (and
    every keyless job) in job order, then the jobs that share a generation whose first job has
    finished, in job order; None when nothing may start until a running job finishes.
    :meth:`finished` records a job as done (failed counts: its followers then generate
    themselves). ``Schedule(["a", "a", "b", None, "b"])`` hands out 0, 2, 3, then 1 once 0 is done
    and 4 once 2 is.
    """

    def __init__(self, keys: Sequence[str | None]):
        self.keys = list(keys)
        seen: set[str] = set()
        self.leaders: list[int] = []
        self.followers: list[int] = []
        for i, key in enumerate(self.keys):
            if key is None or key not in seen:
                self.leaders.append(i)
                if key is not None:
                    seen.add(key)
            else:
                self.followers.append(i)
        self.generated: set[str] = set()

    def take(self) -> int | None:
        if self.leaders:
            return self.leaders.pop(0)
        for n, i in enumerate(self.followers):
            if self.keys[i] in self.generated:
                return self.followers.pop(n)
        return None

    def finished(self, i: int) -> None:
        if self.keys[i] is not None:
            self.generated.add(self.keys[i])

    @property
    def exhausted(self) -> bool:
        """True once every job has been handed out."""
        return not self.leaders and not self.followers


def gpu_work_keys(sweep_configs: Iterable[DictConfig]) -> list[str | None]:
    """:func:`gpu_work_key` of each job."""
    return [gpu_work_key(c) for c in sweep_configs]
