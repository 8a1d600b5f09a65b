"""A sweep spread over the GPUs of one host: throughput for 1, 2, 4 ... GPUs, side by side.

For each GPU count N this runs the real command line, a fresh cache each time::

    python -m zitflow -m hydra/launcher=ray hydra.launcher.workers=N model=random_full recipe=poster \\
        prompt=... seed=range(S) stages.sharpen.amount=A1,A2 cache.dir=<fresh> hydra.sweep.dir=<fresh>

so each of the N Ray workers holds one GPU and builds its own full-size model replica
(``model=random_full``: the real architecture, seeded random weights, built in memory), jobs
that share a generation run on one worker (:mod:`zitflow.scheduling`), and all workers share one
cache folder. From the jobs' manifests it counts generations (each seed's denoise must run
exactly once across the cluster, and no job may wait on another worker's), model builds per
worker, and three throughputs:

* ``wall``: jobs over the whole command (Ray start, model builds, first-run warm-up included);
* ``makespan``: jobs over first job start to last job end (Ray start excluded);
* ``steady``: per worker, the jobs after its first group (the jobs of its first generation) over
  the time from that group's end to its last job's end, summed over workers (what a long sweep
  approaches: model builds and first-run warm-up left out). None when no worker ran a second group.

Scaling efficiency of N GPUs = throughput(N) / (N x throughput(1)), for each measure.
Prints a table and writes JSON (``--out``). ``--cpu`` is a smoke run with CPU workers and
``model=tiny`` (numbers mean nothing).

Usage (a machine with several GPUs)::

    python bench/multi_gpu_sweep.py --gpus 1,2,4 --seeds 16 --amounts 0.4,0.8 --out multi_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPT = "一幅水墨风格的竹林，晨雾缭绕，远处有一座小亭子"


def sweep_command(n: int | str, args, cache: Path, out: Path) -> list[str]:
    """The zitflow multirun for ``n`` workers."""
    cmd = [sys.executable, "-m", "zitflow", "-m", "hydra/launcher=ray", f"hydra.launcher.workers={n}",
           f"recipe={args.recipe}", f'prompt="{PROMPT}"', f"seed=range({args.seeds})",
           f"stages.sharpen.amount={args.amounts}", f"cache.dir={cache}", f"hydra.sweep.dir={out}",
           "runtime.progress=off", "+hydra.launcher.init.include_dashboard=false"]
    if args.cpu:
        cmd += ["model=tiny", "runtime=cpu", "hydra.launcher.gpus_per_worker=0", "hydra.launcher.cpus_per_worker=1",
                f"+hydra.launcher.init.num_cpus={max(2, n) if isinstance(n, int) else n}"]
    else:
        cmd += [f"model={args.model}", f"runtime={args.runtime}", f"+hydra.launcher.init.num_gpus={n}"]
    return cmd + list(args.override)


def read_manifests(sweep_dir: Path) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted(sweep_dir.glob("*/manifest.json"))]


def measure(manifests: list[dict], wall_s: float, n_jobs: int) -> dict:
    """Counts and throughputs of one sweep from its jobs' manifests (see the module docstring)."""
    status = defaultdict(lambda: defaultdict(int))
    for m in manifests:
        for s in m["stages"]:
            status[s["name"]][s["status"]] += 1
    by_worker = defaultdict(list)
    for m in manifests:
        generation = next((s["key"] for s in m["stages"] if s["name"] == "denoise"), None)
        by_worker[m["process"]["pid"]].append(dict(m["process"], generation=generation))
    first = min(p["started"] for p in (m["process"] for m in manifests))
    last = max(p["finished"] for p in (m["process"] for m in manifests))
    steady_rate, steady_jobs = 0.0, 0
    for runs in by_worker.values():
        runs.sort(key=lambda r: r["started"])
        k = 0
        while k < len(runs) and runs[k]["generation"] == runs[0]["generation"]:
            k += 1  # the worker's first group: model build and warm-up
        if k < len(runs):
            steady_rate += (len(runs) - k) / max(runs[-1]["finished"] - runs[k - 1]["finished"], 1e-9)
            steady_jobs += len(runs) - k
    loads = {str(pid): max((r["model_loads"].get("transformer", 0) for r in runs), default=0)
             for pid, runs in by_worker.items()}
    return {"jobs": len(manifests), "jobs_expected": n_jobs, "workers_used": len(by_worker),
            "jobs_per_worker": sorted(len(v) for v in by_worker.values()),
            "dit_builds_per_worker": loads,
            "denoise": dict(status["denoise"]), "decode": dict(status["decode"]), "sharpen": dict(status["sharpen"]),
            "wall_s": round(wall_s, 2), "makespan_s": round(last - first, 2),
            "images_per_hour": {"wall": round(len(manifests) * 3600 / wall_s),
                                "makespan": round(len(manifests) * 3600 / max(last - first, 1e-9)),
                                "steady": round(steady_rate * 3600) if steady_jobs else None},
            "steady_jobs": steady_jobs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", default="1,2", help="GPU counts to run, e.g. 1,2,4")
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--amounts", default="0.4,0.8", help="stages.sharpen.amount values (the post variants)")
    ap.add_argument("--recipe", default="poster")
    ap.add_argument("--model", default="random_full")
    ap.add_argument("--runtime", default="default", help="runtime group choice (default, fast)")
    ap.add_argument("--cpu", action="store_true", help="smoke run: CPU workers and model=tiny")
    ap.add_argument("--override", action="append", default=[], help="one more override for every sweep")
    ap.add_argument("--max-seconds", type=float, default=1e9, help="start no new GPU count after this")
    ap.add_argument("--keep", default=None, help="keep each run's cache and sweep folders under this folder")
    ap.add_argument("--out", default="multi_gpu_sweep.json")
    args = ap.parse_args()
    counts = [int(n) for n in args.gpus.split(",") if n]
    n_jobs = args.seeds * len(args.amounts.split(","))
    env = dict(os.environ, RAY_DEDUP_LOGS="0", HYDRA_FULL_ERROR="1")
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="zitflow-multi-") as scratch:
        tmp = args.keep or scratch
        for n in counts:
            if time.perf_counter() - start > args.max_seconds:
                rows.append({"gpus": n, "skipped": f"--max-seconds {args.max_seconds} reached"})
                continue
            cache, out = Path(tmp) / f"cache-{n}", Path(tmp) / f"sweep-{n}"
            t0 = time.perf_counter()
            proc = subprocess.run(sweep_command(n, args, cache, out), cwd=REPO, env=env, capture_output=True,
                                  text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                rows.append({"gpus": n, "error": proc.stderr[-2000:]})
                print(f"{n} GPU(s): the sweep failed (exit {proc.returncode})\n{proc.stderr[-2000:]}", flush=True)
                continue
            row = {"gpus": n, **measure(read_manifests(out), wall, n_jobs)}
            rows.append(row)
            print(f"{n} GPU(s): {row['jobs']} jobs, denoise {row['denoise']}, wall {row['wall_s']} s, makespan "
                  f"{row['makespan_s']} s, images/h {row['images_per_hour']}", flush=True)
    base = next((r for r in rows if r.get("gpus") == 1 and "images_per_hour" in r), None)
    for r in rows:
        if base and "images_per_hour" in r:
            r["scaling_efficiency"] = {k: round(v / (r["gpus"] * base["images_per_hour"][k]), 3)
                                       for k, v in r["images_per_hour"].items() if v and base["images_per_hour"][k]}
    print("\n| GPUs | jobs | generations (denoise run / hit / waited) | wall s | makespan s | images/h wall "
          "| makespan | steady | efficiency wall / makespan / steady |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "images_per_hour" not in r:
            print(f"| {r['gpus']} | {r.get('skipped') or 'failed'} |")
            continue
        d, ip, eff = r["denoise"], r["images_per_hour"], r.get("scaling_efficiency", {})
        print(f"| {r['gpus']} | {r['jobs']} | {d.get('run', 0)} / {d.get('hit', 0)} / {d.get('shared', 0)} "
              f"| {r['wall_s']} | {r['makespan_s']} | {ip['wall']} | {ip['makespan']} | {ip['steady']} | "
              f"{eff.get('wall', '-')} / {eff.get('makespan', '-')} / {eff.get('steady', '-')} |")
    info = {"command": sweep_command("N", args, Path("CACHE"), Path("SWEEP"))[2:], "seeds": args.seeds,
            "amounts": args.amounts, "cpu_smoke": args.cpu, "total_s": round(time.perf_counter() - start, 1)}
    try:
        import torch

        if torch.cuda.is_available():
            info["device"] = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    Path(args.out).write_text(json.dumps({"info": info, "rows": rows}, indent=2, ensure_ascii=False))
    print(f"wrote {args.out}")
    return 0 if all("images_per_hour" in r or "skipped" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
