"""``model=random_full``: Z-Image-Turbo's full-size architecture with seeded random weights.

For measuring speed and memory at the real size where the weights are absent (this project's
GPU benchmarks, a new card, a cluster sweep): diffusers' default ``ZImageTransformer2DModel()``
(6.155B), a Qwen3-4B ``Qwen3Model`` (4.022B, :data:`QWEN3_4B`), the Flux ``AutoencoderKL``
(83.8M, :data:`FLUX_VAE`), Z-Image-Turbo's scheduler settings and the tiny model's tokenizer.
Each component is built in memory directly on the run device (about a second on a GPU for all
three; no download, no disk) from ``model.seed``, so every process of a sweep builds the same
model and its cache keys agree. Its pictures are noise; its timings and memory are the real
model's.

Built with the libraries' own initialisation, except the DiT's padding tokens, which diffusers
starts at zeros: they get N(0, 0.02) values, as a trained checkpoint has (all-zero tokens would
be a case real weights never show, e.g. for FP8 scaling).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: Qwen3-4B (Z-Image-Turbo's text encoder): 36 layers, hidden 2560, GQA 32/8 heads of 128.
QWEN3_4B = {"vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}
#: Z-Image-Turbo's VAE (the Flux VAE).
FLUX_VAE = {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2, "latent_channels": 16, "norm_num_groups": 32, "sample_size": 1024,
            "scaling_factor": 0.3611, "shift_factor": 0.1159, "use_quant_conv": False,
            "use_post_quant_conv": False, "mid_block_add_attention": True, "force_upcast": True}
#: Bumped when what :func:`build` makes changes, so old cache entries stop matching.
VERSION = 1


def fingerprint(seed: int) -> str:
    """The model identity of ``model=random_full`` with ``seed`` (architecture, version, seed)."""
    what = {"random_full": VERSION, "seed": int(seed), "text_encoder": QWEN3_4B, "vae": FLUX_VAE,
            "transformer": "diffusers ZImageTransformer2DModel() defaults"}
    return "random-full-" + hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


def build(component: str, dtype_name: str, device: str, seed: int) -> Any:
    """One component, built on ``device`` in ``dtype_name`` (``transformer``, ``text_encoder``,
    ``vae``, ``tokenizer``, ``scheduler``); modules come in eval mode without gradients.

    The weights depend on ``seed`` and the component only (each has its own generator state).
    """
    import torch

    from .tiny import ZIMAGE_SCHEDULER, build_tokenizer, text_encoder_config

    if component == "tokenizer":
        return build_tokenizer()
    if component == "scheduler":
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(**ZIMAGE_SCHEDULER)
    if component not in ("transformer", "text_encoder", "vae"):
        raise ValueError(f"model=random_full has no component {component!r}")
    dtype = getattr(torch, dtype_name)
    offset = ("transformer", "text_encoder", "vae").index(component)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    devices = [] if torch.device(device).type != "cuda" else [torch.device(device)]
    try:
        with torch.random.fork_rng(devices=devices), torch.device(device), torch.no_grad():
            torch.manual_seed(int(seed) * 3 + offset)
            if component == "transformer":
                from diffusers import ZImageTransformer2DModel

                module = ZImageTransformer2DModel()
                for name in ("x_pad_token", "cap_pad_token"):
                    pad = getattr(module, name, None)
                    if pad is not None and pad.device.type != "meta":
                        pad.normal_(0.0, 0.02)
            elif component == "text_encoder":
                from transformers import Qwen3Model

                module = Qwen3Model(text_encoder_config(**QWEN3_4B)).to(dtype)
            else:
                from diffusers import AutoencoderKL

                module = AutoencoderKL(**FLUX_VAE)
    finally:
        torch.set_default_dtype(old)
    module.eval()
    module.requires_grad_(False)
    return module
