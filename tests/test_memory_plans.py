"""Memory plans: estimates against the H100 measurements, the choice for given budgets, the
out-of-memory step-down, and placement moves (exercised on the CPU)."""

from __future__ import annotations

import pytest
import torch

from zitflow.config import ModelConfig, RuntimeConfig
from zitflow.models.memory import (GiB, PLANS, Plan, choose, fits, peak_bytes, step_down,
                                   vae_activation_bytes)
from zitflow.models.placement import must_leave, run_planned, target_state
from zitflow.models.pool import ModelPool
from zitflow.stage import RunContext


# Peak GiB with everything resident (full-size architecture, bf16, H100; bench/generate_bench.py
# measured 19.91 / 21.69 / 24.05 at 512 / 1024 / 1088x1920 with torch 2.11, docs/generation.md)
MEASURED = {(512, 512): 19.8, (1024, 1024): 21.6, (1280, 1280): 22.9, (1536, 1536): 24.6,
            (1088, 1920): 23.9, (2048, 2048): 28.7}


@pytest.mark.parametrize("size,gib", list(MEASURED.items()))
def test_resident_estimate_matches_the_h100_measurements(size, gib):
    assert peak_bytes("resident", *size) / GiB == pytest.approx(gib, rel=0.03)


def test_staged_at_1024_stays_under_14_gib():
    # one large model at a time: the DiT (11.46 GiB) with its activations is the peak, not the decode
    peak = peak_bytes("staged", 1024, 1024) / GiB
    assert peak <= 14.0 and peak == pytest.approx(12.3, abs=0.3)
    assert peak_bytes("resident", 1024, 1024) - peak_bytes("staged", 1024, 1024) > 9 * GiB


@pytest.mark.parametrize("size", [(512, 512), (1024, 1024), (1088, 1920), (2048, 2048)])
def test_smaller_plans_need_less(size):
    peaks = [peak_bytes(Plan(p), *size) for p in PLANS]
    assert peaks == sorted(peaks, reverse=True)
    assert peak_bytes(Plan("staged", True), *size) <= peak_bytes(Plan("staged"), *size)


@pytest.mark.parametrize("w,h,vram,plan", [
    (1024, 1024, 80, "resident"), (1088, 1920, 80, "resident"),
    (1024, 1024, 24, "resident"), (512, 512, 24, "resident"),
    (1024, 1024, 16, "staged"), (1088, 1920, 16, "staged"), (1920, 1088, 16, "staged"),
    (1024, 1024, 12, "group"), (1088, 1920, 12, "group"), (512, 512, 8, "group"),
    (2048, 2048, 3.5, "sequential"), (2048, 2048, 4, "group"), (1024, 1024, 1, None),
])
def test_fits_for_budgets(w, h, vram, plan):
    assert fits(w, h, vram) == plan


def test_large_sizes_tile_the_vae_before_stepping_down():
    assert choose(1088, 1920, 24 * GiB) == Plan("resident", vae_tiling=True)
    assert choose(1088, 1920, 16 * GiB) == Plan("staged")  # the DiT leaves for the decode: no tiles needed
    assert choose(1088, 1920, int(14.0 * GiB)) == Plan("model")  # staged needs 0.16 GiB more (the VAE)
    assert choose(1088, 1920, 12 * GiB, vae_tiling="off") == Plan("group")
    assert choose(512, 512, 80 * GiB, vae_tiling="on") == Plan("resident", vae_tiling=True)
    assert vae_activation_bytes(2048, 2048, tiling=True) < vae_activation_bytes(2048, 2048) / 4


def test_forced_plan_and_cfg():
    assert choose(1024, 1024, 80 * GiB, offload="group") == Plan("group")
    assert choose(1024, 1024, 1 * GiB, offload="resident") is None
    # CFG doubles the DiT batch: never cheaper
    assert peak_bytes("group", 2048, 2048, cfg=True) >= peak_bytes("group", 2048, 2048)


def test_free_memory_budget_has_no_context_reserve():
    budget = int(13.2 * GiB)
    assert choose(1024, 1024, budget, card_total=True) == Plan("group")
    assert choose(1024, 1024, budget, card_total=False) == Plan("staged")


def test_step_down_order():
    plan, seen = Plan("resident"), []
    while plan is not None:
        seen.append(str(plan))
        plan = step_down(plan, "transformer")
    assert seen == list(PLANS)
    assert step_down(Plan("staged"), "vae") == Plan("staged", vae_tiling=True)
    assert step_down(Plan("staged"), "vae", vae_tiling="off") == Plan("model")
    assert step_down(Plan("cpu"), "vae") is None


def test_staged_keeps_one_large_model_and_the_vae():
    staged = Plan("staged")
    assert must_leave(staged, "text_encoder", "transformer") and not must_leave(staged, "text_encoder", "vae")
    assert must_leave(staged, "transformer", "text_encoder") and must_leave(staged, "vae", "text_encoder")
    assert must_leave(staged, "vae", "transformer") and not must_leave(staged, "transformer", "vae")
    assert not must_leave(Plan("resident"), "transformer", "text_encoder")
    assert must_leave(Plan("model"), "vae", "transformer")
    assert target_state(Plan("group"), "transformer") == "group" and target_state(Plan("group"), "vae") == "gpu"


class FakePool:
    """Records what run_planned asks of a pool."""

    def __init__(self, plan):
        self.plan, self.calls = plan, []

    def settings(self, ctx):
        return ModelConfig(), RuntimeConfig(device="cuda", progress="off")

    def plan_for(self, config, runtime, width, height, cfg):
        self.calls.append(("plan_for", width, height, cfg))
        return self.plan, {"memory_budget_gb": 16 * GiB, "memory_estimate_gb": 14 * GiB}

    def prepare(self, config, runtime, component, plan):
        self.calls.append(("prepare", component, str(plan)))

    def evict_all(self):
        self.calls.append(("evict_all",))

    def lower_floor(self, config, runtime, plan):
        self.calls.append(("floor", str(plan)))


def test_out_of_memory_steps_down_once_and_is_recorded():
    pool, ctx, attempts = FakePool(Plan("resident")), RunContext(stage_name="denoise"), []

    def work(plan, device):
        attempts.append(str(plan))
        if len(attempts) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "latents"

    assert run_planned(ctx, pool, "transformer", work, width=1024, height=1024) == "latents"
    assert attempts == ["resident", "staged"]
    assert ctx.notes["oom_fallback"] == "resident -> staged" and ctx.notes["memory_plan"] == "staged"
    assert ctx.notes["memory_budget_gb"] == 16.0
    assert ("floor", "staged") in pool.calls and ("evict_all",) in pool.calls
    assert pool.calls[-1] == ("prepare", "transformer", "staged")


def test_second_out_of_memory_and_other_errors_propagate():
    ctx = RunContext(stage_name="decode")

    def always_oom(plan, device):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(MemoryError, match=r"under 'group' and then 'group\+vae_tiling'"):
        run_planned(ctx, FakePool(Plan("group")), "vae", always_oom)
    assert ctx.notes["oom_fallback"] == "group -> group+vae_tiling"
    with pytest.raises(MemoryError, match=r"stage 'decode' \(vae\) ran out of GPU memory under 'sequential\+vae_tiling'"):
        run_planned(RunContext(stage_name="decode"), FakePool(Plan("sequential", True)), "vae", always_oom)
    calls = []

    def broken(plan, device):
        calls.append(plan)
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError):
        run_planned(RunContext(), FakePool(Plan("resident")), "vae", broken)
    assert len(calls) == 1


def test_pool_plans_cpu_on_cpu_and_from_vram_gb_on_cuda():
    pool, mc = ModelPool(), ModelConfig()
    plan, facts = pool.plan_for(mc, RuntimeConfig(device="cpu"), 1024, 1024)
    assert plan == Plan("cpu") and facts == {}
    assert pool.plan_for(mc, RuntimeConfig(device="cpu", vae_tiling="on"), 64, 64)[0] == Plan("cpu", True)
    # tiny weights: resident fits any card; a forced plan is kept; nothing touches CUDA with vram_gb
    plan, facts = pool.plan_for(mc, RuntimeConfig(device="cuda", vram_gb=12), 1024, 1024)
    assert plan == Plan("resident") and facts["memory_budget_gb"] == 12 * GiB
    assert pool.plan_for(mc, RuntimeConfig(device="cuda", vram_gb=12, offload="group"), 512, 512)[0].name == "group"
    pool.lower_floor(mc, RuntimeConfig(device="cuda"), Plan("model"))
    assert pool.plan_for(mc, RuntimeConfig(device="cuda", vram_gb=80), 512, 512)[0] == Plan("model")
    sizes = pool.sizes(mc, RuntimeConfig(device="cuda"))
    assert 0 < sizes.transformer < 10 * 2**20 and sizes.transformer_unit < sizes.transformer
    assert sum(pool.loads.values()) == 0  # sizes come from safetensors headers


def test_plans_through_the_stages_keep_results_identical(monkeypatch):
    """The placement code on the CPU: each plan's moves and group-offload hooks (onload device =
    cpu) applied by the stages themselves, then removed again by the next plan."""
    from zitflow.models.placement import MODULES
    from zitflow.stages.decode import Decode, DecodeParams
    from zitflow.stages.denoise import Denoise, DenoiseParams
    from zitflow.stages.encode import Encode, EncodeParams

    pool, mc, rt = ModelPool(), ModelConfig(), RuntimeConfig(device="cpu", progress="off")
    ctx = RunContext(runtime=rt, models=pool, model_config=mc, stage_name="t")

    def generate():
        embeds = Encode().run(EncodeParams(prompt="hi"), {}, ctx)
        latents = Denoise().run(DenoiseParams(width=32, height=48, seed=1), {"embeds": embeds}, ctx)
        states.append(pool.state(mc, rt, "transformer"))
        return embeds, latents, Decode().run(DecodeParams(), {"latents": latents}, ctx)

    states: list = []
    base = generate()
    for plan in (Plan("group"), Plan("sequential"), Plan("staged"), Plan("model"), Plan("resident", True), Plan("cpu")):
        monkeypatch.setattr(pool, "plan_for", lambda *a, plan=plan, **k: (plan, {}))
        embeds, latents, image = generate()
        assert ctx.notes["memory_plan"] == str(plan)
        assert pool.state(mc, rt, "vae") == target_state(plan, "vae")
        assert states[-1] == target_state(plan, "transformer")  # where the DiT ran
        if plan.name == "model":
            assert pool.state(mc, rt, "transformer") == "cpu"  # the VAE's turn moved it off
        if plan.name in ("group", "sequential"):
            assert pool.state(mc, rt, "text_encoder") == plan.name  # hooks kept: nothing on the GPU
        assert torch.equal(embeds.tensors["prompt_embeds"], base[0].tensors["prompt_embeds"])
        assert torch.equal(latents.tensors["latents"], base[1].tensors["latents"])
        assert (image.pixels == base[2].pixels).all()
    assert {pool.state(mc, rt, c) for c in MODULES} == {"cpu"}
    assert all(n == 1 for n in pool.loads.values())
