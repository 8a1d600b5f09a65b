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


@pytest.mark.parametrize("apart", [True, False])
def test_a_square_first_size_does_not_tie_height_to_width(apart):
    """Compiled dynamic at a square size, an image network must take a non-square one without
    compiling again; with duck shaping on (the control) dynamo guards height == width."""
    import contextlib

    torch._dynamo.reset()
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Upsample(scale_factor=2.0),
                              torch.nn.Conv2d(4, 3, 3, padding=1))
    compiled = torch.compile(net, dynamic=True, backend="eager")  # duck shaping is dynamo's, before any backend
    frames = torch._dynamo.utils.counters["stats"]
    with zcompile.independent_sizes() if apart else contextlib.nullcontext(), torch.no_grad():
        compiled(torch.randn(1, 3, 20, 20))
        before = frames["unique_graphs"]
        out = compiled(torch.randn(1, 3, 20, 28))
    assert out.shape == (1, 3, 40, 56)
    assert (frames["unique_graphs"] == before) is apart
    import torch.fx.experimental._config as fx_config

    assert fx_config.use_duck_shape  # restored for everything else



def test_compiled_text_encoder_matches_eager_with_one_graph_for_all_layers(tmp_path, monkeypatch):
    """runtime.compile_text_encoder on the tiny model (the encode stage compiles on CUDA plans only;
    here its calls run on the CPU): the layers share one graph (the key/value cache, which would
    give each layer its own, is off), a second prompt compiles nothing, the embeddings equal
    eager's within float rounding, and the mega-cache is written."""
    from zitflow.config import ModelConfig
    from zitflow.models.pool import ModelPool
    from zitflow.stages.encode import encode_prompt

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    torch._dynamo.reset()
    rt = RuntimeConfig(device="cpu", compile_text_encoder=True, compile_cache_dir=str(tmp_path / "cc"))
    tokenizer, encoder = ModelPool().text_encoder(ModelConfig(), rt)

    def embeds(prompt):
        return encode_prompt(tokenizer, encoder, prompt, "", False, 512, "cpu")[0]

    eager = embeds("a lighthouse at dusk")
    assert zcompile.compile_text_encoder(encoder, rt, "fp-enc", "cpu") is True
    assert zcompile.compile_text_encoder(encoder, rt, "fp-enc", "cpu") is False  # idempotent
    graphs = torch._dynamo.utils.counters["stats"]
    before = graphs["unique_graphs"]
    try:
        with zcompile.saving_new_graphs(rt, "fp-enc", "cpu"):
            compiled = embeds("a lighthouse at dusk")
    except Exception as e:  # a CPU without a C++ toolchain cannot build inductor kernels
        pytest.skip(f"inductor cannot compile on this machine: {type(e).__name__}")
    assert len(encoder.layers) > 1 and graphs["unique_graphs"] == before + 1
    assert compiled.shape == eager.shape and torch.allclose(compiled, eager, atol=1e-4)
    assert zcompile.artifact_path(rt, "fp-enc", "cpu").is_file()
    embeds("another prompt, longer than the first one")
    assert graphs["unique_graphs"] == before + 1  # padded to max_sequence_length: the same static graph
