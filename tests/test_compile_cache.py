"""runtime.compile: regional compilation with a persistent cache folder (on the CPU: the code
path and the cache files; speed is measured on the GPU by bench/compile_bench.py)."""

from __future__ import annotations

import os

import pytest
import torch

from zitflow.config import RuntimeConfig
from zitflow.models import compile as zcompile


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):
        return torch.relu(self.lin(x)) + x


class TinyDiT(torch.nn.Module):
    _repeated_blocks = ["Block"]

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([Block() for _ in range(3)])

    def compile_repeated_blocks(self, **kw):  # diffusers' ModelMixin method, reduced
        for m in self.modules():
            if type(m).__name__ in self._repeated_blocks:
                m.compile(**kw)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def test_compile_once_equal_output_and_cache_files(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    torch._dynamo.reset()
    rt = RuntimeConfig(device="cpu", compile=True, compile_cache_dir=str(tmp_path / "cc"))
    torch.manual_seed(0)
    dit = TinyDiT()
    x = torch.randn(4, 8)
    eager = dit(x)
    assert zcompile.compile_dit(dit, rt, "fp-test", "cpu") is True
    assert zcompile.compile_dit(dit, rt, "fp-test", "cpu") is False  # idempotent
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cc" / "inductor")
    try:
        out = dit(x)
    except Exception as e:  # a CPU without a C++ toolchain cannot build inductor kernels
        pytest.skip(f"inductor cannot compile on this machine: {type(e).__name__}")
    assert torch.allclose(out, eager, atol=1e-5)
    zcompile.save(rt, "fp-test", "cpu")
    path = zcompile.artifact_path(rt, "fp-test", "cpu")
    assert path.is_file() and path.stat().st_size > 0
    assert path != zcompile.artifact_path(rt, "other-model", "cpu")
    # a new process (here: a fresh set of loaded caches) loads the file before compiling
    zcompile._loaded.clear()
    assert zcompile.prepare(rt, "fp-test", "cpu") == path and path in zcompile._loaded


def test_a_damaged_cache_file_is_a_miss_not_an_error(tmp_path, caplog):
    rt = RuntimeConfig(device="cpu", compile=True, compile_cache_dir=str(tmp_path / "cc"))
    path = zcompile.artifact_path(rt, "fp-bad", "cpu")
    path.write_bytes(b"garbage")
    zcompile._loaded.discard(path)
    zcompile.prepare(rt, "fp-bad", "cpu")
    assert "not loaded" in caplog.text
