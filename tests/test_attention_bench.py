"""bench/attention_bench.py as a CPU smoke run (``--tiny``): both sections run and the JSON holds
them; the kernel classifier sorts the GPU kernel names it will meet. Times come from the GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from attention_bench import kernel_class, tokens  # noqa: E402


@pytest.mark.parametrize("name,cls", [
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>>", "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3", "attention"),
    ("fmha_cutlassF_bf16_aligned_64x128_rf_sm80", "attention"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64_warpgroupsize2x1x1", "matmul"),
    ("nvjet_tst_192x192_64x3_2x1_v_bz_coopB_TNT", "matmul"),
    ("triton_poi_fused_add_mul_0", "other"),
    ("aten::mm", "matmul"),
])
def test_kernel_names_are_classed(name, cls):
    assert kernel_class(name) == cls


def test_image_tokens():
    assert tokens(1024, 1024) == 4096 and tokens(1920, 1088) == 120 * 68


@pytest.mark.slow
def test_smoke_run_writes_both_sections(tmp_path):
    out = tmp_path / "att.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "attention_bench.py"), "--tiny", "--sizes", "64x64",
                           "--repeats", "2", "--dit", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    (sdpa,) = data["sdpa"]
    assert sdpa["seq"] == 16 + 32 and sdpa["flash"]["ms"] > 0  # the CPU has a flash kernel, not the others
    assert "error" in sdpa["cudnn"]
    (dit,) = data["dit"]
    shares = dit["attention_share"] + dit["matmul_share"] + dit["other_share"]
    assert abs(shares - 1) < 0.01 and dit["matmul_ms"] > 0 and dit["attention_ms"] > 0 and dit["longest"]
    assert "| 64x64 | 48 |" in proc.stdout
