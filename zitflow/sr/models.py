"""Which weights a ``super_resolve`` stage means, their checksum, and loading them once.

:func:`resolve` turns the stage's ``model`` / ``model_path`` into a :class:`WeightsRef`
(a label, a file and its sha256) without building a network: that is all the cache key
needs. :func:`load` builds the spandrel model for a (weights, device, dtype) once per process;
:data:`LOADS` counts real loads (tests use it to prove a cached run loads nothing).

A user file is read with ``safetensors`` or ``torch.load(weights_only=True)`` only, never a
full unpickle.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .convert import SHIPPED, WeightsError, ensure_converted, file_sha256, shipped_state_dict

#: Number of networks built in this process (cache misses of :func:`load`).
LOADS = 0

_MODELS: dict[tuple, object] = {}
_SHA_MEMO: dict[tuple, str] = {}
_LOCK = threading.Lock()

#: Overlap (input pixels per side) at which tiled output matches untiled within one 8-bit
#: level, measured on skimage's astronaut (docs/super_resolution.md). Unknown models: 80.
SEAMLESS_PAD = {"realesrgan-x4plus": 80, "realesrgan-x4plus-anime": 64, "realesr-animevideov3": 24}
DEFAULT_SEAMLESS_PAD = 80


@dataclass(frozen=True)
class WeightsRef:
    """Weights to load: ``label`` (model name or file path), ``path``, ``sha256`` of the file,
    ``shipped`` the built-in name (None for a user file)."""

    label: str
    path: Path
    sha256: str
    shipped: str | None

    @property
    def seamless_pad(self) -> int:
        return SEAMLESS_PAD.get(self.shipped or "", DEFAULT_SEAMLESS_PAD)


def _user_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = file_sha256(path)
    return _SHA_MEMO[key]


def resolve(model: str, model_path: str | None = None, cache_dir: str | os.PathLike | None = None) -> WeightsRef:
    """The weights for stage params ``model`` / ``model_path`` (which wins when set).

    Built-in models are converted into the weights cache on first use.
    """
    if model_path:
        path = Path(os.path.expanduser(model_path))
        if path.suffix.lower() not in (".pth", ".pt", ".safetensors"):
            raise WeightsError(f"field 'model_path': got {model_path!r}; allowed: a .pth, .pt or .safetensors file")
        if not path.is_file():
            raise WeightsError(f"field 'model_path': {model_path!r} is not a file")
        return WeightsRef(str(path), path, _user_sha256(path), None)
    if model not in SHIPPED:
        raise WeightsError(f"field 'model': got {model!r}; allowed: one of {', '.join(SHIPPED)} "
                           "(or model_path: your own .pth/.safetensors)")
    path, digest = ensure_converted(model, cache_dir)
    return WeightsRef(model, path, digest, model)


def _state_dict(ref: WeightsRef, cache_dir) -> dict:
    if ref.shipped:
        sd, _ = shipped_state_dict(ref.shipped, cache_dir)
        return sd
    if ref.path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(ref.path), device="cpu")
    import torch

    try:
        return torch.load(str(ref.path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"field 'model_path': {ref.path} cannot be read as plain weights "
                           f"(torch.load weights_only=True: {e})") from None


def load(ref: WeightsRef, device: str = "cpu", dtype=None, channels_last: bool = True,
         cache_dir: str | os.PathLike | None = None):
    """A spandrel ``ImageModelDescriptor`` for ``ref`` on ``device`` in ``dtype``, in eval mode.

    Kept for the process; the same (sha256, device, dtype) is built once.
    """
    global LOADS
    import torch
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    dtype = dtype or torch.float32
    key = (ref.sha256, str(device), str(dtype), channels_last)
    with _LOCK:
        if key in _MODELS:
            return _MODELS[key]
        sd = _state_dict(ref, cache_dir)
        try:
            desc = ModelLoader().load_from_state_dict(sd)
        except UnsupportedModelError:
            raise WeightsError(f"{ref.label}: spandrel does not recognise this architecture") from None
        if not isinstance(desc, ImageModelDescriptor) or desc.purpose not in ("SR", "Restoration"):
            raise WeightsError(f"{ref.label}: not a super-resolution model ({type(desc).__name__}, "
                               f"purpose {getattr(desc, 'purpose', '?')})")
        if dtype == torch.float16 and not desc.supports_half:
            raise WeightsError(f"{ref.label} ({desc.architecture.name}) does not support fp16; use bf16 or fp32")
        if dtype == torch.bfloat16 and not desc.supports_bfloat16:
            raise WeightsError(f"{ref.label} ({desc.architecture.name}) does not support bf16; use fp16 or fp32")
        desc.model.eval()
        desc.to(torch.device(device))
        desc.model.to(dtype=dtype)
        if channels_last:
            desc.model.to(memory_format=torch.channels_last)
        _MODELS[key] = desc
        LOADS += 1
        return desc


def compiled(desc, **options: Any):
    """A twin of the descriptor ``desc`` whose network runs through ``torch.compile(**options)``
    (made once per descriptor and options; the weights are shared). Calling it is calling ``desc``: spandrel's
    padding to the size requirements and its range guarantee stay; ``desc`` itself is untouched.

    For ``runtime.compile`` on CUDA: the convolutions stay cuDNN's, inductor fuses the
    element-wise work between them (RRDB's residual scaling, LeakyReLU, the dense concatenations).
    Each new tile shape compiles once (dynamic after the second, unless ``dynamic`` says); the
    stage passes :func:`zitflow.models.compile.torch_compile_options` of its runtime.
    """
    import copy

    import torch

    key = tuple(sorted(options.items()))
    twins = desc.__dict__.setdefault("_zitflow_compiled", {})
    with _LOCK:
        if key not in twins:
            twin = copy.copy(desc)
            twin._model = torch.compile(desc.model, **options)  # spandrel keeps the network in ``_model``
            twins[key] = twin
        return twins[key]


def clear() -> None:
    """Forget loaded networks (frees their memory once nothing else holds them)."""
    with _LOCK:
        _MODELS.clear()
