"""``resolution``: the size policy. Which size to generate at, and how to fit it to the target.

Z-Image-Turbo was distilled at 1024x1024; its hard rule is sides divisible by 16 (VAE factor 8
x patch 2), and the seeds recommend multiples of 64 (1152x864 fails, 1152x896 works). The
seeds' advice for other targets: generate where the model is comfortable, then crop or pad.

Strategies (target WxH -> generated size):

* ``square`` (default, the seeds' recommendation): sqrt(native_pixels) snapped to the grid,
  1024x1024, then fit to the target.
* ``native``: the ~native_pixels (1 MP) bucket, sides multiples of ``grid``, aspect between
  1:4 and 4:1, whose aspect is closest to the target's (1920x1080 -> 1344x768,
  1080x1920 -> 768x1344, 4:3 -> 1216x896), then fit. Less cropping than square, same cost.
* ``exact``: the target rounded *up* to the grid (1152x864 -> 1152x896, 1080x1920 ->
  1088x1920), so the fit only crops or pads a few pixels and never enlarges. Costs what the
  target costs: above ~1 MP the seeds report softness and OOM risk.

Then ``fit`` (cover | contain | stretch) brings the generated image to the target (the ``fit``
stage reads this plan). ``max_pixels`` refuses a generated size above it, naming sizes that fit.
``vram_gb`` (optional) asks ``zitflow.models.memory.fits(w, h, vram_gb)`` and steps the size
down until it fits. :func:`explain` prints the decision and the alternatives (``explain=true``).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Optional

from ..artifacts import Data
from ..params import ParamError, check_bounds, param
from ..registry import register
from ..stage import Stage
from .fit import FIT_MODES, fit_geometry

STRATEGIES = ("square", "native", "exact")
GRIDS = (16, 32, 64)
NATIVE_PIXELS = 1024 * 1024
#: 2048x2048 (4.19 MP): the largest size measured on an H100 (28.7 GiB peak, 7.3 s)
MAX_PIXELS = 2048 * 2048
#: native buckets span aspects 1:4 .. 4:1 and native_pixels +-10%
MAX_ASPECT = 4.0
AREA_TOLERANCE = 0.10
#: vram_gb step-down: shrink the pixel count by this factor until the size fits, down to MIN_PIXELS
VRAM_STEP = 0.8
MIN_PIXELS = 256 * 256
MEMORY_MODULE = "zitflow.models.memory"


@dataclass
class ResolutionParams:
    width: int = param(1024, gt=0, le=16384, help="target width in pixels (the finished asset)")
    height: int = param(1024, gt=0, le=16384, help="target height in pixels")
    strategy: str = param("square", choices=STRATEGIES,
                          help="square: 1024x1024 then fit; native: nearest ~1 MP aspect bucket then fit; "
                               "exact: the target rounded up to the grid")
    fit: str = param("cover", choices=FIT_MODES,
                     help="how the generated image reaches the target: cover crops, contain pads, stretch distorts")
    grid: int = param(64, choices=GRIDS, help="generated sides are multiples of this; 16 is the model's hard rule, 64 recommended")
    native_pixels: int = param(NATIVE_PIXELS, ge=MIN_PIXELS, le=4096 * 4096,
                               help="the pixel count square and native aim for (1024*1024)")
    max_pixels: int = param(MAX_PIXELS, ge=MIN_PIXELS, le=8192 * 8192,
                            help="refuse to generate more pixels than this (2048*2048 = 4.19 MP)")
    vram_gb: Optional[float] = param(None, gt=0, le=4096,
                                     help="GPU memory to fit in; null = do not check (needs zitflow.models.memory)")

    def validate(self) -> None:
        if self.native_pixels > self.max_pixels:
            raise ParamError("native_pixels", f"got {self.native_pixels}; allowed: at most max_pixels "
                                              f"({self.max_pixels}); raise max_pixels or lower native_pixels")
        decide(self)  # max_pixels and vram_gb problems become ParamErrors here, before anything runs


@dataclass
class Decision:
    """The plan: generate ``gen`` (w, h), then ``fit`` to ``target`` (w, h); ``reason`` says why."""

    strategy: str
    target: tuple[int, int]
    gen: tuple[int, int]
    fit: str
    grid: int
    reason: str
    notes: list[str] = field(default_factory=list)

    def as_data(self) -> dict:
        return {"gen_width": self.gen[0], "gen_height": self.gen[1],
                "target_width": self.target[0], "target_height": self.target[1],
                "fit": self.fit, "strategy": self.strategy, "grid": self.grid, "reason": self.reason}


# -- the size rules -------------------------------------------------------------------------
def snap_up(value: int, grid: int) -> int:
    """The smallest multiple of ``grid`` >= ``value`` (at least ``grid``)."""
    return max(grid, -(-int(value) // grid) * grid)


def snap_down(value: float, grid: int) -> int:
    """The largest multiple of ``grid`` <= ``value`` (at least ``grid``)."""
    return max(grid, int(value // grid) * grid)


def square_size(native_pixels: int, grid: int) -> tuple[int, int]:
    """sqrt(native_pixels) rounded to the grid: 1024*1024 -> (1024, 1024)."""
    side = max(grid, round(math.sqrt(native_pixels) / grid) * grid)
    return side, side


def native_buckets(native_pixels: int, grid: int) -> list[tuple[int, int]]:
    """Every (w, h), multiples of ``grid``, with w*h within +-10% of ``native_pixels`` and aspect
    in [1/4, 4]; for 1 MP and grid 64 this is the familiar list (1024x1024, 1152x896, 1344x768, ...)."""
    out = set()
    w = grid
    limit = math.sqrt(native_pixels * MAX_ASPECT * (1 + AREA_TOLERANCE)) + grid
    while w <= limit:
        q = native_pixels / w / grid
        for h in {math.floor(q) * grid, math.ceil(q) * grid}:
            if h >= grid and abs(w * h / native_pixels - 1) <= AREA_TOLERANCE and \
                    1 / MAX_ASPECT <= w / h <= MAX_ASPECT:
                out.add((w, h))
        w += grid
    return sorted(out)


def native_size(target: tuple[int, int], native_pixels: int, grid: int) -> tuple[int, int]:
    """The bucket closest to the target's aspect (log distance), ties to the area nearest native."""
    aspect = target[0] / target[1]

    def score(b: tuple[int, int]) -> tuple[float, float]:
        a_err = abs(math.log(b[0] / b[1] / aspect))
        p_err = abs(math.log(b[0] * b[1] / native_pixels))
        return (a_err + 0.25 * p_err, p_err)

    return min(native_buckets(native_pixels, grid), key=score)


def exact_size(target: tuple[int, int], grid: int) -> tuple[int, int]:
    """The target rounded up to the grid: (1152, 864) -> (1152, 896), (1080, 1920) -> (1088, 1920)."""
    return snap_up(target[0], grid), snap_up(target[1], grid)


def strategy_size(strategy: str, target: tuple[int, int], native_pixels: int, grid: int) -> tuple[int, int]:
    if strategy == "square":
        return square_size(native_pixels, grid)
    if strategy == "native":
        return native_size(target, native_pixels, grid)
    return exact_size(target, grid)


def largest_exact(target: tuple[int, int], max_pixels: int, grid: int) -> tuple[int, int]:
    """The target's aspect scaled down, sides on the grid, within ``max_pixels``."""
    w, h = target
    scale = math.sqrt(max_pixels / (w * h))
    gw, gh = snap_down(w * scale, grid), snap_down(h * scale, grid)
    while gw * gh > max_pixels:  # snapping keeps sides >= grid; shrink the longer side
        if gw >= gh:
            gw -= grid
        else:
            gh -= grid
    return gw, gh


def _mp(size: tuple[int, int]) -> str:
    return f"{size[0] * size[1] / 1e6:.2f} MP"


def _reason(strategy: str, target: tuple[int, int], gen: tuple[int, int], fit: str, grid: int,
            native_pixels: int) -> str:
    tw, th = target
    then = "no fit needed" if gen == target else f"then {fit} to {tw}x{th}"
    if strategy == "square":
        return (f"square: generate {gen[0]}x{gen[1]}, the size Z-Image-Turbo was distilled at and the seeds' "
                f"recommendation, {then}.")
    if strategy == "native":
        aspect, got = tw / th, gen[0] / gen[1]
        return (f"native: {gen[0]}x{gen[1]} is the ~{native_pixels / 1e6:.1f} MP bucket (sides multiples of {grid}) "
                f"closest to the target's aspect {aspect:.4g} (bucket {got:.4g}, {abs(got / aspect - 1) * 100:.1f}% off), "
                f"{then}.")
    if gen == target:
        return f"exact: {tw}x{th} is already a multiple of {grid} and is generated as is; {then}."
    return (f"exact: {tw}x{th} rounded up to multiples of {grid} is {gen[0]}x{gen[1]} (the model needs sides "
            f"divisible by 16, {grid} {'is recommended' if grid == 64 else 'chosen'}), {then}.")


def _memory_fits():
    """``zitflow.models.memory.fits`` or None when that module is not present."""
    try:
        mod = importlib.import_module(MEMORY_MODULE)
    except ImportError:
        return None
    return getattr(mod, "fits", None)


def _shrink(strategy: str, target: tuple[int, int], pixels: int, grid: int) -> tuple[int, int]:
    if strategy == "square":
        side = snap_down(math.sqrt(pixels), grid)
        return side, side
    if strategy == "native":
        return native_size(target, pixels, grid)
    return largest_exact(target, pixels, grid)


def decide(params: ResolutionParams) -> Decision:
    """The generated size and fit plan for ``params``; :class:`ParamError` when it cannot be met.

    Pure apart from the optional ``vram_gb`` hook, which asks ``zitflow.models.memory.fits``.
    """
    target = (int(params.width), int(params.height))
    grid, native_pixels = int(params.grid), int(params.native_pixels)
    gen = strategy_size(params.strategy, target, native_pixels, grid)
    reason = _reason(params.strategy, target, gen, params.fit, grid, native_pixels)
    notes: list[str] = []
    aspect = target[0] / target[1]
    if params.strategy == "native" and not 1 / MAX_ASPECT <= aspect <= MAX_ASPECT:
        notes.append(f"the target's aspect {aspect:.3g} is beyond the buckets' 1:4..4:1; the nearest bucket "
                     f"is used and {params.fit} makes up the rest")
    if params.strategy == "exact" and gen[0] * gen[1] > 1.5 * native_pixels:
        alt = native_size(target, native_pixels, grid)
        notes.append(f"{gen[0]}x{gen[1]} ({_mp(gen)}) is well above the ~{native_pixels / 1e6:.1f} MP the model "
                     f"was distilled at: the seeds report softness and OOM risk (1080x1920); "
                     f"strategy=native would generate {alt[0]}x{alt[1]} and {params.fit} to {target[0]}x{target[1]}")
    if gen[0] * gen[1] > params.max_pixels:
        raise ParamError("max_pixels", _too_big(params, target, gen))
    if params.vram_gb is not None:
        gen, reason = _fit_vram(params, target, gen, reason)
    return Decision(params.strategy, target, gen, params.fit, grid, reason, notes)


def _too_big(params: ResolutionParams, target: tuple[int, int], gen: tuple[int, int]) -> str:
    grid, native_pixels = int(params.grid), int(params.native_pixels)
    fits = []
    for s in STRATEGIES:
        size = strategy_size(s, target, native_pixels, grid)
        if size[0] * size[1] <= params.max_pixels:
            fits.append(f"strategy={s} -> {size[0]}x{size[1]} ({_mp(size)})")
    lw, lh = largest_exact(target, params.max_pixels, grid)
    fits.append(f"exact at width={lw} height={lh} ({_mp((lw, lh))}) then an upscale stage")
    return (f"strategy '{params.strategy}' for {target[0]}x{target[1]} would generate {gen[0]}x{gen[1]} "
            f"({gen[0] * gen[1]} pixels, {_mp(gen)}), more than max_pixels={params.max_pixels} "
            f"({params.max_pixels / 1e6:.2f} MP). Sizes that fit: {'; '.join(fits)}; or raise max_pixels "
            f"if your GPU has the memory (2048x2048 peaks at ~29 GiB on an H100).")


def _fit_vram(params: ResolutionParams, target: tuple[int, int], gen: tuple[int, int],
              reason: str) -> tuple[tuple[int, int], str]:
    fits = _memory_fits()
    if fits is None:
        raise ParamError("vram_gb", f"got {params.vram_gb!r}, but the memory planner ({MEMORY_MODULE}.fits) is not "
                                    "available in this zitflow; allowed: null (no memory check)")

    def check(size: tuple[int, int]):
        try:
            return fits(size[0], size[1], params.vram_gb)
        except Exception as e:  # the planner's own failure, reported on the field that asked for it
            raise ParamError("vram_gb", f"{MEMORY_MODULE}.fits({size[0]}, {size[1]}, {params.vram_gb}) "
                                        f"failed: {e}") from None

    def how(answer) -> str:  # fits() may answer a plan name ('staged') or just True
        return f" (memory plan '{answer}')" if isinstance(answer, str) else ""

    answer = check(gen)
    if answer:
        return gen, reason + f" It fits in {params.vram_gb:g} GB{how(answer)}."
    first, pixels, size = gen, gen[0] * gen[1], gen
    while pixels * VRAM_STEP >= MIN_PIXELS:
        pixels = int(pixels * VRAM_STEP)
        size = _shrink(params.strategy, target, pixels, int(params.grid))
        answer = check(size)
        if answer:
            return size, (reason.replace(f"{first[0]}x{first[1]}", f"{size[0]}x{size[1]}", 1)
                          + f" {first[0]}x{first[1]} would not fit in {params.vram_gb:g} GB, so "
                          f"{size[0]}x{size[1]} is generated instead{how(answer)}.")
    raise ParamError("vram_gb", f"got {params.vram_gb:g}; no size down to {_mp(size)} ({size[0]}x{size[1]}) fits "
                                f"according to {MEMORY_MODULE}.fits; allowed: more GPU memory, or null")


def explain(params: ResolutionParams | None = None, **overrides) -> str:
    """The decision for ``params`` (or ``ResolutionParams(**overrides)``) and why, on one screen.

    Shows the target, the generated size, what the fit does to it, the reason, the guard, any
    warnings, and what the other strategies would do. ``max_pixels`` problems are shown, not raised.
    """
    fresh = params is None
    if params is None:
        params = ResolutionParams(**overrides)
    target = (int(params.width), int(params.height))
    head = (f"resolution: target {target[0]}x{target[1]} (aspect {target[0] / target[1]:.4g}, {_mp(target)}), "
            f"strategy {params.strategy}, fit {params.fit}, grid {params.grid}")
    lines = [head]
    try:
        if fresh:  # built from keywords: bounds and choices not yet checked
            check_bounds(params)
        d = decide(params)
    except ParamError as e:
        return "\n".join(lines + [f"  error     field '{e.field}': {e.message}"])
    geo = fit_geometry(d.gen, d.target, d.fit)
    lines += [f"  generate  {d.gen[0]}x{d.gen[1]} ({_mp(d.gen)}; sides multiples of {d.grid})",
              f"  then      {'nothing: the generated size is the target' if d.gen == d.target else geo.describe(d.gen)}",
              f"  why       {d.reason}",
              f"  guard     max_pixels {params.max_pixels} ({params.max_pixels / 1e6:.2f} MP): ok"]
    if params.vram_gb is not None:
        lines.append(f"  memory    checked against {params.vram_gb:g} GB with {MEMORY_MODULE}.fits")
    lines += [f"  note      {n}" for n in d.notes]
    lines.append("  other strategies:")
    for s in STRATEGIES:
        size = strategy_size(s, target, int(params.native_pixels), int(params.grid))
        over = "  (over max_pixels)" if size[0] * size[1] > params.max_pixels else ""
        what = "exact target" if size == target else fit_geometry(size, target, params.fit).describe(size)
        mark = "*" if s == params.strategy else " "
        lines.append(f"  {mark} {s:<7} {size[0]}x{size[1]} ({_mp(size)}) -> {what}{over}")
    return "\n".join(lines)


@register
class Resolution(Stage):
    """No inputs -> Data: ``gen_width``, ``gen_height`` (the size to generate, pixels, multiples
    of ``grid``), ``target_width``, ``target_height`` (the finished asset), ``fit`` (cover |
    contain | stretch), ``strategy``, ``grid`` and ``reason`` (one human sentence why)."""

    kind = "resolution"
    version = 1
    Params = ResolutionParams
    output = Data

    def run(self, params: ResolutionParams, inputs, ctx) -> Data:
        d = decide(params)
        if d.notes:
            ctx.notes["resolution"] = d.notes
        return Data(d.as_data())
