"""``runtime.precision`` and ``runtime.attention``: faster arithmetic for the DiT, opt-in.

``runtime.precision=fp8`` converts the DiT's block linears (attention q/k/v/out and the SwiGLU
feed-forward w1/w2/w3 of every ``layers``, ``noise_refiner`` and ``context_refiner`` block) to
FP8 with torchao's ``Float8DynamicActivationFloat8WeightConfig``: weights become float8_e4m3
with one scale per output row, activations are scaled per row on the fly, and the products run
on the tensor cores' FP8 path (``torch._scaled_mm``) with bf16 output. Embedders, adaLN
modulation (a single row per image) and the final layer stay bf16. It needs a GPU of compute
capability 8.9 or newer (Ada, Hopper) and torchao (``pip install zitflow[fp8]``); it is worth
it under ``runtime.compile``, which fuses the activation scaling into neighbouring kernels.
One scale per tensor instead of per row was measured too (H200, compiled, 1024x1024: denoise
0.652 s against the row-wise 0.623 s, the same memory) and is not offered.

An all-zero activation row (a zeroed padding token, say) would get a scale of 0 and turn 0/0 into
NaN, which attention then spreads to every token; the activation amax is floored at
:data:`FP8_ACTIVATION_LB` so such a row quantizes to zeros instead.

FP8 changes the numbers beyond bf16 rounding, so, unlike the rest of ``runtime``, it enters the
denoise stage's cache key (``dit_precision: fp8``); the parity report in docs/generation.md says
how far its latents are from bf16's.

``runtime.attention`` names a backend of diffusers' attention dispatch for the DiT (``native`` =
``torch.nn.functional.scaled_dot_product_attention``'s own pick, ``_native_cudnn``, ``flex``,
``_flash_3`` ...). Backends agree within bf16 rounding, so it stays out of the cache key.

Hand-written here only the choice of layers: which modules are worth FP8 is a property of this
architecture, not something torchao can know.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("zitflow")

PRECISIONS = ("auto", "fp8")

#: diffusers attention backends offered through ``runtime.attention`` ("auto": leave the model's own).
ATTENTION_BACKENDS = ("auto", "native", "_native_cudnn", "_native_flash", "_native_efficient", "_native_math", "flex",
                      "flash", "_flash_3", "sage")

#: floor of a row's amax when its FP8 scale is computed (an all-zero row must not divide by zero)
FP8_ACTIVATION_LB = 1e-12

#: the repeated blocks whose linears are converted
_BLOCKS = ("layers.", "noise_refiner.", "context_refiner.")
#: linear layers inside a block that are converted (adaLN modulation has one row per image: no gain)
_LINEARS = (".attention.to_q", ".attention.to_k", ".attention.to_v", ".attention.to_out.0",
            ".feed_forward.w1", ".feed_forward.w2", ".feed_forward.w3")


class PrecisionError(RuntimeError):
    """``runtime.precision`` or ``runtime.attention`` cannot be honoured here; the message says why."""


def is_fp8_linear(module: Any, fqn: str) -> bool:
    """True for the block linears that ``fp8`` converts (sides divisible by 16, as FP8 products need)."""
    import torch

    return (isinstance(module, torch.nn.Linear) and fqn.startswith(_BLOCKS) and fqn.endswith(_LINEARS)
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def fp8_unavailable(device: str) -> str | None:
    """Why FP8 cannot run on ``device`` (None when it can)."""
    import torch

    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return f"it needs a CUDA GPU of compute capability 8.9+ (Ada or Hopper); this run's device is '{device}'"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return (f"it needs compute capability 8.9+ (Ada or Hopper); {torch.cuda.get_device_name(device)} "
                f"has {major}.{minor}")
    try:
        import torchao  # noqa: F401
    except ImportError:
        return "it needs torchao: pip install 'zitflow[fp8]' (or pip install torchao)"
    return None


def check_precision(precision: str, device: str) -> None:
    """Raise :class:`PrecisionError` (naming the setting) unless ``precision`` can run on ``device``."""
    why = fp8_unavailable(device) if precision == "fp8" else None
    if why:
        raise PrecisionError(f"runtime.precision={precision}: {why}; use runtime.precision=auto")


def apply_precision(dit: Any, precision: str, device: str) -> int:
    """Convert ``dit`` to ``precision`` once (idempotent); returns the number of linears converted now.

    The DiT must already be on ``device``. ``auto`` converts nothing; a DiT converted to FP8 is
    never converted back (the pool keys it apart from the bf16 one).
    """
    current = getattr(dit, "_zitflow_precision", "auto")
    if precision == "auto" or current == precision:
        return 0
    check_precision(precision, device)
    import torchao.quantization as tq

    names = [n for n, m in dit.named_modules() if is_fp8_linear(m, n)]
    config = tq.Float8DynamicActivationFloat8WeightConfig(granularity=tq.PerRow(),
                                                          activation_value_lb=FP8_ACTIVATION_LB)
    tq.quantize_(dit, config, filter_fn=lambda m, fqn: is_fp8_linear(m, fqn))
    dit._zitflow_precision = precision
    log.info("runtime.precision=%s: %d DiT linears now FP8 (row-wise scales)", precision, len(names))
    return len(names)


def _registry():
    """diffusers' attention-backend registry, whose *active* backend is process-wide state."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    return _AttentionBackendRegistry


def apply_attention(dit: Any, backend: str) -> None:
    """Route ``dit``'s attention through diffusers' ``backend`` ("auto": the model's default).

    diffusers' ``set_attention_backend`` also makes the backend the process-wide default, and
    ``reset_attention_backend`` only clears the model's processors, which then fall back to that
    default: so ``auto`` also puts back the default that was active before the first change
    (otherwise a later ``auto`` run in the same process would keep the last backend).
    """
    current = getattr(dit, "_zitflow_attention", "auto")
    if current == backend:
        return
    if backend == "auto":
        dit.reset_attention_backend()
        default = getattr(dit, "_zitflow_default_backend", None)
        if default is not None:
            _registry().set_active_backend(default)
        dit._zitflow_attention = "auto"
        return
    before = _registry()._active_backend
    try:
        dit.set_attention_backend(backend)
    except Exception as e:  # diffusers checks the backend's package and hardware
        _registry().set_active_backend(before)
        raise PrecisionError(f"runtime.attention={backend}: diffusers refused it ({type(e).__name__}: {e}); "
                             f"use runtime.attention=auto") from None
    if not hasattr(dit, "_zitflow_default_backend"):
        dit._zitflow_default_backend = before
    dit._zitflow_attention = backend
