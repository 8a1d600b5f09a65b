"""The stage graph: validated stage specs, their wiring, and a deterministic topological order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .stage import Stage


class GraphError(ValueError):
    """A structural problem: a cycle, an input that names no stage, a type mismatch."""


@dataclass
class StageSpec:
    """One node: ``name`` in the recipe, its kind class, checked params, and input wiring.

    ``inputs`` maps the kind's slot name to the name of the stage that feeds it.
    """

    name: str
    cls: type[Stage]
    params: Any
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.cls.kind


@dataclass
class Graph:
    """Stages by name in recipe order, plus the recipe name for messages."""

    recipe: str
    stages: dict[str, StageSpec]

    def check(self) -> None:
        """Raise :class:`GraphError` for dangling inputs, wrong artifact types or cycles."""
        for spec in self.stages.values():
            for slot, src in spec.inputs.items():
                if src not in self.stages:
                    raise GraphError(
                        f"recipe '{self.recipe}', stage '{spec.name}', input '{slot}': no stage named "
                        f"{src!r}; stages: {', '.join(self.stages)}")
                want = spec.cls.inputs[slot]
                got = self.stages[src].cls.output
                if not issubclass(got, want):
                    raise GraphError(
                        f"recipe '{self.recipe}', stage '{spec.name}', input '{slot}': expects "
                        f"{want.type_name}, but stage '{src}' ({self.stages[src].kind}) gives {got.type_name}")
        self.order()

    def order(self) -> list[str]:
        """Topological order, ties broken by recipe order; :class:`GraphError` on a cycle."""
        names = list(self.stages)
        indeg = {n: len(set(self.stages[n].inputs.values())) for n in names}
        users: dict[str, list[str]] = {n: [] for n in names}
        for n in names:
            for src in set(self.stages[n].inputs.values()):
                users[src].append(n)
        ready = [n for n in names if indeg[n] == 0]
        out: list[str] = []
        while ready:
            ready.sort(key=names.index)
            n = ready.pop(0)
            out.append(n)
            for u in users[n]:
                indeg[u] -= 1
                if indeg[u] == 0:
                    ready.append(u)
        if len(out) != len(names):
            stuck = [n for n in names if n not in out]
            raise GraphError(f"recipe '{self.recipe}': the stages {', '.join(stuck)} form a cycle")
        return out

    def consumers(self) -> dict[str, list[str]]:
        """For each stage, the stages that read its output."""
        users: dict[str, list[str]] = {n: [] for n in self.stages}
        for n, spec in self.stages.items():
            for src in spec.inputs.values():
                if n not in users[src]:
                    users[src].append(n)
        return users

    def describe(self) -> str:
        """One line per stage in run order: ``name (kind) <- inputs``."""
        lines = []
        for n in self.order():
            spec = self.stages[n]
            src = ", ".join(f"{k}={v}" for k, v in spec.inputs.items())
            lines.append(f"{n} ({spec.kind})" + (f" <- {src}" if src else ""))
        return "\n".join(lines)


def chain(graph: Graph) -> list[str]:
    """The kinds in run order, e.g. ['resolution', 'encode', ...] (for metadata and tests)."""
    return [graph.stages[n].kind for n in graph.order()]
