"""``explain=true``: the plan and each resolution decision on one screen, nothing run."""

from __future__ import annotations

import importlib

from .executor import format_plan, plan


def explain_job(job) -> str:
    """Text: every stage's key and cached/run status, then each resolution stage's reasoning."""
    planned = plan(job.graph, job.store, job.ctx)
    lines = [f"recipe '{job.recipe}'  (config hash {job.ctx.job['config_hash']})", "",
             format_plan(job.graph, planned), ""]
    for name, spec in job.graph.stages.items():
        mod = importlib.import_module(spec.cls.__module__)
        explain = getattr(mod, "explain", None)
        if callable(explain):
            lines += [f"[{name}]", explain(spec.params), ""]
    return "\n".join(lines).rstrip()
