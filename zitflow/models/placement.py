"""Putting the pool's modules where a memory plan wants them, and the out-of-memory step-down.

Each loaded ``torch.nn.Module`` (text encoder, DiT, VAE) is in one state: ``cpu``, ``gpu``,
``group`` (diffusers block-level group offload onto the GPU) or ``sequential`` (leaf-level
group offload). :func:`arrange` moves modules so that one component can run under a plan:

=============  ==================================================  ==========================
plan           the running component                               the others (if on the GPU)
=============  ==================================================  ==========================
resident       gpu                                                 stay
staged         gpu                                                 text encoder and DiT leave
                                                                   (the VAE stays)
model          gpu                                                 moved to the CPU
group          group (VAE: gpu)                                    moved to the CPU
sequential     sequential (VAE: gpu)                               moved to the CPU
cpu            cpu                                                 untouched
=============  ==================================================  ==========================

On CUDA, a module that leaves the GPU lands on one pinned host copy of its weights, made on the
first move and reused (:func:`to_cpu`, :func:`to_gpu`): later moves to the host are free and moves
to the GPU are DMA at full PCIe speed (H100: staged 1024x1024 with a new prompt 20.0 s -> 2.0 s).

Modules of another model (another identity) always leave the GPU. Group-offloaded modules hold
no GPU memory between calls, so they keep their hooks until they run under another plan
(re-applying them would pin the weights again). Nothing is moved back after
a stage: like diffusers' model offload, a module leaves only when another needs the room, so a
seed sweep keeps the DiT where it is.

:func:`run_planned` wraps a stage's work: it picks the plan, arranges the modules, runs, and on
``torch.OutOfMemoryError`` steps one plan down (:func:`zitflow.models.memory.step_down`) and
retries once, recording both plans in ``ctx.notes`` (the manifest). When the retry runs out of
memory too, or no smaller plan exists, it raises :class:`StageOutOfMemory` (a ``MemoryError``)
naming the stage, the size, the plans tried, the budget, and smaller sizes that would fit.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any, Callable

from .memory import ZIMAGE_TURBO, Plan, gib, peak_bytes, rank, smaller_sizes, step_down

log = logging.getLogger("zitflow")

#: Components that are torch modules and can be placed (the tokenizer and scheduler are not).
MODULES = ("text_encoder", "transformer", "vae")

#: Keep one pinned (page-locked) host copy of each offloaded weight on CUDA machines, so moving a
#: module to the GPU is a fast DMA and moving it back costs nothing (inference never changes the
#: weights). Costs host RAM equal to the offloaded modules; ``ZITFLOW_PIN_MEMORY=0`` turns it off.
PIN_MEMORY = os.environ.get("ZITFLOW_PIN_MEMORY", "1") != "0"


def _tensors(module):
    yield from module.parameters()
    yield from module.buffers()


def has_subclass_tensors(module) -> bool:
    """Whether ``module`` holds tensor subclasses (torchao's FP8 weights): those move with
    ``module.to``, unpinned, since their storage is not one plain tensor."""
    import torch

    return any(type(t.data) is not torch.Tensor for t in _tensors(module))


def to_gpu(module, device: str) -> None:
    """Move ``module`` to ``device``; from pinned host copies (made on first use) when pinning is on."""
    global PIN_MEMORY
    import torch

    if not (PIN_MEMORY and torch.device(device).type == "cuda") or has_subclass_tensors(module):
        module.to(device)
        return
    for t in _tensors(module):
        if t.device.type != "cpu":
            continue
        pinned = getattr(t, "_zitflow_pinned", None)
        if pinned is None:
            try:
                pinned = t.data.pin_memory()
            except RuntimeError as e:  # out of page-locked memory: carry on with plain copies
                log.warning("pinning host memory failed (%s); offloading without it", e)
                PIN_MEMORY = False
                module.to(device)
                return
            t._zitflow_pinned = pinned
        t.data = pinned.to(device, non_blocking=True)


def to_cpu(module) -> None:
    """Move ``module`` to the host: onto its pinned copies (no copy once they exist; made now
    when pinning is on), else a plain ``.to("cpu")``."""
    import torch

    if has_subclass_tensors(module):
        module.to("cpu")
        return
    for t in _tensors(module):
        if t.device.type == "cpu":
            continue
        pinned = getattr(t, "_zitflow_pinned", None)
        if pinned is None and PIN_MEMORY and t.device.type == "cuda":
            try:
                pinned = torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t.data)
                t._zitflow_pinned = pinned
            except RuntimeError:
                pinned = None
        t.data = pinned if pinned is not None else t.data.to("cpu")


def unpin(module) -> None:
    """Drop ``module``'s pinned host copies (its host weights become plain memory again)."""
    for t in _tensors(module):
        pinned = getattr(t, "_zitflow_pinned", None)
        if pinned is not None:
            if t.device.type == "cpu":
                t.data = pinned.clone()
            del t._zitflow_pinned


def target_state(plan: Plan, component: str) -> str:
    """Where ``component`` must be to run under ``plan``."""
    if plan.name == "cpu":
        return "cpu"
    if plan.name in ("group", "sequential") and component != "vae":
        return plan.name
    return "gpu"


def must_leave(plan: Plan, running: str, other: str) -> bool:
    """Whether module ``other`` (of the same model) must leave the GPU for ``running`` under ``plan``."""
    if plan.name == "resident":
        return False
    if plan.name == "staged":  # one large model at a time; the VAE stays
        return other != "vae"
    return True


def remove_group_offload(module) -> None:
    """Undo :func:`diffusers.hooks.apply_group_offloading` on ``module`` (its weights end on the CPU)."""
    from diffusers.hooks import HookRegistry
    from diffusers.hooks import group_offloading as go

    registry = HookRegistry.check_if_exists_or_initialize(module)
    for name in (go._GROUP_OFFLOADING, go._LAYER_EXECUTION_TRACKER, go._LAZY_PREFETCH_GROUP_OFFLOADING):
        registry.remove_hook(name, recurse=True)
    module.to("cpu")


def set_state(module, current: str, target: str, device: str) -> None:
    """Move ``module`` from state ``current`` to ``target`` (``device`` is the GPU, e.g. ``cuda:0``)."""
    if current == target:
        return
    import torch

    if current in ("group", "sequential"):
        remove_group_offload(module)
    if target == "gpu":
        to_gpu(module, device)
    elif target == "cpu":
        to_cpu(module)
    else:
        from diffusers.hooks import apply_group_offloading

        module.to("cpu")
        on_cuda = torch.device(device).type == "cuda"
        apply_group_offloading(module, onload_device=torch.device(device), offload_device=torch.device("cpu"),
                               offload_type="block_level" if target == "group" else "leaf_level",
                               num_blocks_per_group=1 if target == "group" else None,
                               use_stream=on_cuda, non_blocking=on_cuda)


def model_of(key: tuple) -> tuple[str, str]:
    """(model fingerprint, dtype) of a pool key; an FP8-converted DiT ("bfloat16+fp8") is the same model."""
    return key[0], key[1].split("+")[0]


def arrange(entries: dict[tuple, Any], states: dict[tuple, str], key: tuple, plan: Plan, device: str) -> None:
    """Place every loaded module so that the module at ``key`` = (model, dtype, component) can run.

    ``entries`` maps keys to loaded objects, ``states`` keys to their state (updated in place).
    """
    running = key[2]
    if plan.name == "cpu":  # only the running module moves (back) to the CPU; nothing else is touched
        set_state(entries[key], states.get(key, "cpu"), "cpu", "cpu")
        states[key] = "cpu"
        return
    for other, module in entries.items():
        if other == key or other[2] not in MODULES or states.get(other, "cpu") in ("cpu", "group", "sequential"):
            continue  # group-offloaded modules hold no GPU memory between calls
        foreign = model_of(other) != model_of(key)
        if foreign or must_leave(plan, running, other[2]):
            set_state(module, states[other], "cpu", device)
            states[other] = "cpu"
    target = target_state(plan, running)
    set_state(entries[key], states.get(key, "cpu"), target, device)
    states[key] = target


def free_gpu() -> None:
    """Return cached blocks to the driver after an out-of-memory error."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


class StageOutOfMemory(MemoryError):
    """A stage ran out of GPU memory under every plan it could try; the message says what fits."""


def _out_of_memory(ctx, pool, config, runtime, component: str, tried: list[Plan], facts: dict[str, int],
                   width: int | None, height: int | None, cfg: bool, error: BaseException) -> StageOutOfMemory:
    """The final error: stage, size, plans tried, budget, and the sizes that would fit."""
    sizes_fn = getattr(pool, "sizes", None)
    try:
        sizes = sizes_fn(config, runtime) if sizes_fn else ZIMAGE_TURBO
    except Exception:  # noqa: BLE001 - the message must not fail
        sizes = ZIMAGE_TURBO
    last = tried[-1]
    budget = facts.get("memory_budget_gb")
    at = f" at {width}x{height}" if width and height else ""
    text = (f"stage '{ctx.stage_name}' ({component}) ran out of GPU memory{at} under "
            + " and then ".join(f"'{p}'" for p in tried)
            + (f" (budget {gib(budget)} GiB)" if budget else "") + f": {str(error).splitlines()[0][:200]}")
    fit = []
    if width and height and budget:
        below = peak_bytes(last, width, height, sizes, cfg)
        fit = smaller_sizes(width, height, budget, sizes, plan=last, cfg=cfg, card_total=bool(runtime.vram_gb),
                            below=below)
    if fit:
        text += (f". Sizes that would fit under '{last}': " + ", ".join(f"{w}x{h}" for w, h in fit)
                 + " (set the recipe's resolution stage, e.g. stages.size.width / stages.size.height)")
    lower = step_down(last, component, runtime.vae_tiling)
    if lower is not None:
        text += f"; or force a smaller plan: runtime.offload={lower.name}"
    text += "; or free the GPU, or use runtime.device=cpu"
    return StageOutOfMemory(text)


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


def run_planned(ctx, pool, component: str, work: Callable[[Plan, str], Any], *, width: int | None = None,
                height: int | None = None, cfg: bool = False) -> Any:
    """Run ``work(plan, device)`` for ``component`` under the plan the pool picks; step down once on OOM.

    ``pool`` provides ``plan_for(config, runtime, width, height, cfg) -> (Plan, facts)``,
    ``prepare(config, runtime, component, plan)``, ``evict_all()`` and ``lower_floor(config, runtime,
    plan)``. Notes written: ``memory_plan``, ``memory_budget_gb``, ``memory_estimate_gb`` and, after an
    out-of-memory error, ``oom_fallback`` (``"resident -> staged"``).
    """
    config, runtime = pool.settings(ctx)
    device = runtime.resolved_device()
    plan, facts = pool.plan_for(config, runtime, width, height, cfg)
    ctx.notes["memory_plan"] = str(plan)
    ctx.notes.update({k: gib(v) for k, v in facts.items()})
    failed: BaseException | None = None
    try:
        pool.prepare(config, runtime, component, plan)
        return work(plan, device)
    except Exception as e:  # noqa: BLE001
        if not _is_oom(e):
            raise
        failed = e  # leave the except block first, so the failed attempt's tensors can be freed
    lower = step_down(plan, component, runtime.vae_tiling)
    if lower is None:
        raise _out_of_memory(ctx, pool, config, runtime, component, [plan], facts, width, height, cfg,
                             failed) from failed
    log.warning("stage '%s': out of GPU memory under plan '%s'; retrying once under '%s'",
                ctx.stage_name, plan, lower)
    ctx.notes["oom_fallback"] = f"{plan} -> {lower}"
    ctx.notes["memory_plan"] = str(lower)
    failed = None
    if rank(lower.name) > rank(plan.name):
        pool.lower_floor(config, runtime, lower)
    pool.evict_all()
    free_gpu()
    try:
        pool.prepare(config, runtime, component, lower)
        return work(lower, device)
    except Exception as e:  # noqa: BLE001
        if not _is_oom(e):
            raise
        failed = e
    free_gpu()
    raise _out_of_memory(ctx, pool, config, runtime, component, [plan, lower], facts, width, height, cfg,
                         failed) from failed
