"""model=random_full: the full-size architecture with seeded random weights, built in memory.
Checked without building the 10B parameters on the CPU: identity and plans need no weights, the
large modules are counted on the meta device, the VAE is built for real."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from zitflow.app import CONFIG_DIR
from zitflow.config import ModelConfig, RuntimeConfig
from zitflow.executor import plan
from zitflow.job import make_job
from zitflow.models import random_full
from zitflow.models.memory import ZIMAGE_TURBO
from zitflow.models.pool import ModelPool

CPU = RuntimeConfig(device="cpu", progress="off")


def random_model(seed: int = 0) -> ModelConfig:
    return ModelConfig(name="random-full", source="random", seed=seed)


def test_identity_is_architecture_and_seed_and_needs_no_weights():
    pool = ModelPool()
    a, b = pool.resolve(random_model(0)), pool.resolve(random_model(1))
    assert a.source == "random" and a.path is None and a.fingerprint != b.fingerprint
    assert ModelPool().resolve(random_model(0)).fingerprint == a.fingerprint  # every process agrees
    assert pool.vae_scale_factor(random_model(), CPU) == 8
    sizes = pool.sizes(random_model(), CPU)
    assert sizes.transformer == ZIMAGE_TURBO.transformer * 2  # fp32 on the CPU: 4 bytes a parameter
    assert not pool.loads  # nothing built for any of that


def test_full_size_modules_have_the_real_parameter_counts():
    dit = random_full.build("transformer", "bfloat16", "meta", 0)
    te = random_full.build("text_encoder", "bfloat16", "meta", 0)
    assert sum(p.numel() for p in dit.parameters()) == ZIMAGE_TURBO.transformer // 2 == 6_154_908_736
    assert sum(p.numel() for p in te.parameters()) == ZIMAGE_TURBO.text_encoder // 2 == 4_022_468_096
    assert not dit.training and not any(p.requires_grad for p in dit.parameters())


def test_the_vae_is_seeded_and_built_by_the_pool():
    pool = ModelPool()
    vae = pool.vae(random_model(0), CPU)
    assert sum(p.numel() for p in vae.parameters()) == ZIMAGE_TURBO.vae // 2 == 83_819_683
    again = random_full.build("vae", "float32", "cpu", 0)
    other = random_full.build("vae", "float32", "cpu", 1)
    same = [torch.equal(x, y) for x, y in zip(vae.state_dict().values(), again.state_dict().values())]
    differ = [torch.equal(x, y) for x, y in zip(vae.state_dict().values(), other.state_dict().values())]
    assert all(same) and not all(differ)
    assert pool.loads["vae"] == 1 and pool.vae(random_model(0), CPU) is vae


def test_model_group_composes_and_plans_a_recipe_without_building(tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["recipe=poster", "model=random_full", "runtime=cpu",
                                                       "prompt=a kite", f"cache.dir={tmp_path}"])
    assert cfg.model.source == "random"
    job = make_job(cfg, "poster")
    before = dict(job.ctx.models.loads)  # the process-wide pool: other tests may have loaded models
    planned = plan(job.graph, job.store, job.ctx)
    assert planned["denoise"].identity["model"] == random_full.fingerprint(0)
    assert dict(job.ctx.models.loads) == before


def test_unknown_component_is_refused():
    with pytest.raises(ValueError, match="no component 'unet'"):
        random_full.build("unet", "float32", "cpu", 0)
