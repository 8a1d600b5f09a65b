"""Subcommands beside the Hydra job: ``python -m zitflow kinds`` lists stage kinds and params."""

from __future__ import annotations

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
        doc = (cls.__module__ and __import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip().splitlines()
        if doc:
            print(f"  {doc[0]}")
        for field, typ, default, allowed in describe(cls.Params):
            print(f"  {field:<16} {typ:<14} default {default!r:<14} {allowed}")
        print()
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {"kinds": cmd_kinds}


def dispatch(argv: list[str]) -> bool:
    """Run a subcommand if ``argv[0]`` names one; False to fall through to the Hydra job."""
    if argv and argv[0] in COMMANDS:
        raise SystemExit(COMMANDS[argv[0]](argv[1:]))
    return False
