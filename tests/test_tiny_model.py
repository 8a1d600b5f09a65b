"""model=tiny: the real architecture classes at a tiny size, built locally once, loaded like the real one."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from zitflow.config import ModelConfig, RuntimeConfig
from zitflow.models import tiny
from zitflow.models.pool import ModelPool
from zitflow.models.sources import fingerprint, resolve


def test_built_once_then_reused(models_dir):
    folder = tiny.ensure_tiny(0)
    assert folder == models_dir / "tiny-0"
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    assert tiny.ensure_tiny(0) == folder
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp
    assert not [p for p in models_dir.iterdir() if p.name.startswith(".")], "no build leftovers"


def test_same_classes_as_the_real_pipeline():
    index = json.loads((tiny.ensure_tiny(0) / "model_index.json").read_text())
    assert index["_class_name"] == "ZImagePipeline"
    assert index["transformer"] == ["diffusers", "ZImageTransformer2DModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    assert index["text_encoder"] == ["transformers", "Qwen3Model"]


def test_sizes_agree_where_the_architecture_needs_them():
    folder = tiny.ensure_tiny(0)
    dit = json.loads((folder / "transformer" / "config.json").read_text())
    te = json.loads((folder / "text_encoder" / "config.json").read_text())
    vae = json.loads((folder / "vae" / "config.json").read_text())
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert dit["cap_feat_dim"] == te["hidden_size"]
    assert dit["dim"] // dit["n_heads"] == sum(dit["axes_dims"]) and all(d % 2 == 0 for d in dit["axes_dims"])
    assert dit["in_channels"] == vae["latent_channels"] == 16
    assert 2 ** (len(vae["block_out_channels"]) - 1) == 8
    assert dit["axes_lens"][0] > 512 + 1
    assert (sched["shift"], sched["use_dynamic_shifting"]) == (3.0, False)


def test_tokenizer_speaks_qwen_chat_format():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny.ensure_tiny(0) / "tokenizer"))
    text = tok.apply_chat_template([{"role": "user", "content": "水墨竹林，晨雾"}], tokenize=False,
                                   add_generation_prompt=True, enable_thinking=True)
    assert text == "<|im_start|>user\n水墨竹林，晨雾<|im_end|>\n<|im_start|>assistant\n"
    enc = tok([text], padding="max_length", max_length=64, truncation=True)
    ids = enc["input_ids"][0]
    assert len(ids) == 64 and ids[-1] == tok.pad_token_id
    assert tok.decode([i for i, m in zip(ids, enc["attention_mask"][0]) if m]) == text


def test_weights_are_seeded_and_fingerprint_is_stable(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    tiny.build_tiny(a, seed=0)
    tiny.build_tiny(b, seed=0)
    tiny.build_tiny(c, seed=1)
    assert fingerprint(a) == fingerprint(b) == fingerprint(tiny.ensure_tiny(0))
    assert fingerprint(c) != fingerprint(a)


def test_resolve_tiny_and_identity():
    r = resolve(ModelConfig(source="tiny", seed=0))
    assert r.source == "tiny" and r.path == tiny.ensure_tiny(0)
    assert r.identity() == {"model": fingerprint(r.path)}


def test_pool_loads_each_component_once_through_model_index():
    import diffusers
    import transformers

    pool = ModelPool()
    mc, rt = ModelConfig(), RuntimeConfig(device="cpu", progress="off")
    tok, te = pool.text_encoder(mc, rt)
    dit, vae = pool.transformer(mc, rt), pool.vae(mc, rt)
    assert isinstance(te, transformers.Qwen3Model)
    assert isinstance(dit, diffusers.ZImageTransformer2DModel) and isinstance(vae, diffusers.AutoencoderKL)
    assert pool.transformer(mc, rt) is dit and pool.text_encoder(mc, rt)[1] is te
    assert dict(pool.loads) == {"tokenizer": 1, "text_encoder": 1, "transformer": 1, "vae": 1}
    s1, s2 = pool.scheduler(mc, rt), pool.scheduler(mc, rt, shift=2.0)
    assert s1 is not s2 and s2.config.shift == 2.0 and pool.loads["scheduler"] == 1
    assert pool.vae_scale_factor(mc, rt) == 8
    assert str(dit.dtype) == "torch.float32"  # dtype auto on CPU


def test_whole_generation_takes_seconds_on_cpu():
    import torch
    from diffusers import ZImagePipeline

    pipe = ZImagePipeline.from_pretrained(str(tiny.ensure_tiny(0)))
    pipe.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    out = pipe("a red fox", height=256, width=256, num_inference_steps=9, guidance_scale=0.0,
               generator=torch.Generator("cpu").manual_seed(0), output_type="np").images
    assert time.perf_counter() - t0 < 20  # ~0.2 s on an idle 2-core machine
    assert out.shape == (1, 256, 256, 3) and np.isfinite(out).all() and out.std() > 0.01
