"""runtime.precision (FP8 DiT linears), runtime.attention (diffusers backend) and compile options:
what they touch, what enters the cache key, and the errors a CPU run gets. FP8 numbers are
checked on CUDA (skipped here without a GPU); its speed is measured by bench/speed_bench.py."""

from __future__ import annotations

import pytest
import torch

from tests.test_generation_stages import chain
from zitflow.cache.store import CacheStore
from zitflow.config import ConfigError, ModelConfig, RuntimeConfig, load_section
from zitflow.executor import Executor
from zitflow.models import compile as zcompile
from zitflow.models.pool import ModelPool
from zitflow.models.precision import PrecisionError, apply_attention, apply_precision, is_fp8_linear
from zitflow.recipe import build_graph
from zitflow.stage import RunContext


def runtime(**kw) -> RuntimeConfig:
    return RuntimeConfig(device=kw.pop("device", "cpu"), progress="off", **kw)


def ctx_for(rt: RuntimeConfig, pool: ModelPool | None = None) -> RunContext:
    return RunContext(runtime=rt, models=pool or ModelPool(), model_config=ModelConfig())


@pytest.fixture(scope="module")
def tiny_dit():
    pool = ModelPool()
    return pool.transformer(ModelConfig(), runtime())


@pytest.mark.parametrize("field,value", [("precision", "fp4"), ("attention", "flash_9"), ("compile_mode", "fast"),
                                               ("compile_mode", "reduce-overhead")])
def test_bad_values_name_the_field(field, value):
    from omegaconf import OmegaConf

    with pytest.raises(ConfigError, match=f"config 'runtime', field '{field}'"):
        load_section("runtime", RuntimeConfig, OmegaConf.create({field: value}))


def test_fp8_converts_exactly_the_block_linears(tiny_dit):
    chosen = [n for n, m in tiny_dit.named_modules() if is_fp8_linear(m, n)]
    blocks = len(tiny_dit.layers) + len(tiny_dit.noise_refiner) + len(tiny_dit.context_refiner)
    # the tiny SwiGLU is 32 -> 85 wide: FP8 products need sides divisible by 16, so only attention converts
    assert tiny_dit.layers[0].feed_forward.w1.out_features % 16
    assert len(chosen) == 4 * blocks and all(".attention.to_" in n for n in chosen)
    lin = torch.nn.Linear(32, 96)
    assert is_fp8_linear(lin, "layers.3.feed_forward.w1") and is_fp8_linear(lin, "context_refiner.0.attention.to_q")
    for name in ("layers.3.adaLN_modulation.0", "x_embedder.2-1", "cap_embedder.1", "all_final_layer.2-1.linear"):
        assert not is_fp8_linear(lin, name)
    assert not is_fp8_linear(torch.nn.Conv2d(32, 96, 1), "layers.3.feed_forward.w1")


def test_fp8_enters_the_denoise_key_and_nothing_else(tmp_path):
    graph = build_graph("gen", chain())
    from zitflow.executor import plan

    store = CacheStore(tmp_path)
    pool = ModelPool()
    keys = {name: plan(graph, store, ctx_for(runtime(**kw), pool))
            for name, kw in {"auto": {}, "fp8": {"precision": "fp8"},
                             "cudnn": {"attention": "_native_cudnn"},
                             "autotune": {"compile": True, "compile_mode": "max-autotune-no-cudagraphs"}}.items()}
    base = {s: p.key for s, p in keys["auto"].items()}
    fp8 = {s: p.key for s, p in keys["fp8"].items()}
    assert fp8["denoise"] != base["denoise"] and fp8["decode"] != base["decode"]  # downstream follows
    assert fp8["encode"] == base["encode"] and fp8["size"] == base["size"]
    for other in ("cudnn", "autotune"):
        assert {s: p.key for s, p in keys[other].items()} == base


def test_fp8_on_cpu_fails_before_denoising_and_says_why(tmp_path):
    with pytest.raises(PrecisionError, match=r"runtime.precision=fp8: it needs a CUDA GPU of compute capability 8\.9"):
        Executor(build_graph("gen", chain()), CacheStore(tmp_path), ctx_for(runtime(precision="fp8"))).execute()


def test_an_fp8_dit_is_never_converted_again():
    dit = torch.nn.Module()
    dit._zitflow_precision = "fp8"
    assert apply_precision(dit, "fp8", "cuda") == 0  # already done: no torchao call, no GPU needed


def test_fp8_pool_entry_replaces_the_plain_dit_without_a_second_load():
    pool = ModelPool()
    cfg = ModelConfig()
    plain = pool.transformer(cfg, runtime())
    fp8 = pool.transformer(cfg, runtime(precision="fp8"))
    assert fp8 is plain and pool.loads["transformer"] == 1
    assert [k for k in pool.loaded() if k[2] == "transformer"] == [(k[0], "float32+fp8", "transformer")
                                                                     for k in pool.loaded() if k[2] == "transformer"]


def test_attention_backend_is_set_reset_and_keeps_the_numbers(tiny_dit):
    lat = [torch.randn(tiny_dit.config.in_channels, 1, 8, 8)]
    cap = [torch.randn(12, tiny_dit.config.cap_feat_dim)]
    t = torch.tensor([0.5])
    with torch.no_grad():
        ref = tiny_dit(lat, t, cap, return_dict=False)[0][0]
        apply_attention(tiny_dit, "_native_math")
        backends = {m.processor._attention_backend for m in tiny_dit.modules() if hasattr(m, "processor")}
        math = tiny_dit(lat, t, cap, return_dict=False)[0][0]
        apply_attention(tiny_dit, "auto")
        reset = {m.processor._attention_backend for m in tiny_dit.modules() if hasattr(m, "processor")}
    assert backends == {"_native_math"}  # a str enum: equal to its value
    assert reset == {None}
    assert torch.allclose(math, ref, atol=1e-4)


def test_auto_after_a_backend_restores_the_process_default(tiny_dit):
    """diffusers makes a set backend the process-wide default; ``auto`` must undo that too, or a
    later run in the same process (a multirun job) would keep the last run's backend."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry as registry

    default = registry._active_backend
    apply_attention(tiny_dit, "_native_math")
    assert registry._active_backend == "_native_math"
    apply_attention(tiny_dit, "auto")
    assert registry._active_backend == default
    with pytest.raises(PrecisionError):
        apply_attention(tiny_dit, "_flash_3")  # refused here (no FlashAttention 3): the default stays
    assert registry._active_backend == default and tiny_dit._zitflow_attention == "auto"


def test_unusable_attention_backend_names_the_setting(tiny_dit):
    try:
        import flash_attn_interface  # noqa: F401
    except ImportError:
        with pytest.raises(PrecisionError, match=r"runtime.attention=_flash_3: diffusers refused it"):
            apply_attention(tiny_dit, "_flash_3")
    else:  # pragma: no cover - a machine with FlashAttention 3
        pytest.skip("FlashAttention 3 is installed here")


def test_compile_mode_reaches_torch_compile(tmp_path):
    calls = []

    class Dit:
        def compile_repeated_blocks(self, **kw):
            calls.append(kw)

    class Decoder:
        def compile(self, **kw):
            calls.append(kw)

    class Vae:
        decoder = Decoder()

    rt = runtime(compile=True, compile_mode="max-autotune-no-cudagraphs", compile_dynamic=True,
                 compile_cache_dir=str(tmp_path))
    assert zcompile.compile_dit(Dit(), rt, "fp", "cpu") is True
    vae = Vae()
    assert zcompile.compile_vae_decoder(vae, rt, "fp", "cpu") is True
    assert zcompile.compile_vae_decoder(vae, rt, "fp", "cpu") is False
    assert calls == [{"dynamic": True, "mode": "max-autotune-no-cudagraphs"}] * 2
    # another mode later in the same process compiles again, with it
    dit = Dit()
    assert zcompile.compile_dit(dit, rt, "fp", "cpu") is True
    assert zcompile.compile_dit(dit, rt, "fp", "cpu") is False
    other = runtime(compile=True, compile_mode="default", compile_cache_dir=str(tmp_path))
    assert zcompile.compile_dit(dit, other, "fp", "cpu") is True
    assert calls[-1] == {"mode": "default"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
                    reason="needs a CUDA GPU of compute capability 8.9+")
def test_cuda_fp8_latents_stay_close_to_bf16(tmp_path):
    precision = "fp8"
    pytest.importorskip("torchao")
    stages = chain(width=128, height=128)
    stages.pop("decode")
    out = {}
    for name in ("auto", precision):
        pool = ModelPool()
        rt = runtime(device="cuda", offload="resident", precision=name)
        store = CacheStore(tmp_path / name)
        m = Executor(build_graph("gen", stages), store, ctx_for(rt, pool)).execute()
        out[name] = store.load(next(r.key for r in m.stages if r.name == "denoise")).tensors["latents"]
    diff = (out[precision] - out["auto"]).abs()
    assert 0 < float(diff.mean()) < 0.1 * float(out["auto"].abs().mean())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
                    reason="needs a CUDA GPU of compute capability 8.9+")
def test_cuda_fp8_all_zero_rows_stay_finite():
    """A zeroed token (diffusers starts the padding tokens at zeros) must not become 0/0 = NaN,
    which attention would spread to every token."""
    pytest.importorskip("torchao")

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.to_q = torch.nn.Linear(256, 512)

    dit = torch.nn.Module()
    dit.layers = torch.nn.ModuleList([torch.nn.Module()])
    dit.layers[0].attention = Block()
    dit = dit.to("cuda", torch.bfloat16)
    x = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
    x[5] = 0
    with torch.no_grad():
        ref = dit.layers[0].attention.to_q(x)
        assert apply_precision(dit, "fp8", "cuda") == 1
        y = dit.layers[0].attention.to_q(x)
    assert torch.isfinite(y).all()
    assert torch.allclose(y[5], dit.layers[0].attention.to_q.bias.to(y.dtype))  # a zero row gives the bias alone
    assert float((y - ref).abs().mean()) < 0.05 * float(ref.abs().mean())


def test_apply_precision_auto_is_a_no_op(tiny_dit):
    assert apply_precision(tiny_dit, "auto", "cpu") == 0
    assert not hasattr(tiny_dit, "_zitflow_precision")


def test_an_fp8_dit_is_the_same_model_to_the_placer():
    """Encoding under the resident plan leaves the FP8 DiT on the GPU (a foreign model would be moved off)."""
    from zitflow.models.memory import Plan
    from zitflow.models.placement import arrange

    moved = []

    class Module:
        def __init__(self, name):
            self.name = name

        def parameters(self):
            moved.append(self.name)
            return iter(())

        def buffers(self):
            return iter(())

        def to(self, device):
            moved.append(self.name)

    entries = {("fp", "bfloat16+fp8", "transformer"): Module("dit"), ("fp", "bfloat16", "text_encoder"): Module("te"),
               ("other", "bfloat16", "vae"): Module("foreign vae")}
    states = {k: "gpu" for k in entries}
    arrange(entries, states, ("fp", "bfloat16", "text_encoder"), Plan("resident"), "cuda:0")
    assert states[("fp", "bfloat16+fp8", "transformer")] == "gpu" and "dit" not in moved
    assert states[("other", "bfloat16", "vae")] == "cpu"
