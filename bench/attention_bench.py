"""How much of the DiT's time is attention, and how fast each SDPA backend runs it.

Two measurements, side by side in one process (CUDA):

1. ``torch.nn.functional.scaled_dot_product_attention`` at the DiT's own shapes (batch 1, 30
   heads of 128, bf16; sequence = image tokens + 32 caption tokens, as the main layers see a short
   prompt) under each backend torch offers: flash, memory-efficient, cuDNN. Median of ``--repeats``
   timed with CUDA events after a warm-up; TFLOP/s = 4 * S^2 * heads * head_dim / seconds.
2. ``--dit``: one eager forward of the full-size random-weight DiT per size under
   ``torch.profiler``, its GPU kernel time split into attention, matrix products and the rest
   (by kernel name; the ten longest kernels are listed so the split can be checked).

Together they say what a faster attention kernel could save in a denoise: the attention share
times (1 - its speed-up).

Prints a table and writes JSON (``--out``). ``--tiny``: a CPU smoke run at toy shapes (numbers
mean nothing).

Usage::

    python bench/attention_bench.py --dit --out attention.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_json import write_json  # noqa: E402

SIZES = "512x512,1024x1024,1088x1920"
HEADS, HEAD_DIM, CAPTION_TOKENS = 30, 128, 32
#: substrings of kernel names, lower-case, by class (first match wins)
#: (CUDA kernels on the GPU; aten op names in a --tiny CPU run)
KERNEL_CLASSES = (
    ("attention", ("flash", "fmha", "attention", "sdpa", "scaled_dot_product")),
    ("matmul", ("gemm", "xmma", "cutlass", "nvjet", "scaled_mm", "matmul", "sm90_", "aten::mm", "aten::addmm",
                "aten::bmm")),
)


def kernel_class(name: str) -> str:
    """'attention', 'matmul' or 'other' for a GPU kernel's name."""
    low = name.lower()
    for cls, keys in KERNEL_CLASSES:
        if any(k in low for k in keys):
            return cls
    return "other"


def tokens(width: int, height: int) -> int:
    """Image tokens of the DiT at ``width`` x ``height`` pixels (VAE /8, patch 2)."""
    return (width // 16) * (height // 16)


def time_sdpa(backend, seq: int, heads: int, head_dim: int, device: str, repeats: int) -> float:
    """Median seconds of one SDPA call under ``backend`` at (1, heads, seq, head_dim) bf16."""
    import torch
    from torch.nn.attention import sdpa_kernel

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q, k, v = (torch.randn(1, heads, seq, head_dim, device=device, dtype=dtype) for _ in range(3))
    with sdpa_kernel(backend), torch.inference_mode():
        torch.nn.functional.scaled_dot_product_attention(q, k, v)  # warm-up; raises if the backend cannot run
        times = []
        for _ in range(repeats):
            if device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                torch.nn.functional.scaled_dot_product_attention(q, k, v)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1000)
            else:
                t0 = time.perf_counter()
                torch.nn.functional.scaled_dot_product_attention(q, k, v)
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sdpa_rows(sizes: list[tuple[int, int]], heads: int, head_dim: int, device: str, repeats: int) -> list[dict]:
    from torch.nn.attention import SDPBackend

    backends = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION}
    rows = []
    for w, h in sizes:
        seq = tokens(w, h) + CAPTION_TOKENS
        flops = 4 * seq * seq * heads * head_dim
        row = {"size": f"{w}x{h}", "seq": seq, "gflop": round(flops / 1e9, 1)}
        for name, backend in backends.items():
            try:
                s = time_sdpa(backend, seq, heads, head_dim, device, repeats)
            except RuntimeError as e:  # a backend that cannot run these shapes here is a result
                row[name] = {"error": (str(e).splitlines() or [""])[0][:200]}
                continue
            row[name] = {"ms": round(s * 1000, 3), "tflops_per_s": round(flops / s / 1e12, 1)}
        rows.append(row)
        print(f"sdpa {row['size']:>9} seq {seq}: " + "  ".join(
            f"{n} {v['ms']} ms ({v['tflops_per_s']} TFLOP/s)" if "ms" in v else f"{n}: {v['error'][:60]}"
            for n, v in ((n, row[n]) for n in backends)), flush=True)
    return rows


def dit_rows(sizes: list[tuple[int, int]], device: str, tiny: bool) -> list[dict]:
    """Profile one eager DiT forward per size; kernel time by class."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from zitflow.models.pool import ModelPool

    pool = ModelPool()
    if tiny:
        from zitflow.config import ModelConfig, RuntimeConfig

        dit = pool.transformer(ModelConfig(), RuntimeConfig(device="cpu"))
    else:
        from generate_bench import build_random_zimage

        config = build_random_zimage(pool, device)
        dit = pool.components(config)["transformer"]
    p = next(dit.parameters())
    activity = ProfilerActivity.CUDA if device == "cuda" else ProfilerActivity.CPU
    rows = []
    for w, h in sizes:
        lat = torch.randn(dit.config.in_channels, 1, h // 8, w // 8, device=p.device, dtype=p.dtype)
        cap = torch.randn(CAPTION_TOKENS, dit.config.cap_feat_dim, device=p.device, dtype=p.dtype)
        t = torch.tensor([0.5], device=p.device, dtype=p.dtype)
        with torch.inference_mode():
            dit([lat], t, [cap], return_dict=False)  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            with profile(activities=[activity]) as prof:
                dit([lat], t, [cap], return_dict=False)
                if device == "cuda":
                    torch.cuda.synchronize()
        by_class = {"attention": 0.0, "matmul": 0.0, "other": 0.0}
        kernels = []
        for e in prof.key_averages():
            us = e.device_time_total if device == "cuda" else e.self_cpu_time_total
            if us <= 0 or (device == "cuda" and e.device_type.name != "CUDA"):
                continue
            by_class[kernel_class(e.key)] += us
            kernels.append((us, e.key))
        total = sum(by_class.values()) or 1.0
        row = {"size": f"{w}x{h}", "kernel_ms": round(total / 1000, 2),
               **{f"{k}_ms": round(v / 1000, 2) for k, v in by_class.items()},
               **{f"{k}_share": round(v / total, 3) for k, v in by_class.items()},
               "longest": [{"ms": round(us / 1000, 2), "class": kernel_class(k), "name": k[:120]}
                           for us, k in sorted(kernels, reverse=True)[:10]]}
        rows.append(row)
        print(f"dit {row['size']:>9}: kernels {row['kernel_ms']} ms, attention {row['attention_share']:.0%}, "
              f"matmul {row['matmul_share']:.0%}, other {row['other_share']:.0%}", flush=True)
    return rows


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=SIZES)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--dit", action="store_true", help="also profile one forward of the full-size DiT per size")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run at toy shapes (numbers mean nothing)")
    ap.add_argument("--out", default="attention_bench.json")
    args = ap.parse_args()
    if not args.tiny and not torch.cuda.is_available():
        print("attention_bench needs CUDA (or --tiny, a CPU smoke run)", file=sys.stderr)
        return 2
    device = "cpu" if args.tiny else "cuda"
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s]
    heads, head_dim = (2, 16) if args.tiny else (HEADS, HEAD_DIM)
    info = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (toy shapes)",
            "torch": torch.__version__, "heads": heads, "head_dim": head_dim, "caption_tokens": CAPTION_TOKENS,
            "repeats": args.repeats}
    data = {"info": info, "sdpa": sdpa_rows(sizes, heads, head_dim, device, args.repeats)}
    write_json(args.out, data)
    if args.dit:
        data["dit"] = dit_rows(sizes, device, args.tiny)
        write_json(args.out, data)
    print("\n| size | seq | flash ms (TFLOP/s) | efficient ms (TFLOP/s) | cuDNN ms (TFLOP/s) |")
    print("|---|---|---|---|---|")
    for r in data["sdpa"]:
        cells = [f"{r[n]['ms']} ({r[n]['tflops_per_s']})" if "ms" in r[n] else "cannot run"
                 for n in ("flash", "efficient", "cudnn")]
        print(f"| {r['size']} | {r['seq']} | " + " | ".join(cells) + " |")
    if args.dit:
        print("\n| size | DiT forward kernels ms | attention | matmul | other |")
        print("|---|---|---|---|---|")
        for r in data["dit"]:
            print(f"| {r['size']} | {r['kernel_ms']} | {r['attention_ms']} ms ({r['attention_share']:.0%}) | "
                  f"{r['matmul_ms']} ms ({r['matmul_share']:.0%}) | {r['other_ms']} ms ({r['other_share']:.0%}) |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
