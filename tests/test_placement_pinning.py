"""Pinned host copies for offloaded weights: moves keep the values, reuse one copy, and stay
out of the way on a CPU-only machine."""

from __future__ import annotations

import pytest
import torch

from zitflow.models import placement


def small():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.LayerNorm(16))


def test_cpu_only_moves_are_plain():
    m = small()
    placement.to_gpu(m, "cpu")
    placement.to_cpu(m)
    assert not any(hasattr(t, "_zitflow_pinned") for t in placement._tensors(m))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_round_trips_reuse_one_pinned_copy(monkeypatch):
    monkeypatch.setattr(placement, "PIN_MEMORY", True)
    m = small()
    ref = {k: v.clone() for k, v in m.state_dict().items()}
    placement.to_gpu(m, "cuda")
    assert all(t.device.type == "cuda" for t in placement._tensors(m))
    pinned = {id(t): t._zitflow_pinned.data_ptr() for t in placement._tensors(m)}
    placement.to_cpu(m)
    assert all(t.is_pinned() for t in placement._tensors(m))
    placement.to_gpu(m, "cuda")
    placement.to_cpu(m)
    assert {id(t): t.data_ptr() for t in placement._tensors(m)} == pinned  # no new host copies
    assert all(torch.equal(v, ref[k]) for k, v in m.state_dict().items())
    placement.unpin(m)
    assert not any(t.is_pinned() for t in placement._tensors(m))
