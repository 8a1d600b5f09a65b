"""Speed of generation: stock diffusers ``ZImagePipeline`` against zitflow's stages, side by side.

One process builds the REAL-size Z-Image-Turbo architecture with random bf16 weights on the GPU
(see ``generate_bench.build_random_zimage``: 6.15B DiT, Qwen3-4B, Flux VAE) and, at each size,
times with the same module objects and the same seed:

* ``stock``: ``ZImagePipeline(...)(prompt, height, width, 9 steps, guidance 0)`` end to end
  (PIL out), and again with ``output_type="latent"`` (encode + denoise); decode = the difference.
* ``zitflow``: the registered ``encode -> denoise -> decode`` stages through the executor (plan
  ``resident``), a fresh cache store per run, so every stage computes and writes its entry.

Medians of ``--repeats`` runs after one warm-up, peak GPU memory, the DiT's achieved TFLOP/s
(FLOPs of one forward counted by ``torch.utils.flop_counter`` x steps / denoise seconds) and
zitflow's time as a ratio of stock. Parity: zitflow's latents against stock's (max and mean abs).

``--sweep N``: images per hour for an N-seed sweep at 1024x1024 (one prompt): N stock calls against
zitflow on one store, where the prompt is encoded once and reused, under each of ``--sweep-variant``
(comma-separated, in that order; ``best``: the fastest of ``--variants``). zitflow's side runs last,
since a compiling variant changes the DiT in place, so name bf16 variants before FP8 ones;
``--sizes "" --sweep 16 --sweep-variant compile,compile+fp8`` alone is the short run. Each
variant's sweep starts with one warm-up image (its compile) outside the timed seeds.

``--compile``: the same 1024x1024 row with ``runtime.compile=true`` (regional compilation of the
repeated DiT blocks), its cold first-run seconds, and latents against eager.

``--variants``: 1024x1024 under each runtime variant of :data:`VARIANTS` (attention backends,
compilation, autotuning, FP8, a compiled text encoder, diffusers' complex rotary embedding in place
of zitflow's real one under compilation), in the order given (compiled modules stay
compiled, the text encoder too, and FP8 converts the DiT in place, so eager rows come first and FP8
last; every stock row is measured before them):
cold first run, then medians of encode / denoise / decode / total, the ratio to stock's total in
this run, and the latents' max and mean abs difference to the first variant's at the same seed
(eager bf16 when ``eager`` comes first; the JSON key says ``latents_vs_eager_bf16`` either way). A
variant that cannot run here (a backend not installed) is reported with its error.

``--batch N``: stock ``ZImagePipeline`` with ``num_images_per_prompt=N`` against N single calls,
to see what batching a sweep's seeds into one denoise would gain.

``--lean``: zitflow's encode stage skips the negative prompt (``with_negative=false``), as stock
does at guidance 0; the default encodes it for later guidance sweeps.

Prints a table and writes JSON (``--out``), rewritten after each section (``info.complete`` is true
once all ran), so a run its caller cuts off keeps what it measured. Runs on a CUDA machine only
(``--tiny``: a CPU smoke run).

Usage::

    python bench/speed_bench.py --out speed.json --sweep 16 --compile
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate_bench import PROMPT, build_random_zimage  # noqa: E402
from results_json import write_json  # noqa: E402

from zitflow.cache.store import CacheStore  # noqa: E402
from zitflow.config import RuntimeConfig  # noqa: E402
from zitflow.executor import Executor  # noqa: E402
from zitflow.models.memory import GiB  # noqa: E402
from zitflow.models.pool import ModelPool  # noqa: E402
from zitflow.recipe import build_graph  # noqa: E402
from zitflow.stage import RunContext  # noqa: E402

SIZES = "512x512,768x768,1024x1024,1088x1920,1920x1088"
STEPS = 9

#: name -> runtime overrides, measured in this order by ``--variants`` (FP8 last: it converts in place)
VARIANTS = {
    "eager": {},
    "eager+cudnn": {"attention": "_native_cudnn"},
    "eager+fa3": {"attention": "_flash_3"},
    "compile+complex_rope": {"compile": True, "real_rope": False},
    "compile": {"compile": True},
    "compile+cudnn": {"compile": True, "attention": "_native_cudnn"},
    "compile+flex": {"compile": True, "attention": "flex"},
    "compile+fp8": {"compile": True, "precision": "fp8"},
    "compile+fp8+text_encoder": {"compile": True, "precision": "fp8", "compile_text_encoder": True},
    "compile+fp8+cudnn": {"compile": True, "precision": "fp8", "attention": "_native_cudnn"},
    "compile+fp8+autotune": {"compile": True, "precision": "fp8", "compile_mode": "max-autotune-no-cudagraphs"},
}


#: where the bench runs: "cuda" (the measurement), or "cpu" with --tiny (a smoke run of this script)
DEVICE = "cuda"
#: (width, height) of the sweep, batch, compile, plan and variant sections (``--at``)
AT = (1024, 1024)


def at_name() -> str:
    return f"{AT[0]}x{AT[1]}"


def sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def reset_peak() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    """Peak GPU memory allocated since :func:`reset_peak`, GiB (0 on the CPU)."""
    import torch

    return torch.cuda.max_memory_allocated() / GiB if DEVICE == "cuda" else 0.0


def empty_cache() -> None:
    import torch

    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def graph_for(width: int, height: int, seed: int, prompt: str = PROMPT, decode: bool = True, lean: bool = False):
    stages = {
        "encode": {"kind": "encode", "prompt": prompt, "with_negative": not lean},
        "denoise": {"kind": "denoise", "inputs": {"embeds": "encode"}, "seed": seed, "width": width,
                    "height": height, "steps": STEPS},
    }
    if decode:
        stages["decode"] = {"kind": "decode", "input": "denoise"}
    return build_graph("speed", stages)


class Bench:
    def __init__(self, tiny: bool = False):
        import torch
        from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

        from zitflow.config import ModelConfig
        from zitflow.models.tiny import ZIMAGE_SCHEDULER

        self.pool = ModelPool()
        self.runtime = runtime_for()
        if tiny:  # the tiny model, loaded through the pool as a run would
            self.config = ModelConfig()
            for load in (self.pool.text_encoder, self.pool.transformer, self.pool.vae):
                load(self.config, self.runtime)
        else:
            self.config = build_random_zimage(self.pool, DEVICE)
        self.components = self.pool.components(self.config)
        c = self.components
        self.pipe = ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(**ZIMAGE_SCHEDULER), vae=c["vae"],
                                   text_encoder=c["text_encoder"], tokenizer=c["tokenizer"],
                                   transformer=c["transformer"])
        self.pipe.set_progress_bar_config(disable=True)
        self.torch = torch
        self.lean = False

    def stock_batch(self, w: int, h: int, seeds: list[int]):
        """One stock call making len(seeds) images (a generator per seed); seconds."""
        torch = self.torch
        sync()
        t0 = time.perf_counter()
        self.pipe(prompt=PROMPT, height=h, width=w, num_inference_steps=STEPS, guidance_scale=0.0,
                  num_images_per_prompt=len(seeds), generator=[torch.Generator("cpu").manual_seed(s) for s in seeds])
        sync()
        return time.perf_counter() - t0

    # -- one run each -------------------------------------------------------------------------

    def stock(self, w: int, h: int, seed: int, output_type: str = "pil"):
        torch = self.torch
        sync()
        t0 = time.perf_counter()
        out = self.pipe(prompt=PROMPT, height=h, width=w, num_inference_steps=STEPS, guidance_scale=0.0,
                        generator=torch.Generator("cpu").manual_seed(seed), output_type=output_type)
        sync()
        return time.perf_counter() - t0, out.images

    def zitflow(self, w: int, h: int, seed: int, store: CacheStore | None = None, decode: bool = True,
                runtime: RuntimeConfig | None = None, lean: bool | None = None, prompt: str = PROMPT,
                peaks: dict | None = None):
        """One executor run: (wall s, {stage: s}, latents); ``peaks`` gets {stage: peak GiB}."""
        ctx = RunContext(runtime=runtime or self.runtime, models=self.pool, model_config=self.config)
        with tempfile.TemporaryDirectory(prefix="zitflow-speed-") as tmp:
            store = store or CacheStore(tmp)
            sync()
            t0 = time.perf_counter()
            lean = self.lean if lean is None else lean
            manifest = Executor(graph_for(w, h, seed, prompt=prompt, decode=decode, lean=lean), store, ctx).execute()
            sync()
            wall = time.perf_counter() - t0
            stages = {r.name: r.seconds for r in manifest.stages if r.status != "hit"}
            if peaks is not None:
                peaks.update({r.name: round(r.peak_gpu_bytes / GiB, 2) for r in manifest.stages
                              if r.peak_gpu_bytes is not None})
            key = next(r.key for r in manifest.stages if r.name == "denoise")
            latents = store.load(key).tensors["latents"]
        return wall, stages, latents

    def dit_flops(self, w: int, h: int) -> float:
        """FLOPs of one DiT forward at ``w`` x ``h`` (batch 1), counted on the GPU."""
        torch = self.torch
        from torch.utils.flop_counter import FlopCounterMode

        dit = self.components["transformer"]
        p = next(dit.parameters())
        lat = torch.randn(dit.config.in_channels, 1, h // 8, w // 8, device=p.device, dtype=p.dtype)
        cap = torch.randn(512, dit.config.cap_feat_dim, device=p.device, dtype=p.dtype)
        t = torch.tensor([0.5], device=p.device, dtype=p.dtype)
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            dit([lat], t, [cap], return_dict=False)
        return float(counter.get_total_flops())


def median_of(fn, repeats: int):
    fn()  # warm-up
    runs = [fn() for _ in range(repeats)]
    return runs


def latent_diff(a, b) -> dict:
    import torch

    a = a.float().flatten().cpu()
    b = b.float().flatten().cpu()
    d = (a - b).abs()
    return {"max_abs": round(float(d.max()), 5), "mean_abs": round(float(d.mean()), 6),
            "ref_mean_abs": round(float(b.abs().mean()), 4), "equal": bool(torch.equal(a, b))}


def stock_latents(images):
    return images[0] if images.ndim == 4 else images


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=SIZES)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sweep", type=int, default=0, help="seeds of the sweep-throughput row (0: skip)")
    ap.add_argument("--compile", action="store_true", help="add the runtime.compile=true row (at --at)")
    ap.add_argument("--variants", default="", help="comma-separated names of VARIANTS to measure at --at ('all')")
    ap.add_argument("--sweep-variant", default="eager",
                    help="comma-separated runtime variants of zitflow's sweep rows, in that order ('best': the "
                         "fastest of --variants); they run after --variants, whose compiled blocks stay compiled "
                         "and FP8 stays FP8, so name bf16 variants before FP8 ones")
    ap.add_argument("--plans", default="", help="memory plans to time at --at against resident (e.g. 'staged,model')")
    ap.add_argument("--batch", type=int, default=0, help="images of the batched stock row (0: skip)")
    ap.add_argument("--lean", action="store_true", help="encode without the negative prompt, as stock at guidance 0")
    ap.add_argument("--max-seconds", type=float, default=480.0, help="start no new section after this")
    ap.add_argument("--at", default="1024x1024", help="size of the sweep, batch, compile, plan and variant sections")
    ap.add_argument("--tiny", action="store_true", help="smoke run on the CPU with the tiny model (numbers mean nothing)")
    ap.add_argument("--out", default="speed_bench.json")
    args = ap.parse_args()
    global DEVICE, AT
    AT = tuple(int(v) for v in args.at.lower().split("x"))
    if args.tiny:
        DEVICE = "cpu"
    elif not torch.cuda.is_available():
        print("speed_bench needs CUDA (or --tiny, a CPU smoke run on the tiny model)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    info = {"device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (tiny model)",
            "torch": torch.__version__, "steps": STEPS,
            "model": "tiny (seeded random)" if args.tiny else "random full-size Z-Image-Turbo (bf16)",
            "repeats": args.repeats}
    torch._dynamo.config.cache_size_limit = 64  # one graph per variant x size: stay compiled, never fall back
    b = Bench(tiny=args.tiny)
    b.lean = args.lean
    rows, extra = [], {}

    def save(complete: bool = False) -> None:
        """Write what was measured so far: a run cut off by its caller keeps its finished sections."""
        record = dict(info, total_s=round(time.perf_counter() - start, 1), complete=complete)
        write_json(args.out, {"info": record, "rows": rows, **extra})

    for item in [s for s in args.sizes.split(",") if s]:
        if time.perf_counter() - start > args.max_seconds:
            rows.append({"size": item, "skipped": "max-seconds reached"})
            continue
        w, h = (int(v) for v in item.lower().split("x"))
        seed = 1234
        reset_peak()
        stock = median_of(lambda: b.stock(w, h, seed), args.repeats)
        stock_peak = peak_gib()
        stock_lat = median_of(lambda: b.stock(w, h, seed, "latent"), args.repeats)
        reset_peak()
        zit = median_of(lambda: b.zitflow(w, h, seed), args.repeats)
        zit_peak = peak_gib()
        s_total = statistics.median(r[0] for r in stock)
        s_latent = statistics.median(r[0] for r in stock_lat)
        z_total = statistics.median(r[0] for r in zit)
        z_stage = {k: statistics.median(r[1][k] for r in zit) for k in ("encode", "denoise", "decode")}
        flops = b.dit_flops(w, h) * STEPS
        row = {"size": f"{w}x{h}",
               "stock": {"total_s": round(s_total, 3), "encode_denoise_s": round(s_latent, 3),
                         "decode_s": round(s_total - s_latent, 3), "peak_gib": round(stock_peak, 2)},
               "zitflow": {"total_s": round(z_total, 3), **{f"{k}_s": round(v, 3) for k, v in z_stage.items()},
                           "peak_gib": round(zit_peak, 2)},
               "ratio_total": round(z_total / s_total, 3),
               "dit_tflops_per_s": round(flops / z_stage["denoise"] / 1e12, 1),
               "parity_latents": latent_diff(zit[-1][2], stock_latents(stock_lat[-1][1]))}
        rows.append(row)
        print(f"{row['size']:>9}  stock {s_total:6.3f} s (decode {s_total - s_latent:5.3f})  zitflow {z_total:6.3f} s "
              f"(enc {z_stage['encode']:.3f} den {z_stage['denoise']:.3f} dec {z_stage['decode']:.3f})  "
              f"ratio {row['ratio_total']:.2f}  DiT {row['dit_tflops_per_s']} TFLOP/s  "
              f"latents max diff {row['parity_latents']['max_abs']}", flush=True)
        save()
        empty_cache()

    # stock rows first: the variants below compile and convert the very DiT that stock's pipeline holds
    #: stock's end-to-end seconds at --at, when the size rows measured it (the ratios' reference)
    stock_at = next((r["stock"]["total_s"] for r in rows if r.get("size") == at_name() and "stock" in r), None)

    def out_of_time(section: str) -> bool:
        """True (and the section recorded as skipped) once --max-seconds has passed."""
        if time.perf_counter() - start <= args.max_seconds:
            return False
        extra.setdefault(section, {})["skipped"] = f"--max-seconds {args.max_seconds} reached"
        print(f"{section}: skipped, --max-seconds {args.max_seconds} reached", flush=True)
        return True

    stock_sweep_s = None
    if args.sweep and not out_of_time("sweep"):
        b.stock(*AT, 0)
        t0 = time.perf_counter()
        for s in range(args.sweep):
            b.stock(*AT, 100 + s)
        stock_sweep_s = time.perf_counter() - t0
        extra["sweep"] = {"seeds": args.sweep, "size": at_name(), "stock_s": round(stock_sweep_s, 2),
                          "stock_images_per_hour": round(args.sweep * 3600 / stock_sweep_s)}
        print(f"sweep of {args.sweep} seeds at {at_name()}: {args.sweep} stock calls {stock_sweep_s:.1f} s", flush=True)
        save()

    if args.batch and not out_of_time("batch"):
        n = args.batch
        seeds = list(range(200, 200 + n))
        b.stock_batch(*AT, seeds[:1])
        single = [b.stock(*AT, s_)[0] for s_ in seeds]
        reset_peak()
        b.stock_batch(*AT, seeds)  # warm-up at this batch size
        batched = [b.stock_batch(*AT, seeds) for _ in range(2)]
        extra["batch"] = {"images": n, "size": at_name(), "single_calls_s": round(sum(single), 3),
                          "one_batched_call_s": round(min(batched), 3),
                          "speedup": round(sum(single) / min(batched), 3),
                          "batched_peak_gib": round(peak_gib(), 2)}
        print(f"batch of {n} at {at_name()}: {n} stock calls {sum(single):.2f} s, one batched call {min(batched):.2f} s "
              f"(x{extra['batch']['speedup']})", flush=True)
        save()

    if args.compile and not out_of_time("compile"):
        w, h = AT
        eager = b.zitflow(w, h, 7, decode=False)
        rt = runtime_for(compile=True)
        cold = b.zitflow(w, h, 7, decode=False, runtime=rt)
        runs = [b.zitflow(w, h, 7, runtime=rt) for _ in range(args.repeats)]
        den = statistics.median(r[1]["denoise"] for r in runs)
        tot = statistics.median(r[0] for r in runs)
        extra["compile"] = {"size": at_name(), "cold_first_denoise_s": round(cold[1]["denoise"], 1),
                            "denoise_s": round(den, 3), "total_s": round(tot, 3),
                            "ratio_total_vs_stock": round(tot / stock_at, 3) if stock_at else None,
                            "parity_vs_eager": latent_diff(cold[2], eager[2])}
        print(f"compiled {at_name()}: cold first denoise {cold[1]['denoise']:.1f} s, then denoise {den:.3f} s, "
              f"total {tot:.3f} s; latents vs eager {extra['compile']['parity_vs_eager']}", flush=True)
        save()

    plans = [p for p in args.plans.split(",") if p]
    if plans and not out_of_time("plans"):  # before variants compile or convert the DiT
        extra["plans"] = run_plans(b, ["resident", *[p for p in plans if p != "resident"]])
        save()

    names = list(VARIANTS) if args.variants == "all" else [v for v in args.variants.split(",") if v]
    if names:
        if stock_at is None:  # stock's reference time while its DiT is still uncompiled bf16
            stock_at = statistics.median(r[0] for r in median_of(lambda: b.stock(*AT, 1234), args.repeats))
        extra["variants_stock_total_s"] = round(stock_at, 3)
        extra["variants"] = []
        save()  # a first variant cut off during its compile still leaves stock's time
        run_variants(b, names, args.repeats, stock_at, start, args.max_seconds, extra["variants"], save)

    # last: a compiling variant compiles the DiT in place, which would change every later section
    if stock_sweep_s is not None:
        sweep = extra["sweep"]
        sweep["lean"] = args.lean
        sweep["zitflow"] = []
        for variant in args.sweep_variant.split(","):
            if out_of_time("sweep"):
                break
            if variant == "best":
                done = [v for v in extra.get("variants") or [] if "total_s" in v]
                variant = min(done, key=lambda v: v["total_s"])["variant"] if done else "eager"
            sweep["zitflow"].append(run_sweep(b, variant, args.sweep, stock_sweep_s))
            fastest = min((r for r in sweep["zitflow"] if "zitflow_s" in r), key=lambda r: r["zitflow_s"], default=None)
            sweep.update(fastest or {})  # the headline: the fastest variant's figures
            save()

    print_table(rows, extra)
    save(complete=True)
    print(f"wrote {args.out}")
    return 0


def runtime_for(offload: str = "resident", **overrides) -> RuntimeConfig:
    return RuntimeConfig(device=DEVICE, offload=offload if DEVICE == "cuda" else "auto", progress="off", **overrides)


def variant_runtime(name: str) -> RuntimeConfig:
    """The runtime of variant ``name``; its ``real_rope`` (default true) says whether a compiled DiT gets
    zitflow's real-arithmetic rotary embedding or keeps diffusers' complex one (models.rope)."""
    from zitflow.models import rope

    settings = dict(VARIANTS[name])
    rope.ENABLED = settings.pop("real_rope", True)
    return runtime_for(**settings)


def run_plans(b: Bench, plans: list[str]) -> list[dict]:
    """Each memory plan at ``--at`` (1024x1024): a new prompt per picture, then a second seed of that prompt
    (encode cached: the sweep case); seconds per stage, the peak over stages (weights included)."""
    w, h = AT
    out = []
    for i, name in enumerate(plans):
        rt = runtime_for(offload=name)
        b.zitflow(w, h, 1, runtime=rt, prompt=f"{PROMPT} warm-up {name}")  # modules into this plan's places
        empty_cache()
        fresh_peaks: dict = {}
        fresh = b.zitflow(w, h, 2, runtime=rt, prompt=f"{PROMPT} plan {i}", peaks=fresh_peaks)
        with tempfile.TemporaryDirectory(prefix="zitflow-plan-") as tmp:
            store = CacheStore(tmp)
            b.zitflow(w, h, 3, runtime=rt, prompt=f"{PROMPT} sweep {i}", store=store)
            again_peaks: dict = {}
            again = b.zitflow(w, h, 4, runtime=rt, prompt=f"{PROMPT} sweep {i}", store=store, peaks=again_peaks)
        row = {"plan": name, "new_prompt_total_s": round(fresh[0], 3),
               **{f"{k}_s": round(v, 3) for k, v in fresh[1].items()},
               "peak_gib": max(fresh_peaks.values(), default=0.0), "peak_by_stage_gib": fresh_peaks,
               "same_prompt_total_s": round(again[0], 3), "same_prompt_peak_gib": max(again_peaks.values(), default=0.0)}
        out.append(row)
        print(f"plan {name:10s} new prompt {fresh[0]:.3f} s ({', '.join(f'{k} {v:.3f}' for k, v in fresh[1].items())}) "
              f"peak {row['peak_gib']} GiB {fresh_peaks}; same prompt {again[0]:.3f} s", flush=True)
    base = out[0]["new_prompt_total_s"] if out else None
    for row in out:
        row["vs_resident"] = round(row["new_prompt_total_s"] / base, 3) if base else None
    return out


def error_text(e: Exception) -> str:
    """The first line of an error, as a result row's ``error``."""
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"


def run_sweep(b: Bench, variant: str, seeds: int, stock_s: float) -> dict:
    """zitflow's side of the sweep under ``variant``: one warm-up image (its compile, untimed), then
    ``seeds`` seeds of one prompt on one store (encoded once); a variant that cannot run is its error."""
    w, h = AT
    rt = variant_runtime(variant)
    try:
        t0 = time.perf_counter()
        b.zitflow(w, h, 99, runtime=rt)  # warm-up: compiles, when the variant compiles
        warm_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory(prefix="zitflow-sweep-") as tmp:
            store = CacheStore(tmp)
            t0 = time.perf_counter()
            for s in range(seeds):
                b.zitflow(w, h, 100 + s, store=store, runtime=rt)
            zit_s = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - a variant that cannot run here is a result, not a crash
        msg = error_text(e)
        print(f"sweep ({variant}): cannot run here ({msg})", flush=True)
        return {"variant": variant, "error": msg}
    row = {"variant": variant, "warm_up_s": round(warm_s, 1), "zitflow_s": round(zit_s, 2),
           "zitflow_images_per_hour": round(seeds * 3600 / zit_s), "ratio": round(zit_s / stock_s, 3)}
    print(f"sweep of {seeds} seeds at {at_name()}: stock {stock_s:.1f} s, zitflow ({variant}) {zit_s:.1f} s "
          f"({row['zitflow_images_per_hour']} vs {round(seeds * 3600 / stock_s)} images/h; warm-up {warm_s:.0f} s)",
          flush=True)
    return row


def run_variants(b: Bench, names: list[str], repeats: int, stock_total: float, start: float,
                 max_seconds: float, out: list[dict], saved=lambda: None) -> None:
    """Each runtime variant at ``--at`` (1024x1024): cold run, medians, ratio to stock, latents vs eager bf16;
    appended to ``out`` one by one, ``saved()`` called after each (a long cold compile cut off loses no other)."""
    torch = b.torch
    w, h = AT
    seed = 7
    ref = None
    for name in names:
        if time.perf_counter() - start > max_seconds:
            out.append({"variant": name, "skipped": "max-seconds reached"})
            continue
        rt = variant_runtime(name)
        try:
            t0 = time.perf_counter()
            b.zitflow(w, h, seed, runtime=rt)  # cold: compiles or converts, when the variant does
            cold_s = time.perf_counter() - t0
            reset_peak()
            runs = [b.zitflow(w, h, seed, runtime=rt) for _ in range(repeats)]
        except Exception as e:  # noqa: BLE001 - a backend missing here is a result, not a crash
            msg = error_text(e)
            out.append({"variant": name, "runtime": VARIANTS[name], "error": msg})
            print(f"variant {name}: cannot run here ({msg})", flush=True)
            saved()
            continue
        if ref is None:
            ref = runs[-1][2]
        med = {k: statistics.median(r[1][k] for r in runs) for k in ("encode", "denoise", "decode")}
        total = statistics.median(r[0] for r in runs)
        row = {"variant": name, "runtime": VARIANTS[name], "cold_first_run_s": round(cold_s, 2),
               "total_s": round(total, 3), **{f"{k}_s": round(v, 3) for k, v in med.items()},
               "overhead_s": round(total - sum(med.values()), 3),
               "peak_gib": round(peak_gib(), 2),
               "ratio_vs_stock": round(total / stock_total, 3),
               "latents_vs_eager_bf16": latent_diff(runs[-1][2], ref),
               "deterministic": bool(torch.equal(runs[0][2], runs[-1][2]))}
        out.append(row)
        print(f"variant {name:26s} cold {cold_s:6.1f} s  total {total:.3f} s (enc {med['encode']:.3f} den "
              f"{med['denoise']:.3f} dec {med['decode']:.3f})  x{row['ratio_vs_stock']:.2f} of stock  "
              f"latents vs eager max {row['latents_vs_eager_bf16']['max_abs']} mean "
              f"{row['latents_vs_eager_bf16']['mean_abs']}", flush=True)
        saved()


def print_table(rows: list[dict], extra: dict) -> None:
    print("\n| size | stock s | zitflow s | ratio | encode s | denoise s | decode s | stock peak GiB | zitflow peak GiB "
          "| DiT TFLOP/s | latents max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['size']} | skipped: {r['skipped']} |")
            continue
        s, z = r["stock"], r["zitflow"]
        print(f"| {r['size']} | {s['total_s']:.3f} | {z['total_s']:.3f} | {r['ratio_total']:.2f} | {z['encode_s']:.3f} "
              f"| {z['denoise_s']:.3f} | {z['decode_s']:.3f} | {s['peak_gib']} | {z['peak_gib']} | "
              f"{r['dit_tflops_per_s']} | {r['parity_latents']['max_abs']} |")
    variants = extra.get("variants") or []
    if variants:
        print(f"\n{at_name()} variants (stock total {extra.get('variants_stock_total_s')} s in this run)\n")
        print("| variant | cold first run s | total s | ratio to stock | encode s | denoise s | decode s | overhead s "
              "| peak GiB | latents max abs vs eager | mean abs |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for v in variants:
            if "total_s" not in v:
                print(f"| {v['variant']} | {v.get('error') or v.get('skipped')} |")
                continue
            d = v["latents_vs_eager_bf16"]
            print(f"| {v['variant']} | {v['cold_first_run_s']} | {v['total_s']} | {v['ratio_vs_stock']} | {v['encode_s']} "
                  f"| {v['denoise_s']} | {v['decode_s']} | {v['overhead_s']} | {v['peak_gib']} | {d['max_abs']} "
                  f"| {d['mean_abs']} |")
    plans = extra.get("plans") or []
    if isinstance(plans, list) and plans:
        print(f"\n| plan at {at_name()} | new prompt s | x resident | encode s | denoise s | decode s | peak GiB "
              "| same prompt, next seed s |")
        print("|---|---|---|---|---|---|---|---|")
        for p in plans:
            print(f"| {p['plan']} | {p['new_prompt_total_s']} | {p['vs_resident']} | {p.get('encode_s')} | "
                  f"{p.get('denoise_s')} | {p.get('decode_s')} | {p['peak_gib']} | {p['same_prompt_total_s']} |")
    for k, v in extra.items():
        if k not in ("variants", "plans") or isinstance(v, dict):
            print(f"{k}: {v}")


if __name__ == "__main__":
    sys.exit(main())
