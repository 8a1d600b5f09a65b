"""Subcommands beside the Hydra job.

    python -m zitflow kinds [KIND...]                 stage kinds, their inputs and parameters
    python -m zitflow list                            recipes on the search path
    python -m zitflow show recipe=NAME [overrides] [--format text|mermaid|dot] [--out FILE]
"""

from __future__ import annotations

import sys
from typing import Callable

from .params import describe
from .registry import kinds


def cmd_kinds(args: list[str]) -> int:
    """Print every stage kind with its inputs, output and parameters."""
    for name, cls in sorted(kinds().items()):
        if args and name not in args:
            continue
        slots = ", ".join(f"{s}: {t.type_name}{'?' if s in cls.optional else ''}" for s, t in cls.inputs.items())
        print(f"{name} v{cls.version}  ({slots or 'no inputs'}) -> {cls.output.type_name}")
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        if doc:
            print(f"  {doc[0]}")
        for field, typ, default, allowed in describe(cls.Params):
            print(f"  {field:<16} {typ:<14} default {default!r:<14} {allowed}")
        print()
    return 0


def cmd_list(args: list[str]) -> int:
    """One line per recipe: name, target size, description, chain of kinds."""
    from .catalog import recipe_names, summarise

    rows = [summarise(n) for n in recipe_names()]
    width = max((len(r.name) for r in rows), default=4)
    for r in rows:
        if r.error:
            print(f"{r.name:<{width}}  BROKEN: {r.error}")
            continue
        print(f"{r.name:<{width}}  {r.target:<18} {r.description}")
        print(f"{'':<{width}}  {'':<18} {' -> '.join(r.chain)}")
    return 0


def cmd_show(args: list[str]) -> int:
    """The resolved DAG of ``recipe=NAME`` plus overrides, as text, Mermaid or Graphviz."""
    import argparse

    from .catalog import compose_recipe, to_dot, to_mermaid
    from .recipe import build_graph

    ap = argparse.ArgumentParser(prog="python -m zitflow show")
    ap.add_argument("overrides", nargs="*", help="recipe=NAME and any key=value overrides")
    ap.add_argument("--format", choices=("text", "mermaid", "dot"), default="text")
    ap.add_argument("--out", help="write to this file instead of printing")
    ns = ap.parse_args(args)
    names = [o.split("=", 1)[1] for o in ns.overrides if o.startswith("recipe=")]
    if not names:
        ap.error("name the recipe: show recipe=NAME")
    rest = [o for o in ns.overrides if not o.startswith("recipe=")]
    cfg = compose_recipe(names[-1], rest)
    graph = build_graph(names[-1], cfg.stages)
    if ns.format == "mermaid":
        text = to_mermaid(graph)
    elif ns.format == "dot":
        text = to_dot(graph)
    else:
        text = f"recipe '{names[-1]}': {cfg.get('description') or ''}\n" + _stage_table(graph) + "\n"
    if ns.out:
        with open(ns.out, "w") as f:
            f.write(text)
        print(f"wrote {ns.out}")
    else:
        print(text, end="")
    return 0


def _stage_table(graph) -> str:
    from .params import semantic_dict

    lines = []
    for n in graph.order():
        spec = graph.stages[n]
        src = ", ".join(f"{k}<-{v}" for k, v in spec.inputs.items())
        params = ", ".join(f"{k}={v!r}" for k, v in semantic_dict(spec.params).items())
        lines.append(f"  {n} ({spec.kind})" + (f" [{src}]" if src else "") + f"\n      {params}")
    return "\n".join(lines)


COMMANDS: dict[str, Callable[[list[str]], int]] = {"kinds": cmd_kinds, "list": cmd_list, "show": cmd_show}


def dispatch(argv: list[str]) -> bool:
    """Run a subcommand if ``argv[0]`` names one; False to fall through to the Hydra job."""
    if argv and argv[0] in COMMANDS:
        raise SystemExit(COMMANDS[argv[0]](argv[1:]))
    return False
