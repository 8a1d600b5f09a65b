"""The cache store on any fsspec file system: ``cache.dir=s3://bucket/zitflow`` (or gcs://, ...).

Same entries and guarantees as :class:`~zitflow.cache.store.CacheStore`, laid out the same way
under the URL (``objects/<kk>/<key>/<files>`` + ``record.json``), with object-store semantics:

* **Commit by record.** An object store has no atomic folder rename, so a writer uploads the
  artifact's files first and ``record.json`` last: an entry exists only once its record does.
  A writer killed halfway leaves files without a record, which :meth:`contains` does not see
  and the next writer overwrites.
* **Verified reads.** :meth:`load` downloads the entry into a local temporary folder, checks the
  file list and every SHA-256 against the record, then loads the artifact from that folder;
  anything that does not check out is :class:`CorruptEntry` (reported, removed, rebuilt).
* **One computation per key per host.** Key locks live in a local folder (``local_root``,
  default ``<user cache>/zitflow/remote/<hash of the URL>``), so workers on one host wait for
  each other. Workers on different hosts may both compute a key in a race; the second one then
  finds the record present and keeps the first entry; should their uploads interleave, the
  checksums catch it and the entry is rebuilt, never served mixed.

``gc`` works as on a folder, except that an object store keeps no "last used" time: the oldest
created entries go first. fsspec, and the file system's own package (``s3fs``, ``gcsfs``, ...),
are needed only here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

from ..artifacts import ARTIFACT_TYPES, Artifact
from .store import RECORD, CacheStore, CorruptEntry, EntryInfo, EntryUnreadable, sha256_file


def is_url(location: str | os.PathLike) -> bool:
    """True for ``proto://...`` other than ``file://`` (which is a plain local folder)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def open_store(location: str | os.PathLike, local_root: str | os.PathLike | None = None) -> CacheStore:
    """A :class:`CacheStore` for a folder (or ``file://`` URL), an :class:`FsspecStore` for a URL."""
    text = str(location)
    if text.startswith("file://"):
        return CacheStore(text[len("file://"):])
    if is_url(text):
        return FsspecStore(text, local_root)
    return CacheStore(text)


class FsspecStore(CacheStore):
    """A store under an fsspec URL; ``root`` is the local folder for locks and downloads."""

    def __init__(self, url: str, local_root: str | os.PathLike | None = None,
                 storage_options: dict[str, Any] | None = None):
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.base = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.base = self.base.rstrip("/")
        if local_root is None:
            from platformdirs import user_cache_dir

            digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
            local_root = os.path.join(user_cache_dir("zitflow"), "remote", digest)
        super().__init__(local_root)

    def __repr__(self) -> str:
        return f"FsspecStore({self.url!r})"

    # -- paths ---------------------------------------------------------------------------
    def remote_dir(self, key: str) -> str:
        return f"{self.base}/objects/{key[:2]}/{key}"

    def entry_dir(self, key: str) -> Path:  # noqa: D102 - where an entry is when downloaded
        return self.root / "downloads" / key

    # -- queries -------------------------------------------------------------------------
    def _fresh(self, key: str) -> str:
        """The entry's remote folder, with fsspec's listing cache for it dropped (other
        processes write the store too)."""
        remote = self.remote_dir(key)
        self.fs.invalidate_cache(remote)
        return remote

    def contains(self, key: str) -> bool:
        try:
            return bool(self.fs.exists(f"{self._fresh(key)}/{RECORD}"))
        except OSError:
            return False

    def _record_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(f"{self._fresh(key)}/{RECORD}")

    # -- read ----------------------------------------------------------------------------
    def load(self, key: str) -> Artifact:
        rec = self.record(key)
        remote = self._fresh(key)
        try:
            present = {p.rsplit("/", 1)[-1] for p in self.fs.ls(remote, detail=False)} - {RECORD}
        except OSError as e:
            raise EntryUnreadable(key, f"listing {remote}: {e}") from None
        expected = set(rec["files"])
        if present != expected:
            raise CorruptEntry(key, f"files {sorted(present)} differ from the record's {sorted(expected)}")
        folder = self._tmp_dir()
        try:
            for name, digest in rec["files"].items():
                try:
                    self.fs.get_file(f"{remote}/{name}", str(folder / name))
                except FileNotFoundError:
                    raise CorruptEntry(key, f"{name} is missing") from None
                except OSError as e:
                    raise EntryUnreadable(key, f"{name}: {type(e).__name__}: {e}") from None
                if sha256_file(folder / name) != digest:
                    raise CorruptEntry(key, f"{name} checksum mismatch")
            cls = ARTIFACT_TYPES.get(rec.get("artifact", ""))
            if cls is None:
                raise CorruptEntry(key, f"unknown artifact type {rec.get('artifact')!r}")
            try:
                return cls.load(folder)
            except Exception as e:  # a verified file that still fails to parse is damage too
                raise CorruptEntry(key, f"{cls.type_name} failed to load ({type(e).__name__}: {e})") from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # -- write ---------------------------------------------------------------------------
    def save(self, key: str, artifact: Artifact, record: dict[str, Any]) -> Path:
        """Upload the files, then the record (the commit); an existing entry is kept."""
        tmp = self._tmp_dir()
        try:
            names = artifact.save(tmp)
            rec = dict(record)
            rec.update(key=key, artifact=artifact.type_name, created=time.time(),
                       files={n: sha256_file(tmp / n) for n in names})
            rec["bytes"] = sum((tmp / n).stat().st_size for n in names)
            if self.contains(key):  # a concurrent writer finished first: keep its entry
                return self.entry_dir(key)
            remote = self.remote_dir(key)
            self.fs.makedirs(remote, exist_ok=True)
            for n in names:
                self.fs.put_file(str(tmp / n), f"{remote}/{n}")
            body = json.dumps(rec, indent=2, sort_keys=True, default=str, ensure_ascii=False).encode()
            self.fs.pipe_file(f"{remote}/{RECORD}", body)
            return self.entry_dir(key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def remove(self, key: str) -> None:
        """Delete the record first (the entry is gone for readers at once), then the files."""
        remote = self.remote_dir(key)
        for path in (f"{remote}/{RECORD}", remote):
            try:
                self.fs.rm(path, recursive=path == remote)
            except FileNotFoundError:
                pass

    # -- housekeeping --------------------------------------------------------------------
    def entries(self) -> Iterator[EntryInfo]:
        try:
            found = self.fs.find(f"{self.base}/objects", detail=True)
        except FileNotFoundError:
            return
        by_key: dict[str, list[tuple[str, dict]]] = {}
        for path, info in found.items():
            parts = path.rstrip("/").split("/")
            if len(parts) >= 2:
                by_key.setdefault(parts[-2], []).append((parts[-1], info))
        for key, files in sorted(by_key.items()):
            size = sum(int(info.get("size") or 0) for _, info in files)
            kind, last = "damaged", 0.0
            if any(name == RECORD for name, _ in files):
                try:
                    rec = self.record(key)
                    kind, last = rec.get("kind", "?"), float(rec.get("created") or 0.0)
                except (CorruptEntry, EntryUnreadable):
                    pass
            yield EntryInfo(key, Path(self.remote_dir(key)), size, last, kind)
