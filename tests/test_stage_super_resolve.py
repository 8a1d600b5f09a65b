"""The ``super_resolve`` stage through the executor: sizes, cache keys, hits that load no model."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image as PILImage
from skimage import data

from zitflow.artifacts import Image
from zitflow.cache.store import CacheStore
from zitflow.executor import Executor, plan
from zitflow.params import param
from zitflow.recipe import RecipeError, build_graph
from zitflow.registry import kinds, register
from zitflow.sr import models
from zitflow.stage import RunContext, Stage

COMPACT = "realesr-animevideov3"


@pytest.fixture(autouse=True)
def sr_weights_dir(tmp_path_factory, monkeypatch):
    path = tmp_path_factory.getbasetemp() / "sr-weights"
    monkeypatch.setenv("ZITFLOW_SR_WEIGHTS_DIR", str(path))
    return path


@dataclass
class _PhotoParams:
    size: int = param(48, ge=8, le=256)
    rgba: bool = param(False)


@register
class _SrTestPhoto(Stage):
    """Test-only source: a (size, size, 3|4) uint8 crop of skimage's astronaut."""

    kind = "t_sr_photo"
    Params = _PhotoParams
    output = Image

    def run(self, params, inputs, ctx):
        px = np.ascontiguousarray(data.astronaut()[100:100 + params.size, 180:180 + params.size])
        if params.rgba:
            alpha = np.full(px.shape[:2], 255, np.uint8)
            alpha[:, : params.size // 2] = 0
            px = np.dstack([px, alpha])
        return Image(px)


@pytest.fixture
def source(tmp_path):
    """A source stage entry: ``load_image`` on a PNG when that kind exists, else the test stage."""
    if "load_image" in kinds():
        path = tmp_path / "photo.png"
        PILImage.fromarray(np.ascontiguousarray(data.astronaut()[100:148, 180:228])).save(path)
        return {"kind": "load_image", "path": str(path)}
    return {"kind": "t_sr_photo", "size": 48}


def graph(source, **sr):
    return build_graph("t", {"load": source, "sr": {"kind": "super_resolve", "input": "load", **sr}})


def test_run_then_all_hits_without_loading_a_model(tmp_path, source, monkeypatch):
    store = CacheStore(tmp_path / "store")
    g = graph(source, model=COMPACT, scale=2.0)
    before = models.LOADS
    models.clear()
    m1 = Executor(g, store, RunContext()).execute()
    assert [r.status for r in m1.stages] == ["run", "run"]
    out = m1.outputs["sr"]
    assert isinstance(out, Image) and out.pixels.shape == (96, 96, 3) and out.pixels.dtype == np.uint8
    sr = m1.stages[1]
    assert sr.notes["engine"] == "torch-cpu" and sr.notes["precision"] == "fp32"
    assert models.LOADS == before + 1

    def no_load(*a, **k):
        raise AssertionError("a cached run must not load an SR model")

    monkeypatch.setattr(models, "load", no_load)
    monkeypatch.setattr("zitflow.sr.ncnn_backend.get_model", no_load)
    m2 = Executor(g, store, RunContext()).execute()
    assert [r.status for r in m2.stages] == ["hit", "hit"]
    assert np.array_equal(m2.outputs["sr"].pixels, out.pixels)
    assert models.LOADS == before + 1


def _key(g, store):
    return plan(g, store, RunContext())["sr"].key


def test_what_changes_the_key(tmp_path, source):
    store = CacheStore(tmp_path / "store")
    base = _key(graph(source, model=COMPACT), store)
    # measured not to change the output beyond one 8-bit level: same key
    assert _key(graph(source, model=COMPACT, tile=32), store) == base
    assert _key(graph(source, model=COMPACT, tile=32, tile_pad=40), store) == base
    assert _key(graph(source, model=COMPACT, precision="fp32"), store) == base  # auto is fp32 on CPU
    assert _key(graph(source, model=COMPACT, backend="ncnn"), store) == base  # fp32 ncnn == fp32 torch
    # changes the output: new key
    assert _key(graph(source, model=COMPACT, scale=3.0), store) != base
    assert _key(graph(source, model="realesrgan-x4plus-anime"), store) != base
    assert _key(graph(source, model=COMPACT, alpha="model"), store) != base
    assert _key(graph(source, model=COMPACT, precision="bf16"), store) != base
    assert _key(graph(source, model=COMPACT, target_width=100), store) != base
    # an overlap below the seamless one makes tiling visible: then tiling is keyed
    short = _key(graph(source, model=COMPACT, tile=32, tile_pad=4), store)
    assert short != base and short != _key(graph(source, model=COMPACT, tile=16, tile_pad=4), store)


def test_identity_follows_the_weights(tmp_path, source, sr_weights_dir):
    from zitflow.sr.convert import ensure_converted, file_sha256

    src, digest = ensure_converted(COMPACT)
    mine = tmp_path / "my_model.safetensors"
    shutil.copy(src, mine)
    store = CacheStore(tmp_path / "store")
    k1 = _key(graph(source, model_path=str(mine)), store)
    planned = plan(graph(source, model_path=str(mine)), store, RunContext())["sr"]
    assert planned.identity["weights_sha256"] == file_sha256(mine) == digest
    # other weights in the same file: another key
    from safetensors.torch import load_file, save_file

    sd = load_file(str(mine))
    sd["body.0.bias"] = sd["body.0.bias"] + 0.01
    save_file(sd, str(mine))
    assert _key(graph(source, model_path=str(mine)), store) != k1
    # and the user's model runs
    m = Executor(graph(source, model_path=str(mine), scale=4.0), store, RunContext()).execute()
    assert m.outputs["sr"].pixels.shape == (192, 192, 3)


def test_target_size_rgba_and_ncnn(tmp_path):
    store = CacheStore(tmp_path / "store")
    src = {"kind": "t_sr_photo", "size": 40, "rgba": True}
    m = Executor(graph(src, model=COMPACT, target_width=100, target_height=60), store, RunContext()).execute()
    px = m.outputs["sr"].pixels
    assert px.shape == (60, 100, 4)
    assert px[:, :30, 3].max() <= 5 and px[:, 70:, 3].min() >= 250  # left half transparent, right opaque
    torch_rgb = px[..., :3]
    m = Executor(graph(src, model=COMPACT, target_width=100, target_height=60, backend="ncnn"),
                 CacheStore(tmp_path / "store2"), RunContext()).execute()
    assert m.stages[1].notes["engine"] == "ncnn-cpu"
    assert np.abs(m.outputs["sr"].pixels[..., :3].astype(int) - torch_rgb.astype(int)).max() <= 1


@pytest.mark.parametrize("entry, field", [
    ({"model": "realesrgan-x2plus"}, "model"),
    ({"scale": 0.5}, "scale"),
    ({"backend": "ncnn", "model_path": "/x/y.pth"}, "backend"),
    ({"backend": "ncnn", "precision": "bf16"}, "precision"),
    ({"tile_pad": -1}, "tile_pad"),
    ({"precision": "fp8"}, "precision"),
])
def test_bad_params_name_the_field(entry, field):
    with pytest.raises(RecipeError, match=field) as e:
        build_graph("t", {"load": {"kind": "t_sr_photo"}, "sr": {"kind": "super_resolve", "input": "load", **entry}})
    assert "allowed" in str(e.value)


def test_missing_model_path_is_reported(tmp_path, source):
    from zitflow.sr.convert import WeightsError

    with pytest.raises(WeightsError, match="model_path"):
        plan(graph(source, model_path=str(tmp_path / "nope.pth")), CacheStore(tmp_path / "s"), RunContext())
