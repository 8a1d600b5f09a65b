"""One job: from a composed config to a graph, a context, a plan and written outputs.

Hydra composes the config (``app.py``); everything after that lives here, so tests and other
front ends (``reproduce``, sweeps) run jobs without going through the command line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from .atomic import write_atomic
from .cache.remote import open_store
from .cache.store import CacheStore
from .config import SEEDED_SOURCES, CacheConfig, ModelConfig, RuntimeConfig, load_section
from .executor import Executor, Manifest, format_plan
from .graph import Graph, chain
from .keys import canonical_json
from .progress import StageReporter
from .recipe import build_graph, check_schema
from .artifacts import File
from .stage import RunContext

log = logging.getLogger("zitflow")

#: Top-level keys that describe what is made (they enter the config hash); the rest is how.
JOB_KEYS = ("prompt", "negative_prompt", "seed", "input", "stages")

#: Override prefixes that change how a run goes, never what it makes: kept out of the job facts
#: (export metadata and its cache key), so ``runtime.progress=plain`` does not re-export.
RUN_ONLY_OVERRIDES = ("runtime", "cache", "hydra", "explain", "allow_modules")


def semantic_overrides(cli_overrides: Iterable[str]) -> list[str]:
    """The command-line overrides that can change outputs, in order (``runtime.*``, ``cache.*``,
    ``hydra.*`` and friends dropped)."""
    out = []
    for o in cli_overrides:
        key = o.lstrip("+~").split("=")[0]
        if key.replace("/", ".").split(".")[0] not in RUN_ONLY_OVERRIDES:
            out.append(o)
    return out


@dataclass
class Job:
    """A ready-to-run job: its graph, store, context and the settings it was made from."""

    recipe: str
    graph: Graph
    store: CacheStore
    ctx: RunContext
    model: ModelConfig
    runtime: RuntimeConfig
    config: dict[str, Any]


def trusted_allow_modules(cfg: DictConfig, cli_overrides: Iterable[str]) -> list[str]:
    """Modules that ``_target_`` may import: from the command line or ``ZITFLOW_ALLOW_MODULES``.

    A recipe is shared like code but must not act like code, so an ``allow_modules`` that a
    recipe file set (rather than the user's command line) is ignored with a warning.
    """
    env = [m.strip() for m in os.environ.get("ZITFLOW_ALLOW_MODULES", "").split(",") if m.strip()]
    from_cli = any(o.lstrip("+~").split("=")[0] == "allow_modules" for o in cli_overrides)
    composed = list(cfg.get("allow_modules") or [])
    if from_cli:
        return env + composed
    if composed:
        log.warning("ignoring allow_modules=%s set by the recipe: allow modules on the command line "
                    "or in ZITFLOW_ALLOW_MODULES", composed)
    return env


def config_hash(config: dict[str, Any], model: ModelConfig) -> str:
    """Hash of what decides the outputs: job keys, stages and the model's source (16 hex chars)."""
    what = {k: config.get(k) for k in JOB_KEYS}
    what["model"] = {"source": model.source, "id": model.id, "revision": model.revision,
                     "path": model.path, "seed": model.seed if model.source in SEEDED_SOURCES else None}
    return hashlib.sha256(canonical_json(what).encode()).hexdigest()[:16]


def make_job(cfg: DictConfig, recipe: str, cli_overrides: Iterable[str] = ()) -> Job:
    """Check the whole config and build the job; raises a ValueError subclass naming the field,
    or :class:`~zitflow.models.precision.PrecisionError` when ``runtime.precision`` cannot run here."""
    check_schema(recipe, cfg.get("schema_version"))
    model = load_section("model", ModelConfig, cfg.get("model"))
    runtime = load_section("runtime", RuntimeConfig, cfg.get("runtime"))
    cache = load_section("cache", CacheConfig, cfg.get("cache"))
    allow = trusted_allow_modules(cfg, cli_overrides)
    graph = build_graph(recipe, cfg.stages, allow)
    check_objective(recipe, graph, cfg.get("objective"))
    if runtime.precision != "auto" and any(s.kind == "denoise" for s in graph.stages.values()):
        from .models.precision import check_precision

        check_precision(runtime.precision, runtime.resolved_device())  # before the text encoder loads
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    job_meta = {
        "recipe": recipe,
        "prompt": config.get("prompt") or "",
        "negative_prompt": config.get("negative_prompt") or "",
        "seed": config.get("seed"),
        "model": {"name": model.name, "source": model.source, "id": model.id, "revision": model.revision},
        "config_hash": config_hash(config, model),
        "overrides": semantic_overrides(cli_overrides),
        "chain": chain(graph),
        "config": {k: config.get(k) for k in ("schema_version", *JOB_KEYS) if k in config}
        | {"model": OmegaConf.to_container(cfg.model, resolve=True) if cfg.get("model") else None},
    }
    ctx = RunContext(runtime=runtime, models=_model_pool(), model_config=model, job=job_meta)
    return Job(recipe, graph, open_store(cache.resolved_dir()), ctx, model, runtime, config)


def _model_pool():
    """The process-wide model pool, or None when the generation extra is unavailable."""
    try:
        from .models.pool import POOL
    except ImportError:
        return None
    return POOL


def check_objective(recipe: str, graph, objective: str | None) -> None:
    """``objective`` is ``"<stage>.<field>"`` naming a stage of the recipe (a data sink such as
    ``quality``); a ValueError names what is wrong."""
    if not objective:
        return
    stage, _, fld = str(objective).partition(".")
    if not fld or stage not in graph.stages:
        raise ValueError(f"recipe {recipe!r}, field 'objective': got {objective!r}; allowed: '<stage>.<field>' "
                         f"with a stage of the recipe ({', '.join(graph.stages)}), e.g. 'quality.score'")


def objective_value(job: Job, manifest: Manifest) -> float | None:
    """The number ``objective: <stage>.<field>`` names in this run's outputs (for sweepers such
    as Optuna, which minimise or maximise what the job returns), or None when none is set."""
    objective = job.config.get("objective")
    if not objective:
        return None
    stage, _, fld = str(objective).partition(".")
    art = manifest.outputs.get(stage)
    value = getattr(art, "value", None)
    if not isinstance(value, dict) or fld not in value:
        raise ValueError(f"recipe {job.recipe!r}, field 'objective': stage {stage!r} gave no data field {fld!r} "
                         f"(it must be a data sink, e.g. kind 'quality' with field 'score')")
    return float(value[fld])


def run_job(job: Job, out_dir: Path, reporter: StageReporter | None = None) -> Manifest:
    """Plan, show the plan, run, then write outputs, ``manifest.json`` and ``config.json``."""
    started = time.time()
    reporter = reporter or StageReporter(job.runtime.progress)
    executor = Executor(job.graph, job.store, job.ctx, on_event=reporter.event)
    where = getattr(job.store, "url", None) or str(job.store.root)  # an fsspec store's URL
    reporter.plan(format_plan(job.graph, executor.planned), where)
    manifest = executor.execute()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = write_outputs(manifest, out_dir)
    record = manifest.as_dict() | {
        "cache_dir": where, "outputs": written, "config_hash": job.ctx.job["config_hash"],
        "model": job.ctx.job["model"]}
    pool = job.ctx.models
    record["process"] = {"pid": os.getpid(),  # a worker's pool serves many jobs: loads are per process
                         "model_loads": dict(getattr(pool, "loads", {}) or {}),
                         "started": round(started, 3), "finished": round(time.time(), 3)}  # epoch s
    if job.config.get("objective"):
        record["objective"] = {"name": job.config["objective"], "value": objective_value(job, manifest)}
    (out_dir / "manifest.json").write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str))
    (out_dir / "config.json").write_text(json.dumps(job.config, indent=2, ensure_ascii=False, default=str))
    reporter.done(manifest, written)
    return manifest


def safe_join(out_dir: Path, name: str) -> Path:
    """``out_dir / name`` for a plain file name; refuses anything that would leave ``out_dir``."""
    base = out_dir.resolve()
    path = (base / name).resolve()
    if os.path.basename(name) != name or name in ("", ".", "..") or path.parent != base:
        raise ValueError(f"export file name {name!r} would leave the output dir {base}")
    return path


def write_outputs(manifest: Manifest, out_dir: Path) -> dict[str, str]:
    """Write each sink's :class:`File` into ``out_dir`` (never outside it); stage -> path.

    Two sinks that render the same file name never overwrite each other: the later one is
    written as ``<stem>-<stage><suffix>`` and a warning says so.
    """
    written: dict[str, str] = {}
    for name, art in manifest.outputs.items():
        if isinstance(art, File):
            path = safe_join(out_dir, art.name)
            if str(path) in written.values():
                first = next(k for k, v in written.items() if v == str(path))
                path = safe_join(out_dir, f"{path.stem}-{name}{path.suffix}")
                log.warning("stages %r and %r both export %r: writing %r's file as %s",
                            first, name, art.name, name, path.name)
            write_atomic(path, art.payload)
            written[name] = str(path)
    return written
