"""Benchmark generation through zitflow's own stages: seconds and peak memory per stage, per plan.

Runs ``encode -> denoise -> decode`` (the registered stages, through the executor, a fresh cache
store per run so every stage computes) at each size

* under each memory plan forced (``runtime.offload=<plan>``), with the whole GPU, and
* under emulated card sizes (``--budgets``, GiB): ``runtime.vram_gb`` tells the planner the card
  size and ``torch.cuda.set_per_process_memory_fraction`` makes the allocator enforce it; the
  plan is picked by zitflow (``offload=auto``), and an out-of-memory error steps down once.

Each row: seconds of encode / denoise / decode, peak GPU memory per stage (``torch.cuda.
max_memory_allocated``, weights included), the plan that ran (and any OOM fallback), the
planner's estimate, and whether it fit. Runs are ordered from the largest plan to the smallest
(hooks are only added, never churned), each plan/budget group starts with one untimed 512x512
warm-up, and no new run starts after ``--max-seconds``. Prints a table and writes JSON (``--out``).

The default model is ``model=random_full`` (:mod:`zitflow.models.random_full`): the REAL-size
architecture from diffusers' default configs with random bf16 weights, built directly on the GPU
(no download, no disk): ``ZImageTransformer2DModel()`` (6.15B), a Qwen3-4B ``Qwen3Model``
(4.02B), the Flux ``AutoencoderKL`` (83.8M), Z-Image-Turbo's scheduler settings and the tiny
model's byte-level tokenizer. Its pictures are noise; its timings and memory are the real model's.

Usage::

    python bench/generate_bench.py --out gen_bench.json              # GPU (H100: ~6 minutes)
    python bench/generate_bench.py --tiny --out /tmp/gen_tiny.json   # GPU, tiny model: plan code check
    python bench/generate_bench.py --cpu --tiny --out /tmp/gen.json  # CPU smoke test (seconds)

Needs: torch, diffusers, transformers, accelerate (zitflow importable).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zitflow.cache.store import CacheStore  # noqa: E402
from zitflow.config import ModelConfig, RuntimeConfig  # noqa: E402
from zitflow.executor import Executor  # noqa: E402
from zitflow.models.memory import GiB, PLANS, choose, peak_bytes, rank  # noqa: E402
from zitflow.models.pool import ModelPool  # noqa: E402
from zitflow.recipe import build_graph  # noqa: E402
from zitflow.stage import RunContext  # noqa: E402

GPU_SIZES = "512x512,1024x1024,1088x1920,1920x1088"
CPU_SIZES = "256x256,512x512,448x256"
STAGES = ("encode", "denoise", "decode")

PROMPT = "一幅水墨风格的竹林，晨雾缭绕，远处有一座小亭子，细腻的笔触，高分辨率"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        w, h = item.lower().split("x")
        out.append((int(w), int(h)))
    return out


def build_random_zimage(pool: ModelPool, device: str) -> ModelConfig:
    """Full-size Z-Image-Turbo architecture with random bf16 weights (``model=random_full``),
    built on ``device`` by ``pool``; returns the model config the stages should use."""
    t0 = time.perf_counter()
    config = ModelConfig(name="random-full", source="random", dtype="bfloat16")
    runtime = RuntimeConfig(device=device, progress="off")
    pool.text_encoder(config, runtime)
    n = {c: sum(p.numel() for p in pool.get(config, runtime, c).parameters())
         for c in ("text_encoder", "transformer", "vae")}
    pool.get(config, runtime, "scheduler")
    print(f"built random Z-Image-Turbo in {time.perf_counter() - t0:.1f} s: "
          + ", ".join(f"{k} {v / 1e9:.3f}B" for k, v in n.items()), flush=True)
    return config


def stages_for(width: int, height: int, seed: int) -> dict:
    return {
        "encode": {"kind": "encode", "prompt": f"{PROMPT} #{seed}"},
        "denoise": {"kind": "denoise", "inputs": {"embeds": "encode"}, "seed": seed, "width": width,
                    "height": height, "steps": ARGS.steps},
        "decode": {"kind": "decode", "input": "denoise"},
    }


def one_run(pool: ModelPool, config: ModelConfig, runtime: RuntimeConfig, width: int, height: int, seed: int) -> dict:
    """Run the three stages once with a fresh store; a row of the table (errors recorded, not raised)."""
    import torch

    ctx = RunContext(runtime=runtime, models=pool, model_config=config)
    row: dict = {"size": f"{width}x{height}", "seconds": {}, "peak_gib": {}, "plans": {}, "notes": {}}
    with tempfile.TemporaryDirectory(prefix="zitflow-bench-") as tmp:
        t0 = time.perf_counter()
        try:
            manifest = Executor(build_graph("bench", stages_for(width, height, seed)), CacheStore(tmp), ctx).execute()
            row["fit"] = True
            for r in manifest.stages:
                row["seconds"][r.name] = round(r.seconds, 3)
                row["peak_gib"][r.name] = None if r.peak_gpu_bytes is None else round(r.peak_gpu_bytes / GiB, 2)
                row["plans"][r.name] = r.notes.get("memory_plan")
                extra = {k: v for k, v in r.notes.items() if k != "memory_plan"}
                if extra:
                    row["notes"][r.name] = extra
        except Exception as e:  # noqa: BLE001 - an OOM under a budget is a result, not a crash
            row["fit"] = False
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            if torch.cuda.is_available():
                gc.collect()
                torch.cuda.empty_cache()
        row["wall_s"] = round(time.perf_counter() - t0, 3)
    return row


def set_budget(gib: float | None) -> None:
    import torch

    if not torch.cuda.is_available():
        return
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(1.0 if gib is None else min(1.0, gib * GiB / total))


def plan_groups(pool: ModelPool, config: ModelConfig, device: str, sizes, plans, budgets) -> list[dict]:
    """The run groups (forced plans, then budgets), ordered from the largest expected plan to the smallest."""
    groups = []
    if not device.startswith("cuda"):
        return [{"mode": "plan", "plan": "cpu", "budget": None, "rank": 0}]
    sizes_info = pool.sizes(config, RuntimeConfig(device=device))
    for p in plans:
        groups.append({"mode": "plan", "plan": p, "budget": None, "rank": rank(p), "order": 0})
    for b in budgets:
        expected = [choose(w, h, int(b * GiB), sizes_info) for w, h in sizes]
        worst = max((rank(e.name) if e else len(PLANS)) for e in expected)
        groups.append({"mode": "budget", "plan": "auto", "budget": b, "rank": worst, "order": 1})
    return sorted(groups, key=lambda g: (g["rank"], g["order"]))


def main() -> int:
    import torch

    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (plans do not apply: 'cpu')")
    ap.add_argument("--tiny", action="store_true", help="the tiny model instead of the random full-size one")
    ap.add_argument("--sizes", default=None, help=f"WxH list (GPU default {GPU_SIZES}; CPU {CPU_SIZES})")
    ap.add_argument("--plans", default=",".join(PLANS), help="plans to force, comma-separated")
    ap.add_argument("--budgets", default="12,16,24", help="emulated card sizes in GiB ('' for none)")
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--pin", default="on", choices=("on", "off", "both"),
                    help="pinned host copies of offloaded weights (both: every forced plan twice, off then on)")
    ap.add_argument("--max-seconds", type=float, default=450.0, help="start no new run after this many seconds")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ARGS = ap.parse_args()

    device = "cpu" if ARGS.cpu or not torch.cuda.is_available() else "cuda"
    sizes = parse_sizes(ARGS.sizes or (GPU_SIZES if device == "cuda" else CPU_SIZES))
    plans = [p for p in ARGS.plans.split(",") if p]
    budgets = [float(b) for b in ARGS.budgets.split(",") if b] if device == "cuda" else []
    pool = ModelPool()
    if ARGS.tiny:
        config = ModelConfig(name="tiny", source="tiny", dtype="bfloat16" if device == "cuda" else "float32")
    else:
        if device != "cuda":
            print("the full-size model needs CUDA; use --tiny on the CPU", file=sys.stderr)
            return 2
        config = build_random_zimage(pool, device)

    start = time.perf_counter()
    rows: list[dict] = []
    seed = 0
    groups = plan_groups(pool, config, device, sizes, plans, budgets)
    if ARGS.pin == "both":
        groups = [g | {"pin": p} for g in groups for p in (("off", "on") if g["mode"] == "plan" else ("on",))]
    for group in groups:
        from zitflow.models import placement

        pin = group.get("pin", ARGS.pin)
        placement.PIN_MEMORY = pin == "on"
        if pin == "off" or ARGS.pin == "both":
            pool.evict_all()
            for comp in pool.components(config).values():
                if hasattr(comp, "parameters"):
                    placement.unpin(comp)
        runtime = RuntimeConfig(device=device, offload="auto" if group["plan"] in ("auto", "cpu") else group["plan"],
                                vram_gb=group["budget"], progress="off")
        pool.forget_floors()
        if group["budget"] is not None:
            pool.evict_all()
            gc.collect()
            torch.cuda.empty_cache()
        set_budget(group["budget"])
        label = f"budget {group['budget']:g} GiB" if group["budget"] else f"plan {group['plan']}"
        label += f" pin {pin}" if ARGS.pin == "both" else ""
        seed += 1
        one_run(pool, config, runtime, 512, 512, seed)  # warm-up: placement, kernels
        for w, h in sizes:
            if time.perf_counter() - start > ARGS.max_seconds:
                rows.append({"mode": group["mode"], "plan_requested": group["plan"], "budget_gib": group["budget"],
                             "size": f"{w}x{h}", "skipped": "max-seconds reached"})
                continue
            seed += 1
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            row = one_run(pool, config, runtime, w, h, seed)
            sizes_info = pool.sizes(config, runtime)
            est = None
            if device == "cuda":
                budget = int((group["budget"] or torch.cuda.get_device_properties(0).total_memory / GiB) * GiB)
                chosen = choose(w, h, budget, sizes_info, offload=runtime.offload, vae_tiling=runtime.vae_tiling)
                est = round(peak_bytes(chosen, w, h, sizes_info) / GiB, 2) if chosen else None
            row.update({"mode": group["mode"], "plan_requested": group["plan"], "budget_gib": group["budget"],
                        "estimate_gib": est, "device": device, "pin_memory": pin})
            rows.append(row)
            print(f"{label:>16}  {row['size']:>9}  {fmt_row(row)}", flush=True)
        set_budget(None)

    print_table(rows)
    info = {"device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "model": "tiny" if ARGS.tiny else "random full-size Z-Image-Turbo (bf16)",
            "steps": ARGS.steps, "total_s": round(time.perf_counter() - start, 1)}
    if ARGS.out:
        Path(ARGS.out).write_text(json.dumps({"info": info, "rows": rows}, indent=2, ensure_ascii=False))
        print(f"wrote {ARGS.out}")
    return 0


def fmt_row(row: dict) -> str:
    if "error" in row:
        return f"FAILED {row['error']}"
    s = row["seconds"]
    peak = max((v for v in row["peak_gib"].values() if v is not None), default=None)
    plan = row["plans"].get("denoise")
    fallback = "; ".join(f"{k}: {v['oom_fallback']}" for k, v in row["notes"].items() if "oom_fallback" in v)
    return (f"encode {s.get('encode', 0):6.2f}s  denoise {s.get('denoise', 0):6.2f}s  decode {s.get('decode', 0):6.2f}s  "
            f"peak {peak if peak is not None else '-':>6} GiB  plan {plan}" + (f"  (OOM: {fallback})" if fallback else ""))


def print_table(rows: list[dict]) -> None:
    head = f"| {'size':>9} | {'requested':>14} | {'ran (denoise / decode)':>34} | {'encode s':>8} | {'denoise s':>9} | " \
           f"{'decode s':>8} | {'peak GiB':>8} | {'est GiB':>7} | fit |"
    print("\n" + head + "\n|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        req = f"{r['budget_gib']:g} GiB card" if r.get("budget_gib") else f"plan {r['plan_requested']}"
        req += f" pin {r['pin_memory']}" if ARGS.pin == "both" and r.get("pin_memory") else ""
        if "skipped" in r:
            print(f"| {r['size']:>9} | {req:>14} | {'skipped: ' + r['skipped']:>34} |")
            continue
        s, peaks = r.get("seconds", {}), [v for v in r.get("peak_gib", {}).values() if v is not None]
        ran = f"{r['plans'].get('denoise')} / {r['plans'].get('decode')}" if r.get("fit") else r.get("error", "")[:34]
        print(f"| {r['size']:>9} | {req:>14} | {ran:>34} | {s.get('encode', 0):8.2f} | {s.get('denoise', 0):9.2f} | "
              f"{s.get('decode', 0):8.2f} | {max(peaks) if peaks else '-':>8} | {r.get('estimate_gib') or '-':>7} | "
              f"{'yes' if r.get('fit') else 'NO':>3} |")


ARGS: argparse.Namespace

if __name__ == "__main__":
    sys.exit(main())
