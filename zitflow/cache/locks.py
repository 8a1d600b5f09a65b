"""Per-key locks so that concurrent runs on one store compute each key once.

A lock is a file ``locks/<key>.lock`` created with ``O_CREAT | O_EXCL`` holding the owner's
host, pid and start time; the owner touches it every few seconds while it works. Another
process that wants the same key waits until the entry appears or the lock goes away. A lock
is stale, and is broken, when its owner is a dead process on this host or when it has not
been touched for ``stale_after`` seconds (an owner on another host, killed). This works on
local disks and on NFS-like shared folders, where ``O_EXCL`` creation is atomic.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

HOST = socket.gethostname()
log = logging.getLogger("zitflow")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class KeyLock:
    """The lock of one key under ``root/locks``; see the module docstring."""

    def __init__(self, root: Path, key: str, stale_after: float = 120.0, heartbeat: float = 5.0):
        self.path = Path(root) / "locks" / f"{key}.lock"
        self.stale_after = stale_after
        self.heartbeat = heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._judged: str | None = None  # the lock file's text when is_stale() last read it

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"host": HOST, "pid": os.getpid(), "started": time.time(), "id": uuid.uuid4().hex}, f)
        except BaseException:  # e.g. a full disk: leave no empty lock for others to wait on
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def is_stale(self) -> bool:
        """True when the current holder is dead (same host) or silent for ``stale_after`` s."""
        try:
            text = self.path.read_text()
            self._judged = text
            info = json.loads(text or "{}")
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        except (OSError, ValueError):  # half-written by a holder killed between create and write
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return False
            return age > 2.0
        if info.get("host") == HOST and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"]):
            return True
        return age > self.stale_after

    def break_stale(self) -> None:
        """Remove the stale lock that :meth:`is_stale` judged (renamed aside first, so two breakers
        cannot both succeed).

        Two waiters may judge the same dead lock stale; if the first breaks it and a new owner
        takes the key before the second renames, the second has moved a live lock aside: it
        sees that the content is not what it judged and puts the lock back.
        """
        aside = self.path.with_name(f"{self.path.name}.broken-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            if self._judged is not None and aside.read_text() != self._judged:
                with contextlib.suppress(FileExistsError):
                    os.link(aside, self.path)  # restore the live owner's lock, unless replaced
        except OSError:
            pass
        with contextlib.suppress(FileNotFoundError):
            aside.unlink()


@contextlib.contextmanager
def claim(root: Path, key: str, done: Callable[[], bool], poll: float = 0.1,
          stale_after: float = 120.0, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Yield True when this process must compute ``key``, False when another produced it.

    ``done()`` tells whether the entry exists; waiting ends when it does or the lock is free.
    """
    lock = KeyLock(root, key, stale_after=stale_after)
    waited = False
    while True:
        if done():
            yield False
            return
        try:
            acquired = lock.try_acquire()
        except OSError as e:  # a full or read-only store: compute unlocked rather than fail
            log.warning("cannot lock %s in %s (%s); computing it without a lock", key[:12], root, e)
            yield True
            return
        if acquired:
            break
        if lock.is_stale():
            lock.break_stale()
            continue
        if not waited and on_wait is not None:
            on_wait()
        waited = True
        time.sleep(poll)
    try:
        if done():  # finished by another process between our check and our lock
            yield False
        else:
            yield True
    finally:
        lock.release()
