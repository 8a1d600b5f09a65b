"""Eight processes sweeping overlapping grids on one store, two lock holders killed -9 meanwhile:
each key is computed once, nothing is damaged, nobody deadlocks, dead owners' locks expire.

``bench/concurrency_test.py`` does the same with real ``python -m zitflow -m`` sweeps of the tiny
model and counts from their manifests.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import REPO
from zitflow.cache.locks import KeyLock, claim
from zitflow.cache.store import CacheStore

SWEEPER = textwrap.dedent("""
    import os, sys, time, numpy as np
    from dataclasses import dataclass
    from zitflow.artifacts import Image
    from zitflow.cache.store import CacheStore
    from zitflow.executor import Executor
    from zitflow.params import param
    from zitflow.recipe import build_graph
    from zitflow.registry import register
    from zitflow.stage import RunContext, Stage
    import tests.conftest  # t_add

    store_dir, log, values, amounts, hang = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]

    @dataclass
    class P:
        value: int = param(0)

    @register
    class Slow(Stage):
        kind = "t_slow_gen"
        Params = P
        output = Image
        def run(self, params, inputs, ctx):
            with open(log, "a") as f:
                f.write(f"slow {params.value} {os.getpid()}\\n")
            print("computing", params.value, flush=True)
            time.sleep(60 if hang == "hang" else 0.3)
            return Image(np.full((8, 8, 3), params.value, np.uint8))

    class Counted(tests.conftest.TestAdd):
        kind = "t_add_counted"
        def run(self, params, inputs, ctx):
            with open(log, "a") as f:
                f.write(f"add {int(inputs['image'].pixels[0, 0, 0])}:{params.amount} {os.getpid()}\\n")
            return super().run(params, inputs, ctx)
    register(Counted)

    for v in map(int, values.split(",")):          # one sweep: jobs one after another, as
        for a in map(int, amounts.split(",")):     # Hydra's basic launcher runs them
            g = build_graph("sweep", {"gen": {"kind": "t_slow_gen", "value": v},
                                      "post": {"kind": "t_add_counted", "input": "gen", "amount": a}})
            m = Executor(g, CacheStore(store_dir), RunContext()).execute()
            st = {r.name: r.status for r in m.stages}
            print("job", v, a, st["gen"], st["post"], int(m.outputs["post"].pixels[0, 0, 0]), flush=True)
""")


def start(store, log, values, amounts, hang=False):
    return subprocess.Popen([sys.executable, "-c", SWEEPER, str(store), str(log), values, amounts,
                             "hang" if hang else "-"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_eight_overlapping_sweeps_compute_each_key_once(tmp_path):
    store_dir, log = tmp_path / "store", tmp_path / "computations.log"
    # two processes take generations 2 and 5 and are killed -9 while holding their locks
    victims = [start(store_dir, log, v, "0", hang=True) for v in ("2", "5")]
    for v in victims:
        assert v.stdout.readline().startswith("computing")
    # a silent lock of a process on another host, long dead (no heartbeat for 10 minutes)
    foreign = KeyLock(store_dir, "f" * 64)
    foreign.path.parent.mkdir(parents=True, exist_ok=True)
    foreign.path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": 0}))
    os.utime(foreign.path, (time.time() - 600, time.time() - 600))
    grids = [("1,2,3", "0,1"), ("2,3,4", "1,2"), ("3,4,5", "0,2"), ("1,3,5", "1,2"),
             ("2,4,1", "0,1"), ("5,1,2", "2,0"), ("4,5,3", "1,0"), ("3,2,1", "2,1")]
    sweepers = [start(store_dir, log, v, a) for v, a in grids]
    time.sleep(0.5)  # let some sweepers queue behind the victims' locks
    for v in victims:
        v.send_signal(signal.SIGKILL)
        v.wait()  # reaped: its pid is gone, so its lock is stale at once
    outs = [p.communicate(timeout=600) for p in sweepers]  # a hang guard, not a speed bound
    assert all(p.returncode == 0 for p in sweepers), [o[1][-2000:] for o in outs]
    jobs = [line.split() for out, _ in outs for line in out.splitlines() if line.startswith("job")]
    assert len(jobs) == 8 * 6
    for _, v, a, gen, post, px in jobs:
        assert int(px) == int(v) + int(a)  # every job got the right image
    computed = collections.Counter(" ".join(line.split()[:2]) for line in log.read_text().splitlines())
    victims_pids = {str(v.pid) for v in victims}
    by_sweepers = collections.Counter(" ".join(line.split()[:2]) for line in log.read_text().splitlines()
                                      if line.split()[2] not in victims_pids)
    gens = {f"slow {v}" for v in range(1, 6)}
    posts = {f"add {v}:{a}" for v, a in {(int(v), int(a)) for _, v, a, *_ in jobs}}
    assert set(by_sweepers) == gens | posts
    assert set(by_sweepers.values()) == {1}, by_sweepers  # each key computed once
    assert computed["slow 2"] == 2 and computed["slow 5"] == 2  # the victims' attempts, then one each
    # every run status is accounted for: one "run" per key; the rest hit, waited ("shared"), or were
    # not needed because another sweeper had meanwhile stored the job's post output ("skipped")
    gen_status = collections.Counter(gen for _, _, _, gen, _, _ in jobs)
    assert gen_status["run"] == 5 and set(gen_status) <= {"run", "hit", "shared", "skipped"}
    store = CacheStore(store_dir)
    entries = list(store.entries())
    assert len(entries) == len(gens | posts)
    for e in entries:
        store.load(e.key)  # verifies
    assert [p.name for p in (store_dir / "locks").iterdir()] == [foreign.path.name]  # nobody needed it
    assert foreign.is_stale()


def test_second_breaker_of_a_stale_lock_restores_the_new_owner(tmp_path):
    """Two waiters judge the same dead lock stale; the first breaks it and takes the key. The
    second must not then break the first's live lock (both would compute the key)."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    a, b = KeyLock(tmp_path, "k" * 64), KeyLock(tmp_path, "k" * 64)
    a.path.parent.mkdir(parents=True)
    a.path.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "started": 0}))
    assert a.is_stale() and b.is_stale()
    a.break_stale()
    assert a.try_acquire()
    try:
        b.break_stale()  # b acts on its stale judgement, made before a took the key
        assert a.path.exists() and not b.try_acquire()
        assert not b.is_stale()
    finally:
        a.release()
    assert not list(a.path.parent.glob("*.broken-*"))


def test_lock_that_cannot_be_written_leaves_nothing_and_work_goes_on(tmp_path, monkeypatch, caplog):
    import zitflow.cache.locks as locks

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(locks.json, "dump", full)
    with pytest.raises(OSError):
        KeyLock(tmp_path, "n" * 64).try_acquire()
    assert list((tmp_path / "locks").iterdir()) == []  # no empty lock for others to wait on
    with claim(tmp_path, "n" * 64, done=lambda: False) as mine:
        assert mine
    assert "computing it without a lock" in caplog.text
