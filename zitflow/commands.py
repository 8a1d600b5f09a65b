"""Subcommands beside the Hydra job.

    python -m zitflow kinds [KIND...]                 stage kinds, their inputs and parameters
    python -m zitflow list                            recipes on the search path
    python -m zitflow show recipe=NAME [overrides] [--format text|mermaid|dot|svg|png|pdf] [--out FILE]
    python -m zitflow reproduce IMAGE [--recipe NAME] [--out DIR] [runtime.*=... cache.*=...]
    python -m zitflow validate [model=NAME] [--sizes 512,768,1024] [--out DIR]   speed, VRAM curve, determinism
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
    """Two lines per recipe: name, delivered size(s), generated size, description; then the chain."""
    from .catalog import recipe_names, summarise

    rows = [summarise(n) for n in recipe_names()]
    width = max((len(r.name) for r in rows), default=4)
    sizes = max((len(r.target) for r in rows if not r.error), default=9)
    for r in rows:
        if r.error:
            print(f"{r.name:<{width}}  BROKEN: {r.error}")
            continue
        gen = f"gen {r.generate}" if r.generate else "no generation"
        print(f"{r.name:<{width}}  {r.target:<{sizes}}  {gen:<14} {r.description}")
        print(f"{'':<{width}}  {r.chain_text}")
    return 0


#: ``--out`` suffix -> format; .svg/.png/.pdf are drawn by Graphviz's ``dot`` from the dot text
OUT_FORMATS = {".mmd": "mermaid", ".mermaid": "mermaid", ".md": "mermaid-md", ".dot": "dot", ".gv": "dot",
               ".svg": "svg", ".png": "png", ".pdf": "pdf", ".txt": "text"}


def cmd_show(args: list[str]) -> int:
    """The resolved DAG of ``recipe=NAME`` plus overrides, as text, Mermaid or Graphviz."""
    import argparse
    import os

    from .catalog import compose_recipe, generation_size, output_sizes, chain_text, fmt_size, to_dot, to_mermaid
    from .recipe import build_graph, check_schema

    ap = argparse.ArgumentParser(prog="python -m zitflow show",
                                 description="Print a recipe's resolved DAG, or write it as a picture.")
    ap.add_argument("overrides", nargs="*", help="recipe=NAME and any key=value overrides")
    ap.add_argument("--format", choices=("text", "mermaid", "dot", "svg", "png", "pdf"), default=None,
                    help="default: text, or what --out's suffix says (.mmd .md .dot .gv .svg .png .pdf .txt)")
    ap.add_argument("--out", help="write to this file instead of printing")
    ns = ap.parse_args(args)
    names = [o.split("=", 1)[1] for o in ns.overrides if o.startswith("recipe=")]
    if not names:
        ap.error("name the recipe: show recipe=NAME")
    fmt = ns.format
    if fmt is None and ns.out:
        suffix = os.path.splitext(ns.out)[1].lower()
        if suffix not in OUT_FORMATS:
            ap.error(f"--out {ns.out}: unknown suffix {suffix!r}; use one of {', '.join(OUT_FORMATS)} or --format")
        fmt = OUT_FORMATS[suffix]
    fmt = fmt or "text"
    if fmt in ("svg", "png", "pdf") and not ns.out:
        ap.error(f"--format {fmt} writes a picture: give --out FILE.{fmt}")
    rest = [o for o in ns.overrides if not o.startswith("recipe=")]
    name = names[-1]
    try:
        cfg = compose_recipe(name, rest)
        check_schema(name, cfg.get("schema_version"))
        graph = build_graph(name, cfg.stages)
    except Exception as e:  # an unknown recipe, a bad override or field: one line, exit 2
        print(f"zitflow show: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    if fmt in ("mermaid", "mermaid-md"):
        text = to_mermaid(graph)
        if fmt == "mermaid-md":
            text = f"```mermaid\n{text}```\n"
    elif fmt in ("dot", "svg", "png", "pdf"):
        text = to_dot(graph)
    else:
        gen = generation_size(graph)
        sizes = ", ".join(f"{k} {fmt_size(v)}" for k, v in output_sizes(graph).items())
        text = (f"recipe '{name}': {cfg.get('description') or ''}\n"
                f"  generates {fmt_size(gen) if gen else 'nothing (post-only)'}; delivers {sizes}\n"
                f"  chain: {chain_text(graph)}\n" + _stage_table(graph) + "\n")
    if fmt in ("svg", "png", "pdf"):
        return _draw_dot(text, fmt, ns.out)
    if ns.out:
        with open(ns.out, "w") as f:
            f.write(text)
        print(f"wrote {ns.out}")
    else:
        print(text, end="")
    return 0


def _draw_dot(text: str, fmt: str, out: str) -> int:
    """Render dot ``text`` to ``out`` with Graphviz's ``dot -T<fmt>``; exit 2 saying so without it."""
    import shutil
    import subprocess

    dot = shutil.which("dot")
    if dot is None:
        print(f"zitflow show: drawing {out} needs Graphviz's 'dot' program (apt install graphviz); "
              f"or write the text with --out {out.rsplit('.', 1)[0]}.dot or .mmd", file=sys.stderr)
        return 2
    p = subprocess.run([dot, f"-T{fmt}", "-o", out], input=text, text=True, capture_output=True)
    if p.returncode != 0:
        print(f"zitflow show: dot failed: {p.stderr.strip().splitlines()[0] if p.stderr.strip() else p.returncode}",
              file=sys.stderr)
        return 2
    print(f"wrote {out}")
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


def cmd_reproduce(args: list[str]) -> int:
    """Re-make an exported image from its embedded metadata (see :mod:`zitflow.reproduce`)."""
    import argparse

    from .reproduce import ReproduceError, cache_summary, reproduce

    ap = argparse.ArgumentParser(
        prog="python -m zitflow reproduce",
        description="Re-create the run that made IMAGE from the metadata in it: zitflow's own record "
                    "(recipe, overrides, model, full config; with the cache present nothing is generated "
                    "again), or A1111-style 'parameters' text from other tools.")
    ap.add_argument("image", help="a PNG (or JPEG / WebP) exported by zitflow, or another tool's PNG")
    ap.add_argument("overrides", nargs="*", help="how to run: runtime.device=cpu cache.dir=... model.path=...; "
                                                 "any override for --recipe with another tool's image")
    ap.add_argument("--recipe", help="the recipe another tool's image is mapped onto (default: poster)")
    ap.add_argument("--out", help="run dir for the outputs (default outputs/reproduce/DATE/TIME-RECIPE)")
    ns = ap.parse_intermixed_args(args)
    from .models.pool import ModelLoadError
    from .models.sources import ModelNotFound

    try:
        res = reproduce(ns.image, ns.out, ns.overrides, ns.recipe, reporter=None)
    except (ValueError, ModelNotFound, ModelLoadError) as e:  # ReproduceError, RecipeError, ...
        print(f"zitflow reproduce: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    p = res.plan
    if p.source == "zitflow":
        rec = p.record or {}
        print(f"reproduced {ns.image} from its zitflow record: recipe {p.recipe}, seed {rec.get('seed')}, "
              f"model {(rec.get('model') or {}).get('name')}, overrides {' '.join(p.overrides) or 'none'}")
    else:
        used = ", ".join(f"{k} {v!r}" if k != "prompt" else "prompt" for k, v in p.mapped.items())
        print(f"reproduced {ns.image} from its A1111 parameters onto recipe {p.recipe}: used {used}")
        print(f"ignored: {'; '.join(p.ignored) if p.ignored else 'nothing'}")
    for note in p.notes:
        print(f"note: {note}")
    hits, total, ran = cache_summary(res.manifest)
    print(f"cache: {hits}/{total} stages reused; generation stages run: {', '.join(ran) or 'none'}")
    if res.match:
        print(f"identical pixels: {res.match}")
    elif res.differs:
        print(f"pixels differ from {ns.image}: {'; '.join(res.differs)}")
    for stage, path in res.written.items():
        print(f"  {stage}: {path}")
    return 0


def cmd_validate(args: list[str]) -> int:
    """Speed, memory curve and determinism of a model on this machine (:mod:`zitflow.validate`)."""
    from .validate import main

    return main(args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {"kinds": cmd_kinds, "list": cmd_list, "show": cmd_show,
                                                   "reproduce": cmd_reproduce, "validate": cmd_validate}


def dispatch(argv: list[str]) -> bool:
    """Run a subcommand if ``argv[0]`` names one; False to fall through to the Hydra job."""
    if argv and argv[0] in COMMANDS:
        raise SystemExit(COMMANDS[argv[0]](argv[1:]))
    return False
