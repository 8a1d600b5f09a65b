"""The executor: compute every key (the plan), show it, run only what is missing.

``plan`` walks the graph in topological order and computes each stage's key from its kind,
version, semantic params, input keys and identity; a stage is a *hit* when the store holds its
key. ``execute`` then runs the misses in order, loading a cached input only when a stage that
must run reads it, stores each new output atomically, and returns a :class:`Manifest`. A
damaged entry found on load is reported, removed and rebuilt from its inputs; an entry that
cannot be read (permissions) is reported and recomputed but kept; a store whose disk is full is
reported and the run goes on without caching what it could not store.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .artifacts import Artifact
from .cache.locks import claim
from .cache.store import CacheStore, CorruptEntry, EntryUnreadable, StoreFull
from .graph import Graph
from .keys import short, stage_key
from .params import semantic_dict
from .stage import RunContext

log = logging.getLogger("zitflow")


@dataclass
class PlannedStage:
    """A stage's key and whether the store holds it (``hit``) when planning."""

    name: str
    kind: str
    key: str
    hit: bool
    inputs: dict[str, str]  # slot -> input key
    params: dict[str, Any]
    identity: dict[str, Any]


@dataclass
class StageResult:
    """What happened to one stage in a run (a row of the manifest)."""

    name: str
    kind: str
    key: str
    #: "hit" (reused), "run" (computed), "rebuilt" (damaged entry recomputed), "shared" (computed
    #: meanwhile by a concurrent process on the same store), "skipped" (missing but not needed)
    status: str
    seconds: float = 0.0
    peak_gpu_bytes: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    """The record of one run: per stage key, status, seconds, peak GPU memory."""

    recipe: str
    stages: list[StageResult]
    outputs: dict[str, Artifact] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe,
                "stages": [{k: v for k, v in r.__dict__.items()} for r in self.stages]}

    def count(self, status: str) -> int:
        return sum(1 for r in self.stages if r.status == status)


def plan(graph: Graph, store: CacheStore, ctx: RunContext) -> dict[str, PlannedStage]:
    """Keys and hit/miss for every stage, in topological order."""
    out: dict[str, PlannedStage] = {}
    for name in graph.order():
        spec = graph.stages[name]
        stage = spec.cls()
        ctx.stage_name = name  # identity() may depend on the stage's own name (export's file name)
        inputs = {slot: out[src].key for slot, src in spec.inputs.items()}
        params = semantic_dict(spec.params)
        identity = dict(stage.identity(spec.params, ctx))
        key = stage_key(spec.kind, spec.cls.version, params, inputs, identity)
        out[name] = PlannedStage(name, spec.kind, key, store.contains(key), inputs, params, identity)
    return out


def format_plan(graph: Graph, planned: dict[str, PlannedStage]) -> str:
    """The plan as a small table: stage, kind, key, what will happen."""
    width = max(len(n) for n in planned)
    rows = [f"{'stage':<{width}}  {'kind':<13} {'key':<12}  action"]
    for p in planned.values():
        rows.append(f"{p.name:<{width}}  {p.kind:<13} {short(p.key)}  {'cached' if p.hit else 'run'}")
    return "\n".join(rows)


class Executor:
    """Runs a graph against a store. ``on_event(name, status)`` hears each stage's start/end."""

    def __init__(self, graph: Graph, store: CacheStore, ctx: RunContext,
                 on_event: Callable[[str, str], None] | None = None):
        self.graph = graph
        self.store = store
        self.ctx = ctx
        self.on_event = on_event or (lambda name, status: None)
        self.planned = plan(graph, store, ctx)
        self._memo: dict[str, Artifact] = {}
        self._results: dict[str, StageResult] = {}

    def execute(self) -> Manifest:
        """Produce every sink (export, or a stage nobody reads), computing only what it needs.

        A sink that hits is loaded; one that misses pulls its inputs, recursively, from memory,
        the store, or by running them. A missing stage whose readers all hit is not run
        ("skipped"), e.g. a decoded image evicted by ``gc`` under a cached export.
        """
        consumers = self.graph.consumers()
        sinks = [n for n in self.graph.order() if self.graph.stages[n].cls().sink() or not consumers[n]]
        for name in sinks:
            self._get(name)
        for name in self.graph.order():
            if name not in self._results:
                p = self.planned[name]
                self._results[name] = StageResult(name, p.kind, p.key, "hit" if p.hit else "skipped")
        outputs = {n: self._memo[n] for n in sinks}
        return Manifest(self.graph.recipe, [self._results[n] for n in self.graph.order()], outputs)

    # -- internals ----------------------------------------------------------------------
    def _get(self, name: str) -> Artifact:
        if name in self._memo:
            return self._memo[name]
        p = self.planned[name]
        if p.hit:
            try:
                art = self.store.load(p.key)
                self._memo[name] = art
                return art
            except CorruptEntry as e:
                log.warning("%s; removing it and rebuilding stage '%s'", e, name)
                self.store.remove(p.key)
                art = self._compute(name, status="rebuilt", why=e.why)
                return art
            except EntryUnreadable as e:
                return self._unreadable(name, e)
        return self._compute(name, status="run")

    def _unreadable(self, name: str, e: EntryUnreadable) -> Artifact:
        """Compute a stage whose entry exists but cannot be read, without touching that entry."""
        log.warning("%s; computing stage '%s' without it", e, name)
        return self._run_stage(name, "run", None, store=False, notes={"unreadable_entry": e.why})

    def _compute(self, name: str, status: str, why: str | None = None) -> Artifact:
        """Run stage ``name`` unless a concurrent process on the same store is producing it."""
        p = self.planned[name]
        with claim(self.store.root, p.key, lambda: self.store.contains(p.key),
                   on_wait=lambda: log.info("stage '%s': waiting for another process computing %s",
                                            name, short(p.key))) as mine:
            if not mine:
                try:
                    art = self.store.load(p.key)
                except CorruptEntry:
                    self.store.remove(p.key)
                    return self._compute(name, status, why)
                except EntryUnreadable as e:
                    return self._unreadable(name, e)
                self._memo[name] = art
                self._results[name] = StageResult(name, p.kind, p.key, "shared")
                return art
            return self._run_stage(name, status, why)

    def _run_stage(self, name: str, status: str, why: str | None, store: bool = True,
                   notes: dict[str, Any] | None = None) -> Artifact:
        spec = self.graph.stages[name]
        p = self.planned[name]
        inputs = {slot: self._get(src) for slot, src in spec.inputs.items()}
        stage = spec.cls()
        self.ctx.stage_name = name
        self.ctx.notes = {}
        self.on_event(name, "start")
        peak = _gpu_peak_reset()
        t0 = time.perf_counter()
        art = stage.run(spec.params, inputs, self.ctx)
        seconds = time.perf_counter() - t0
        peak_bytes = _gpu_peak_read(peak)
        if not isinstance(art, spec.cls.output):
            raise TypeError(f"stage '{name}' ({spec.kind}) returned {type(art).__name__}, "
                            f"declared {spec.cls.output.__name__}")
        notes = dict(self.ctx.notes) | (notes or {})
        if why:
            notes["rebuilt_because"] = why
        if store:
            try:
                self.store.save(p.key, art, {
                    "kind": spec.kind, "stage": name, "version": spec.cls.version, "params": p.params,
                    "inputs": p.inputs, "identity": p.identity, "seconds": round(seconds, 6),
                    "recipe": self.graph.recipe, "notes": notes})
            except StoreFull as e:
                log.warning("stage '%s' is not cached: %s", name, e.strerror)
                notes["not_cached"] = e.strerror
        self._memo[name] = art
        self._results[name] = StageResult(name, spec.kind, p.key, status, round(seconds, 6), peak_bytes, notes)
        self.on_event(name, status)
        return art


def _gpu_peak_reset() -> bool:
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
            return True
    except Exception:
        pass
    return False


def _gpu_peak_read(active: bool) -> int | None:
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return int(torch.cuda.max_memory_allocated())
    except Exception:
        pass
    return None
