"""Concurrent processes on one store compute each key once; locks of dead owners expire."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

from zitflow.cache.locks import KeyLock, claim
from tests.conftest import REPO

WORKER = textwrap.dedent("""
    import sys, time, numpy as np
    from dataclasses import dataclass
    from zitflow.artifacts import Image
    from zitflow.cache.store import CacheStore
    from zitflow.executor import Executor
    from zitflow.params import param
    from zitflow.recipe import build_graph
    from zitflow.registry import register
    from zitflow.stage import RunContext, Stage
    import tests.conftest  # registers t_add

    @dataclass
    class P:
        value: int = param(0)

    @register
    class Slow(Stage):
        kind = "t_slow"
        Params = P
        output = Image
        def run(self, params, inputs, ctx):
            with open(sys.argv[2], "a") as f:
                f.write("run\\n")
            time.sleep(1.0)
            return Image(np.full((4, 4, 3), params.value, np.uint8))

    g = build_graph("c", {"slow": {"kind": "t_slow", "value": 9},
                          "add": {"kind": "t_add", "input": "slow", "amount": int(sys.argv[3])}})
    m = Executor(g, CacheStore(sys.argv[1]), RunContext()).execute()
    print({r.name: r.status for r in m.stages}["slow"], int(m.outputs["add"].pixels[0, 0, 0]))
""")


def test_parallel_processes_compute_a_key_once(tmp_path):
    log = tmp_path / "runs.log"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "store"), str(log), str(i % 2)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(6)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert log.read_text().count("run") == 1  # the slow source ran in one process only
    lines = [o[0].split() for o in outs]
    assert sorted(s for s, _ in lines).count("run") == 1
    assert {(int(v)) for _, v in lines} == {9, 10}


def test_lock_of_dead_process_is_broken_at_once(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = KeyLock(tmp_path, "k" * 64)
    lock.path.parent.mkdir(parents=True)
    import socket

    lock.path.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "started": 0}))
    t0 = time.monotonic()
    with claim(tmp_path, "k" * 64, done=lambda: False) as mine:
        assert mine
    assert time.monotonic() - t0 < 5
    assert not lock.path.exists()


def test_silent_lock_of_other_host_expires(tmp_path):
    lock = KeyLock(tmp_path, "h" * 64, stale_after=60)
    lock.path.parent.mkdir(parents=True)
    lock.path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": 0}))
    assert not lock.is_stale()
    old = time.time() - 120
    os.utime(lock.path, (old, old))
    assert lock.is_stale()


def test_waiter_takes_the_finished_entry(tmp_path):
    holder = KeyLock(tmp_path, "w" * 64)
    assert holder.try_acquire()
    finished = {"done": False}

    import threading

    def finish():
        time.sleep(0.3)
        finished["done"] = True
        holder.release()

    threading.Thread(target=finish).start()
    with claim(tmp_path, "w" * 64, done=lambda: finished["done"]) as mine:
        assert mine is False
