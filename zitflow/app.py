"""The command line: ``python -m zitflow recipe=NAME ...`` is a Hydra app.

Hydra composes ``conf/config.yaml`` with the chosen recipe (group ``recipe``, files under
``recipes/``), model, runtime and cache groups and the command-line overrides; :func:`job`
hands the result to :mod:`zitflow.job`. ``-m`` sweeps, ``--cfg job``, ``--help`` and shell
completion are Hydra's own.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .job import make_job, objective_value, run_job

log = logging.getLogger("zitflow")

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
ALLOW_ENV = "ZITFLOW_ALLOW_MODULES"
#: The user's own allow-list variable, read before Hydra applies a config's ``hydra.job.env_set``.
USER_ALLOW_ENV = os.environ.get(ALLOW_ENV)


def _refuse_env_set_allow_list(hc) -> None:
    """Undo a ``hydra.job.env_set.ZITFLOW_ALLOW_MODULES`` that a config file (a shared recipe)
    set: it would allow-list modules behind the user's back. The user's own command line may."""
    if ALLOW_ENV not in (hc.job.env_set or {}):
        return
    if any(o.lstrip("+~").split("=")[0] == f"hydra.job.env_set.{ALLOW_ENV}" for o in hc.overrides.hydra):
        return
    log.warning("ignoring hydra.job.env_set.%s set by the recipe: allow modules on the command line "
                "or in your own environment", ALLOW_ENV)
    os.environ[ALLOW_ENV] = USER_ALLOW_ENV or ""  # Hydra deletes or restores it after the job


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def job(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    recipe = hc.runtime.choices.get("recipe") or "?"
    _refuse_env_set_allow_list(hc)
    from .models.precision import PrecisionError

    try:
        j = make_job(cfg, recipe, list(hc.overrides.task))
    except (ValueError, PrecisionError) as e:  # a bad recipe or setting: one message naming it, no traceback
        print(f"zitflow: {e}", file=sys.stderr)
        sys.exit(2)
    from .cache.store import StoreFull
    from .models.pool import ModelLoadError
    from .models.sources import ModelNotFound

    try:
        if cfg.get("explain"):
            from .explain import explain_job

            print(explain_job(j))
            return None
        manifest = run_job(j, Path(hc.runtime.output_dir))
        return objective_value(j, manifest)  # what a sweeper (Optuna) optimises; None without one
    # bad input, no weights, an attention backend or precision this machine lacks, out of GPU
    # memory under every plan tried, a full disk: say so
    except (ValueError, ModelNotFound, ModelLoadError, PrecisionError, MemoryError, StoreFull) as e:
        print(f"zitflow: {e}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    """Console-script entry: subcommands (``kinds``, ...) or a Hydra job."""
    from .commands import dispatch

    if dispatch(sys.argv[1:]):
        return
    job()
