"""``python -m zitflow validate``: check a machine and a model before real work.

The steps practitioners run by hand when they set Z-Image-Turbo up, as one command:

1. **Speed**: encode / denoise / decode seconds at each size (default 512, 768 and 1024 square
   plus 1088x1920), the median of ``--repeats`` runs after a warm-up, each with a fresh store
   so every stage computes.
2. **Memory curve**: peak GPU memory per size as measured (CUDA), beside the planner's estimate
   for that size and the plan ``runtime.offload=auto`` would pick on the card (or on
   ``--vram-gb``), so the sizes that fit are known before a recipe asks for one.
3. **Quality check**: the same seed twice gives identical latents (determinism), and the
   ``quality`` stage's no-reference measures of each decoded picture (sharpness, noise,
   clipping). With ``model=tiny`` the pictures are noise and only the mechanics are checked.

Prints a table, writes ``validate.json`` and ``validate.png`` (seconds and GiB against
megapixels, drawn with Pillow) into ``--out``.

Usage::

    python -m zitflow validate                       # model=zimage_turbo, GPU
    python -m zitflow validate model=tiny --sizes 256,512 --out /tmp/v
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

REPO_CONF = Path(__file__).resolve().parent.parent / "conf"
DEFAULT_SIZES = "512,768,1024,1088x1920"
PROMPT = "一只橘猫趴在窗台上晒太阳，窗外是樱花，柔和的午后光线，细节清晰"


@dataclass
class SizeResult:
    """One row of the report: a size's seconds, memory and picture measures."""

    width: int
    height: int
    seconds: dict[str, float] = field(default_factory=dict)
    peak_gib: float | None = None
    estimate_gib: float | None = None
    plan: str | None = None
    quality: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"512,1088x1920"`` -> [(512, 512), (1088, 1920)]; sides must be multiples of 16."""
    out = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        w, sep, h = item.partition("x")
        try:
            size = (int(w), int(h if sep else w))
        except ValueError:
            raise ValueError(f"--sizes: {item!r} is not WIDTHxHEIGHT or SIDE") from None
        if size[0] % 16 or size[1] % 16 or min(size) < 64:
            raise ValueError(f"--sizes: {item!r}: sides must be multiples of 16 and at least 64")
        out.append(size)
    if not out:
        raise ValueError("--sizes: no size given")
    return out


def model_config(name: str, overrides: list[str]):
    """The ``conf/model/<name>.yaml`` group entry with ``model.*=`` overrides, as a ModelConfig."""
    from .config import ModelConfig, load_section

    path = REPO_CONF / "model" / f"{name}.yaml"
    if not path.exists():
        choices = ", ".join(p.stem for p in sorted((REPO_CONF / "model").glob("*.yaml")))
        raise ValueError(f"model={name}: no such model config; allowed: {choices}")
    cfg = OmegaConf.load(path)
    for o in overrides:
        k, _, v = o.partition("=")
        OmegaConf.update(cfg, k[len("model."):], OmegaConf.create({"v": v}).v if v else None)
    return load_section("model", ModelConfig, OmegaConf.to_container(cfg, resolve=True))


def run_once(pool, config, runtime, width: int, height: int, seed: int):
    """encode -> denoise -> decode -> quality on a fresh store; (manifest, latents, measures)."""
    from .cache.store import CacheStore
    from .executor import Executor
    from .recipe import build_graph
    from .stage import RunContext

    stages = {
        "encode": {"kind": "encode", "prompt": PROMPT, "with_negative": False},
        "denoise": {"kind": "denoise", "inputs": {"embeds": "encode"}, "seed": seed, "width": width, "height": height},
        "decode": {"kind": "decode", "input": "denoise"},
        "quality": {"kind": "quality", "input": "decode"},
    }
    with tempfile.TemporaryDirectory(prefix="zitflow-validate-") as tmp:
        store = CacheStore(tmp)
        ctx = RunContext(runtime=runtime, models=pool, model_config=config)
        manifest = Executor(build_graph("validate", stages), store, ctx).execute()
        key = next(r.key for r in manifest.stages if r.name == "denoise")
        latents = store.load(key).tensors["latents"]
    return manifest, latents, manifest.outputs["quality"].value


def validate(config, runtime, sizes: list[tuple[int, int]], repeats: int = 2, vram_gb: float | None = None,
             log=print) -> dict[str, Any]:
    """Run the three checks; returns the report (also what ``validate.json`` holds)."""
    import torch

    from .models.memory import GiB, choose, peak_bytes
    from .models.pool import ModelPool

    pool = ModelPool()
    device = runtime.resolved_device()
    cuda = device.startswith("cuda")
    sizes_info = pool.sizes(config, runtime)
    budget = int((vram_gb or (torch.cuda.get_device_properties(0).total_memory / GiB if cuda else 24)) * GiB)
    rows: list[SizeResult] = []
    t0 = time.perf_counter()
    log(f"validate: model {config.name} on {device}; sizes {', '.join(f'{w}x{h}' for w, h in sizes)}")
    run_once(pool, config, runtime, *sizes[0], seed=0)  # warm-up: loading, kernels
    for w, h in sizes:
        row = SizeResult(w, h)
        plan = choose(w, h, budget, sizes_info)
        row.plan = plan.name if plan else None
        row.estimate_gib = round(peak_bytes(plan, w, h, sizes_info) / GiB, 2) if plan else None
        try:
            per_stage: dict[str, list[float]] = {}
            peaks = []
            for r in range(repeats):
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                manifest, _, quality = run_once(pool, config, runtime, w, h, seed=1 + r)
                for s in manifest.stages:
                    per_stage.setdefault(s.name, []).append(s.seconds)
                    if s.peak_gpu_bytes:
                        peaks.append(s.peak_gpu_bytes)
                row.quality = {k: round(v, 3) for k, v in quality.items()}
            row.seconds = {k: round(statistics.median(v), 3) for k, v in per_stage.items() if k != "quality"}
            row.peak_gib = round(max(peaks) / GiB, 2) if peaks else None
        except Exception as e:  # an out-of-memory at one size is a result, not the end of the check
            row.error = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            if cuda:
                torch.cuda.empty_cache()
        rows.append(row)
        log(format_row(row))
    _, a, _ = run_once(pool, config, runtime, *sizes[0], seed=7)
    _, b, _ = run_once(pool, config, runtime, *sizes[0], seed=7)
    deterministic = bool(torch.equal(a, b))
    log(f"determinism: seed 7 twice at {sizes[0][0]}x{sizes[0][1]}: latents "
        + ("identical" if deterministic else f"differ (max abs {float((a - b).abs().max()):.3g})"))
    return {"model": config.name, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "budget_gib": round(budget / GiB, 1), "deterministic": deterministic,
            "total_s": round(time.perf_counter() - t0, 1), "rows": [r.__dict__ | {"megapixels": r.megapixels}
                                                                   for r in rows]}


def format_row(r: SizeResult) -> str:
    if r.error:
        return f"{r.width:>5}x{r.height:<5} FAILED {r.error}"
    s = r.seconds
    total = sum(s.values())
    peak = f"{r.peak_gib:6.2f}" if r.peak_gib is not None else "     -"
    q = r.quality
    return (f"{r.width:>5}x{r.height:<5} encode {s.get('encode', 0):6.2f}s denoise {s.get('denoise', 0):6.2f}s "
            f"decode {s.get('decode', 0):6.2f}s total {total:6.2f}s | peak {peak} GiB est. {r.estimate_gib} GiB "
            f"({r.plan}) | sharpness {q.get('sharpness', 0):.0f} noise {q.get('noise', 0):.2f}")


def plot(report: dict[str, Any], path: Path) -> None:
    """Seconds (left) and GiB (right) against megapixels, as a PNG drawn with Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    rows = sorted((r for r in report["rows"] if not r.get("error")), key=lambda r: r["megapixels"])
    W, H, pad = 900, 420, 60
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    panels = [("seconds (encode+denoise+decode)", [sum(r["seconds"].values()) for r in rows], "#1f77b4"),
              ("GiB: measured (solid), estimated (dots)", [r["peak_gib"] or 0 for r in rows], "#d62728")]
    est = [r["estimate_gib"] or 0 for r in rows]
    mps = [r["megapixels"] for r in rows] or [1.0]
    for i, (title, ys, colour) in enumerate(panels):
        x0, x1, y0, y1 = pad + i * (W // 2), (i + 1) * (W // 2) - 20, 40, H - pad
        d.rectangle((x0, y0, x1, y1), outline="black")
        d.text((x0, 15), title, fill="black", font=font)
        top = max(ys + (est if i else []) + [1e-9]) * 1.15
        sx = lambda m: x0 + (m / (max(mps) * 1.1)) * (x1 - x0)  # noqa: E731
        sy = lambda v: y1 - (v / top) * (y1 - y0)  # noqa: E731
        for frac in (0, 0.5, 1.0):
            d.text((x0 - 45, sy(top * frac) - 5), f"{top * frac:.2g}", fill="black", font=font)
        for frac in (0.5, 1.0):
            d.text((sx(max(mps) * frac) - 8, y1 + 2), f"{max(mps) * frac:.2g}", fill="black", font=font)
        measured = any(ys)
        pts = [(sx(m), sy(v)) for m, v in zip(mps, ys)] if measured else []
        if not measured:
            d.text((x0 + 10, y1 - 20), "not measured (no CUDA)", fill="black", font=font)
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        for (x, y), r in zip(pts or [(sx(m), sy(v)) for m, v in zip(mps, est)], rows):
            if pts:
                d.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
            label = f"{r['width']}x{r['height']}"
            width = d.textlength(label, font=font)
            lx = x + 4 if x + 4 + width <= x1 - 2 else x - 4 - width  # left of the point when it would leave the panel
            d.text((lx, y - 14), label, fill="black", font=font)
        if i:
            for m, v in zip(mps, est):
                d.ellipse((sx(m) - 2, sy(v) - 2, sx(m) + 2, sy(v) + 2), outline="black")
        d.text(((x0 + x1) // 2 - 30, y1 + 10), "megapixels", fill="black", font=font)
    d.text((pad, H - 25), f"zitflow validate: model {report['model']} on {report['device']}; "
           f"deterministic: {report['deterministic']}", fill="black", font=font)
    img.save(path)


def main(args: list[str]) -> int:
    """Entry for ``python -m zitflow validate``; exit 2 with one line on bad input."""
    ap = argparse.ArgumentParser(prog="python -m zitflow validate", description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="model=NAME, model.path=..., runtime.device=... (as the app)")
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help=f"sizes to check (default {DEFAULT_SIZES})")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--vram-gb", type=float, default=None, help="plan for a card of this size (default: this GPU)")
    ap.add_argument("--out", type=Path, default=Path("outputs/validate"))
    ns = ap.parse_args(args)
    from .config import RuntimeConfig, load_section

    try:
        sizes = parse_sizes(ns.sizes)
        name = next((o.split("=", 1)[1] for o in ns.overrides if o.startswith("model=")), "zimage_turbo")
        config = model_config(name, [o for o in ns.overrides if o.startswith("model.")])
        rt = {o.split("=", 1)[0][len("runtime."):]: o.split("=", 1)[1] for o in ns.overrides if o.startswith("runtime.")}
        runtime = load_section("runtime", RuntimeConfig, {"progress": "off"} | rt)
        bad = [o for o in ns.overrides if not o.startswith(("model=", "model.", "runtime."))]
        if bad:
            raise ValueError(f"unknown override(s) {bad}; allowed: model=NAME, model.FIELD=..., runtime.FIELD=...")
        report = validate(config, runtime, sizes, ns.repeats, ns.vram_gb)
    except ValueError as e:
        print(f"zitflow validate: {e}")
        return 2
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "validate.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    plot(report, ns.out / "validate.png")
    print(f"wrote {ns.out / 'validate.json'} and {ns.out / 'validate.png'}")
    return 0
