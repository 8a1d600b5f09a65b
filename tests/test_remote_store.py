"""cache.dir as an fsspec URL, against a local S3 emulation (moto's server mode) that the tests
start: entries round-trip, damage is caught, interrupted uploads are invisible, and a whole
recipe (and a Ray sweep) shares the S3 cache across processes."""

from __future__ import annotations

import json
import os
import socket
from collections import Counter

import numpy as np
import pytest

from zitflow.artifacts import Image, Tensors
from zitflow.cache.remote import FsspecStore, is_url, open_store
from zitflow.cache.store import CacheStore, CorruptEntry

moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")
pytest.importorskip("s3fs", reason="s3fs is in the dev extra")

BUCKET = "zitflow-test"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free local port; AWS_* variables point boto and s3fs at it."""
    import boto3

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield env
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def remote(s3, tmp_path):
    return FsspecStore(f"s3://{BUCKET}/{tmp_path.name}", tmp_path / "local")


def key(n: int) -> str:
    return f"{n:064x}"


def test_open_store_picks_by_location(tmp_path):
    assert type(open_store(tmp_path)) is CacheStore
    assert type(open_store(f"file://{tmp_path}")) is CacheStore and open_store(f"file://{tmp_path}").root == tmp_path
    assert is_url("s3://b/p") and is_url("gcs://b") and not is_url("/data/cache") and not is_url("file:///x")


def test_round_trip_image_and_tensors(remote):
    import torch

    img = Image(np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3))
    lat = Tensors({"latents": torch.randn(16, 4, 4)}, {"dtype": "float32"})
    assert not remote.contains(key(1))
    remote.save(key(1), img, {"kind": "decode"})
    remote.save(key(2), lat, {"kind": "denoise"})
    assert remote.contains(key(1)) and remote.contains(key(2))
    assert np.array_equal(remote.load(key(1)).pixels, img.pixels)
    assert torch.equal(remote.load(key(2)).tensors["latents"], lat.tensors["latents"])
    assert remote.record(key(1))["kind"] == "decode"
    assert {e.key: e.kind for e in remote.entries()} == {key(1): "decode", key(2): "denoise"}
    assert not list((remote.root / "tmp").iterdir())  # downloads and uploads leave nothing locally


def test_damaged_entry_is_refused(remote):
    remote.save(key(3), Image(np.zeros((4, 4, 3), np.uint8)), {"kind": "t"})
    name = next(iter(remote.record(key(3))["files"]))
    remote.fs.pipe_file(f"{remote.remote_dir(key(3))}/{name}", b"not a png")
    with pytest.raises(CorruptEntry, match="checksum"):
        remote.load(key(3))
    remote.fs.pipe_file(f"{remote.remote_dir(key(3))}/stray.bin", b"x")
    with pytest.raises(CorruptEntry, match="differ"):
        remote.load(key(3))
    remote.remove(key(3))
    assert not remote.contains(key(3))


def test_interrupted_upload_is_invisible_and_replaced(remote):
    """Files uploaded without their record (a writer killed before the commit) are no entry."""
    remote.fs.pipe_file(f"{remote.remote_dir(key(4))}/image.safetensors", b"half an upload")
    assert not remote.contains(key(4))
    good = Image(np.full((4, 4, 3), 9, np.uint8))
    remote.save(key(4), good, {"kind": "t"})
    assert np.array_equal(remote.load(key(4)).pixels, good.pixels)


def test_a_finished_entry_is_kept_by_a_second_writer(remote):
    first, second = Image(np.full((4, 4, 3), 1, np.uint8)), Image(np.full((4, 4, 3), 2, np.uint8))
    remote.save(key(5), first, {"kind": "t"})
    remote.save(key(5), second, {"kind": "t"})
    assert remote.load(key(5)).pixels[0, 0, 0] == 1


def test_gc_removes_the_oldest(remote):
    for n in (6, 7, 8):
        remote.save(key(n), Image(np.full((16, 16, 3), n, np.uint8)), {"kind": "t"})
    sizes = {e.key: e.size for e in remote.entries()}
    removed = remote.gc(sizes[key(8)] + sizes[key(7)])
    assert [e.key for e in removed] == [key(6)]
    assert not remote.contains(key(6)) and remote.contains(key(8))


def test_recipe_runs_share_the_s3_cache_across_processes(s3, tmp_path):
    from tests.test_cli import zitflow

    url = f"s3://{BUCKET}/e2e-{tmp_path.name}"
    args = ("recipe=retouch", "input=samples/chelsea.png", f"cache.dir={url}")
    zitflow(*args, f"hydra.run.dir={tmp_path}/a", cache=tmp_path / "unused", env=s3)
    zitflow(*args, f"hydra.run.dir={tmp_path}/b", cache=tmp_path / "unused", env=s3)
    a = json.loads((tmp_path / "a" / "manifest.json").read_text())
    b = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert a["cache_dir"] == b["cache_dir"] == url and all(s["status"] == "run" for s in a["stages"])
    assert all(s["status"] == "hit" for s in b["stages"])  # a new process, all from S3
    out_a, out_b = (next(iter(m["outputs"].values())) for m in (a, b))
    assert open(out_a, "rb").read() == open(out_b, "rb").read()


def test_ray_sweep_on_the_s3_cache_generates_each_latent_once(s3, tmp_path):
    pytest.importorskip("ray", reason="ray is in the dev extra")
    from tests.test_cli import zitflow
    from tests.test_sweep import SWEEP_RECIPE

    (tmp_path / "pack" / "recipe").mkdir(parents=True)
    (tmp_path / "pack" / "recipe" / "tsweep.yaml").write_text(SWEEP_RECIPE)
    zitflow("-m", "recipe=tsweep", "model=tiny", "runtime=cpu", "prompt=a kite", "seed=1,2",
            "stages.sharpen.amount=0.4,0.8", f"cache.dir=s3://{BUCKET}/ray-{tmp_path.name}",
            "hydra/launcher=ray", "hydra.launcher.workers=2", "+hydra.launcher.init.num_cpus=2",
            "+hydra.launcher.init.include_dashboard=false", f"hydra.sweep.dir={tmp_path}/out",
            cache=tmp_path / "unused",
            env=s3 | {"ZITFLOW_RECIPE_PATH": str(tmp_path / "pack"), "ZITFLOW_MODELS_DIR": str(tmp_path / "models")})
    ms = [json.loads(p.read_text()) for p in sorted((tmp_path / "out").glob("*/manifest.json"))]
    assert len(ms) == 4
    runs = Counter(s["name"] for m in ms for s in m["stages"] if s["status"] in ("run", "rebuilt"))
    assert runs["denoise"] == 2 and runs["encode"] == 1 and runs["sharpen"] == 4
