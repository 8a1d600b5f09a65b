"""The content-addressed cache store: one folder per entry, written atomically, read verified.

Layout under ``root``::

    objects/<key[:2]>/<key>/record.json   what the entry is (see :meth:`CacheStore.save`)
    objects/<key[:2]>/<key>/<files>       the artifact's files (image.safetensors, tensors.safetensors...)
    tmp/<random>/                         entries being written; never read

An entry is written into ``tmp/`` and renamed into ``objects/`` in one step, so a reader sees a
whole entry or none. ``record.json`` holds the SHA-256 of every file; :meth:`load` checks them
and raises :class:`CorruptEntry` for a damaged, partial or foreign entry, which the executor
reports, removes and rebuilds. An entry that exists but cannot be read (permissions, an I/O
error) raises :class:`EntryUnreadable` instead: it is never served and never deleted, since its
content may be good. A write that finds the disk full raises :class:`StoreFull` and leaves
nothing behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..artifacts import ARTIFACT_TYPES, Artifact

RECORD = "record.json"


class CorruptEntry(Exception):
    """A cache entry failed verification; ``key`` names it and the message says why."""

    def __init__(self, key: str, why: str):
        self.key = key
        self.why = why
        super().__init__(f"cache entry {key[:12]} is damaged: {why}")


class EntryUnreadable(Exception):
    """A cache entry that exists but cannot be read (permissions, I/O error); it is kept."""

    def __init__(self, key: str, why: str):
        self.key = key
        self.why = why
        super().__init__(f"cache entry {key[:12]} cannot be read: {why}; it is kept as it is (fix the "
                         f"store's permissions, or remove it with `python -m zitflow.cache verify --remove-unreadable`)")


class StoreFull(OSError):
    """The store's disk is full (or over quota) while writing an entry; nothing was stored."""


#: errno values that mean "no room": the write is refused as :class:`StoreFull`.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _read_error(key: str, what: str, e: OSError) -> Exception:
    """A missing file is damage (:class:`CorruptEntry`); any other OS error is :class:`EntryUnreadable`."""
    if isinstance(e, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return CorruptEntry(key, f"{what} is missing ({e.strerror or e})")
    return EntryUnreadable(key, f"{what}: {type(e).__name__}: {e.strerror or e}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class EntryInfo:
    """One entry as listed by :meth:`CacheStore.entries`: size in bytes, last use (epoch s)."""

    key: str
    path: Path
    size: int
    last_used: float
    kind: str


class CacheStore:
    """A local-folder store; ``root`` is created on first write."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.expanduser(str(root)))

    # -- paths ---------------------------------------------------------------------------
    def entry_dir(self, key: str) -> Path:
        return self.root / "objects" / key[:2] / key

    def _tmp_dir(self) -> Path:
        d = self.root / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex}"
        d.mkdir(parents=True)
        return d

    # -- queries -------------------------------------------------------------------------
    def contains(self, key: str) -> bool:
        """True when an entry with a record exists; its content is verified only on load."""
        return (self.entry_dir(key) / RECORD).is_file()

    def _record_bytes(self, key: str) -> bytes:
        """The raw ``record.json`` of ``key`` (OSError as the file system raises it)."""
        return (self.entry_dir(key) / RECORD).read_bytes()

    def record(self, key: str) -> dict[str, Any]:
        """The entry's record; :class:`CorruptEntry` if missing or garbled, :class:`EntryUnreadable`
        if the file system refuses to read it."""
        try:
            rec = json.loads(self._record_bytes(key))
        except FileNotFoundError:
            raise CorruptEntry(key, "record.json is missing") from None
        except OSError as e:
            raise _read_error(key, "record.json", e) from None
        except ValueError as e:
            raise CorruptEntry(key, f"record.json is not valid JSON ({e})") from None
        if not isinstance(rec, dict) or rec.get("key") != key or not isinstance(rec.get("files"), dict):
            raise CorruptEntry(key, "record.json does not describe this entry")
        return rec

    # -- read ----------------------------------------------------------------------------
    def load(self, key: str) -> Artifact:
        """Read and verify an entry: :class:`CorruptEntry` when anything does not check out,
        :class:`EntryUnreadable` when the file system will not let it be read."""
        rec = self.record(key)
        folder = self.entry_dir(key)
        try:
            present = {p.name for p in folder.iterdir()} - {RECORD}
        except OSError as e:
            raise _read_error(key, "the entry folder", e) from None
        expected = set(rec["files"])
        if present != expected:
            raise CorruptEntry(key, f"files {sorted(present)} differ from the record's {sorted(expected)}")
        for name, digest in rec["files"].items():
            try:
                actual = sha256_file(folder / name)
            except OSError as e:
                raise _read_error(key, name, e) from None
            if actual != digest:
                raise CorruptEntry(key, f"{name} checksum mismatch")
        cls = ARTIFACT_TYPES.get(rec.get("artifact", ""))
        if cls is None:
            raise CorruptEntry(key, f"unknown artifact type {rec.get('artifact')!r}")
        try:
            art = cls.load(folder)
        except OSError as e:
            raise _read_error(key, cls.type_name, e) from None
        except Exception as e:  # a verified file that still fails to parse is damage too
            raise CorruptEntry(key, f"{cls.type_name} failed to load ({type(e).__name__}: {e})") from None
        try:
            os.utime(folder / RECORD)  # last use, for gc
        except OSError:
            pass
        return art

    # -- write ---------------------------------------------------------------------------
    def save(self, key: str, artifact: Artifact, record: dict[str, Any]) -> Path:
        """Write ``artifact`` under ``key`` atomically with ``record`` (plus files and checksums).

        If another writer finished the same key first, its entry is kept and ours discarded; a
        damaged leftover under the key (a folder without a record) is moved aside and replaced.
        A full disk raises :class:`StoreFull` naming the store and what to do; nothing stays.
        """
        tmp: Path | None = None
        try:
            tmp = self._tmp_dir()
            names = artifact.save(tmp)
            rec = dict(record)
            rec.update(key=key, artifact=artifact.type_name, created=time.time(),
                       files={n: sha256_file(tmp / n) for n in names})
            rec["bytes"] = sum((tmp / n).stat().st_size for n in names)
            with open(tmp / RECORD, "w") as f:
                json.dump(rec, f, indent=2, sort_keys=True, default=str, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            final = self.entry_dir(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if self.contains(key):
                    shutil.rmtree(tmp, ignore_errors=True)  # a concurrent writer won; same content
                    return final
                # a folder without a record is never a finished entry (the record moves in with
                # the files): damage such as a lost record.json; move it aside and take its place
                self.remove(key)
                os.rename(tmp, final)
            return final
        except BaseException as e:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError) and e.errno in NO_SPACE:
                raise StoreFull(e.errno, f"cache store {self.root} is full ({os.strerror(e.errno)}) while "
                                         f"writing entry {key[:12]}; nothing was stored. Free space "
                                         f"(python -m zitflow.cache gc --max-size SIZE) or set cache.dir "
                                         f"to a larger disk") from e
            raise

    def remove(self, key: str) -> None:
        """Delete an entry (move aside first, so no reader sees half of it)."""
        folder = self.entry_dir(key)
        if not folder.exists():
            return
        graveyard = self.root / "tmp" / f"rm-{uuid.uuid4().hex}"
        graveyard.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(folder, graveyard)
        except OSError:
            graveyard = folder
        shutil.rmtree(graveyard, ignore_errors=True)

    # -- housekeeping --------------------------------------------------------------------
    def entries(self) -> Iterator[EntryInfo]:
        objects = self.root / "objects"
        if not objects.is_dir():
            return
        for shard in sorted(objects.iterdir()):
            for folder in sorted(shard.iterdir()) if shard.is_dir() else []:
                if not folder.is_dir():  # a foreign file dropped into the store: not an entry
                    continue
                try:
                    files = [p for p in folder.iterdir() if p.is_file()]
                    size = sum(p.stat().st_size for p in files)
                    last = folder.stat().st_mtime
                except OSError:
                    yield EntryInfo(folder.name, folder, 0, 0.0, "unreadable")
                    continue
                rec_path = folder / RECORD
                kind = "?"
                if rec_path.exists():
                    last = rec_path.stat().st_mtime
                    try:
                        rec = json.loads(rec_path.read_text())
                        kind = rec.get("kind", "?") if isinstance(rec, dict) else "damaged"
                    except OSError:
                        kind = "unreadable"
                    except ValueError:
                        kind = "damaged"
                yield EntryInfo(folder.name, folder, size, last, kind)

    def clean_tmp(self, older_than_s: float = 3600.0) -> int:
        """Remove leftovers of interrupted writes older than ``older_than_s``; returns the count."""
        tmp = self.root / "tmp"
        n = 0
        if tmp.is_dir():
            now = time.time()
            for d in tmp.iterdir():
                if now - d.stat().st_mtime > older_than_s:
                    shutil.rmtree(d, ignore_errors=True)
                    n += 1
        return n

    def gc(self, max_bytes: int) -> list[EntryInfo]:
        """Delete least recently used entries until the store holds at most ``max_bytes``."""
        entries = sorted(self.entries(), key=lambda e: e.last_used)
        total = sum(e.size for e in entries)
        removed = []
        for e in entries:
            if total <= max_bytes:
                break
            self.remove(e.key)
            total -= e.size
            removed.append(e)
        self.clean_tmp()
        return removed
