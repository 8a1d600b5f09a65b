"""Resolving a ModelConfig to a local folder: local paths, hub caches offline, the missing-weights
message (quick, never hanging), and the content fingerprint that keys the cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from zitflow.config import ModelConfig
from zitflow.models import sources
from zitflow.models.sources import ModelNotFound, fingerprint, resolve
from zitflow.models.tiny import ensure_tiny


@pytest.fixture
def copy_of_tiny(tmp_path):
    dst = tmp_path / "Z-Image-Turbo"
    shutil.copytree(ensure_tiny(0), dst)
    return dst


def test_local_path_resolves_with_the_same_identity_as_its_source(copy_of_tiny):
    r = resolve(ModelConfig(name="mine", source="local", path=str(copy_of_tiny)))
    assert r.source == "local" and r.path == copy_of_tiny
    assert r.identity() == resolve(ModelConfig(source="tiny")).identity()  # same bytes, same cache entries
    auto = resolve(ModelConfig(source="auto", path=str(copy_of_tiny), id="Tongyi-MAI/Z-Image-Turbo"))
    assert auto.source == "local" and auto.fingerprint == r.fingerprint


def test_bad_local_paths_say_what_is_wrong(tmp_path, copy_of_tiny):
    with pytest.raises(ModelNotFound, match=r"field 'path': .*nowhere is not a folder.*model_index.json"):
        resolve(ModelConfig(source="local", path=str(tmp_path / "nowhere")))
    (copy_of_tiny / "model_index.json").unlink()
    with pytest.raises(ModelNotFound, match=r"has no model_index.json \(not a diffusers-layout folder\)"):
        resolve(ModelConfig(source="auto", path=str(copy_of_tiny)))
    with pytest.raises(ModelNotFound, match=r"source=local needs model.path=/dir"):
        resolve(ModelConfig(source="local"))


def test_fingerprint_sees_weights_and_configs_but_not_version_stamps(copy_of_tiny):
    base = fingerprint(copy_of_tiny)
    cfg = copy_of_tiny / "transformer" / "config.json"
    data = json.loads(cfg.read_text())
    cfg.write_text(json.dumps(dict(data, _diffusers_version="9.9.9"), indent=1))
    assert fingerprint(copy_of_tiny) == base
    cfg.write_text(json.dumps(dict(data, rope_theta=128.0)))
    assert fingerprint(copy_of_tiny) != base
    cfg.write_text(json.dumps(data))
    assert fingerprint(copy_of_tiny) == base
    weights = copy_of_tiny / "transformer" / "diffusion_pytorch_model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-100] ^= 0xFF  # a fine-tune with identical shapes: only data bytes differ (the last sample covers the tail)
    weights.write_bytes(bytes(raw))
    assert fingerprint(copy_of_tiny) != base


def test_unreachable_hub_is_skipped_quickly_with_the_reason(monkeypatch):
    monkeypatch.delenv("ZITFLOW_OFFLINE", raising=False)
    monkeypatch.setattr(sources, "HOSTS", {"modelscope": "10.255.255.1", "huggingface": "10.255.255.1"})
    monkeypatch.setattr(sources, "PROBE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(sources, "HUB_FETCHERS", {
        "modelscope": lambda *a: (_ for _ in ()).throw(FileNotFoundError("no cached snapshot")),
        "huggingface": lambda *a: (_ for _ in ()).throw(FileNotFoundError("no cached snapshot"))})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(ModelNotFound) as e:
        resolve(ModelConfig(name="zimage_turbo", source="auto", id="Tongyi-MAI/Z-Image-Turbo"))
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert "modelscope cache of Tongyi-MAI/Z-Image-Turbo@main: FileNotFoundError: no cached snapshot" in msg
    assert "huggingface download of Tongyi-MAI/Z-Image-Turbo@main: skipped, 10.255.255.1:443 not reachable" in msg
    assert "model.path=/dir" in msg and "model=tiny" in msg


def test_offline_mode_skips_downloads(monkeypatch):
    monkeypatch.setenv("ZITFLOW_OFFLINE", "1")
    monkeypatch.setattr(sources, "HUB_FETCHERS", {
        "modelscope": lambda *a: (_ for _ in ()).throw(RuntimeError("cache miss")),
        "huggingface": lambda *a: (_ for _ in ()).throw(RuntimeError("cache miss"))})
    with pytest.raises(ModelNotFound, match=r"modelscope download .*skipped, offline mode"):
        resolve(ModelConfig(source="modelscope", id="Tongyi-MAI/Z-Image-Turbo"))


HUBS = """
import json, sys, time
from zitflow.config import ModelConfig
from zitflow.models.sources import ModelNotFound, resolve
out = {}
t0 = time.perf_counter()
try:
    resolve(ModelConfig(name="zimage_turbo", source="auto", id="Tongyi-MAI/Missing-Model"))
except ModelNotFound as e:
    out["missing"] = str(e)
out["missing_s"] = time.perf_counter() - t0
r = resolve(ModelConfig(source="auto", id="Tongyi-MAI/Z-Image-Turbo"))
out["auto"] = [r.source, r.revision, r.fingerprint, str(r.path)]
r = resolve(ModelConfig(source="huggingface", id="Tongyi-MAI/Z-Image-Turbo"))
out["hf"] = [r.source, r.revision, r.fingerprint]
print(json.dumps(out))
"""


def test_real_hub_clients_offline_caches_and_missing_weights(tmp_path):
    """The installed modelscope and huggingface_hub clients, against empty / prepared caches, in a
    separate process (their cache dirs come from the environment), with a hard timeout."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "models--Tongyi-MAI--Z-Image-Turbo"
    shutil.copytree(ensure_tiny(0), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hf"), MODELSCOPE_CACHE=str(tmp_path / "ms"),
               HF_HUB_OFFLINE="1", ZITFLOW_OFFLINE="1")
    p = subprocess.run([sys.executable, "-c", HUBS], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["missing_s"] < 30
    msg = out["missing"]
    for tried in ("modelscope cache of Tongyi-MAI/Missing-Model", "huggingface cache of Tongyi-MAI/Missing-Model",
                  "modelscope download", "huggingface download"):
        assert tried in msg, msg
    assert "model.path=/dir" in msg
    tiny_fp = fingerprint(ensure_tiny(0))
    assert out["auto"][:3] == ["huggingface-cache", commit, tiny_fp]
    assert out["hf"] == ["huggingface-cache", commit, tiny_fp]
