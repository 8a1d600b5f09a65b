"""Typed framework settings: the ``model``, ``runtime`` and ``cache`` config groups.

Each group's YAML under ``conf/`` is merged onto one of these dataclasses when a job starts
(:func:`load_section`), so a typo or a wrong type fails before anything runs, naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .models.precision import ATTENTION_BACKENDS, PRECISIONS
from .params import ParamError, build_params, param

DTYPES = ("auto", "bfloat16", "float16", "float32")
OFFLOAD_PLANS = ("auto", "resident", "staged", "model", "group", "sequential")
#: torch.compile modes offered. Not the CUDA-graph ones ("reduce-overhead", "max-autotune"): with the
#: DiT compiled per block, the next block's replay overwrites outputs the residual stream still holds
#: (measured on the H100: "accessing tensor output of CUDAGraphs that has been overwritten").
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")


class ConfigError(ValueError):
    """A bad framework setting; the message names the group and field."""


#: Model sources whose weights are made from ``model.seed`` (it is part of their identity).
SEEDED_SOURCES = ("tiny", "random")


@dataclass
class ModelConfig:
    """Where Z-Image-Turbo's components come from.

    ``source``: ``tiny`` (a locally built tiny model with seeded random weights), ``random``
    (the full-size architecture with seeded random weights, built in memory: benchmarks), ``local``
    (``path``), ``modelscope`` or ``huggingface`` (hub ``id`` at ``revision``), or ``auto``
    (``path`` if set, else ModelScope, else Hugging Face, each offline-first).
    """

    name: str = param("tiny", help="a label for logs and metadata")
    source: str = param("tiny", choices=("tiny", "random", "local", "modelscope", "huggingface", "auto"))
    id: str = param("", help="hub id, e.g. Tongyi-MAI/Z-Image-Turbo")
    revision: str = param("main", help="hub revision (branch, tag or commit)")
    path: Optional[str] = param(None, help="a local folder in diffusers layout; wins over the hub")
    dtype: str = param("auto", choices=DTYPES, help="auto: bfloat16 on CUDA, float32 on CPU")
    seed: int = param(0, ge=0, help="tiny and random sources only: the seed of their random weights")


@dataclass
class RuntimeConfig:
    """How to run: none of it enters a cache key, except an FP8 ``precision`` (it changes the numbers)."""

    device: str = param("auto", help="auto, cpu, cuda or cuda:N")
    vram_gb: Optional[float] = param(None, gt=0, help="pretend the GPU has this much memory (plans)")
    offload: str = param("auto", choices=OFFLOAD_PLANS, help="memory plan; auto picks from free memory")
    vae_tiling: str = param("auto", choices=("auto", "on", "off"))
    progress: str = param("auto", choices=("auto", "bar", "lines", "off"),
                          help="bars in a terminal, one line per stage otherwise")
    compile: bool = param(False, help="torch.compile the repeated DiT blocks (regional; CUDA plans that keep the DiT)")
    compile_text_encoder: bool = param(False, help="torch.compile the text encoder's layers too (one static graph: "
                                                   "every prompt is padded to max_sequence_length)")
    compile_dynamic: Optional[bool] = param(None, help="torch.compile dynamic=; null: static, dynamic from the 2nd size")
    compile_cache_dir: Optional[str] = param(None, help="persistent compile cache; default <user cache>/zitflow/compile")
    compile_mode: Optional[str] = param(None, choices=COMPILE_MODES,
                                        help="torch.compile mode=: default or max-autotune-no-cudagraphs (null: default)")
    precision: str = param("auto", choices=PRECISIONS,
                           help="fp8: DiT block linears in FP8 with row-wise scales (torchao; "
                                "compute capability 8.9+, resident plan); enters the denoise key")
    attention: str = param("auto", choices=ATTENTION_BACKENDS,
                           help="diffusers attention backend of the DiT (auto: its default, torch SDPA)")

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:  # pragma: no cover
            return "cpu"


@dataclass
class CacheConfig:
    """Where stage outputs are kept; ``dir`` defaults to the user cache dir (``zitflow/store``)."""

    dir: Optional[str] = param(None, help="a folder or an fsspec URL (s3://bucket/path, gcs://...); "
                                          "default: $ZITFLOW_CACHE_DIR or the user cache dir")

    def resolved_dir(self) -> str:
        if self.dir:
            return self.dir
        import os

        from platformdirs import user_cache_dir

        return os.environ.get("ZITFLOW_CACHE_DIR") or os.path.join(user_cache_dir("zitflow"), "store")


def load_section(group: str, schema: type, values: Any) -> Any:
    """Merge config group ``group``'s values onto ``schema``; :class:`ConfigError` names the field."""
    if values is None:
        values = {}
    try:
        return build_params(schema, values)
    except ParamError as e:
        raise ConfigError(f"config '{group}', field '{e.field}': {e.message}") from None
