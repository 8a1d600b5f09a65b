"""Eight ``python -m zitflow -m`` sweeps with overlapping grids on one cache dir, plus processes
killed -9 in the middle: count computations per key from the run manifests.

Each sweeper runs a 2 x 2 grid (seed x sharpen amount) of the ``poster`` recipe on the tiny model
at 128x128 on the CPU; grids overlap so that most keys are wanted by several processes at once.
``--victims`` more processes start the same work and are SIGKILLed at a random moment (their
locks must expire: same host, dead pid). Checks:

* every sweeper exits 0 (no deadlock; a hang would hit ``--timeout``);
* per key, at most one manifest says ``run`` or ``rebuilt`` (computed once; others ``hit`` or
  ``shared``, i.e. waited for the owner), except keys a victim may have started before dying;
* every entry in the store loads and verifies; no lock file is left behind;
* all jobs with the same (seed, amount) exported byte-identical files.

Usage::

    python bench/concurrency_test.py --out bench/results/concurrency_test_cpu.json
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEEDS = (1, 2, 3, 4)
AMOUNTS = (0.3, 0.6, 0.9)


def grid(i: int) -> tuple[list[int], list[float]]:
    return [SEEDS[i % 4], SEEDS[(i + 1) % 4]], [AMOUNTS[i % 3], AMOUNTS[(i + 2) % 3]]


def sweep_cmd(seeds, amounts, sweep_dir: Path) -> list[str]:
    return [sys.executable, "-m", "zitflow", "-m", "recipe=poster", "model=tiny", "runtime=cpu",
            "runtime.progress=lines", "prompt=concurrency", "stages.size.width=128", "stages.size.height=128",
            f"seed={','.join(map(str, seeds))}", f"stages.sharpen.amount={','.join(map(str, amounts))}",
            f"hydra.sweep.dir={sweep_dir}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--victims", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="zitflow-conc-"))
    cache, models = work / "cache", work / "models"
    env = dict(os.environ, ZITFLOW_CACHE_DIR=str(cache), ZITFLOW_MODELS_DIR=str(models), HF_HUB_OFFLINE="1")
    # build the tiny model once, in a cache of its own
    subprocess.run(sweep_cmd([9], [0.1], work / "warm"), cwd=REPO,
                   env=dict(env, ZITFLOW_CACHE_DIR=str(work / "warm-cache")), check=True, capture_output=True)
    t0 = time.monotonic()
    procs, victims = [], []
    for i in range(args.procs):
        seeds, amounts = grid(i)
        procs.append(subprocess.Popen(sweep_cmd(seeds, amounts, work / f"p{i}"), cwd=REPO, env=env,
                                      stdout=subprocess.DEVNULL, stderr=open(work / f"p{i}.log", "w")))
    for j in range(args.victims):
        seeds, amounts = grid(rng.randrange(args.procs))
        victims.append(subprocess.Popen(sweep_cmd(seeds, amounts, work / f"v{j}"), cwd=REPO, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    kill_at = sorted(rng.uniform(3, 15) for _ in victims)
    for v, at in zip(victims, kill_at):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        v.send_signal(signal.SIGKILL)
        v.wait()
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, t0 + args.timeout - time.monotonic())))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append("timeout")
    wall = time.monotonic() - t0

    computed: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[str] = collections.Counter()
    exports: dict[tuple, set[str]] = collections.defaultdict(set)
    jobs = 0
    for i in range(args.procs):
        for mf in sorted((work / f"p{i}").glob("*/manifest.json")):
            m = json.loads(mf.read_text())
            jobs += 1
            overrides = (mf.parent / ".hydra" / "overrides.yaml").read_text()
            for s in m["stages"]:
                statuses[s["status"]] += 1
                if s["status"] in ("run", "rebuilt"):
                    computed[s["key"]] += 1
            exports[overrides].add(hashlib.sha256(Path(m["outputs"]["export"]).read_bytes()).hexdigest())
    victim_jobs = sum(1 for j in range(args.victims) for _ in (work / f"v{j}").glob("*/manifest.json"))

    sys.path.insert(0, str(REPO))
    from zitflow.cache.store import CacheStore, CorruptEntry

    store = CacheStore(cache)
    entries = list(store.entries())
    damaged = 0
    for e in entries:
        try:
            store.load(e.key)
        except CorruptEntry:
            damaged += 1
    locks_left = len(list((cache / "locks").glob("*.lock"))) if (cache / "locks").is_dir() else 0
    twice = {k: n for k, n in computed.items() if n > 1}
    summary = {
        "processes": args.procs, "victims_killed": args.victims, "kill_at_s": [round(a, 1) for a in kill_at],
        "exit_codes": codes, "wall_s": round(wall, 1), "jobs": jobs, "victim_jobs_finished": victim_jobs,
        "distinct_keys": len(entries), "computations": sum(computed.values()), "keys_computed_twice": len(twice),
        "statuses": dict(statuses), "damaged_entries": damaged, "locks_left": locks_left,
        "grids_with_differing_exports": sum(1 for v in exports.values() if len(v) > 1),
    }
    summary["pass"] = (all(c == 0 for c in codes) and not twice and damaged == 0 and locks_left == 0
                       and summary["grids_with_differing_exports"] == 0 and jobs == 4 * args.procs)
    for k, v in summary.items():
        print(f"{k:<30} {v}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
