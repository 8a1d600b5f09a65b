"""GPU out-of-memory, injected on the CPU: a stage steps down to the next memory plan and the run
records it; when the smaller plan runs out too, the run fails with one message naming the
stage, the size, the plans tried, the budget and the sizes that would fit.

The GPU case this mirrors (measured on an H100 with a 16 GiB emulated budget at 1024x1024):
decode ran out of memory under 'staged' and succeeded under 'staged+vae_tiling'.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from zitflow.artifacts import Image
from zitflow.config import ModelConfig, RuntimeConfig
from zitflow.executor import Executor
from zitflow.models.memory import GiB, Plan, ZIMAGE_TURBO, peak_bytes, smaller_sizes
from zitflow.models.placement import StageOutOfMemory, run_planned
from zitflow.params import param
from zitflow.recipe import build_graph
from zitflow.registry import register
from zitflow.stage import RunContext, Stage


class GpuPool:
    """A pool that plans like a 16 GiB card (the full-size model's estimates) and moves nothing."""

    def __init__(self, plan=Plan("staged")):
        self.plan, self.prepared = plan, []

    def settings(self, ctx):
        return ModelConfig(), RuntimeConfig(device="cuda", vram_gb=16, progress="off")

    def sizes(self, config, runtime):
        return ZIMAGE_TURBO

    def plan_for(self, config, runtime, width, height, cfg):
        return self.plan, {"memory_budget_gb": 16 * GiB,
                           "memory_estimate_gb": peak_bytes(self.plan, width or 1024, height or 1024)}

    def prepare(self, config, runtime, component, plan):
        self.prepared.append(str(plan))

    def evict_all(self):
        pass

    def lower_floor(self, config, runtime, plan):
        pass


@dataclass
class DecodeLikeParams:
    size: int = param(1024, ge=16)


@register
class OomDecode(Stage):
    """A decode-shaped stage: runs under run_planned for the VAE and fails under the plans in
    ``ctx.runtime`` (here a dict: ``{"oom_under": [...]}``) with torch's OutOfMemoryError."""

    kind = "t_oom_decode"
    Params = DecodeLikeParams
    inputs = {"image": Image}
    output = Image

    def run(self, params, inputs, ctx):
        fail = ctx.job["oom_under"]

        def work(plan, device):
            if str(plan) in fail:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB. GPU 0 has a total "
                                             "capacity of 79.19 GiB of which 2.10 GiB is free.")
            return inputs["image"].pixels + 1

        return Image(run_planned(ctx, ctx.models, "vae", work, width=params.size, height=params.size))


def graph():
    return build_graph("oom", {"src": {"kind": "t_source", "value": 3},
                               "decode": {"kind": "t_oom_decode", "input": "src", "size": 1024}})


def test_decode_out_of_memory_steps_down_to_vae_tiling_and_the_manifest_says_so(store):
    pool = GpuPool()
    ctx = RunContext(models=pool, job={"oom_under": ["staged"]})
    m = Executor(graph(), store, ctx).execute()
    decode = next(r for r in m.stages if r.name == "decode")
    assert decode.status == "run" and m.outputs["decode"].pixels[0, 0, 0] == 4
    assert decode.notes["oom_fallback"] == "staged -> staged+vae_tiling"
    assert decode.notes["memory_plan"] == "staged+vae_tiling"
    assert pool.prepared == ["staged", "staged+vae_tiling"]
    assert store.record(decode.key)["notes"]["oom_fallback"] == "staged -> staged+vae_tiling"


def test_out_of_memory_under_every_plan_names_what_would_fit(store, caplog):
    ctx = RunContext(models=GpuPool(), job={"oom_under": ["staged", "staged+vae_tiling"]})
    ex = Executor(graph(), store, ctx)
    with pytest.raises(StageOutOfMemory) as e:
        ex.execute()
    msg = str(e.value)
    assert msg.startswith("stage 'decode' (vae) ran out of GPU memory at 1024x1024 under 'staged' and then "
                          "'staged+vae_tiling' (budget 16.0 GiB): CUDA out of memory. Tried to allocate 9.00 GiB")
    assert "Sizes that would fit under 'staged+vae_tiling': 896x896, 768x768, 640x640" in msg
    assert "runtime.offload=model" in msg and "runtime.device=cpu" in msg
    assert isinstance(e.value, MemoryError) and isinstance(e.value.__cause__, torch.OutOfMemoryError)
    assert "retrying once under 'staged+vae_tiling'" in caplog.text
    assert store.contains(ex.planned["src"].key) and not store.contains(ex.planned["decode"].key)


def test_the_sizes_named_are_smaller_and_estimated_to_fit():
    plan = Plan("staged", True)
    failed = peak_bytes(plan, 1088, 1920)
    got = smaller_sizes(1088, 1920, 16 * GiB, plan=plan, below=failed)
    assert got and all(w * h < 1088 * 1920 and w % 64 == 0 and h % 64 == 0 for w, h in got)
    assert all(peak_bytes(plan, w, h) < failed for w, h in got)
    assert all(abs(w / h - 1088 / 1920) < 0.05 for w, h in got)  # same shape
    assert smaller_sizes(1024, 1024, 1 * GiB, plan=Plan("staged")) == []  # nothing fits: none named


def test_no_smaller_plan_fails_at_once_with_the_message():
    ctx = RunContext(stage_name="denoise")

    def oom(plan, device):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(StageOutOfMemory, match=r"stage 'denoise' \(transformer\) ran out of GPU memory at "
                                               r"2048x2048 under 'sequential'"):
        run_planned(ctx, GpuPool(Plan("sequential")), "transformer", oom, width=2048, height=2048)
    assert "oom_fallback" not in ctx.notes


DRIVER = textwrap.dedent("""
    import sys, torch
    import zitflow.models.pool as pool_mod
    from zitflow.models.memory import GiB, Plan, ZIMAGE_TURBO

    fails = sys.argv[1].split(",")

    def plan_for(self, config, runtime, width, height, cfg=False):
        return Plan("staged"), {"memory_budget_gb": 16 * GiB, "memory_estimate_gb": 1}

    pool_mod.ModelPool.plan_for = plan_for
    pool_mod.ModelPool.sizes = lambda self, config, runtime: ZIMAGE_TURBO  # a card's sizes, not the tiny ones
    pool_mod.ModelPool.prepare = lambda self, *a, **k: None
    real_load = pool_mod.load_component

    def load_component(folder, component, dtype_name):
        module = real_load(folder, component, dtype_name)
        if component == "vae":
            real_decode = module.decode
            def decode(*a, **k):
                if ("staged+vae_tiling" if module.use_tiling else "staged") in fails:
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
                return real_decode(*a, **k)
            module.decode = decode
        return module

    pool_mod.load_component = load_component
    sys.argv = ["zitflow", *sys.argv[2:]]
    from zitflow.app import main
    main()
""")


@pytest.mark.parametrize("fails", ["staged", "staged,staged+vae_tiling"])
def test_command_line_run_falls_back_or_fails_with_one_message(tmp_path, fails):
    env = dict(os.environ, ZITFLOW_CACHE_DIR=str(tmp_path / "cache"), HYDRA_FULL_ERROR="0")
    p = subprocess.run([sys.executable, "-c", DRIVER, fails, "recipe=poster", "model=tiny", "runtime=cpu",
                        "prompt=oom", "stages.size.width=512", "stages.size.height=512",
                        f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, env=env, capture_output=True, text=True)
    if fails == "staged":
        assert p.returncode == 0, p.stderr
        m = json.loads((tmp_path / "run" / "manifest.json").read_text())
        decode = next(s for s in m["stages"] if s["name"] == "decode")
        assert decode["notes"]["oom_fallback"] == "staged -> staged+vae_tiling"
        assert decode["notes"]["memory_plan"] == "staged+vae_tiling"
    else:
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        line = [ln for ln in p.stderr.splitlines() if ln.startswith("zitflow: ")]
        assert len(line) == 1, p.stderr
        assert line[0].startswith("zitflow: stage 'decode' (vae) ran out of GPU memory at 512x512 under 'staged' "
                                  "and then 'staged+vae_tiling' (budget 16.0 GiB)")
        assert "Sizes that would fit under 'staged+vae_tiling': 448x448, 384x384, 320x320" in line[0]
