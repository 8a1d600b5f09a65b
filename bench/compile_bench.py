"""Start-up cost of ``runtime.compile``: cold, warm process and warm cache, in fresh processes.

Each phase is a new Python process that builds the full-size random-weight Z-Image-Turbo
architecture on the GPU (``generate_bench.build_random_zimage``) and runs zitflow's
``encode -> denoise`` with ``runtime.compile=true`` and one ``runtime.compile_cache_dir``:

* ``cold``: the cache folder is emptied first. Denoise at the first size (compiles), again at
  that size (a warm process), then at a second size (a new size in a warm process).
* ``warm-cache``: a new process, same folder. Denoise at the first size (torch's mega-cache
  and inductor's caches loaded: no Triton compile), then at the second size.
* ``eager``: the same sizes without compilation, for the ratio.

Seconds are the denoise stage's own (the executor's per-stage time), 9 steps; with
``--decode`` the decode stage runs too (``runtime.compile`` compiles the VAE decoder) and its
seconds are reported beside. ``--precision fp8`` measures the FP8 DiT (``runtime=fast``);
``--dynamic true`` compiles dynamic shapes from the first size (``runtime.compile_dynamic``; the
default compiles the first size static and recompiles dynamic at the second, which costs the
decoder 51 s on an H200).
Prints a table and writes JSON (``--out``, rewritten after each phase). CUDA; ``--tiny`` is a
CPU smoke run of the script on the tiny model (the CPU plan compiles nothing: it checks the
phases, not compilation).

Usage::

    python bench/compile_bench.py --out compile_bench.json
    python bench/compile_bench.py --precision fp8 --decode --out compile_fast.json
    python bench/compile_bench.py --decode --dynamic true --out compile_dynamic.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results_json import write_json  # noqa: E402

DYNAMIC = {"null": None, "true": True, "false": False}


def child(mode: str, cache: str, sizes: list[tuple[int, int]], precision: str = "auto", decode: bool = False,
          dynamic: bool | None = None, tiny: bool = False) -> None:
    """One phase in this process; prints one JSON line. ``tiny``: the tiny model on the CPU."""
    sys.path.insert(0, str(HERE.parent))
    import torch

    from generate_bench import build_random_zimage
    from speed_bench import graph_for

    from zitflow.cache.store import CacheStore
    from zitflow.config import RuntimeConfig
    from zitflow.executor import Executor
    from zitflow.models.pool import ModelPool
    from zitflow.stage import RunContext

    t_start = time.perf_counter()
    pool = ModelPool()
    device = "cpu" if tiny else "cuda"
    rt = RuntimeConfig(device=device, offload="resident", progress="off", compile=mode != "eager",
                       compile_cache_dir=cache, precision=precision, compile_dynamic=dynamic)
    if tiny:
        from zitflow.config import ModelConfig

        config = ModelConfig()  # model=tiny
    else:
        config = build_random_zimage(pool, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows = []
    runs = ([sizes[0], sizes[0]] if mode == "cold" else [sizes[0]]) + sizes[1:2]
    for i, (w, h) in enumerate(runs):
        with tempfile.TemporaryDirectory() as tmp:
            ctx = RunContext(runtime=rt, models=pool, model_config=config)
            sync()
            m = Executor(graph_for(w, h, 100 + i, decode=decode), CacheStore(tmp), ctx).execute()
            sync()
        seconds = {r.name: r.seconds for r in m.stages}
        rows.append({"size": f"{w}x{h}", "denoise_s": round(seconds["denoise"], 3),
                     **({"decode_s": round(seconds["decode"], 3)} if decode else {})})
    print("RESULT " + json.dumps({"mode": mode, "runs": rows, "process_s": round(time.perf_counter() - t_start, 1)}),
          flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1024x1024,1920x1088")
    ap.add_argument("--cache", default=None, help="compile cache folder (default: a temp folder)")
    ap.add_argument("--out", default="compile_bench.json")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp8"), help="runtime.precision of the runs")
    ap.add_argument("--dynamic", default="null", choices=("null", "true", "false"),
                    help="runtime.compile_dynamic of the runs (null: static first size, dynamic from the second)")
    ap.add_argument("--decode", action="store_true", help="run (and compile) the decode stage too")
    ap.add_argument("--tiny", action="store_true", help="smoke run on the CPU with the tiny model (numbers mean nothing)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    if args.child:
        child(args.child, args.cache, sizes, args.precision, args.decode, DYNAMIC[args.dynamic], args.tiny)
        return 0
    cache = args.cache or tempfile.mkdtemp(prefix="zitflow-compile-")
    shutil.rmtree(cache, ignore_errors=True)
    results = []

    def save() -> float:
        """Rewrite ``--out`` with the phases so far (a cold FP8 compile cut off keeps the eager phase)."""
        size_mb = sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file()) / 1e6
        write_json(args.out, {"sizes": args.sizes, "precision": args.precision, "decode": args.decode,
                              "compile_dynamic": DYNAMIC[args.dynamic], "cache_mb": round(size_mb, 1),
                              "phases": results})
        return size_mb

    for mode in ("eager", "cold", "warm-cache"):
        env = dict(os.environ)
        env.pop("TORCHINDUCTOR_CACHE_DIR", None)
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, __file__, "--child", mode, "--cache", cache, "--sizes", args.sizes,
                            "--precision", args.precision, "--dynamic", args.dynamic]
                           + (["--decode"] if args.decode else []) + (["--tiny"] if args.tiny else []),
                           capture_output=True, text=True, env=env)
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{mode}: failed (exit {p.returncode})\n{p.stderr[-3000:]}", flush=True)
            results.append({"mode": mode, "error": p.stderr[-2000:]})
            size_mb = save()
            continue
        r = json.loads(line[len("RESULT "):])
        r["wall_s"] = round(time.perf_counter() - t0, 1)
        results.append(r)
        print(f"{mode:>10}: " + ", ".join(f"{x['size']} {x['denoise_s']:.2f} s"
                                          + (f" (decode {x['decode_s']:.2f} s)" if "decode_s" in x else "")
                                          for x in r["runs"])
              + f"  (process {r['process_s']} s, wall {r['wall_s']} s)", flush=True)
        size_mb = save()
    print(f"cache folder: {size_mb:.0f} MB; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
