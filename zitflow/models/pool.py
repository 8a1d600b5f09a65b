"""The process-wide model pool: every component loads lazily, once per process, for all jobs.

:data:`POOL` is what stages find as ``ctx.models``. It is keyed by model identity (the resolved
folder's fingerprint, :mod:`zitflow.models.sources`) and run dtype, so Hydra multirun jobs in one
process share loaded models, and a job that needs only the DiT never loads the text encoder.
``pool.loads`` counts loads per component (``text_encoder``, ``tokenizer``, ``transformer``,
``vae``, ``scheduler``): tests use it to prove that cached stages load nothing.

Components load from a diffusers-layout folder through the classes its ``model_index.json``
names (only from ``diffusers`` and ``transformers``), with safetensors only (no pickle), onto
the CPU in the run dtype; :mod:`zitflow.models.placement` then moves them as the memory plan
says. The real Z-Image-Turbo and ``model=tiny`` go through exactly this code.

``model=random_full`` (source ``random``) builds each component in memory on the run device
instead (:mod:`zitflow.models.random_full`). Benchmarks can also hand in models built in memory
with :meth:`ModelPool.adopt`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from ..config import SEEDED_SOURCES, ModelConfig, RuntimeConfig
from .memory import GiB, ModelSizes, Plan, candidates, choose, peak_bytes, rank, sizes_from_params
from .placement import MODULES, arrange, set_state
from .sources import ResolvedModel, resolve, safetensors_header

log = logging.getLogger("zitflow")

LIBRARIES = ("diffusers", "transformers")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class ModelLoadError(RuntimeError):
    """A component that cannot be loaded from a resolved folder; the message says which and why."""


def run_dtype_name(config: ModelConfig, runtime: RuntimeConfig) -> str:
    """``model.dtype``, with ``auto`` meaning bfloat16 on CUDA and float32 on the CPU."""
    if config.dtype != "auto":
        return config.dtype
    return "bfloat16" if runtime.resolved_device().startswith("cuda") else "float32"


def load_component(folder: Path, component: str, dtype_name: str) -> Any:
    """Load one component of a diffusers-layout folder as its ``model_index.json`` says.

    Models come in ``dtype_name`` on the CPU, in eval mode without gradients; the tokenizer through
    ``AutoTokenizer`` (its own config names its class); the scheduler from its config.
    """
    import torch

    index_path = folder / "model_index.json"
    try:
        index = json.loads(index_path.read_text())
        library, class_name = index[component]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"{index_path}: no usable entry for '{component}' ({e}); the folder must be in "
                             f"diffusers layout (see model.path)") from None
    if library not in LIBRARIES:
        raise ModelLoadError(f"{index_path}: component '{component}' names library {library!r}; only "
                             f"{', '.join(LIBRARIES)} classes are loaded")
    sub = folder / component
    try:
        if component == "tokenizer":
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(sub), local_files_only=True)
        cls = getattr(importlib.import_module(library), class_name)
        if component == "scheduler":
            return cls.from_pretrained(str(folder), subfolder="scheduler", local_files_only=True)
        dtype = getattr(torch, dtype_name)
        if library == "transformers":
            model = cls.from_pretrained(str(sub), dtype=dtype, use_safetensors=True, local_files_only=True)
        else:
            model = cls.from_pretrained(str(sub), torch_dtype=dtype, use_safetensors=True, local_files_only=True)
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"cannot load '{component}' ({library}.{class_name}) from {sub}: "
                             f"{type(e).__name__}: {e}") from e
    model.eval()
    model.requires_grad_(False)
    return model


@contextlib.contextmanager
def loading_progress(component: str, where: str, mode: str) -> Iterator[None]:
    """A live status line while ``component`` loads (interactive), then a log line with the seconds.

    The libraries' own per-shard bars are silenced meanwhile, so one line per component shows.
    """
    from ..progress import interactive

    show = mode != "off" and interactive(mode)
    restore = []
    for mod in ("diffusers.utils.logging", "transformers.utils.logging"):
        try:
            lib = importlib.import_module(mod)
            if lib.is_progress_bar_enabled():
                lib.disable_progress_bar()
                restore.append(lib)
        except Exception:  # noqa: BLE001
            pass
    t0 = time.perf_counter()
    try:
        if show:
            from rich.console import Console

            with Console(stderr=True).status(f"loading {component} from {where} ..."):
                yield
        else:
            yield
    finally:
        for lib in restore:
            lib.enable_progress_bar()
    if mode != "off":
        log.info("loaded %s from %s in %.1f s", component, where, time.perf_counter() - t0)


class ModelPool:
    """Models of this process by (identity, dtype, component); see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._resolved: dict[tuple, ResolvedModel] = {}
        self._entries: dict[tuple[str, str, str], Any] = {}
        self._states: dict[tuple[str, str, str], str] = {}
        self._floors: dict[tuple[str, str], Plan] = {}
        self._sizes: dict[tuple[str, str], ModelSizes] = {}
        #: loads from disk per component name since the pool was made
        self.loads: Counter[str] = Counter()

    # -- settings and identity -----------------------------------------------------------------
    @staticmethod
    def settings(ctx) -> tuple[ModelConfig, RuntimeConfig]:
        """The context's model and runtime configs (defaults when a test context has none)."""
        return (getattr(ctx, "model_config", None) or ModelConfig(), getattr(ctx, "runtime", None) or RuntimeConfig())

    @staticmethod
    def _config_key(config: ModelConfig) -> tuple:
        return (config.source, config.id, config.revision, config.path,
                config.seed if config.source in SEEDED_SOURCES else None)

    def resolve(self, config: ModelConfig) -> ResolvedModel:
        """Where ``config``'s weights are, resolved once per process (cheap after the first time)."""
        key = self._config_key(config)
        with self._lock:
            if key not in self._resolved:
                self._resolved[key] = resolve(config)
            return self._resolved[key]

    def identity(self, config: ModelConfig, runtime: RuntimeConfig) -> dict[str, Any]:
        """Cache-key data of model stages: the weights' fingerprint and the run dtype."""
        return dict(self.resolve(config).identity(), dtype=run_dtype_name(config, runtime))

    def _key(self, config: ModelConfig, runtime: RuntimeConfig, component: str) -> tuple[str, str, str]:
        dtype = run_dtype_name(config, runtime) if component in MODULES else "-"
        if component == "transformer" and runtime.precision != "auto":
            dtype = f"{dtype}+{runtime.precision}"  # converted in place by models.precision: its own entry
        return (self.resolve(config).fingerprint, dtype, component)

    # -- components ----------------------------------------------------------------------------
    def get(self, config: ModelConfig, runtime: RuntimeConfig, component: str) -> Any:
        """Component ``component`` of ``config``'s model, loaded on first use (then reused)."""
        key = self._key(config, runtime, component)
        with self._lock:
            if key in self._entries:
                return self._entries[key]
            if "+" in key[1]:
                # a converted DiT starts as the plain one, which it then replaces (one copy in memory);
                # the conversion itself happens on the GPU (models.precision.apply_precision)
                plain = replace(runtime, precision="auto")
                obj = self.get(config, plain, component)
                base = self._key(config, plain, component)
                self._entries[key] = self._entries.pop(base)
                self._states[key] = self._states.pop(base)
                return obj
            resolved = self.resolve(config)
            state = "cpu"
            if resolved.source == "random":
                from . import random_full

                device = runtime.resolved_device() if component in MODULES else "cpu"
                with loading_progress(component, f"random weights (seed {config.seed}) on {device}", runtime.progress):
                    obj = random_full.build(component, key[1], device, config.seed)
                state = "gpu" if component in MODULES and device.startswith("cuda") else "cpu"
            elif resolved.path is None:
                raise ModelLoadError(f"model '{resolved.label}' was adopted in memory without '{component}'")
            else:
                with loading_progress(component, str(resolved.path), runtime.progress):
                    obj = load_component(resolved.path, component, key[1])
            self.loads[component] += 1
            self._entries[key] = obj
            self._states[key] = state
            return obj

    def text_encoder(self, config: ModelConfig, runtime: RuntimeConfig) -> tuple[Any, Any]:
        """(tokenizer, text encoder); the encoder is a ``transformers`` Qwen3 model."""
        return self.get(config, runtime, "tokenizer"), self.get(config, runtime, "text_encoder")

    def transformer(self, config: ModelConfig, runtime: RuntimeConfig) -> Any:
        return self.get(config, runtime, "transformer")

    def vae(self, config: ModelConfig, runtime: RuntimeConfig) -> Any:
        return self.get(config, runtime, "vae")

    def scheduler(self, config: ModelConfig, runtime: RuntimeConfig, **overrides: Any) -> Any:
        """A fresh scheduler (they keep state) from the model's config, with ``overrides`` applied."""
        base = self.get(config, runtime, "scheduler")
        return type(base).from_config(base.config, **overrides)

    def vae_config(self, config: ModelConfig, runtime: RuntimeConfig) -> dict[str, Any]:
        """The VAE's config (scale factor, scaling/shift factors) without loading its weights."""
        key = self._key(config, runtime, "vae")
        if key in self._entries:
            return dict(self._entries[key].config)
        if self.resolve(config).source == "random":
            from .random_full import FLUX_VAE

            return dict(FLUX_VAE)
        return json.loads((self.resolve(config).path / "vae" / "config.json").read_text())

    def vae_scale_factor(self, config: ModelConfig, runtime: RuntimeConfig) -> int:
        """Pixels per latent cell: ``2 ** (len(block_out_channels) - 1)`` (8 for Z-Image)."""
        return 2 ** (len(self.vae_config(config, runtime)["block_out_channels"]) - 1)

    # -- memory plans --------------------------------------------------------------------------
    def sizes(self, config: ModelConfig, runtime: RuntimeConfig) -> ModelSizes:
        """Bytes per component at the run dtype, from safetensors headers (or adopted modules)."""
        dtype = run_dtype_name(config, runtime)
        resolved = self.resolve(config)
        key = (resolved.fingerprint, dtype)
        if key not in self._sizes and resolved.source == "random":  # the real model's architecture
            from .memory import zimage_turbo_sizes

            self._sizes[key] = zimage_turbo_sizes(DTYPE_BYTES[dtype])
        if key not in self._sizes:
            params, cfgs = {}, {}
            for comp in MODULES:
                entry = self._entries.get((resolved.fingerprint, dtype, comp))
                if entry is not None:
                    params[comp] = {n: p.numel() for n, p in entry.named_parameters()}
                    cfgs[comp] = dict(entry.config.to_dict() if hasattr(entry.config, "to_dict") else entry.config)
                else:
                    params[comp] = _header_params(resolved.path / comp)
                    cfgs[comp] = json.loads((resolved.path / comp / "config.json").read_text())
            te, dit, vae = cfgs["text_encoder"], cfgs["transformer"], cfgs["vae"]
            self._sizes[key] = sizes_from_params(
                params["text_encoder"], params["transformer"], params["vae"],
                dit_dim=int(dit.get("dim", 3840)), vae_channels=int(vae.get("block_out_channels", [128])[0]),
                te_hidden=int(te.get("hidden_size", 2560)), te_ffn=int(te.get("intermediate_size", 9728)),
                te_layers=int(te.get("num_hidden_layers", 36)), dtype_bytes=DTYPE_BYTES[dtype])
        return self._sizes[key]

    def plan_for(self, config: ModelConfig, runtime: RuntimeConfig, width: int | None, height: int | None,
                 cfg: bool = False) -> tuple[Plan, dict[str, int]]:
        """The plan to run at ``width`` x ``height`` (1024x1024 when unknown, e.g. for encode).

        CPU: ``cpu``. CUDA: ``runtime.offload`` if set, else the fastest plan whose estimate fits
        ``runtime.vram_gb`` (a card size) or the memory this process can use now (free plus what it
        already holds); never faster than a plan an earlier out-of-memory error stepped down to.
        Returns the plan and facts for the manifest (budget and estimate, bytes).
        """
        device = runtime.resolved_device()
        if not device.startswith("cuda"):
            return Plan("cpu", vae_tiling=runtime.vae_tiling == "on"), {}
        w, h = width or 1024, height or 1024
        sizes = self.sizes(config, runtime)
        if runtime.vram_gb:
            budget, card_total = int(runtime.vram_gb * GiB), True
        else:
            import torch

            free, _total = torch.cuda.mem_get_info(torch.device(device))
            budget, card_total = free + torch.cuda.memory_reserved(torch.device(device)), False
        plan = choose(w, h, budget, sizes, cfg=cfg, offload=runtime.offload, vae_tiling=runtime.vae_tiling,
                      card_total=card_total)
        if plan is None:
            plan = candidates(runtime.offload, runtime.vae_tiling)[-1]
            log.warning("no memory plan is estimated to fit %dx%d in %.1f GiB (smallest, '%s', needs %.1f GiB); "
                        "trying it anyway", w, h, budget / GiB, plan, peak_bytes(plan, w, h, sizes, cfg) / GiB)
        floor = self._floors.get((self.resolve(config).fingerprint, run_dtype_name(config, runtime)))
        if floor is not None and rank(floor.name) > rank(plan.name):
            plan = Plan(floor.name, plan.vae_tiling or floor.vae_tiling)
        return plan, {"memory_budget_gb": budget, "memory_estimate_gb": peak_bytes(plan, w, h, sizes, cfg)}

    def lower_floor(self, config: ModelConfig, runtime: RuntimeConfig, plan: Plan) -> None:
        """Remember that this model ran out of memory above ``plan``: later jobs start there."""
        self._floors[(self.resolve(config).fingerprint, run_dtype_name(config, runtime))] = plan

    def prepare(self, config: ModelConfig, runtime: RuntimeConfig, component: str, plan: Plan) -> Any:
        """Load ``component`` if needed and place every module as ``plan`` wants; returns it."""
        obj = self.get(config, runtime, component)
        if component in MODULES:
            with self._lock:
                arrange(self._entries, self._states, self._key(config, runtime, component), plan,
                        runtime.resolved_device())
        return obj

    def forget_floors(self) -> None:
        """Drop what out-of-memory errors taught (benchmarks that change the budget between runs)."""
        self._floors.clear()

    def state(self, config: ModelConfig, runtime: RuntimeConfig, component: str) -> str | None:
        """Where a loaded module is (``cpu``, ``gpu``, ``group``, ``sequential``), None if not loaded."""
        return self._states.get(self._key(config, runtime, component))

    def evict_all(self) -> None:
        """Move every module off the GPU (hooks removed): after an out-of-memory error."""
        with self._lock:
            for key, module in self._entries.items():
                if key[2] in MODULES and self._states.get(key, "cpu") != "cpu":
                    set_state(module, self._states[key], "cpu", "cpu")
                    self._states[key] = "cpu"

    # -- bookkeeping ---------------------------------------------------------------------------
    def adopt(self, config: ModelConfig, components: dict[str, Any], label: str = "adopted",
              fingerprint: str | None = None) -> ResolvedModel:
        """Serve ``config`` from objects built in memory (benchmarks): ``components`` maps
        ``tokenizer``, ``text_encoder``, ``transformer``, ``vae``, ``scheduler`` to objects. Modules
        keep their device; their dtype must be the run dtype. Not counted as loads."""
        import hashlib

        fp = fingerprint or "adopted-" + hashlib.sha256(label.encode()).hexdigest()[:16]
        resolved = ResolvedModel(None, "adopted", fp, id=config.id, label=label)
        with self._lock:
            self._resolved[self._config_key(config)] = resolved
            for comp, obj in components.items():
                dtype = str(next(obj.parameters()).dtype).replace("torch.", "") if comp in MODULES else "-"
                self._entries[(fp, dtype, comp)] = obj
                if comp in MODULES:
                    on_gpu = next(obj.parameters()).device.type == "cuda"
                    self._states[(fp, dtype, comp)] = "gpu" if on_gpu else "cpu"
        return resolved

    def components(self, config: ModelConfig) -> dict[str, Any]:
        """The objects held for ``config`` (component name -> object), e.g. to build a stock
        pipeline from the same modules in a benchmark. Empty when nothing is loaded yet."""
        resolved = self._resolved.get(self._config_key(config))
        if resolved is None:
            return {}
        return {comp: obj for (fp, _, comp), obj in self._entries.items() if fp == resolved.fingerprint}

    def loaded(self) -> list[tuple[str, str, str]]:
        """Keys (fingerprint, dtype, component) of everything loaded."""
        return list(self._entries)

    def clear(self) -> None:
        """Forget every model and count (frees their memory once nothing else holds them)."""
        with self._lock:
            self.evict_all()
            self._entries.clear()
            self._states.clear()
            self._resolved.clear()
            self._floors.clear()
            self._sizes.clear()
            self.loads.clear()


def _header_params(folder: Path) -> dict[str, int]:
    """Parameter name -> element count from the safetensors headers in ``folder`` (no data read)."""
    out: dict[str, int] = {}
    for path in sorted(folder.glob("*.safetensors")):
        header, _ = safetensors_header(path)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            n = 1
            for d in info["shape"]:
                n *= int(d)
            out[name] = n
    return out


#: The pool of this process: ``ctx.models`` in every job (see :func:`zitflow.job.make_job`).
POOL = ModelPool()


def pool_of(ctx) -> ModelPool:
    """The context's pool, or the process pool when a context was made without one."""
    pool = getattr(ctx, "models", None)
    return pool if pool is not None else POOL
