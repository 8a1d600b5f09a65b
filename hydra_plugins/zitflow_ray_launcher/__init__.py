"""``hydra/launcher=ray``: sweep jobs on long-lived Ray workers, one per GPU, each keeping its
model pool across jobs. See :mod:`.launcher`."""
