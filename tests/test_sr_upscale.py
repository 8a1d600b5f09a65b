"""Super-resolution functions with the real weights on CPU: sizes, tiling, alpha, parity, quality.

Small crops of skimage's photos keep this fast on 2 cores; realesrgan-x4plus only runs on
crops of at most 96x96.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from zitflow.sr import models
from zitflow.sr.ncnn_backend import NcnnModel
from zitflow.sr.upscale import (apply_plan, auto_tile, plan_size, tile_boxes, tiled_apply, torch_tile_fn,
                                upscale_pixels)

COMPACT, ANIME, X4PLUS = "realesr-animevideov3", "realesrgan-x4plus-anime", "realesrgan-x4plus"


@pytest.fixture(autouse=True)
def sr_weights_dir(tmp_path_factory, monkeypatch):
    path = tmp_path_factory.getbasetemp() / "sr-weights"
    monkeypatch.setenv("ZITFLOW_SR_WEIGHTS_DIR", str(path))
    return path


def tile_fn(name: str):
    return torch_tile_fn(models.load(models.resolve(name)))


def crop(h=64, w=64, y=100, x=180) -> np.ndarray:
    """A (h, w, 3) uint8 crop of skimage's astronaut (the face region by default)."""
    return np.ascontiguousarray(data.astronaut()[y:y + h, x:x + w])


# -- sizes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("w, h, scale, size, resized", [
    (64, 48, 4.0, (256, 192), False),
    (64, 48, 2.0, (128, 96), True),
    (64, 48, 3.0, (192, 144), True),
    (33, 17, 2.5, (83, 43), True),  # 82.5 and 42.5 round half up
    (64, 48, 1.0, (64, 48), True),
    (64, 48, 6.0, (384, 288), True),
])
def test_plan_size_scale(w, h, scale, size, resized):
    plan = plan_size(w, h, 4, scale=scale)
    assert plan.size == size and (plan.resize is not None) == resized and plan.crop is None


def test_plan_size_target_covers_and_crops():
    p = plan_size(64, 48, 4, target=(200, 100))  # wider than 4:3: cover by width, crop height
    assert p.size == (200, 100) and p.resize == (200, 150) and p.crop == (0, 25, 200, 100)
    p = plan_size(64, 48, 4, target=(100, 0))  # width only: aspect kept
    assert p.size == (100, 75) and p.crop is None
    p = plan_size(64, 48, 4, target=(0, 192))  # exactly the network's x4
    assert p.size == (256, 192) and p.resize is None and p.crop is None
    with pytest.raises(ValueError, match="field 'scale'"):
        plan_size(64, 48, 4, scale=0.5)


def test_tile_boxes_cover_everything_once():
    boxes = tile_boxes(100, 70, 32)
    cover = np.zeros((70, 100), int)
    for x0, y0, x1, y1 in boxes:
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all() and len(boxes) == 4 * 3


@pytest.mark.parametrize("scale", [2.0, 3.0, 4.0])
def test_exact_output_sizes_with_real_model(scale):
    img = crop(40, 52)
    out = upscale_pixels(img, tile_fn(COMPACT), 4, scale=scale)
    assert out.shape == (round(40 * scale), round(52 * scale), 3) and out.dtype == np.uint8


def test_exact_target_size_and_float_input():
    img = crop(40, 52).astype(np.float32) / 255
    out = upscale_pixels(img, tile_fn(COMPACT), 4, target=(150, 90))
    assert out.shape == (90, 150, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


# -- tiling -------------------------------------------------------------------------------------

def _levels(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max() * 255)


def test_tiled_equals_untiled_compact():
    rgb = crop(96, 96).astype(np.float32) / 255
    fn = tile_fn(COMPACT)
    full = tiled_apply(fn, rgb, 4, None)
    pad = models.resolve(COMPACT).seamless_pad
    tiled = tiled_apply(fn, rgb, 4, 32, pad)
    assert _levels(tiled, full) <= 1.0
    # the test can fail: without overlap the seams show
    assert _levels(tiled_apply(fn, rgb, 4, 32, 0), full) > 5.0


@pytest.mark.slow
def test_tiled_equals_untiled_rrdb():
    rgb = crop(192, 192, 0, 140).astype(np.float32) / 255
    fn = tile_fn(ANIME)
    full = tiled_apply(fn, rgb, 4, None)
    pad = models.resolve(ANIME).seamless_pad
    assert 64 + pad < 192  # the corner tiles see only part of the picture
    tiled = tiled_apply(fn, rgb, 4, 64, pad)
    assert _levels(tiled, full) <= 1.0


def test_auto_tile():
    assert auto_tile(64, 64, "cpu", "ESRGAN", 4, free_bytes=8 << 30) is None  # fits: untiled
    t = auto_tile(2048, 2048, "cpu", "ESRGAN", 4, free_bytes=8 << 30)
    assert t is not None and 64 <= t <= 768 and t % 32 == 0
    padded = auto_tile(2048, 2048, "cpu", "ESRGAN", 4, free_bytes=8 << 30, tile_pad=80)
    assert padded is not None and padded < t
    small = auto_tile(2048, 2048, "cuda", "ESRGAN", 2, free_bytes=1 << 30)
    big = auto_tile(2048, 2048, "cuda", "ESRGAN", 2, free_bytes=16 << 30)
    assert small is not None and (big is None or big > small)
    assert auto_tile(1024, 1024, "cuda", "ESRGAN", 2, free_bytes=40 << 30) is None


# -- alpha --------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["lanczos", "model"])
def test_alpha_is_kept(mode):
    rgb = crop(48, 48)
    yy, xx = np.mgrid[:48, :48]
    alpha = np.where((yy - 24) ** 2 + (xx - 24) ** 2 < 15 ** 2, 255, 0).astype(np.uint8)
    out = upscale_pixels(np.dstack([rgb, alpha]), tile_fn(COMPACT), 4, scale=2.0, alpha=mode)
    assert out.shape == (96, 96, 4)
    a = out[..., 3].astype(int)
    assert a[48, 48] >= 250 and a[2, 2] <= 5 and a[93, 93] <= 5  # inside opaque, corners clear
    ref = np.asarray(PILImage.fromarray(alpha).resize((96, 96), PILImage.LANCZOS)).astype(int)
    assert np.abs(a - ref).mean() < 8
    # RGB is the same as for the RGB-only picture
    rgb_only = upscale_pixels(rgb, tile_fn(COMPACT), 4, scale=2.0)
    assert np.array_equal(out[..., :3], rgb_only)


# -- torch vs ncnn --------------------------------------------------------------------------------

@pytest.mark.parametrize("name, size", [(COMPACT, 64), (ANIME, 48), (X4PLUS, 40)])
def test_torch_matches_ncnn(name, size, record_property):
    rgb = crop(size, size).astype(np.float32) / 255
    t = tile_fn(name)(rgb)
    n = NcnnModel.shipped(name, vulkan=False, precision="fp32")(rgb)
    diff = float(np.abs(t - n).max())
    record_property("max_abs_diff", diff)
    print(f"\n{name}: torch vs ncnn max abs diff {diff:.2e} ({diff * 255:.4f} 8-bit levels)")
    assert t.shape == n.shape == (size * 4, size * 4, 3)
    assert diff <= 1 / 255
    q = lambda x: np.rint(x * 255).astype(int)  # noqa: E731
    assert np.abs(q(t) - q(n)).max() <= 1


# -- quality ------------------------------------------------------------------------------------

def lap_var(x: np.ndarray) -> float:
    """No-reference sharpness: variance of the Laplacian of the grey image."""
    g = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cv2.Laplacian(g, cv2.CV_64F).var())


def grad_energy(x: np.ndarray) -> float:
    """Mean squared Sobel gradient magnitude of the grey image."""
    g = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(np.mean(cv2.Sobel(g, cv2.CV_64F, 1, 0) ** 2 + cv2.Sobel(g, cv2.CV_64F, 0, 1) ** 2))


def test_quality_on_a_real_photo():
    hr = np.ascontiguousarray(data.astronaut()[0:384, 64:448])
    lr = np.asarray(PILImage.fromarray(hr).resize((96, 96), PILImage.BICUBIC))
    up = {"bicubic": np.asarray(PILImage.fromarray(lr).resize((384, 384), PILImage.BICUBIC)),
          "lanczos": np.asarray(PILImage.fromarray(lr).resize((384, 384), PILImage.LANCZOS))}
    for name in (COMPACT, X4PLUS):
        up[name] = upscale_pixels(lr, tile_fn(name), 4, scale=4.0)
    rows = {k: (peak_signal_noise_ratio(hr, v, data_range=255),
                structural_similarity(hr, v, channel_axis=2, data_range=255), lap_var(v), grad_energy(v))
            for k, v in up.items()}
    print(f"\nastronaut 384x384, 4x down (bicubic) then up; HR: lapvar {lap_var(hr):.0f} grad {grad_energy(hr):.0f}")
    for k, (p, s, lv, ge) in rows.items():
        print(f"  {k:24s} PSNR {p:6.2f} dB  SSIM {s:.4f}  lapvar {lv:8.1f}  grad {ge:8.1f}")
    lz = rows["lanczos"]
    assert lz[0] >= rows["bicubic"][0] - 0.5  # the baselines are sane
    for name in (COMPACT, X4PLUS):
        p, s, lv, ge = rows[name]
        assert lv > 3 * lz[2]  # clearly sharper than Lanczos
        assert abs(np.log(ge / grad_energy(hr))) < abs(np.log(lz[3] / grad_energy(hr)))  # closer to HR detail
        assert p > lz[0] - 4.0 and p > 20.0  # a GAN loses some PSNR, but not the picture
        assert s > lz[1] - 0.1
    # the real x4plus weights restore detail close to the true image's (random weights would not)
    assert 0.5 < rows[X4PLUS][2] / lap_var(hr) < 2.0


def test_apply_plan_clips():
    x = np.full((8, 8, 3), 1.0, np.float32)
    x[4, 4] = 0.0  # ringing source
    out = apply_plan(x, plan_size(2, 2, 4, scale=3.0))
    assert out.shape == (6, 6, 3) and out.min() >= 0 and out.max() <= 1


def test_tile_function_runs_channels_last_fp32():
    desc = models.load(models.resolve(COMPACT))
    p = next(desc.model.parameters())
    assert p.dtype == torch.float32 and p.device.type == "cpu"
    assert any(q.dim() == 4 and q.is_contiguous(memory_format=torch.channels_last) for q in desc.model.parameters())


# -- CUDA (skipped without a GPU) -----------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", [COMPACT, X4PLUS])
def test_cuda_precisions_match_cpu(name):
    rgb = crop(64, 64).astype(np.float32) / 255
    ref = models.resolve(name)
    cpu = torch_tile_fn(models.load(ref))(rgb)
    fp32 = torch_tile_fn(models.load(ref, "cuda", torch.float32), "cuda", torch.float32)(rgb)
    assert _levels(fp32, cpu) <= 1.0  # TF32 is off for fp32
    for dtype in (torch.float16, torch.bfloat16):
        out = torch_tile_fn(models.load(ref, "cuda", dtype), "cuda", dtype)(rgb)
        d = np.abs(out - cpu) * 255
        print(f"\n{name} {dtype}: max {d.max():.2f} mean {d.mean():.3f} levels vs CPU fp32")
        assert d.mean() < 1.0 and d.max() < 16
    assert auto_tile(4096, 4096, "cuda", "ESRGAN", 2) is not None


@pytest.mark.parametrize("scale", [2.0, 3.0, 4.0])
def test_quantized_output_matches_float_within_two_levels(scale):
    """Rounding to uint8 on the device (the CUDA fast path), then resizing in 8 bits as
    RealESRGANer does, stays within two levels of the float path (PIL's 8-bit Lanczos rounds
    between its two passes; seen: max 2, mean 0.26 at x3) and exact at x4; RGBA keeps alpha."""
    desc = models.load(models.resolve(COMPACT))
    src = crop(48, 40)
    rgba = np.concatenate([src, np.full(src.shape[:2] + (1,), 200, np.uint8)], axis=2)
    for pixels in (src, rgba):
        ref = upscale_pixels(pixels, torch_tile_fn(desc), 4, scale=scale)
        fast = upscale_pixels(pixels, torch_tile_fn(desc, quantize=True), 4, scale=scale, tile=24)
        assert fast.dtype == np.uint8 and fast.shape == ref.shape
        diff = np.abs(fast.astype(int) - ref.astype(int))
        assert diff.max() <= (0 if scale == 4.0 else 2) and diff.mean() < 0.5
    with pytest.raises(ValueError, match="needs uint8"):
        upscale_pixels(src.astype(np.float32) / 255, torch_tile_fn(desc, quantize=True), 4, scale=2)


@pytest.mark.parametrize("src,dst", [((64, 48), (32, 24)), ((100, 80), (37, 29)), ((40, 30), (80, 60)),
                                     ((33, 65), (33, 20))])
def test_matrix_lanczos_equals_pillow_float(src, dst):
    """zitflow.sr.resize (the GPU path) is Pillow's Lanczos: float equal to float32 rounding,
    uint8 equal to Pillow's float result rounded (Pillow's own 8-bit path clips between its two
    passes, so it can differ from both by several levels on noise)."""
    from zitflow.sr.resize import resize

    rng = np.random.default_rng(1)
    x = rng.random(src[::-1] + (3,)).astype(np.float32)
    ref = np.stack([np.asarray(PILImage.fromarray(x[..., c], "F").resize(dst, PILImage.LANCZOS)) for c in range(3)], 2)
    assert np.abs(resize(x, dst) - ref).max() < 1e-5
    u = np.rint(x * 255).astype(np.uint8)
    ref_u = np.stack([np.asarray(PILImage.fromarray(u[..., c].astype(np.float32), "F").resize(dst, PILImage.LANCZOS))
                      for c in range(3)], 2)
    out = resize(u, dst)
    assert out.dtype == np.uint8 and out.shape == dst[::-1] + (3,)
    assert np.abs(out.astype(int) - np.clip(np.rint(ref_u), 0, 255).astype(int)).max() <= 1
    assert resize(x[..., 0], dst).shape == dst[::-1]  # (H, W) too


def test_resize_device_path_matches_the_pillow_path():
    desc = models.load(models.resolve(COMPACT))
    src = crop(48, 40)
    for scale in (2.0, 3.0):
        ref = upscale_pixels(src, torch_tile_fn(desc), 4, scale=scale)
        dev = upscale_pixels(src, torch_tile_fn(desc, quantize=True), 4, scale=scale, resize_device="cpu")
        assert dev.shape == ref.shape and np.abs(dev.astype(int) - ref.astype(int)).max() <= 2


def test_compiled_twin_runs_like_the_descriptor(monkeypatch):
    """runtime.compile's SR path: a twin through torch.compile (here dynamo with the eager backend,
    no kernels built on the CPU) gives the descriptor's output and leaves the descriptor alone."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    desc = models.load(models.resolve(COMPACT))
    twin = models.compiled(desc)
    assert twin is models.compiled(desc) and twin is not desc
    assert models.compiled(desc, dynamic=True) is not twin  # other options, another twin
    assert not hasattr(desc.model, "_orig_mod") and hasattr(twin.model, "_orig_mod")
    rgb = np.random.default_rng(3).random((24, 40, 3), dtype=np.float32)
    plain = torch_tile_fn(desc)(rgb)
    through = torch_tile_fn(twin)(rgb)
    assert through.shape == (96, 160, 3) and np.allclose(through, plain, atol=1e-5)
