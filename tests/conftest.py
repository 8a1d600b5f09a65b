"""Shared fixtures: a temporary cache store and small test-only stage kinds with call counters."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest

from zitflow.artifacts import Data, Image
from zitflow.cache.store import CacheStore
from zitflow.params import param
from zitflow.registry import register
from zitflow.stage import RunContext, Stage

CALLS: dict[str, int] = {}


@dataclass
class SourceParams:
    value: int = param(0, ge=0, le=255, help="gray level")
    size: int = param(8, ge=1, le=64)
    verbose: bool = param(False, semantic=False)


@register
class TestSource(Stage):
    """A flat gray (size, size, 3) uint8 image: a source with no inputs."""

    kind = "t_source"
    Params = SourceParams
    output = Image

    def run(self, params, inputs, ctx):
        CALLS["t_source"] = CALLS.get("t_source", 0) + 1
        return Image(np.full((params.size, params.size, 3), params.value, np.uint8))


@dataclass
class AddParams:
    amount: int = param(1, ge=-255, le=255)


@register
class TestAdd(Stage):
    """Adds ``amount`` to every pixel (clipped)."""

    kind = "t_add"
    Params = AddParams
    inputs = {"image": Image}
    output = Image

    def run(self, params, inputs, ctx):
        CALLS["t_add"] = CALLS.get("t_add", 0) + 1
        px = inputs["image"].pixels.astype(np.int16) + params.amount
        return Image(np.clip(px, 0, 255).astype(np.uint8))


@register
class TestMean(Stage):
    """Mean gray level of an image, as data (a second sink)."""

    kind = "t_mean"

    @dataclass
    class Params:
        pass

    inputs = {"image": Image}
    output = Data

    def run(self, params, inputs, ctx):
        CALLS["t_mean"] = CALLS.get("t_mean", 0) + 1
        return Data({"mean": float(inputs["image"].pixels.mean())})


@pytest.fixture
def calls():
    CALLS.clear()
    return CALLS


@pytest.fixture
def store(tmp_path):
    return CacheStore(tmp_path / "store")


@pytest.fixture
def ctx():
    return RunContext()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's real cache dir from tests."""
    monkeypatch.setenv("ZITFLOW_CACHE_DIR", str(tmp_path_factory.mktemp("default-store")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ZITFLOW_SR_WEIGHTS_DIR", str(tmp_path_factory.getbasetemp() / "sr-weights"))
    monkeypatch.setenv("ZITFLOW_MODELS_DIR", str(tmp_path_factory.getbasetemp() / "models"))
    yield


@pytest.fixture
def models_dir():
    """The session's folder for locally built models (``ZITFLOW_MODELS_DIR``, set above)."""
    from pathlib import Path

    return Path(os.environ["ZITFLOW_MODELS_DIR"])


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
