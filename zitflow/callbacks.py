"""Hydra callbacks: a sweep summary written when a multirun ends (any launcher).

``on_multirun_end`` runs in the main process with every launcher, after all jobs; the summary
is built from the job folders on disk, so it works for jobs that ran in other processes.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("zitflow")


class SweepSummary(Callback):
    """Writes contact_sheet.png, index.html, jobs.csv and jobs.json into the sweep folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from .sweep import summarise_sweep

        sweep_dir = config.hydra.sweep.dir
        try:
            paths = summarise_sweep(sweep_dir)
        except Exception as e:  # a summary must never turn a finished sweep into a failure
            log.error("sweep summary failed: %s", e)
            return
        print(f"sweep summary: {paths.get('gallery')}")
