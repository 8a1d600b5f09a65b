"""Run the official ncnn Real-ESRGAN files with the ``ncnn`` Python package (CPU, or Vulkan).

This is the seeds' engine (realesrgan-ncnn-vulkan) without its executable: the same .param /
.bin files, run in-process. It needs no system libraries on CPU; Vulkan is used only when a
Vulkan device is present (``libvulkan.so.1`` and a driver) and asked for.

:class:`NcnnModel` is callable like the torch path's tile function: (h, w, 3) float32 RGB in
[0, 1] -> (h*4, w*4, 3) float32 in [0, 1], so :func:`zitflow.sr.upscale.tiled_apply` tiles it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import numpy as np

from .convert import SHIPPED, shipped_files
from .ncnn_format import load_param

_GPU_COUNT: int | None = None
_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C-level stderr (ncnn prints 'dlopen failed libvulkan.so.1' when probing)."""
    try:
        fd = os.dup(2)
    except OSError:  # pragma: no cover - no fd 2
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


def vulkan_device_count() -> int:
    """How many Vulkan devices ncnn sees (0 without libvulkan or a driver); probed once."""
    global _GPU_COUNT
    if _GPU_COUNT is None:
        import ncnn

        with _quiet_stderr():
            try:
                _GPU_COUNT = int(ncnn.get_gpu_count())
            except Exception:  # pragma: no cover - builds without Vulkan
                _GPU_COUNT = 0
    return _GPU_COUNT


class NcnnModel:
    """An ncnn Real-ESRGAN network.

    ``vulkan``: True to require a Vulkan device, False for CPU, None to use one when present.
    ``precision``: ``"fp32"`` (all fp16 storage/arithmetic off: matches torch fp32 within about
    1e-5) or ``"fp16"`` (ncnn's fp16 storage and arithmetic where the hardware has them).
    ``threads``: CPU threads (default: all cores).
    """

    def __init__(self, param_path: str | os.PathLike, bin_path: str | os.PathLike, scale: int = 4,
                 vulkan: bool | None = None, precision: str = "fp32", threads: int | None = None):
        import ncnn

        if precision not in ("fp32", "fp16"):
            raise ValueError(f"field 'precision': got {precision!r}; allowed with backend 'ncnn': 'fp32' or 'fp16'")
        graph = load_param(param_path)
        self.input_blob, self.output_blob = graph.input_blob, graph.output_blob
        self.scale = scale
        has_gpu = vulkan is not False and vulkan_device_count() > 0
        if vulkan and not has_gpu:
            raise RuntimeError("backend 'ncnn' with Vulkan was asked for, but ncnn sees no Vulkan device "
                               "(needs libvulkan1 and a GPU driver); use the CPU or backend 'torch'")
        self.vulkan = has_gpu
        self.precision = precision
        net = ncnn.Net()
        opt = net.opt
        opt.use_vulkan_compute = self.vulkan
        opt.num_threads = int(threads or os.cpu_count() or 1)
        half = precision == "fp16"
        for flag in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic"):
            setattr(opt, flag, half)
        opt.use_bf16_storage = False
        opt.use_int8_inference = False
        if net.load_param(str(param_path)) != 0:
            raise RuntimeError(f"ncnn could not load {param_path}")
        if net.load_model(str(bin_path)) != 0:
            raise RuntimeError(f"ncnn could not load {bin_path}")
        self.net = net

    @classmethod
    def shipped(cls, name: str, **kwargs) -> "NcnnModel":
        """The built-in model ``name`` (see :data:`zitflow.sr.convert.SHIPPED`)."""
        param, binf = shipped_files(name)
        return cls(param, binf, scale=SHIPPED[name].scale, **kwargs)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(h, w, 3) float32 in [0, 1] -> (h*scale, w*scale, 3) float32 clipped to [0, 1]."""
        import ncnn

        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected (h, w, 3) pixels, got {rgb.shape}")
        chw = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)
        mat = ncnn.Mat(chw)  # wraps chw's buffer without a copy: chw must outlive the extract
        with _LOCK:  # one extractor at a time per process keeps the thread count honest
            ex = self.net.create_extractor()
            ex.input(self.input_blob, mat)
            ret, out = ex.extract(self.output_blob)
            if ret != 0:
                raise RuntimeError(f"ncnn extract failed with code {ret}")
            result = np.array(out, dtype=np.float32, copy=True)
            del ex
        del mat, chw
        return np.clip(result.transpose(1, 2, 0), 0.0, 1.0)


_MODELS: dict[tuple, NcnnModel] = {}


def get_model(name_or_files: str | tuple[Path, Path], vulkan: bool | None, precision: str) -> NcnnModel:
    """A process-wide :class:`NcnnModel` for a built-in name or a (.param, .bin) pair."""
    key = (name_or_files if isinstance(name_or_files, str) else tuple(map(str, name_or_files)), vulkan, precision)
    if key not in _MODELS:
        if isinstance(name_or_files, str):
            _MODELS[key] = NcnnModel.shipped(name_or_files, vulkan=vulkan, precision=precision)
        else:
            _MODELS[key] = NcnnModel(*name_or_files, vulkan=vulkan, precision=precision)
    return _MODELS[key]
