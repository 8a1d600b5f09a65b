"""The recipes on the search path: list them, compose one without running, draw its DAG.

Uses Hydra's compose API over the same config dir as the app, so ``list`` and ``show`` see
exactly what ``python -m zitflow recipe=NAME`` would run (packs from ``ZITFLOW_RECIPE_PATH``
included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from .app import CONFIG_DIR
from .graph import Graph
from .recipe import build_graph


@dataclass
class RecipeSummary:
    name: str
    description: str
    target: str  # "1080x1920", or "?" when the recipe has no resolution stage
    chain: list[str]
    error: str | None = None


def compose_recipe(name: str, overrides: Iterable[str] = ()) -> DictConfig:
    """The config ``python -m zitflow recipe=NAME *overrides`` would run."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[f"recipe={name}", *overrides])


def recipe_names() -> list[str]:
    """Every option of the ``recipe`` group on the search path, sorted."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options("recipe"))


def targets(graph: Graph) -> str:
    """The target sizes of a graph's resolution / fit / export stages, e.g. '1200x1500, 800x800'."""
    sizes = []
    for spec in graph.stages.values():
        w, h = getattr(spec.params, "width", 0), getattr(spec.params, "height", 0)
        if spec.kind == "resolution" and w and h:
            sizes.append(f"{w}x{h}")
        tw, th = getattr(spec.params, "target_width", 0), getattr(spec.params, "target_height", 0)
        if spec.kind == "super_resolve" and tw and th:
            sizes.append(f"{tw}x{th}")
    return ", ".join(dict.fromkeys(sizes)) or "?"


def summarise(name: str) -> RecipeSummary:
    try:
        cfg = compose_recipe(name)
        graph = build_graph(name, cfg.stages)
    except Exception as e:  # list every recipe, broken ones with their reason
        return RecipeSummary(name, "", "?", [], error=str(e).splitlines()[0])
    return RecipeSummary(name, str(cfg.get("description") or ""), targets(graph),
                         [graph.stages[n].kind for n in graph.order()])


def to_mermaid(graph: Graph) -> str:
    """``flowchart LR`` text: one node per stage (name and kind), one edge per input."""
    lines = ["flowchart LR"]
    for n in graph.order():
        lines.append(f'  {n}["{n}<br/><i>{graph.stages[n].kind}</i>"]')
    for n in graph.order():
        for slot, src in graph.stages[n].inputs.items():
            lines.append(f"  {src} -->|{slot}| {n}")
    return "\n".join(lines) + "\n"


def to_dot(graph: Graph) -> str:
    """Graphviz ``digraph`` text of the same picture."""
    lines = [f'digraph "{graph.recipe}" {{', "  rankdir=LR; node [shape=box, fontname=Helvetica];"]
    for n in graph.order():
        lines.append(f'  "{n}" [label="{n}\\n({graph.stages[n].kind})"];')
    for n in graph.order():
        for slot, src in graph.stages[n].inputs.items():
            lines.append(f'  "{src}" -> "{n}" [label="{slot}"];')
    return "\n".join(lines + ["}"]) + "\n"
