"""The store: atomic writes, verified reads, damage detected and removed, gc by size."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from zitflow.artifacts import Data, Image, Tensors
from zitflow.cache.__main__ import main as cache_cli, parse_size
from zitflow.cache.store import CacheStore, CorruptEntry


def image(v=7, size=16):
    rng = np.random.default_rng(v)
    return Image(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_round_trip_of_each_artifact(store):
    import torch

    store.save("a" * 64, image(), {"kind": "x"})
    store.save("b" * 64, Tensors({"t": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)}, {"w": "4"}), {})
    store.save("c" * 64, Data({"gen_width": 1024, "note": "水墨"}), {})
    assert np.array_equal(store.load("a" * 64).pixels, image().pixels)
    t = store.load("b" * 64)
    assert t.tensors["t"].dtype == torch.bfloat16 and t.tensors["t"][1, 2].item() == 5 and t.meta == {"w": "4"}
    assert store.load("c" * 64).value == {"gen_width": 1024, "note": "水墨"}
    rec = store.record("a" * 64)
    assert rec["kind"] == "x" and set(rec["files"]) == {"image.safetensors"} and rec["bytes"] > 0


def test_float_images_are_lossless(store):
    px = np.random.default_rng(0).random((5, 4, 3), dtype=np.float32)
    store.save("f" * 64, Image(px), {})
    assert np.array_equal(store.load("f" * 64).pixels, px)


@pytest.mark.parametrize("damage", ["flip", "truncate", "no_record", "bad_record", "foreign_file", "missing_file"])
def test_damage_is_detected(store, damage):
    key = "d" * 64
    store.save(key, image(), {})
    folder = store.entry_dir(key)
    png = folder / "image.safetensors"
    if damage == "flip":
        data = bytearray(png.read_bytes())
        data[len(data) // 2] ^= 0xFF
        png.write_bytes(bytes(data))
    elif damage == "truncate":
        png.write_bytes(png.read_bytes()[:40])
    elif damage == "no_record":
        (folder / "record.json").unlink()
    elif damage == "bad_record":
        (folder / "record.json").write_text("{not json")
    elif damage == "foreign_file":
        (folder / "evil.py").write_text("print('hi')")
    elif damage == "missing_file":
        png.unlink()
    with pytest.raises(CorruptEntry) as e:
        store.load(key)
    assert key[:12] in str(e.value)
    store.remove(key)
    assert not folder.exists() and not store.contains(key)


def test_failed_write_leaves_nothing(store):
    class Boom(Image):
        def save(self, folder):
            (folder / "image.safetensors").write_bytes(b"half")
            raise OSError("disk full")

    with pytest.raises(OSError):
        store.save("e" * 64, Boom(image().pixels), {})
    assert not store.contains("e" * 64)
    assert not any((store.root / "tmp").iterdir())


def test_killed_writer_leaves_no_readable_entry(tmp_path):
    """SIGKILL a process in the middle of writing a large entry: no entry appears."""
    root = tmp_path / "store"
    script = textwrap.dedent(f"""
        import numpy as np, os, sys
        from zitflow.artifacts import Image
        from zitflow.cache.store import CacheStore
        class Slow(Image):
            def save(self, folder):
                names = super().save(folder)
                print("written", flush=True)
                import time; time.sleep(60)
                return names
        CacheStore({str(root)!r}).save("k" * 64, Slow(np.zeros((512, 512, 3), np.uint8)), {{}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = CacheStore(root)
    assert not store.contains("k" * 64)
    assert list((root / "tmp").iterdir())  # the partial write stays aside, never read ...
    assert store.clean_tmp(older_than_s=0) == 1  # ... and housekeeping removes it


def test_concurrent_writer_of_same_key_is_harmless(store):
    store.save("s" * 64, image(1), {})
    store.save("s" * 64, image(1), {})  # the second rename fails; the first entry stays
    assert np.array_equal(store.load("s" * 64).pixels, image(1).pixels)


def test_gc_drops_least_recently_used(store):
    keys = [c * 64 for c in "123"]
    for i, k in enumerate(keys):
        store.save(k, image(i, 64), {"kind": "t"})
        os.utime(store.entry_dir(k) / "record.json", (1000 + i, 1000 + i))
    store.load(keys[0])  # touch: now the most recent
    size = {e.key: e.size for e in store.entries()}
    removed = store.gc(size[keys[0]] + size[keys[2]])
    assert [e.key for e in removed] == [keys[1]]
    assert store.contains(keys[0]) and store.contains(keys[2])


def test_parse_size():
    assert parse_size("20GB") == 20 * 10**9
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("0") == 0
    with pytest.raises(Exception, match="use a number"):
        parse_size("lots")


def test_cli_info_gc_verify(store, capsys):
    store.save("1" * 64, image(1), {"kind": "sharpen"})
    store.save("2" * 64, image(2), {"kind": "fit"})
    assert cache_cli(["--dir", str(store.root), "info"]) == 0
    out = capsys.readouterr().out
    assert "2 entries" in out and "sharpen" in out and "fit" in out
    png = store.entry_dir("2" * 64) / "image.safetensors"
    png.write_bytes(png.read_bytes()[:-5])
    assert cache_cli(["--dir", str(store.root), "verify"]) == 0
    assert "1 damaged" in capsys.readouterr().out and not store.contains("2" * 64)
    assert cache_cli(["--dir", str(store.root), "gc", "--max-size", "0"]) == 0
    assert "removed 1 entries" in capsys.readouterr().out
    assert list(store.entries()) == []
