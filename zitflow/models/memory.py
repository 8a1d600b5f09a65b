"""Memory plans: how much GPU memory each placement needs at a size, and which one to pick.

Plans, fastest first (:data:`PLANS`):

* ``resident``   - text encoder, DiT and VAE all stay on the GPU;
* ``staged``     - one large model on the GPU at a time: the text encoder leaves before the DiT
  comes, and the DiT leaves while the VAE decodes (the VAE stays; 12.3 GiB at 1024x1024);
* ``model``      - one component on the GPU at a time (diffusers' model CPU offload);
* ``group``      - diffusers group offload, one transformer block at a time (streams prefetch the next);
* ``sequential`` - leaf-level group offload, one layer at a time.

On a CPU the plan is ``cpu``. Any plan may add VAE tiling (512 px tiles) for large sizes.

Everything here is pure arithmetic on bytes (:class:`ModelSizes` and a size in pixels), so the
resolution policy can ask :func:`fits` without a GPU or a model. The activation terms are
calibrated on an H100 with the full-size architecture in bf16 (peak with all resident: 19.17
GiB of weights + 0.6 GiB at 512x512, 2.4 at 1024x1024, 4.7 at 1088x1920, 9.5 at 2048x2048 - the
VAE decode dominates and grows with pixels); ``bench/generate_bench.py`` checks them against
measured peaks (docs/generation.md: within 0.2 GiB for the on-GPU plans).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

GiB = 1024**3

PLANS = ("resident", "staged", "model", "group", "sequential")
#: Text tokens the prompt is padded to (the DiT sees only the valid ones, at most this many).
TEXT_TOKENS = 512
#: Tile edge in pixels when VAE tiling is on (diffusers' AutoencoderKL tiles, overlap 1/4).
VAE_TILE_PX = 512
#: Part of a budget kept free for the allocator's fragmentation.
FRAGMENTATION = 0.05
#: Bytes outside torch's allocator (CUDA context, cuBLAS workspaces) when the budget is a card size.
CONTEXT_BYTES = int(0.5 * GiB)
_BLOCK = re.compile(r"^(?:model\.)?((?:layers|noise_refiner|context_refiner|siglip_refiner)\.\d+)\.")


@dataclass(frozen=True)
class ModelSizes:
    """Bytes of one model's components at the run dtype, and its activation coefficients.

    ``*_unit``: the largest group that group offload (block level) / sequential offload (leaf
    level) puts on the GPU at once. ``dit_token_bytes``: DiT activation bytes per sequence token
    (image tokens = pixels / 256, plus up to 512 text tokens); ``vae_pixel_bytes``: VAE decode
    activation bytes per output pixel; ``text_encoder_act``: bytes for one 512-token prompt.
    """

    text_encoder: int
    transformer: int
    vae: int
    text_encoder_unit: int
    transformer_unit: int
    text_encoder_leaf: int
    transformer_leaf: int
    text_encoder_act: int
    dit_token_bytes: int
    vae_pixel_bytes: int

    @property
    def weights(self) -> int:
        return self.text_encoder + self.transformer + self.vae


def zimage_turbo_sizes(dtype_bytes: int = 2) -> ModelSizes:
    """Z-Image-Turbo's sizes from diffusers' default configs (6.155B DiT, Qwen3-4B, Flux VAE)."""
    dim, ffn = 3840, 10240
    block = 180_910_336  # one ZImageTransformerBlock: attention, SwiGLU FFN (10240), adaLN, norms
    te_hidden, te_ffn, te_vocab, te_layers = 2560, 9728, 151936, 36
    return ModelSizes(
        text_encoder=4_022_468_096 * dtype_bytes,
        transformer=6_154_908_736 * dtype_bytes,
        vae=83_819_683 * dtype_bytes,
        text_encoder_unit=te_vocab * te_hidden * dtype_bytes,   # the embedding is the largest group
        transformer_unit=block * dtype_bytes,
        text_encoder_leaf=te_vocab * te_hidden * dtype_bytes,
        transformer_leaf=dim * ffn * dtype_bytes,
        text_encoder_act=(te_layers + 1) * TEXT_TOKENS * te_hidden * dtype_bytes + 6 * TEXT_TOKENS * te_ffn * dtype_bytes
        + 64 * 1024**2,
        dit_token_bytes=20 * dim * dtype_bytes,   # assumed: the VAE decode sets every measured peak
        vae_pixel_bytes=int(9.65 * 128 * dtype_bytes),  # ~2.3 GiB per megapixel in bf16
    )


def sizes_from_params(text_encoder: dict[str, int], transformer: dict[str, int], vae: dict[str, int], *,
                      dit_dim: int, vae_channels: int, te_hidden: int, te_ffn: int, te_layers: int,
                      dtype_bytes: int) -> ModelSizes:
    """:class:`ModelSizes` of any Z-Image-like model from its parameter names and element counts.

    ``text_encoder`` / ``transformer`` / ``vae`` map parameter name to number of elements (from
    safetensors headers or a loaded module). Block-level groups are the numbered children of
    ``layers``, ``noise_refiner``, ``context_refiner`` plus one group of everything else;
    the leaf unit is the largest single tensor. Activation coefficients scale the calibrated
    Z-Image-Turbo ones by width (``dit_dim``, the VAE's first ``vae_channels``).
    """

    def units(params: dict[str, int]) -> tuple[int, int]:
        groups: dict[str, int] = {}
        for name, n in params.items():
            m = _BLOCK.match(name)
            key = m.group(1) if m else "<rest>"
            groups[key] = groups.get(key, 0) + n
        return max(groups.values(), default=0) * dtype_bytes, max(params.values(), default=0) * dtype_bytes

    te_unit, te_leaf = units(text_encoder)
    dit_unit, dit_leaf = units(transformer)
    return ModelSizes(
        text_encoder=sum(text_encoder.values()) * dtype_bytes,
        transformer=sum(transformer.values()) * dtype_bytes,
        vae=sum(vae.values()) * dtype_bytes,
        text_encoder_unit=te_unit, transformer_unit=dit_unit,
        text_encoder_leaf=te_leaf, transformer_leaf=dit_leaf,
        text_encoder_act=(te_layers + 1) * TEXT_TOKENS * te_hidden * dtype_bytes + 6 * TEXT_TOKENS * te_ffn * dtype_bytes
        + 64 * 1024**2,
        dit_token_bytes=20 * dit_dim * dtype_bytes,
        vae_pixel_bytes=int(9.65 * vae_channels * dtype_bytes),
    )


#: Z-Image-Turbo in bf16: 8.04 + 12.31 + 0.17 GB = 19.1 GiB of weights (19.17 GiB measured with buffers).
ZIMAGE_TURBO = zimage_turbo_sizes()


@dataclass(frozen=True)
class Plan:
    """A placement (``name`` in :data:`PLANS` or ``cpu``) and whether the VAE decodes in tiles."""

    name: str
    vae_tiling: bool = False

    def __str__(self) -> str:
        return self.name + ("+vae_tiling" if self.vae_tiling else "")


# -- activations -------------------------------------------------------------------------------
def image_tokens(width: int, height: int) -> int:
    """DiT image tokens at a size: latents are 1/8 of the pixels, patches 2x2 latents."""
    return (height // 16) * (width // 16)


def dit_activation_bytes(width: int, height: int, sizes: ModelSizes = ZIMAGE_TURBO, cfg: bool = False) -> int:
    """Peak DiT activation bytes for one forward at ``width`` x ``height`` (doubled batch with CFG)."""
    return (image_tokens(width, height) + TEXT_TOKENS) * sizes.dit_token_bytes * (2 if cfg else 1)


def vae_activation_bytes(width: int, height: int, sizes: ModelSizes = ZIMAGE_TURBO, tiling: bool = False) -> int:
    """Peak VAE decode activation bytes; with tiling, one :data:`VAE_TILE_PX` tile plus the output."""
    pixels = width * height
    if tiling and max(width, height) > VAE_TILE_PX:
        return VAE_TILE_PX * VAE_TILE_PX * sizes.vae_pixel_bytes + pixels * 3 * 4 * 2
    return pixels * sizes.vae_pixel_bytes


def peak_bytes(plan: Plan | str, width: int, height: int, sizes: ModelSizes = ZIMAGE_TURBO, cfg: bool = False) -> int:
    """Estimated peak GPU bytes of encode + denoise + decode under ``plan`` at ``width`` x ``height``."""
    plan = Plan(plan) if isinstance(plan, str) else plan
    te = sizes.text_encoder_act
    dit = dit_activation_bytes(width, height, sizes, cfg)
    vae = vae_activation_bytes(width, height, sizes, plan.vae_tiling)
    s = sizes
    if plan.name == "cpu":
        return 0
    if plan.name == "resident":
        return s.weights + max(te, dit, vae)
    if plan.name == "staged":
        return max(s.text_encoder + s.vae + te, s.transformer + s.vae + dit, s.vae + vae)
    if plan.name == "model":
        return max(s.text_encoder + te, s.transformer + dit, s.vae + vae)
    if plan.name == "group":
        return max(2 * s.text_encoder_unit + te, 2 * s.transformer_unit + dit, s.vae + vae)
    if plan.name == "sequential":
        return max(2 * s.text_encoder_leaf + te, 2 * s.transformer_leaf + dit, s.vae + vae)
    raise ValueError(f"unknown memory plan {plan.name!r}; plans: {', '.join(PLANS)}, cpu")


# -- choosing ----------------------------------------------------------------------------------
def usable_bytes(budget_bytes: int, card_total: bool = True) -> int:
    """What plans may fill of a budget: minus fragmentation, and the CUDA context for card sizes."""
    return int(budget_bytes * (1 - FRAGMENTATION)) - (CONTEXT_BYTES if card_total else 0)


def candidates(offload: str = "auto", vae_tiling: str = "auto") -> list[Plan]:
    """Plans to try, fastest first: each plan untiled then tiled (as ``vae_tiling`` allows)."""
    names = PLANS if offload == "auto" else (offload,)
    tilings = {"auto": (False, True), "on": (True,), "off": (False,)}[vae_tiling]
    return [Plan(n, t) for n in names for t in tilings]


def choose(width: int, height: int, budget_bytes: int, sizes: ModelSizes = ZIMAGE_TURBO, *, cfg: bool = False,
           offload: str = "auto", vae_tiling: str = "auto", card_total: bool = True) -> Plan | None:
    """The fastest plan whose estimated peak fits ``budget_bytes``; None if none does.

    ``offload`` other than ``auto`` fixes the placement (only the tiling is chosen);
    ``card_total`` says the budget is a card's whole memory (True) rather than what is free.
    """
    room = usable_bytes(budget_bytes, card_total)
    for plan in candidates(offload, vae_tiling):
        if peak_bytes(plan, width, height, sizes, cfg) <= room:
            return plan
    return None


def fits(width: int, height: int, vram_gb: float, sizes: ModelSizes = ZIMAGE_TURBO, cfg: bool = False) -> str | None:
    """The plan name a card of ``vram_gb`` GiB would use at ``width`` x ``height``, or None.

    For the resolution policy: ``fits(1088, 1920, 16) == "staged"`` (with VAE tiling),
    ``fits(1024, 1024, 24) == "resident"``, ``fits(1024, 1024, 12) == "group"``.
    """
    plan = choose(width, height, int(vram_gb * GiB), sizes, cfg=cfg)
    return plan.name if plan else None


def smaller_sizes(width: int, height: int, budget_bytes: int, sizes: ModelSizes = ZIMAGE_TURBO, *,
                  plan: Plan, cfg: bool = False, card_total: bool = True, below: int | None = None,
                  limit: int = 3) -> list[tuple[int, int]]:
    """Up to ``limit`` sizes of ``width`` x ``height``'s aspect ratio, largest first (multiples of 64,
    at least 256 px a side), whose estimated peak under ``plan`` fits ``budget_bytes`` and, when
    ``below`` is given, is under ``below`` bytes (the estimate of an attempt that ran out of memory).

    For the message of a stage that ran out of memory under every plan it could try.
    """
    room = usable_bytes(budget_bytes, card_total)
    if below is not None:
        room = min(room, below - 1)
    out: list[tuple[int, int]] = []
    for scale in (0.875, 0.75, 0.625, 0.5, 0.375, 0.25):
        w, h = max(256, round(width * scale / 64) * 64), max(256, round(height * scale / 64) * 64)
        if (w, h) not in out and w * h < width * height and peak_bytes(plan, w, h, sizes, cfg) <= room:
            out.append((w, h))
        if len(out) == limit:
            break
    return out


def step_down(plan: Plan, component: str, vae_tiling: str = "auto") -> Plan | None:
    """The next smaller plan after an out-of-memory error in ``component``'s stage, or None.

    A decode that ran out of memory first turns VAE tiling on (when allowed); otherwise the
    placement moves one step down :data:`PLANS` keeping the tiling choice.
    """
    if plan.name == "cpu":
        return None
    if component == "vae" and not plan.vae_tiling and vae_tiling != "off":
        return replace(plan, vae_tiling=True)
    i = PLANS.index(plan.name)
    return Plan(PLANS[i + 1], plan.vae_tiling) if i + 1 < len(PLANS) else None


def rank(name: str) -> int:
    """Position in :data:`PLANS` (``cpu`` after all): larger is smaller and slower."""
    return PLANS.index(name) if name in PLANS else len(PLANS)


def gib(n: int | float | None) -> float | None:
    """Bytes to GiB rounded to 2 decimals (None stays None)."""
    return None if n is None else round(n / GiB, 2)


__all__ = ["GiB", "PLANS", "Plan", "ModelSizes", "ZIMAGE_TURBO", "zimage_turbo_sizes", "sizes_from_params", "image_tokens",
           "dit_activation_bytes", "vae_activation_bytes", "peak_bytes", "usable_bytes", "candidates", "choose",
           "fits", "smaller_sizes", "step_down", "rank", "gib"]
