"""load_image: real photos in, RGB(A) uint8 out; the key follows the file's bytes, not its path."""

import hashlib
import shutil

import numpy as np
import pytest
from PIL import Image as PILImage
from skimage import data

from zitflow.executor import Executor, plan
from zitflow.params import semantic_dict
from zitflow.recipe import RecipeError, build_graph
from zitflow.stage import RunContext
from zitflow.stages.load_image import ImageLoadError, LoadImage, LoadImageParams


def load(path, **kw):
    params = LoadImageParams(path=str(path), **kw)
    return LoadImage().run(params, {}, RunContext()).pixels


@pytest.fixture
def chelsea_png(tmp_path):
    path = tmp_path / "chelsea.png"
    PILImage.fromarray(data.chelsea()).save(path)
    return path


def test_png_loads_exactly(chelsea_png):
    px = load(chelsea_png)
    assert px.shape == (300, 451, 3) and px.dtype == np.uint8
    assert np.array_equal(px, data.chelsea())


def test_identity_is_the_content_hash_not_the_path(chelsea_png, tmp_path):
    ident = LoadImage().identity(LoadImageParams(path=str(chelsea_png)), RunContext())
    assert ident == {"sha256": hashlib.sha256(chelsea_png.read_bytes()).hexdigest()}
    assert "path" not in semantic_dict(LoadImageParams(path=str(chelsea_png)))
    moved = tmp_path / "elsewhere.png"
    shutil.copy(chelsea_png, moved)
    assert LoadImage().identity(LoadImageParams(path=str(moved)), RunContext()) == ident


def test_editing_the_file_changes_the_key(chelsea_png, store):
    stages = {"load": {"kind": "load_image", "path": str(chelsea_png)}}
    key1 = plan(build_graph("t", stages), store, RunContext())["load"].key
    PILImage.fromarray(data.chelsea()[:, ::-1]).save(chelsea_png)  # same path, new pixels
    key2 = plan(build_graph("t", stages), store, RunContext())["load"].key
    assert key1 != key2
    m = Executor(build_graph("t", stages), store, RunContext()).execute()
    assert np.array_equal(m.outputs["load"].pixels, data.chelsea()[:, ::-1])


def test_missing_file_says_where_it_looked(tmp_path):
    with pytest.raises(ImageLoadError) as e:
        LoadImage().identity(LoadImageParams(path=str(tmp_path / "nope.png")), RunContext())
    assert "nope.png" in str(e.value) and "not found" in str(e.value)
    with pytest.raises(ImageLoadError) as e:
        LoadImage().identity(LoadImageParams(path="surely/not/here.jpg"), RunContext())
    assert "relative paths are read from the current directory" in str(e.value)


def test_not_an_image_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("just some text, not pixels")
    for call in (lambda: LoadImage().identity(LoadImageParams(path=str(path)), RunContext()), lambda: load(path)):
        with pytest.raises(ImageLoadError) as e:
            call()
        assert "notes.png" in str(e.value) and "not an image" in str(e.value)


def test_directory_is_refused(tmp_path):
    with pytest.raises(ImageLoadError) as e:
        load(tmp_path)
    assert "is not a file" in str(e.value)


def test_truncated_file_is_a_clear_error(tmp_path, chelsea_png):
    cut = tmp_path / "cut.png"
    cut.write_bytes(chelsea_png.read_bytes()[:4000])
    with pytest.raises(ImageLoadError) as e:
        load(cut)
    assert "damaged or truncated" in str(e.value)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "phone.jpg"
    exif = PILImage.Exif()
    exif[0x0112] = 6  # stored landscape, to be shown rotated 90 degrees clockwise
    PILImage.fromarray(data.chelsea()).save(path, quality=95, exif=exif.tobytes())
    raw = load(path, exif_orientation=False)
    upright = load(path)
    assert raw.shape == (300, 451, 3) and upright.shape == (451, 300, 3)
    assert np.array_equal(upright, np.rot90(raw, k=-1))


def test_16_bit_gray_is_scaled_not_clipped(tmp_path):
    cam = data.camera()
    path = tmp_path / "deep.png"
    PILImage.fromarray(cam.astype(np.uint16) * 257).save(path)
    assert PILImage.open(path).mode.startswith("I")
    px = load(path)
    assert px.shape == (512, 512, 3)
    assert np.array_equal(px[..., 0], cam) and np.array_equal(px[..., 0], px[..., 2])


def test_16_bit_rgb_is_reduced_to_8_bits(tmp_path):
    import cv2

    path = tmp_path / "deep_rgb.png"
    cv2.imwrite(str(path), (data.astronaut().astype(np.uint16) * 257)[..., ::-1])  # 16-bit BGR on disk
    px = load(path)
    assert px.dtype == np.uint8 and np.array_equal(px, data.astronaut())


def test_float_image_in_unit_range_is_scaled(tmp_path):
    cam = data.camera()
    path = tmp_path / "float.tiff"
    PILImage.fromarray(cam.astype(np.float32) / 255.0, "F").save(path)
    px = load(path)
    assert np.abs(px[..., 1].astype(int) - cam).max() <= 1


def test_palette_with_transparency_becomes_rgba_or_flattened(tmp_path):
    pal = PILImage.fromarray(data.chelsea()).quantize(colors=32)
    idx = np.asarray(pal)
    clear = int(idx[0, 0])
    path = tmp_path / "pal.png"
    pal.save(path, transparency=clear)
    rgba = load(path)
    assert rgba.shape == (300, 451, 4)
    assert np.array_equal(rgba[..., 3] == 0, idx == clear)
    flat = load(path, alpha="flatten", background="white")
    assert flat.shape == (300, 451, 3)
    assert (flat[idx == clear] == 255).all()
    red = load(path, alpha="flatten", background="#ff0000")
    assert (red[idx == clear] == [255, 0, 0]).all()


def test_rgba_alpha_is_kept(tmp_path):
    rgb = data.astronaut()
    alpha = np.tile(np.linspace(0, 255, 512).astype(np.uint8), (512, 1))
    path = tmp_path / "alpha.png"
    PILImage.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    px = load(path)
    assert px.shape == (512, 512, 4) and np.array_equal(px[..., 3], alpha)
    assert np.array_equal(px[alpha > 0][:, :3], rgb[alpha > 0])


def test_cmyk_jpeg_and_grayscale_become_rgb(tmp_path):
    cmyk = tmp_path / "print.jpg"
    PILImage.fromarray(data.coffee()).convert("CMYK").save(cmyk, quality=95)
    px = load(cmyk)
    assert px.shape == (400, 600, 3)
    assert np.abs(px.astype(int) - data.coffee()).mean() < 6
    gray = tmp_path / "gray.png"
    PILImage.fromarray(data.camera()).save(gray)
    g = load(gray)
    assert g.shape == (512, 512, 3) and np.array_equal(g[..., 0], data.camera())


def test_srgb_profile_leaves_pixels_alone(tmp_path):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path / "srgb.png"
    PILImage.fromarray(data.astronaut()).save(path, icc_profile=icc)
    assert np.array_equal(load(path), data.astronaut())


def test_animation_loads_first_frame(tmp_path):
    frames = [PILImage.fromarray(np.full((20, 30, 3), v, np.uint8)) for v in (10, 200)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    px = load(path)
    assert px.shape == (20, 30, 3) and abs(int(px.mean()) - 10) <= 2


@pytest.mark.parametrize("entry, words", [
    ({}, ["field 'path'", "is required"]),
    ({"path": ""}, ["field 'path'", "got ''", "path of an image file"]),
    ({"path": "x.png", "alpha": "drop"}, ["field 'alpha'", "'drop'", "'keep', 'flatten'"]),
    ({"path": "x.png", "background": "nocolor"}, ["field 'background'", "'nocolor'", "'white'"]),
    ({"path": "x.png", "icc": "maybe"}, ["field 'icc'", "'convert', 'ignore'"]),
])
def test_param_errors_name_field_value_and_allowed(entry, words):
    with pytest.raises(RecipeError) as e:
        build_graph("t", {"load": {"kind": "load_image", **entry}})
    msg = str(e.value)
    assert "recipe 't'" in msg and "stage 'load'" in msg
    for w in words:
        assert w.lower() in msg.lower(), msg
