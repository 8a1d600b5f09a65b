"""zitflow.models.rope: the real-arithmetic rotary embedding equals diffusers' complex one, in a
whole tiny DiT too, and compiles without a complex operator (which inductor leaves to eager)."""

from __future__ import annotations

import pytest
import torch

from zitflow.models import rope


def complex_rotate(x, freqs_cis):
    """diffusers' ZSingleStreamAttnProcessor rotation, as written there."""
    z = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(z * freqs_cis.unsqueeze(2)).flatten(3).type_as(x)


def freqs(batch, seq, half, seed=0):
    g = torch.Generator().manual_seed(seed)
    angles = torch.randn(batch, seq, half, generator=g) * 3
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_rotation_equals_the_complex_product(dtype):
    x = torch.randn(2, 40, 3, 16, generator=torch.Generator().manual_seed(1)).to(dtype)
    f = freqs(2, 40, 8)
    out = rope.rotate(x, f)
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.allclose(out.float(), complex_rotate(x, f).float(), atol=1e-6, rtol=0)
    assert not torch.equal(out, x)  # it rotated


def test_compiled_rotation_has_no_complex_kernel():
    from torch._inductor.utils import run_and_get_code

    x, f = torch.randn(1, 32, 2, 16), freqs(1, 32, 8)
    torch._dynamo.reset()
    try:
        out, code = run_and_get_code(torch.compile(rope.rotate), x, f)
    except Exception as e:  # a CPU without a C++ toolchain cannot build inductor kernels
        pytest.skip(f"inductor cannot compile on this machine: {type(e).__name__}")
    src = "\n".join(code)
    assert "view_as_complex" not in src and "aten.mul" not in src  # all arithmetic in generated code
    torch._dynamo.reset()
    _, reference = run_and_get_code(torch.compile(complex_rotate), x, f)
    assert "aten.mul" in "\n".join(reference)  # the control: the complex product falls back to eager
    assert torch.allclose(out, complex_rotate(x, f), atol=1e-6)


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif("not torch.cuda.is_available()",
                                                                      reason="needs CUDA")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_a_tiny_dit_gives_the_same_output_with_real_rope(device):
    """Eager on the CPU (fp32); on CUDA in bf16 with the blocks compiled, as runtime.compile runs them."""
    from diffusers import ZImageTransformer2DModel

    from zitflow.models.tiny import TINY_TRANSFORMER

    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    dit = ZImageTransformer2DModel(**TINY_TRANSFORMER).eval().to(device, dtype)
    lat = torch.randn(dit.config.in_channels, 1, 8, 12, device=device, dtype=dtype)
    cap = torch.randn(7, dit.config.cap_feat_dim, device=device, dtype=dtype)
    t = torch.tensor([0.4], device=device, dtype=dtype)
    with torch.no_grad():
        before = dit([lat], t, [cap], return_dict=False)[0][0]
        dit.set_attention_backend("native")
        replaced = rope.use_real_rope(dit)
        if device == "cuda":
            torch._dynamo.reset()
            dit.compile_repeated_blocks()
        after = dit([lat], t, [cap], return_dict=False)[0][0]
    procs = [m.processor for m in dit.modules() if hasattr(m, "processor")]
    assert replaced == len(procs) > 0 and all(type(p).__name__ == "RealRopeAttnProcessor" for p in procs)
    assert all(p._attention_backend is not None for p in procs)  # the backend chosen before stays
    assert rope.use_real_rope(dit) == 0  # idempotent
    tol = 0.05 if dtype == torch.bfloat16 else 1e-5
    assert torch.allclose(after.float(), before.float(), atol=tol), (after.float() - before.float()).abs().max()
