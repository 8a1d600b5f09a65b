"""Kill -9 a zitflow run at random moments, re-run it, and check what the cache guarantees.

Each *trial* starts from an empty cache and kills the run (SIGKILL) one to three times in a row
on that cache, then runs it once more to the end. A kill lands either at a uniformly random
time in the run, or at a chosen point where the child pauses and waits to be killed:

* ``load``          - a model component has been read from disk, the pool does not hold it yet;
* ``denoise``       - inside the DiT loop, before the k-th of the scheduler's forwards (k random);
* ``cache_files``   - an entry's artifact files are in ``tmp/``, its checksums not yet taken;
* ``cache_record``  - ``record.json`` is written and about to be fsynced, the rename not done;
* ``export``        - the exported file is written as ``<name>.part``, not yet renamed into place.

After every kill and after the final run the checks are:

* every entry under ``objects/`` loads and verifies (nothing partial is ever servable);
* a run never starts a stage whose entry was in the store when it started (finished work is reused);
* a file under the final export name is byte-identical to the uninterrupted run's (only
  ``*.part`` may be partial);
* the final run's manifest: each stage whose entry was stored is ``hit`` or ``skipped``, the rest
  ``run``; nothing ``rebuilt``; its exported PNG is byte-identical to the uninterrupted run's.

Usage::

    python bench/kill_test.py --kills 50 --out bench/results/kill_test_cpu.json
    python bench/kill_test.py --kills 6 --seed 1            # a quick look

The child is ``python bench/kill_test.py --child <hydra overrides>``: ``zitflow.app.main`` with
hooks that print ``@@`` markers on stdout (stage starts, model loads, pauses) and pause where
``ZK_PAUSE=<point>[:<arg>]`` says. The runs use the tiny model on the CPU at 256x256, with the
recipe :data:`RECIPE` written into the work dir (so edits to ``recipes/`` cannot change it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POINTS = ("load", "denoise", "cache_files", "cache_record", "export")
#: The recipe every run uses, kept here so that edits to recipes/ cannot change it mid-test:
#: the poster chain (resolution, encode, denoise, decode, sharpen, color, export) at 256x256.
RECIPE = """\
# @package _global_
schema_version: 1
description: "kill test: the poster chain at 256x256"
stages:
  size: {kind: resolution, width: 256, height: 256, strategy: exact}
  encode: {kind: encode, prompt: "${prompt}", negative_prompt: "${negative_prompt}"}
  denoise: {kind: denoise, inputs: {embeds: encode, size: size}, seed: "${seed}", steps: 9, guidance_scale: 0.0}
  decode: {kind: decode, input: denoise}
  sharpen: {kind: sharpen, input: decode, amount: 0.5, radius: 1.2}
  color: {kind: color_correct, input: sharpen, contrast: 1.1}
  export: {kind: export, input: color, format: png}
"""
PACK = Path(os.environ.get("ZK_PACK", "/nonexistent"))
#: Overrides of every run: the tiny model on the CPU, small enough for dozens of runs.
RUN_ARGS = ("recipe=killtest", "model=tiny", "runtime=cpu", "runtime.progress=lines", "prompt=kill test", "seed=7")


def run_args() -> list[str]:
    return [f"hydra.searchpath=[file://{PACK}]", *RUN_ARGS]


def write_pack(work: Path) -> None:
    """Write the recipe pack and point this process (and its children, via ZK_PACK) at it."""
    global PACK
    PACK = work / "pack"
    (PACK / "recipe").mkdir(parents=True, exist_ok=True)
    (PACK / "recipe" / "killtest.yaml").write_text(RECIPE)
    os.environ["ZK_PACK"] = str(PACK)
PAUSE_S = 120.0


# -- the child ---------------------------------------------------------------------------------
def _child(argv: list[str]) -> None:
    """Run zitflow's Hydra app with marker hooks; pause (sleep) at ``ZK_PAUSE``'s point."""
    sys.path.insert(0, str(REPO))
    import zitflow.cache.store as store_mod
    import zitflow.executor as executor_mod
    import zitflow.job as job_mod
    import zitflow.models.pool as pool_mod

    point, _, arg = os.environ.get("ZK_PAUSE", "").partition(":")
    state = {"saving": None, "forwards": 0}

    def mark(*words: str) -> None:
        print("@@", *words, flush=True)

    def pause(*words: str) -> None:
        mark("PAUSE", *words)
        time.sleep(PAUSE_S)

    real_run_stage = executor_mod.Executor._run_stage

    def run_stage(self, name, status, why):
        mark("start", name)
        out = real_run_stage(self, name, status, why)
        mark("stored", name)
        return out

    executor_mod.Executor._run_stage = run_stage

    real_load = pool_mod.load_component

    def load_component(folder, component, dtype_name):
        module = real_load(folder, component, dtype_name)
        mark("load", component)
        if point == "load" and component == (arg or "transformer"):
            pause("load", component)
        if component == "transformer" and point == "denoise":
            def pre_hook(mod, args, kwargs):
                state["forwards"] += 1
                if state["forwards"] == int(arg or 1):
                    pause("denoise", str(state["forwards"]))
            module.register_forward_pre_hook(pre_hook, with_kwargs=True)
        return module

    pool_mod.load_component = load_component

    real_save = store_mod.CacheStore.save

    def save(self, key, artifact, record):
        state["saving"] = record.get("stage")
        try:
            return real_save(self, key, artifact, record)
        finally:
            state["saving"] = None

    store_mod.CacheStore.save = save
    real_sha = store_mod.sha256_file

    def sha256_file(path):
        if point == "cache_files" and state["saving"] == arg and path.parent.parent.name == "tmp":
            pause("cache_files", arg)
        return real_sha(path)

    store_mod.sha256_file = sha256_file
    real_fsync = os.fsync

    def fsync(fd):
        if point == "cache_record" and state["saving"] == arg:
            pause("cache_record", arg)
        return real_fsync(fd)

    store_mod.os.fsync = fsync
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if point == "export" and str(src).endswith(".part"):
            pause("export", Path(dst).name)
        return real_replace(src, dst, *a, **k)

    job_mod.os.replace = replace
    sys.argv = ["zitflow", *argv]
    from zitflow.app import main

    main()


# -- the parent --------------------------------------------------------------------------------
@dataclass
class Kill:
    """One SIGKILL: where it landed and what the store looked like afterwards."""

    trial: int
    how: str            # a point in POINTS, or "random"
    at: str             # the point it landed: last marker seen ("start denoise", "PAUSE export ...")
    seconds: float
    entries_after: int
    damaged_entries: int
    bad_exports: int
    reran_cached: list[str]


@dataclass
class Trial:
    """A trial: its kills, then the final run's stage statuses and whether its output matched."""

    index: int
    kills: list[Kill] = field(default_factory=list)
    reused: int = 0
    recomputed: int = 0
    statuses: dict[str, str] = field(default_factory=dict)
    status_errors: list[str] = field(default_factory=list)
    identical: bool = False
    damaged_entries: int = 0


def _env(cache: Path, models: Path, pause: str | None) -> dict[str, str]:
    env = dict(os.environ, ZITFLOW_CACHE_DIR=str(cache), ZITFLOW_MODELS_DIR=str(models), HF_HUB_OFFLINE="1",
               HYDRA_FULL_ERROR="1", PYTHONUNBUFFERED="1")
    env.pop("ZK_PAUSE", None)
    if pause:
        env["ZK_PAUSE"] = pause
    return env


def full_run(cache: Path, models: Path, run_dir: Path) -> dict:
    """An uninterrupted ``python -m zitflow`` run; returns its manifest."""
    p = subprocess.run([sys.executable, "-m", "zitflow", *run_args(), f"hydra.run.dir={run_dir}"], cwd=REPO,
                       env=_env(cache, models, None), capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"zitflow run failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return json.loads((run_dir / "manifest.json").read_text())


def check_store(cache: Path) -> tuple[set[str], int]:
    """Keys in the store and how many entries fail to load (0 is the guarantee)."""
    sys.path.insert(0, str(REPO))
    from zitflow.cache.store import CacheStore, CorruptEntry

    store = CacheStore(cache)
    keys, bad = set(), 0
    for e in store.entries():
        try:
            store.load(e.key)
            keys.add(e.key)
        except CorruptEntry:
            bad += 1
    return keys, bad


def bad_exports(run_dir: Path, reference: bytes) -> int:
    """Files under a final export name that differ from the reference (``*.part`` excluded)."""
    return sum(1 for p in run_dir.glob("*.png") if p.read_bytes() != reference)


def killed_run(cache: Path, models: Path, run_dir: Path, how: str, rng: random.Random, ref_seconds: float,
               stage_keys: dict[str, str]) -> tuple[str, float, list[str]] | None:
    """Start a child and SIGKILL it as ``how`` says; None when it finished before the kill.

    Returns (where it landed, seconds after start, stages it started although already stored).
    """
    stored_before = set(check_store(cache)[0])
    pause = None
    # pause where this run still has work: in a stage whose entry is not stored yet
    todo = [s for s, k in stage_keys.items() if k not in stored_before] or list(stage_keys)
    if how == "load":
        loads = {"encode": "text_encoder", "denoise": "transformer", "decode": "vae"}
        pause = "load:" + rng.choice([c for s, c in loads.items() if s in todo] or list(loads.values()))
    elif how == "denoise":
        pause = f"denoise:{rng.randint(1, 9)}"
    elif how in ("cache_files", "cache_record"):
        pause = how + ":" + rng.choice(todo)
    elif how == "export":
        pause = "export"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = open(run_dir.parent / f"{run_dir.name}.log", "w")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", *run_args(),
                             f"hydra.run.dir={run_dir}"], cwd=REPO, env=_env(cache, models, pause),
                            stdout=subprocess.PIPE, stderr=log, text=True)
    markers: list[str] = []
    if how == "random":
        deadline = t0 + rng.uniform(0.2, ref_seconds)
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0 and proc.poll() is None:
            if sel.select(timeout=left):
                line = proc.stdout.readline()
                if line.startswith("@@"):
                    markers.append(line[3:].strip())
        finished = proc.poll() is not None
    else:
        finished = True  # unless it pauses: then it waits for the kill
        for line in proc.stdout:
            if line.startswith("@@"):
                markers.append(line[3:].strip())
                if line.startswith("@@ PAUSE"):
                    finished = False
                    break
    seconds = time.monotonic() - t0
    if not finished:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()
    started = [m.split()[1] for m in markers if m.startswith("start ")]
    reran = [s for s in started if stage_keys.get(s) in stored_before]
    if finished:
        return None if not reran else ("finished", seconds, reran)
    return (markers[-1] if markers else "startup (imports)"), seconds, reran


def trial(index: int, work: Path, models: Path, reference: bytes, stage_keys: dict[str, str],
          ref_seconds: float, rng: random.Random, hows: list[str]) -> Trial:
    """Kill runs on one fresh cache as ``hows`` says (each a point or "random"), then finish it."""
    cache = work / f"t{index}" / "cache"
    t = Trial(index)
    for k, how in enumerate(hows):
        run_dir = work / f"t{index}" / f"k{k}"
        res = killed_run(cache, models, run_dir, how, rng, ref_seconds, stage_keys)
        if res is None:  # finished before the kill: the store is complete, the chain ends
            break
        at, seconds, reran = res
        keys, bad = check_store(cache)
        t.kills.append(Kill(index, how, at, round(seconds, 2), len(keys), bad, bad_exports(run_dir, reference), reran))
    stored = check_store(cache)[0]
    final_dir = work / f"t{index}" / "final"
    m = full_run(cache, models, final_dir)
    t.statuses = {s["name"]: s["status"] for s in m["stages"]}
    for s in m["stages"]:
        want = ("hit", "skipped") if s["key"] in stored else ("run",)
        if s["status"] not in want:
            t.status_errors.append(f"{s['name']}: {s['status']}, expected {'/'.join(want)}")
    t.reused = sum(1 for s in m["stages"] if s["status"] in ("hit", "skipped"))
    t.recomputed = sum(1 for s in m["stages"] if s["status"] in ("run", "rebuilt"))
    out = Path(m["outputs"]["export"])
    t.identical = out.read_bytes() == reference
    t.damaged_entries = check_store(cache)[1]
    return t


def reference_run(work: Path, models: Path, warm: bool = True) -> tuple[bytes, dict[str, str], float]:
    """The uninterrupted run: exported bytes, stage -> key, wall seconds (after a warm-up run that
    builds the tiny model, unless ``warm`` is False)."""
    if warm:
        full_run(work / "warm-cache", models, work / "warm")
    t0 = time.monotonic()
    m = full_run(work / "ref-cache", models, work / "ref")
    seconds = time.monotonic() - t0
    return Path(m["outputs"]["export"]).read_bytes(), {s["name"]: s["key"] for s in m["stages"]}, seconds


def run(kills: int, seed: int, work: Path, models: Path, schedule: list[list[str]] | None = None,
        per_trial: tuple[int, int] = (1, 3), warm: bool = True) -> dict:
    """SIGKILLs in trials; returns the JSON summary.

    ``schedule`` fixes each trial's kills (e.g. ``[["load", "denoise"], ["export"]]``); without it,
    trials of ``per_trial`` kills drawn from the points and "random" run until ``kills`` landed.
    """
    rng = random.Random(seed)
    kinds = [*POINTS, "random", "random"]
    write_pack(work)
    reference, stage_keys, ref_seconds = reference_run(work, models, warm)
    trials: list[Trial] = []
    todo = list(schedule or [])
    while todo if schedule else sum(len(t.kills) for t in trials) < kills:
        if schedule:
            hows = todo.pop(0)
        else:
            n = min(rng.randint(*per_trial), kills - sum(len(t.kills) for t in trials))
            hows = [rng.choice(kinds) for _ in range(n)]
        trials.append(trial(len(trials), work, models, reference, stage_keys, ref_seconds, rng, hows))
    all_kills = [k for t in trials for k in t.kills]
    return {
        "kills": len(all_kills), "trials": len(trials), "seed": seed, "reference_seconds": round(ref_seconds, 2),
        "run_args": list(RUN_ARGS), "recipe": RECIPE,
        "damaged_entries_after_kills": sum(k.damaged_entries for k in all_kills),
        "partial_exports": sum(k.bad_exports for k in all_kills),
        "stored_stages_rerun": sum(len(k.reran_cached) for k in all_kills),
        "final_runs_identical": sum(t.identical for t in trials),
        "final_status_errors": [e for t in trials for e in t.status_errors],
        "final_damaged_entries": sum(t.damaged_entries for t in trials),
        "stages_reused_on_resume": sum(t.reused for t in trials),
        "stages_recomputed_on_resume": sum(t.recomputed for t in trials),
        "kills_by_point": _by_point(all_kills),
        "trial_rows": [{"trial": t.index, "kills": [k.__dict__ for k in t.kills], "final": t.statuses,
                        "identical": t.identical} for t in trials],
    }


def _by_point(kills: list[Kill]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in kills:
        words = k.at.split()
        if words[0] == "PAUSE":
            where = words[1]
        elif words[0] == "start":
            where = f"during {words[1]}"
        elif words[0] in ("stored", "load"):
            where = f"after {words[0]} {words[1]}"
        else:
            where = k.at
        key = f"{k.how}: {where}" if k.how == "random" else k.how
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def ok(summary: dict) -> bool:
    """The guarantees: nothing damaged, nothing partial exported, stored work reused, same output."""
    return (summary["damaged_entries_after_kills"] == 0 and summary["partial_exports"] == 0
            and summary["stored_stages_rerun"] == 0 and not summary["final_status_errors"]
            and summary["final_damaged_entries"] == 0 and summary["final_runs_identical"] == summary["trials"])


def print_table(s: dict) -> None:
    print(f"{s['kills']} kills in {s['trials']} trials (seed {s['seed']}; uninterrupted run {s['reference_seconds']} s)")
    print(f"{'where the kill landed':<44} {'kills':>5}")
    for k, n in s["kills_by_point"].items():
        print(f"{k:<44} {n:>5}")
    print()
    for label, key in [("entries damaged after a kill", "damaged_entries_after_kills"),
                       ("partial files under an export name", "partial_exports"),
                       ("stored stages run again", "stored_stages_rerun"),
                       ("final runs byte-identical to uninterrupted", "final_runs_identical"),
                       ("final-run status errors", "final_status_errors"),
                       ("entries damaged after final runs", "final_damaged_entries"),
                       ("stages reused by final runs", "stages_reused_on_resume"),
                       ("stages computed by final runs", "stages_recomputed_on_resume")]:
        v = s[key]
        print(f"{label:<44} {len(v) if isinstance(v, list) else v:>5}")
    print("PASS" if ok(s) else "FAIL")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir, removed)")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON summary here")
    args = ap.parse_args()
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="zitflow-kill-"))
    try:
        summary = run(args.kills, args.seed, work, work / "models")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(summary)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0 if ok(summary) else 1


if __name__ == "__main__":
    sys.exit(main())
