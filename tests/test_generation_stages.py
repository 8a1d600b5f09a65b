"""encode -> denoise -> decode as cached stages on the tiny model: same pixels as ZImagePipeline,
deterministic across processes, and the cache skips (and never loads) what it need not run."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from tests.conftest import REPO
from zitflow.artifacts import Data
from zitflow.cache.store import CacheStore
from zitflow.config import ModelConfig, RuntimeConfig
from zitflow.executor import Executor
from zitflow.models.pool import ModelPool
from zitflow.params import param
from zitflow.recipe import RecipeError, build_graph
from zitflow.registry import kinds, register
from zitflow.stage import RunContext, Stage


@dataclass
class GenSizeParams:
    width: int = param(64, ge=1, le=4096)
    height: int = param(64, ge=1, le=4096)


@register
class TestGenSize(Stage):
    """A stand-in for the resolution stage: Data with gen_width / gen_height as given."""

    kind = "t_gen_size"
    Params = GenSizeParams
    output = Data

    def run(self, params, inputs, ctx):
        return Data({"gen_width": params.width, "gen_height": params.height})


def chain(prompt="a red fox in snow", seed=3, width=96, height=64, negative="", guidance=0.0, **extra):
    stages = {
        "size": {"kind": "t_gen_size", "width": width, "height": height},
        "encode": {"kind": "encode", "prompt": prompt, "negative_prompt": negative},
        "denoise": {"kind": "denoise", "inputs": {"embeds": "encode", "size": "size"}, "seed": seed,
                    "guidance_scale": guidance},
        "decode": {"kind": "decode", "input": "denoise"},
    }
    for name, values in extra.items():
        stages[name] = values
    return stages


def run(stages, store, pool=None):
    pool = pool if pool is not None else ModelPool()
    ctx = RunContext(runtime=RuntimeConfig(device="cpu", progress="off"), models=pool, model_config=ModelConfig())
    return Executor(build_graph("gen", stages), store, ctx).execute()


def statuses(manifest):
    return {r.name: r.status for r in manifest.stages}


@pytest.fixture(scope="module")
def pipe():
    from diffusers import ZImagePipeline

    from zitflow.models.tiny import ensure_tiny

    p = ZImagePipeline.from_pretrained(str(ensure_tiny(0)))
    p.set_progress_bar_config(disable=True)
    return p


def pipeline_pixels(pipe, prompt, seed, width, height, negative=None, guidance=0.0):
    import torch

    image = pipe(prompt, negative_prompt=negative, height=height, width=width, num_inference_steps=9,
                 guidance_scale=guidance, generator=torch.Generator("cpu").manual_seed(seed)).images[0]
    return np.asarray(image)


def test_split_stages_equal_the_pipeline(tmp_path, pipe):
    m = run(chain(prompt="水墨竹林，晨雾", seed=7, width=96, height=64), CacheStore(tmp_path))
    ours = m.outputs["decode"].pixels
    assert ours.shape == (64, 96, 3) and ours.dtype == np.uint8
    assert np.array_equal(ours, pipeline_pixels(pipe, "水墨竹林，晨雾", 7, 96, 64))


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif("not __import__('torch').cuda.is_available()",
                                                                      reason="needs CUDA")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_pixels_round_on_the_device_as_the_pipeline_rounds_on_the_cpu(dtype, device):
    """decode's to_pixels against VaeImageProcessor's numpy path (as ZImagePipeline's output_type="pil")."""
    import torch
    from diffusers.image_processor import VaeImageProcessor

    from zitflow.stages.decode import to_pixels

    g = torch.Generator().manual_seed(0)
    image = (torch.rand(1, 3, 64, 80, generator=g) * 2.4 - 1.2).to(getattr(torch, dtype))  # some out of [-1, 1]
    k = torch.arange(256, dtype=torch.float32)
    image[0, 0, 0, :80] = ((k[:80] + 0.5) / 255 * 2 - 1).to(image.dtype)  # near the .5 rounding boundaries
    processor = VaeImageProcessor(vae_scale_factor=16)
    ref = np.asarray(processor.numpy_to_pil(processor.postprocess(image, output_type="np"))[0].convert("RGB"))
    ours = to_pixels(image.to(device), processor)
    assert ours.dtype == np.uint8 and ours.shape == (64, 80, 3) and ours.flags["C_CONTIGUOUS"]
    assert np.array_equal(ours, ref) and len(np.unique(ours)) > 200


def test_negative_prompt_and_guidance_equal_the_pipeline(tmp_path, pipe):
    store = CacheStore(tmp_path)
    m = run(chain(seed=5, negative="blurry, low quality", guidance=2.5), store)
    ref = pipeline_pixels(pipe, "a red fox in snow", 5, 96, 64, negative="blurry, low quality", guidance=2.5)
    assert np.array_equal(m.outputs["decode"].pixels, ref)
    unguided = run(chain(seed=5, negative="blurry, low quality", guidance=0.0), store)
    assert statuses(unguided)["encode"] == "hit"  # the scale lives in denoise: no re-encode
    assert not np.array_equal(unguided.outputs["decode"].pixels, ref)


def test_artifacts_on_the_cpu_path(tmp_path):
    store = CacheStore(tmp_path)
    m = run(chain(width=64, height=48), store)
    for r in m.stages[1:]:
        assert r.notes.get("memory_plan") == "cpu", r
    embeds = store.load(m.stages[1].key)
    assert embeds.tensors["prompt_embeds"].ndim == 2 and embeds.tensors["prompt_embeds"].shape[1] == 32
    assert "negative_prompt_embeds" in embeds.tensors and str(embeds.tensors["prompt_embeds"].dtype) == "torch.float32"
    latents = store.load(m.stages[2].key).tensors["latents"]
    assert tuple(latents.shape) == (16, 6, 8) and str(latents.dtype) == "torch.float32"


def test_prompt_change_reruns_all_seed_change_reuses_embeddings(tmp_path):
    store = CacheStore(tmp_path)
    first = run(chain(), store)
    assert set(statuses(first).values()) == {"run"}
    again = run(chain(), store)
    assert statuses(again) == {"size": "hit", "encode": "hit", "denoise": "hit", "decode": "hit"}
    new_prompt = run(chain(prompt="a blue whale"), store)
    assert statuses(new_prompt) == {"size": "hit", "encode": "run", "denoise": "run", "decode": "run"}
    new_seed = run(chain(seed=4), store)
    assert statuses(new_seed) == {"size": "hit", "encode": "hit", "denoise": "run", "decode": "run"}
    assert not np.array_equal(new_seed.outputs["decode"].pixels, first.outputs["decode"].pixels)
    assert not np.array_equal(new_prompt.outputs["decode"].pixels, first.outputs["decode"].pixels)


def test_cached_embeddings_never_load_the_text_encoder(tmp_path):
    store = CacheStore(tmp_path)
    run(chain(), store)
    fresh = ModelPool()  # as a new process would have
    m = run(chain(seed=11), store, fresh)
    assert statuses(m)["encode"] == "hit"
    assert fresh.loads["text_encoder"] == 0 and fresh.loads["tokenizer"] == 0
    assert fresh.loads["transformer"] == 1 and fresh.loads["vae"] == 1


def test_post_only_rerun_loads_no_model(tmp_path):
    store = CacheStore(tmp_path)
    post = {"sharpen": {"kind": "sharpen", "input": "decode", "amount": 0.5}}
    run(chain(**post), store)
    fresh = ModelPool()
    m = run(chain(sharpen={"kind": "sharpen", "input": "decode", "amount": 1.5}), store, fresh)
    assert statuses(m)["sharpen"] == "run"
    assert statuses(m)["decode"] == "hit" and sum(fresh.loads.values()) == 0


def test_multirun_jobs_share_one_pool(tmp_path):
    store, pool = CacheStore(tmp_path), ModelPool()
    for seed in (1, 2, 3):
        run(chain(seed=seed, prompt=f"prompt {seed}"), store, pool)
    assert all(n == 1 for n in pool.loads.values()), pool.loads


DETERMINISM = """
import hashlib, json, sys
from zitflow.cache.store import CacheStore
from zitflow.config import ModelConfig, RuntimeConfig
from zitflow.executor import Executor
from zitflow.recipe import build_graph
from zitflow.stage import RunContext
stages = json.loads(sys.argv[2])
ctx = RunContext(runtime=RuntimeConfig(device="cpu", progress="off"), model_config=ModelConfig())
m = Executor(build_graph("gen", stages), CacheStore(sys.argv[1]), ctx).execute()
store = CacheStore(sys.argv[1])
lat = store.load(m.stages[1].key).tensors["latents"].numpy().tobytes()
print(json.dumps({"image": hashlib.sha256(m.outputs["decode"].pixels.tobytes()).hexdigest(),
                  "latents": hashlib.sha256(lat).hexdigest(),
                  "keys": [r.key for r in m.stages]}))
"""


def test_deterministic_across_processes(tmp_path):
    stages = {k: v for k, v in chain(seed=9, negative="grey", guidance=1.5).items() if k != "size"}
    stages["denoise"] = dict(stages["denoise"], inputs={"embeds": "encode"}, width=64, height=80)
    results = []
    for i in range(2):
        p = subprocess.run([sys.executable, "-c", DETERMINISM, str(tmp_path / f"store{i}"), json.dumps(stages)],
                           cwd=REPO, capture_output=True, text=True, timeout=300, env=dict(os.environ))
        assert p.returncode == 0, p.stderr
        results.append(json.loads(p.stdout.strip().splitlines()[-1]))
    assert results[0] == results[1]
    here = run(stages, CacheStore(tmp_path / "here"))
    assert hashlib.sha256(here.outputs["decode"].pixels.tobytes()).hexdigest() == results[0]["image"]
    assert [r.key for r in here.stages] == results[0]["keys"]


def test_bad_size_names_the_field(tmp_path):
    stages = chain()
    del stages["size"]
    stages["denoise"] = dict(stages["denoise"], inputs={"embeds": "encode"}, width=100, height=64)
    with pytest.raises(RecipeError, match=r"stage 'denoise', field 'width'.*multiple of 16.*96 or 112"):
        build_graph("gen", stages)
    stages["denoise"] = dict(stages["denoise"], width=96, height=None)
    with pytest.raises(RecipeError, match=r"field 'height'"):
        build_graph("gen", stages)
    with pytest.raises(ValueError, match=r"input 'size', field 'gen_height'.*got 50 from the 'size' input"):
        run(chain(height=50), CacheStore(tmp_path))


def test_missing_size_and_missing_negative_are_clear(tmp_path):
    stages = chain()
    del stages["size"]
    stages["denoise"] = dict(stages["denoise"], inputs={"embeds": "encode"})
    with pytest.raises(ValueError, match=r"stage 'denoise': no size; connect a resolution stage"):
        run(stages, CacheStore(tmp_path))
    stages = chain(guidance=3.0)
    stages["encode"]["with_negative"] = False
    with pytest.raises(ValueError, match=r"field 'guidance_scale'.*with_negative=false"):
        run(stages, CacheStore(tmp_path))


def test_schedule_parameters_change_the_result(tmp_path):
    store = CacheStore(tmp_path)
    base = run(chain(), store).outputs["decode"].pixels
    shifted = chain()
    shifted["denoise"]["shift"] = 1.0
    custom = chain()
    custom["denoise"]["sigmas"] = [1.0, 0.5, 0.25]
    assert not np.array_equal(run(shifted, store).outputs["decode"].pixels, base)
    assert not np.array_equal(run(custom, store).outputs["decode"].pixels, base)
    bad = chain()
    bad["denoise"]["sigmas"] = [0.5, 0.9]
    with pytest.raises(RecipeError, match=r"field 'sigmas'.*decreasing"):
        build_graph("gen", bad)


@pytest.mark.skipif("resolution" not in kinds(), reason="the resolution stage is not in this tree")
def test_with_the_resolution_stage(tmp_path):
    stages = chain()
    stages["size"] = {"kind": "resolution", "width": 100, "height": 60, "strategy": "exact", "grid": 16}
    m = run(stages, CacheStore(tmp_path))
    assert m.outputs["decode"].pixels.shape == (64, 112, 3)
