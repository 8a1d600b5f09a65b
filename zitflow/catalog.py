"""The recipes on the search path: list them, compose one without running, draw its DAG.

Uses Hydra's compose API over the same config dir as the app, so ``list`` and ``show`` see
exactly what ``python -m zitflow recipe=NAME`` would run (packs from ``ZITFLOW_RECIPE_PATH``
included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, Tuple

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
    target: str  # the exported sizes, "1200x1500, 800x800"; "?" where a size depends on an input image
    chain: list[str]
    error: str | None = None
    generate: str = ""  # the generated size, "1344x768"; "" for post-only recipes
    chain_text: str = ""  # the chain with branches: "... -> decode -> { fit -> export | fit -> export }"


def compose_recipe(name: str, overrides: Iterable[str] = ()) -> DictConfig:
    """The config ``python -m zitflow recipe=NAME *overrides`` would run.

    An unknown recipe raises :class:`RecipeNotFound` naming the recipes on the search path.
    """
    from hydra.errors import MissingConfigException

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        try:
            return compose("config", overrides=[f"recipe={name}", *overrides])
        except MissingConfigException as e:
            if name in GlobalHydra.instance().config_loader().get_group_options("recipe"):
                raise  # the recipe exists; something it names (a parent in its defaults) does not
            raise RecipeNotFound(name, e) from None


class RecipeNotFound(ValueError):
    """``recipe=NAME`` names no file on the search path; the message lists those that exist."""

    def __init__(self, name: str, cause: Exception | None = None):
        known = recipe_names()
        super().__init__(f"no recipe '{name}' on the search path; recipes: {', '.join(known) or 'none'} "
                         "(add a pack with ZITFLOW_RECIPE_PATH=/path/to/pack or hydra.searchpath=[file://...])")


def recipe_names() -> list[str]:
    """Every option of the ``recipe`` group on the search path, sorted."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options("recipe"))


Size = Optional[Tuple[int, int]]


def generation_size(graph: Graph) -> Size:
    """The (w, h) pixels the recipe's first ``denoise`` stage generates, or None without one.

    Read from its ``size`` input (a resolution stage's decision) or its own width/height.
    """
    for n in graph.order():
        if graph.stages[n].kind == "denoise":
            return _size_of(graph, n, {})
    return None


def output_sizes(graph: Graph) -> dict[str, Size]:
    """The (w, h) each sink (a stage nobody reads, e.g. an export) delivers, None where it
    depends on an input image (a post-only recipe without a fixed target)."""
    users = graph.consumers()
    memo: dict[str, Size] = {}
    return {n: _size_of(graph, n, memo) for n in graph.order() if not users[n]}


def _wh(a: Any, b: Any) -> Size:
    return (int(a), int(b)) if a and b else None


def _size_of(graph: Graph, name: str, memo: dict[str, Size]) -> Size:
    """The image size stage ``name`` outputs, worked out from parameters alone (nothing runs)."""
    if name in memo:
        return memo[name]
    memo[name] = None  # guards against re-entry; graphs are acyclic, so this is only a default
    spec = graph.stages[name]
    p, inputs = spec.params, spec.inputs

    def upstream(slot: str = "image") -> Size:
        src = inputs.get(slot) or next(iter(inputs.values()), None)
        return _size_of(graph, src, memo) if src else None

    size: Size
    if spec.kind == "resolution":
        from .stages.resolution import decide

        size = decide(p).target
    elif spec.kind == "denoise":
        size = _wh(p.width, p.height)
        if size is None and "size" in inputs and graph.stages[inputs["size"]].kind == "resolution":
            from .stages.resolution import decide

            size = decide(graph.stages[inputs["size"]].params).gen
    elif spec.kind == "decode":
        size = upstream("latents")
    elif spec.kind == "fit":
        size = _wh(p.width, p.height) or (upstream("size") if "size" in inputs else None)
    elif spec.kind == "super_resolve":
        src = upstream()
        tw, th = p.target_width, p.target_height
        if tw and th:
            size = (tw, th)
        elif src and (tw or th):
            size = (tw, round(src[1] * tw / src[0])) if tw else (round(src[0] * th / src[1]), th)
        else:
            size = (round(src[0] * p.scale), round(src[1] * p.scale)) if src else None
    elif spec.kind == "export":
        size = _wh(p.width, p.height) or upstream()
    elif spec.kind == "load_image":
        size = None
    else:  # sharpen, color_correct and users' kinds keep their image's size
        size = upstream()
    memo[name] = size
    return size


def fmt_size(size: Size) -> str:
    return f"{size[0]}x{size[1]}" if size else "?"


def targets(graph: Graph) -> str:
    """The sizes a graph delivers, e.g. '1200x1500, 800x800' ('?' where an input image decides)."""
    sizes = [fmt_size(s) for s in output_sizes(graph).values()]
    return ", ".join(dict.fromkeys(sizes)) or "?"


def chain_text(graph: Graph) -> str:
    """The stage kinds in run order, branches in braces:
    ``resolution -> encode -> denoise -> decode -> { fit -> export | fit -> export }``.

    The trunk is what every sink depends on; each branch is what only its sink depends on.
    """
    order = graph.order()
    users = graph.consumers()
    sinks = [n for n in order if not users[n]]

    def ancestors(n: str) -> set[str]:
        seen, todo = {n}, [n]
        while todo:
            for src in graph.stages[todo.pop()].inputs.values():
                if src not in seen:
                    seen.add(src)
                    todo.append(src)
        return seen

    sets = [ancestors(s) for s in sinks]
    common = set.intersection(*sets) if sets else set()
    trunk = [graph.stages[n].kind for n in order if n in common]
    branches = []
    for s in sets:
        own = [graph.stages[n].kind for n in order if n in s and n not in common]
        if own:
            branches.append(" -> ".join(own))
    text = " -> ".join(trunk)
    if len(branches) == 1:
        text += " -> " + branches[0]
    elif branches:
        text += " -> { " + " | ".join(branches) + " }"
    return text


def summarise(name: str) -> RecipeSummary:
    try:
        from .recipe import check_schema

        cfg = compose_recipe(name)
        check_schema(name, cfg.get("schema_version"))
        graph = build_graph(name, cfg.stages)
        gen = generation_size(graph)
        return RecipeSummary(name, str(cfg.get("description") or ""), targets(graph),
                             [graph.stages[n].kind for n in graph.order()],
                             generate=fmt_size(gen) if gen else "", chain_text=chain_text(graph))
    except Exception as e:  # list every recipe, broken ones with their reason
        return RecipeSummary(name, "", "?", [], error=str(e).splitlines()[0])


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
