"""A Hydra launcher over Ray's public API: ``python -m zitflow -m hydra/launcher=ray ...``.

Each worker is a Ray actor (one process) that runs job after job, so zitflow's process-wide
model pool loads each model once per worker, not once per job. Jobs go to whichever worker is
free in the order of :class:`zitflow.scheduling.Schedule`: each generation's first job before
the rest, and a job that shares a generation (a post-processing variant of the same seed: equal
encode/denoise/decode keys) only once that generation exists, so no worker waits on another's
generation and the variants spread over all workers. Results come back in job order. Workers
share the cache through ``cache.dir``; concurrent workers on one key still compute it once (the
store's key locks), e.g. two sweeps at once.

Why not ``hydra-ray-launcher``: it runs each job as a Ray task (no worker keeps its models by
design; reuse depends on Ray's worker recycling), and its 1.2.2 release pins ``cloudpickle<3``,
which conflicts with joblib >= 1.5 (hydra's joblib launcher) in one environment. This launcher
needs only ``ray``.

Config (``hydra.launcher.*``):

* ``address``: a running cluster (``auto``, ``ray://host:10001``); null starts a local Ray.
* ``workers``: how many workers; null = one per GPU of the cluster, or one per 2 CPUs (at least
  1, at most the number of jobs) when it has no GPU.
* ``gpus_per_worker`` / ``cpus_per_worker``: resources each worker holds (a GPU each by
  default when the cluster has GPUs).
* ``init``: extra ``ray.init`` keyword arguments.
* ``schedule_gpu_work``: hand out jobs in that order (default true); false keeps Hydra's order.

``ZITFLOW_*``, ``HF_*``, ``AWS_*`` and ``FSSPEC_*`` environment variables of the launching process are passed to the
workers, so ``ZITFLOW_CACHE_DIR`` or ``ZITFLOW_RECIPE_PATH`` mean the same there.
"""

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

#: Environment variables a worker inherits from the launching process (by prefix).
FORWARDED_ENV = ("ZITFLOW_", "HF_", "MODELSCOPE_", "HYDRA_FULL_ERROR", "AWS_", "FSSPEC_", "GOOGLE_")


@dataclass
class RayWorkersConf:
    _target_: str = "hydra_plugins.zitflow_ray_launcher.launcher.RayWorkersLauncher"
    address: Optional[str] = None
    workers: Optional[int] = None
    gpus_per_worker: Optional[float] = None
    cpus_per_worker: float = 1.0
    init: Dict[str, Any] = field(default_factory=dict)
    schedule_gpu_work: bool = True


ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayWorkersConf, provider="zitflow")


class _Worker:
    """One Ray actor: runs Hydra jobs one after another in its own long-lived process."""

    def __init__(self) -> None:
        self.jobs = 0

    def run(self, hydra_context: HydraContext, sweep_config: DictConfig, task_function: TaskFunction,
            singleton_state: Dict[Any, Any]) -> JobReturn:
        from hydra.core.hydra_config import HydraConfig

        setup_globals()
        Singleton.set_state(singleton_state)
        HydraConfig.instance().set_config(sweep_config)
        self.jobs += 1
        return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")

    def pid(self) -> int:
        return os.getpid()


def plan_workers(n_jobs: int, resources: Dict[str, float], workers: Optional[int], gpus_per_worker: Optional[float],
                 cpus_per_worker: float) -> Tuple[int, float, float]:
    """(workers, GPUs each, CPUs each) for ``n_jobs`` on a cluster with ``resources``."""
    gpus = float(resources.get("GPU", 0.0))
    cpus = float(resources.get("CPU", 1.0))
    each_gpu = (1.0 if gpus >= 1 else 0.0) if gpus_per_worker is None else float(gpus_per_worker)
    if each_gpu > gpus:
        raise ValueError(f"hydra.launcher.gpus_per_worker={each_gpu} but the Ray cluster has {gpus:g} GPU(s)")
    if workers is None:
        workers = int(gpus // each_gpu) if each_gpu > 0 else max(1, int(cpus // max(2.0, cpus_per_worker)))
    if workers < 1:
        raise ValueError(f"hydra.launcher.workers must be >= 1, got {workers}")
    return max(1, min(workers, n_jobs)), each_gpu, float(cpus_per_worker)


class RayWorkersLauncher(Launcher):
    def __init__(self, address: Optional[str] = None, workers: Optional[int] = None,
                 gpus_per_worker: Optional[float] = None, cpus_per_worker: float = 1.0,
                 init: Optional[Dict[str, Any]] = None, schedule_gpu_work: bool = True, **_: Any) -> None:
        self.address, self.workers = address, workers
        self.schedule_gpu_work = schedule_gpu_work
        self.gpus_per_worker, self.cpus_per_worker = gpus_per_worker, cpus_per_worker
        self.init = dict(init or {})
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import ray

        from zitflow.scheduling import Schedule, gpu_work_keys

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
        if not ray.is_initialized():
            init = {"address": self.address, "runtime_env": {"env_vars": env}, "log_to_driver": True} | self.init
            ray.init(**{k: v for k, v in init.items() if v is not None})
        specs = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"ray_{idx}"
                sweep_config.hydra.job.num = idx
            specs.append(sweep_config)
        state = Singleton.get_state()
        keys = gpu_work_keys(specs) if self.schedule_gpu_work else [None] * len(specs)
        schedule = Schedule(keys)
        n, gpus, cpus = plan_workers(len(specs), ray.cluster_resources(), self.workers,
                                     self.gpus_per_worker, self.cpus_per_worker)
        log.info(f"Ray launcher: {len(job_overrides)} jobs ({len(schedule.leaders)} generations) on {n} worker(s) "
                 f"({gpus:g} GPU, {cpus:g} CPU each), sweep dir {sweep_dir}")
        actor = ray.remote(_Worker)
        idle = [actor.options(num_gpus=gpus, num_cpus=cpus).remote() for _ in range(n)]
        workers = list(idle)
        results: list = [None] * len(specs)
        running: Dict[Any, Tuple[int, Any]] = {}
        try:
            while not schedule.exhausted or running:
                while idle and (i := schedule.take()) is not None:
                    a = idle.pop()
                    running[a.run.remote(self.hydra_context, specs[i], self.task_function, state)] = (i, a)
                if not running:  # nothing runs and nothing may start: cannot happen, but never spin
                    raise RuntimeError("Ray launcher: the schedule stalled with jobs left")
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    i, a = running.pop(ref)
                    results[i] = ray.get(ref)
                    schedule.finished(i)
                    idle.append(a)
        finally:
            for a in workers:
                ray.kill(a)
        return results
