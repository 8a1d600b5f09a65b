"""What a run shows: the plan, then per stage a line (non-interactive) or a live status."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console


def interactive(mode: str) -> bool:
    """Bars and live status for ``bar``, or ``auto`` in a terminal; plain lines otherwise."""
    if mode == "auto":
        return sys.stderr.isatty()
    return mode == "bar"


class StageReporter:
    """Prints the plan and one line per stage event to stderr (``progress=off``: nothing)."""

    def __init__(self, mode: str = "auto"):
        self.mode = mode
        self.console = Console(stderr=True, highlight=False, force_terminal=None if interactive(mode) else False)
        self._t0: dict[str, float] = {}

    def _print(self, text: str) -> None:
        if self.mode != "off":
            self.console.print(text, markup=False, soft_wrap=True)

    def plan(self, table: str, cache_dir: Path) -> None:
        self._print(f"plan (cache {cache_dir}):\n{table}")

    def event(self, name: str, status: str) -> None:
        if status == "start":
            self._t0[name] = time.perf_counter()
            if interactive(self.mode):
                self._print(f"[{name}] running...")
            return
        seconds = time.perf_counter() - self._t0.pop(name, time.perf_counter())
        self._print(f"[{name}] {status} in {seconds:.2f}s")

    def done(self, manifest, written: dict[str, str]) -> None:
        ran = sum(1 for r in manifest.stages if r.status in ("run", "rebuilt"))
        self._print(f"done: {ran} stage(s) ran, {manifest.count('hit')} cached")
        for stage, path in written.items():
            self._print(f"  {stage}: {path}")
