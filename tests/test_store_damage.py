"""A damaged store: every kind of damage is detected with a clear message, nothing wrong is
served, and nothing already good is lost.

Damage cases, each on every artifact type the store holds (PNG image, float image, tensors, data,
file): a flipped byte and a truncated or emptied file in each of the entry's files, a missing
data file, a missing / garbled / truncated / foreign / list-shaped record, a record whose
checksum or artifact type lies, a foreign file or folder inside the entry, the entry replaced by a
file. Then foreign files around entries, unreadable files (injected PermissionError: the suite
runs as root, where chmod does not block reads), and a full disk (injected ENOSPC, and a real
tiny tmpfs where one can be mounted).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from zitflow.artifacts import Data, File, Image, Tensors
from zitflow.cache.__main__ import main as cache_cli
from zitflow.cache.store import CacheStore, CorruptEntry, EntryUnreadable, StoreFull
from zitflow.executor import Executor
from zitflow.recipe import build_graph

ARTIFACTS = {
    "png": lambda: Image(np.random.default_rng(1).integers(0, 256, (16, 12, 3), dtype=np.uint8)),
    "float_image": lambda: Image(np.random.default_rng(2).random((8, 8, 4), dtype=np.float32)),
    "tensors": lambda: Tensors({"latents": torch.arange(96, dtype=torch.float32).reshape(4, 4, 6)}, {"w": "48"}),
    "data": lambda: Data({"gen_width": 1024, "note": "水墨"}),
    "file": lambda: File(b"\x89PNG fake payload " * 20, "poster_1_export.png"),
}


def equal(a, b) -> bool:
    if isinstance(a, Image):
        return np.array_equal(a.pixels, b.pixels)
    if isinstance(a, Tensors):
        return a.meta == b.meta and all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    return a == b


def _flip(p: Path):
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))


def _data_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name != "record.json")


def _edit_record(folder: Path, change):
    rec = json.loads((folder / "record.json").read_text())
    change(rec)
    (folder / "record.json").write_text(json.dumps(rec))


DAMAGE = {
    "flip_each_file": lambda f: [_flip(p) for p in _data_files(f)],
    "flip_last_file": lambda f: _flip(_data_files(f)[-1]),
    "truncate_file": lambda f: _data_files(f)[0].write_bytes(_data_files(f)[0].read_bytes()[:7]),
    "empty_file": lambda f: _data_files(f)[-1].write_bytes(b""),
    "missing_file": lambda f: _data_files(f)[0].unlink(),
    "missing_record": lambda f: (f / "record.json").unlink(),
    "garbled_record": lambda f: (f / "record.json").write_bytes(b"\xff\xfe{{{"),
    "truncated_record": lambda f: (f / "record.json").write_text((f / "record.json").read_text()[:30]),
    "record_of_other_key": lambda f: _edit_record(f, lambda r: r.update(key="0" * 64)),
    "record_is_a_list": lambda f: (f / "record.json").write_text("[1, 2]"),
    "record_checksum_lies": lambda f: _edit_record(f, lambda r: r["files"].update(
        {k: "0" * 64 for k in r["files"]})),
    "record_artifact_type_lies": lambda f: _edit_record(f, lambda r: r.update(artifact="pickle")),
    "foreign_file": lambda f: (f / "evil.py").write_text("import os"),
    "foreign_folder": lambda f: (f / "sub").mkdir(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("kind", sorted(ARTIFACTS))
def test_each_damage_on_each_artifact_is_detected_and_removed(store, kind, damage):
    key, good = "d" * 64, "9" * 64
    store.save(key, ARTIFACTS[kind](), {"kind": "x"})
    store.save(good, ARTIFACTS[kind](), {"kind": "x"})
    good_files = {p.name: p.read_bytes() for p in store.entry_dir(good).iterdir()}
    DAMAGE[damage](store.entry_dir(key))
    with pytest.raises(CorruptEntry) as e:
        store.load(key)
    assert str(e.value).startswith(f"cache entry {key[:12]} is damaged: ") and e.value.why
    # `verify` removes exactly the damaged entry; the good one stays byte for byte
    assert cache_cli(["--dir", str(store.root), "verify"]) == 0
    assert not store.entry_dir(key).exists()
    assert {p.name: p.read_bytes() for p in store.entry_dir(good).iterdir()} == good_files
    assert equal(store.load(good), ARTIFACTS[kind]())


def test_entry_replaced_by_a_file(store):
    key = "f" * 64
    store.save(key, ARTIFACTS["data"](), {})
    folder = store.entry_dir(key)
    store.remove(key)
    folder.write_text("not a folder")
    assert not store.contains(key)
    assert list(store.entries()) == []  # a foreign file is not an entry
    store.save(key, ARTIFACTS["data"](), {})  # and it does not block the real entry
    assert equal(store.load(key), ARTIFACTS["data"]())


def graph(amount=5):
    return build_graph("dmg", {
        "src": {"kind": "t_source", "value": 10},
        "add": {"kind": "t_add", "input": "src", "amount": amount},
        "mean": {"kind": "t_mean", "input": "add"},
    })


def graph2():
    """src -> add -> add2: reading add2 (not cached yet) needs add's entry."""
    return build_graph("dmg", {"src": {"kind": "t_source", "value": 10},
                               "add": {"kind": "t_add", "input": "src", "amount": 5},
                               "add2": {"kind": "t_add", "input": "add", "amount": 1}})


def statuses(m):
    return {r.name: r.status for r in m.stages}


def snapshot(store: CacheStore, keys) -> dict:
    return {k: {p.name: p.read_bytes() for p in store.entry_dir(k).iterdir()} for k in keys}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_executor_never_serves_damage_and_keeps_good_entries(store, ctx, calls, damage):
    ex = Executor(graph(), store, ctx)
    first = ex.execute()
    keys = {n: p.key for n, p in ex.planned.items()}
    others = [keys["src"], keys["mean"]]
    before = snapshot(store, others)
    DAMAGE[damage](store.entry_dir(keys["add"]))
    m = Executor(graph(), store, ctx).execute()  # mean hits; add is read only when something needs it
    assert m.outputs["mean"].value == first.outputs["mean"].value
    m = Executor(graph2(), store, ctx).execute()
    st = statuses(m)
    # a missing record makes the entry look absent ("run"); any other damage is found on load
    assert st["add"] == ("run" if damage == "missing_record" else "rebuilt"), st
    assert m.outputs["add2"].pixels[0, 0, 0] == 16
    assert store.load(keys["add"]).pixels[0, 0, 0] == 15  # the entry is whole again
    assert snapshot(store, others) == before


def test_missing_record_is_replaced_not_a_permanent_failure(store, ctx):
    """A folder left without its record.json (a partial copy, a lost file) used to make every
    later save of that key fail: the rename onto a non-empty folder raised and, with no record,
    the store did not treat it as a concurrent writer's entry."""
    ex = Executor(graph(), store, ctx)
    ex.execute()
    key = ex.planned["add"].key
    (store.entry_dir(key) / "record.json").unlink()
    m = Executor(graph2(), store, ctx).execute()
    assert statuses(m)["add"] == "run" and m.outputs["add2"].pixels[0, 0, 0] == 16
    assert store.load(key).pixels[0, 0, 0] == 15


def test_foreign_files_around_entries_are_left_alone(store):
    key = "a" * 64
    store.save(key, ARTIFACTS["png"](), {"kind": "sharpen"})
    objects = store.root / "objects"
    (objects / "README.txt").write_text("a note someone left")
    (objects / "aa" / "notes.txt").write_text("another")
    (store.root / "stray.bin").write_bytes(b"\0" * 10)
    assert [e.key for e in store.entries()] == [key]
    assert cache_cli(["--dir", str(store.root), "info"]) == 0
    assert cache_cli(["--dir", str(store.root), "verify"]) == 0
    assert store.gc(10**9) == []
    assert (objects / "aa" / "notes.txt").exists() and (store.root / "stray.bin").exists()
    assert equal(store.load(key), ARTIFACTS["png"]())


# -- unreadable -----------------------------------------------------------------------------------
def deny_reads(monkeypatch, match: str):
    """Make every open of a path containing ``match`` for reading fail as permission denied."""
    real_open = builtins.open

    def guarded(file, mode="r", *a, **k):
        if match in str(file) and "r" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)


@pytest.mark.parametrize("what", ["record.json", "image.safetensors"])
def test_unreadable_entry_is_reported_never_served_and_kept(store, ctx, calls, monkeypatch, caplog, what):
    ex = Executor(graph(), store, ctx)
    ex.execute()
    key = ex.planned["add"].key
    folder = store.entry_dir(key)
    before = snapshot(store, [key])
    with monkeypatch.context() as mp:
        deny_reads(mp, f"{key}/{what}")
        with pytest.raises(EntryUnreadable, match=rf"cache entry {key[:12]} cannot be read: {what}: "
                                                  r"PermissionError: Permission denied; it is kept"):
            store.load(key)
        calls.clear()
        m = Executor(graph2(), store, ctx).execute()
        assert m.outputs["add2"].pixels[0, 0, 0] == 16  # computed, not read from the entry
        add = next(r for r in m.stages if r.name == "add")
        assert add.status == "run" and "Permission denied" in add.notes["unreadable_entry"]
        assert "cannot be read" in caplog.text
        assert cache_cli(["--dir", str(store.root), "verify"]) == 1  # reported ...
    assert snapshot(store, [key]) == before  # ... and the entry is untouched
    assert store.load(key).pixels[0, 0, 0] == 15
    deny_reads(monkeypatch, f"{key}/{what}")
    assert cache_cli(["--dir", str(store.root), "verify", "--remove-unreadable"]) == 0
    assert not folder.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode; the injected "
                                               "PermissionError test above covers this case")
def test_unreadable_by_mode(store):
    key = "b" * 64
    store.save(key, ARTIFACTS["png"](), {})
    png = store.entry_dir(key) / "image.safetensors"
    png.chmod(0)
    try:
        with pytest.raises(EntryUnreadable):
            store.load(key)
    finally:
        png.chmod(0o644)
    assert equal(store.load(key), ARTIFACTS["png"]())


# -- full disk ------------------------------------------------------------------------------------
def fill_disk_on_write(monkeypatch, under: Path):
    """Every file opened for writing under ``under`` fails with ENOSPC on its first write."""
    real_open = builtins.open

    class Full(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    def guarded(file, mode="r", *a, **k):
        if str(file).startswith(str(under)) and ("w" in mode or "a" in mode):
            real_open(file, mode, *a, **k).close()  # the file appears, as on a real disk
            return io.BufferedWriter(Full()) if "b" in mode else io.TextIOWrapper(io.BufferedWriter(Full()))
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)


@pytest.mark.parametrize("kind", ["png", "data", "file"])
def test_full_disk_write_is_refused_cleanly(store, monkeypatch, kind):
    good = "c" * 64
    store.save(good, ARTIFACTS[kind](), {})
    before = snapshot(store, [good])
    with monkeypatch.context() as mp:
        fill_disk_on_write(mp, store.root / "tmp")
        with pytest.raises(StoreFull, match=r"cache store .* is full \(No space left on device\) while writing "
                                            r"entry eeeeeeeeeeee; nothing was stored. Free space"):
            store.save("e" * 64, ARTIFACTS[kind](), {})
    assert not store.contains("e" * 64) and not store.entry_dir("e" * 64).exists()
    assert list((store.root / "tmp").iterdir()) == []
    assert snapshot(store, [good]) == before


def test_full_disk_run_finishes_uncached(store, ctx, calls, monkeypatch, caplog):
    Executor(graph(), store, ctx).execute()
    with monkeypatch.context() as mp:
        fill_disk_on_write(mp, store.root)
        m = Executor(graph(amount=7), store, ctx).execute()
    st = statuses(m)
    assert st == {"src": "hit", "add": "run", "mean": "run"}
    assert m.outputs["mean"].value["mean"] == 17  # right answer, served from memory
    assert "is not cached" in caplog.text and "is full" in caplog.text
    add = next(r for r in m.stages if r.name == "add")
    assert "No space left on device" in add.notes["not_cached"]
    assert not store.contains(add.key)
    assert list(store.root.glob("locks/*.lock")) == []
    assert statuses(Executor(graph(), store, ctx).execute()) == {"src": "hit", "add": "hit", "mean": "hit"}


@pytest.fixture
def tiny_disk(tmp_path):
    """A 192 KiB tmpfs, when this machine lets us mount one (root in a container usually can)."""
    mnt = tmp_path / "tiny-disk"
    mnt.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mnt)], capture_output=True)
    except FileNotFoundError:
        pytest.skip("no mount command; the injected ENOSPC tests cover a full disk")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()}); the injected ENOSPC tests cover it")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_real_full_disk(tiny_disk):
    store = CacheStore(tiny_disk / "store")
    small = Data({"x": 1})
    store.save("1" * 64, small, {})
    big = Image(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8))  # ~270 KB PNG
    with pytest.raises(StoreFull, match="is full"):
        store.save("2" * 64, big, {})
    assert not store.entry_dir("2" * 64).exists() and list((store.root / "tmp").iterdir()) == []
    assert store.load("1" * 64) == small
    store.save("3" * 64, Data({"y": uuid.uuid4().hex}), {})  # the room is back once the write is undone
    assert store.contains("3" * 64)
