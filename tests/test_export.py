"""export: exact-size check, metadata that round-trips in PNG / JPEG / WebP, safe names, keys."""

import io
import json

import numpy as np
import pytest
from PIL import Image as PILImage
from skimage import data

from zitflow import metadata
from zitflow.artifacts import File, Image
from zitflow.executor import Executor, plan
from zitflow.job import safe_join, write_outputs
from zitflow.recipe import RecipeError, build_graph
from zitflow.stage import RunContext
from zitflow.stages.export import Export, ExportError, ExportParams

JOB = {
    "recipe": "douyin_cover",
    "prompt": "水墨竹林，晨雾, ink: bamboo\nsecond line",
    "negative_prompt": "blurry, text",
    "seed": 42,
    "model": {"name": "zimage_turbo", "source": "modelscope", "id": "Tongyi-MAI/Z-Image-Turbo", "revision": "main"},
    "config_hash": "0123456789abcdef",
    "overrides": ["recipe=douyin_cover", "seed=42", "stages.sharpen.amount=0.8"],
    "chain": ["resolution", "encode", "denoise", "decode", "fit", "sharpen", "color_correct", "export"],
    "config": {"schema_version": 1, "prompt": "水墨竹林，晨雾, ink: bamboo\nsecond line", "seed": 42,
               "stages": {"size": {"kind": "resolution", "width": 1080, "height": 1920},
                          "denoise": {"kind": "denoise", "steps": 9, "guidance_scale": 0.0},
                          "export": {"kind": "export", "format": "png"}}},
}


def export(pixels, job=JOB, stage="export", **kw):
    ctx = RunContext(job=job, stage_name=stage)
    return Export().run(ExportParams(**kw), {"image": Image(pixels)}, ctx)


def decode(f: File):
    return PILImage.open(io.BytesIO(f.payload))


def test_is_a_sink_and_outputs_a_file():
    assert Export().sink() is True
    f = export(data.chelsea())
    assert isinstance(f, File) and f.name == "douyin_cover_42_export.png"


def test_png_is_lossless_and_deterministic():
    f = export(data.astronaut())
    assert np.array_equal(np.asarray(decode(f)), data.astronaut())
    assert export(data.astronaut()).payload == f.payload  # same inputs, same bytes (cacheable)


def test_exact_size_check_names_both_sizes_and_the_fix():
    with pytest.raises(ExportError) as e:
        export(data.astronaut(), width=1080, height=1920)
    msg = str(e.value)
    assert "512x512" in msg and "1080x1920" in msg and "kind: fit" in msg and "0 to accept any size" in msg
    with pytest.raises(ExportError) as e:
        export(data.chelsea(), height=301)
    assert "451x300" in str(e.value) and "451x301" in str(e.value)
    assert export(data.chelsea(), width=451, height=300).name.endswith(".png")


@pytest.mark.parametrize("fmt, ext", [("png", "png"), ("jpeg", "jpg"), ("webp", "webp")])
def test_metadata_round_trip(fmt, ext):
    f = export(data.chelsea(), format=fmt)
    assert f.name == f"douyin_cover_42_export.{ext}"
    img = decode(f)
    assert img.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt] and img.size == (451, 300)
    m = metadata.parse(f.payload)
    record = m["zitflow"]
    for key in ("recipe", "prompt", "negative_prompt", "seed", "model", "config_hash", "overrides", "chain", "config"):
        assert record[key] == JOB[key], key
    assert (record["width"], record["height"], record["format"]) == (451, 300, fmt)
    fields = m["fields"]
    assert fields["prompt"] == JOB["prompt"] and fields["negative_prompt"] == "blurry, text"
    assert (fields["steps"], fields["cfg_scale"], fields["seed"]) == (9, 0.0, 42)
    assert (fields["width"], fields["height"]) == (451, 300)
    assert fields["model"] == "Tongyi-MAI/Z-Image-Turbo" and fields["recipe"] == "douyin_cover"
    assert fields["config_hash"] == "0123456789abcdef" and fields["ignored"] == []
    assert m["parameters"].splitlines()[-1].startswith("Steps: 9, Sampler: ")


def test_png_chunks_are_a1111_parameters_and_zitflow_json():
    img = decode(export(data.chelsea()))
    assert set(img.text) == {"parameters", "zitflow"}
    assert img.text["parameters"].startswith("水墨竹林，晨雾")
    assert json.loads(img.text["zitflow"])["seed"] == 42


def test_jpeg_exif_user_comment_is_utf16_be_like_a1111():
    img = decode(export(data.chelsea(), format="jpeg"))
    raw = img.getexif().get_ifd(0x8769)[0x9286]
    assert raw[:8] == b"UNICODE\x00"
    assert raw[8:].decode("utf-16-be").startswith("水墨竹林")
    assert "zitflow" in img.getexif()[0x0131]


def test_post_only_job_leaves_out_generation_fields():
    job = {"recipe": "retouch", "prompt": "", "seed": 42, "config_hash": "ffff", "chain": ["load_image", "fit", "export"],
           "config": {"stages": {}}}
    m = metadata.parse(export(data.chelsea(), job=job).payload)
    assert m["parameters"] == "Size: 451x300, zitflow recipe: retouch, Config hash: ffff, Version: zitflow 0.1.0"
    assert "steps" not in m["fields"] and "seed" not in m["fields"] and m["fields"]["prompt"] == ""


def test_metadata_false_embeds_nothing():
    for fmt in ("png", "jpeg", "webp"):
        m = metadata.parse(export(data.chelsea(), format=fmt, metadata=False).payload)
        assert m["parameters"] is None and m["zitflow"] is None


def test_huge_config_is_trimmed_to_fit_a_jpeg_segment():
    job = dict(JOB, config=dict(JOB["config"], blob="x" * 100_000))
    m = metadata.parse(export(data.chelsea(), job=job, format="jpeg").payload)
    assert m["zitflow"]["truncated"] == ["config"] and m["zitflow"]["seed"] == 42
    assert m["fields"]["seed"] == 42
    png = metadata.parse(export(data.chelsea(), job=job).payload)  # PNG has room for all of it
    assert png["zitflow"]["config"]["blob"] == "x" * 100_000


def test_alpha_jpeg_is_flattened_webp_and_png_keep_it():
    rgba = np.dstack([data.chelsea(), np.zeros((300, 451), np.uint8)])
    rgba[:, 200:, 3] = 255
    jpg = np.asarray(decode(export(rgba, format="jpeg", quality=100)))
    assert jpg.shape == (300, 451, 3) and jpg[:, :150].min() >= 250  # transparent -> white
    assert np.asarray(decode(export(rgba, format="jpeg", background="black", quality=100)))[:, :150].max() <= 5
    webp = decode(export(rgba, format="webp", lossless=True))
    assert webp.mode == "RGBA" and np.array_equal(np.asarray(webp)[..., 3], rgba[..., 3])
    assert np.array_equal(np.asarray(decode(export(rgba))), rgba)


def test_quality_trades_size_for_fidelity():
    src = data.astronaut()
    hi, lo = export(src, format="jpeg", quality=95), export(src, format="jpeg", quality=40)
    assert len(lo.payload) < 0.6 * len(hi.payload)
    err = lambda f: np.abs(np.asarray(decode(f)).astype(int) - src).mean()  # noqa: E731
    assert err(hi) < err(lo) < 10
    lossless = export(src, format="webp", lossless=True)
    assert np.array_equal(np.asarray(decode(lossless)), src)


def test_malicious_prompt_and_recipe_give_safe_names(tmp_path):
    for prompt in ("../../etc/passwd", "a/b\\c", "/etc/shadow", "..", "水墨"):
        f = export(data.chelsea(), job=dict(JOB, prompt=prompt, recipe="../../x"), name="{recipe}_{prompt}_{seed}")
        assert "/" not in f.name and "\\" not in f.name and ".." not in f.name and not f.name.startswith(".")
        assert safe_join(tmp_path, f.name).parent == tmp_path.resolve()
    assert export(data.chelsea(), job=dict(JOB, prompt="../../etc/passwd"), name="{prompt}").name == "etc_passwd.png"
    assert export(data.chelsea(), job=dict(JOB, prompt="a/b\\c"), name="{prompt}").name == "a_b_c.png"


def test_name_template_placeholders():
    f = export(data.chelsea(), name="{model}-{width}x{height}-{seed:05}-{config_hash}", format="webp")
    assert f.name == "zimage_turbo-451x300-00042-0123456789abcdef.webp"


def test_identity_is_the_job_so_metadata_changes_re_export(store, tmp_path):
    path = tmp_path / "cat.png"
    PILImage.fromarray(data.chelsea()).save(path)
    stages = {"load": {"kind": "load_image", "path": str(path)}, "export": {"kind": "export", "input": "load"}}
    g = build_graph("retouch", stages)
    k1 = plan(g, store, RunContext(job=JOB))
    k2 = plan(g, store, RunContext(job=dict(JOB, prompt="another prompt")))
    assert k1["load"].key == k2["load"].key and k1["export"].key != k2["export"].key
    assert Export().identity(ExportParams(), RunContext(job=JOB)) == {"job": JOB}


def test_end_to_end_writes_a_safe_file_into_the_run_dir(store, tmp_path):
    path = tmp_path / "cat.png"
    PILImage.fromarray(data.chelsea()).save(path)
    g = build_graph("retouch", {
        "load": {"kind": "load_image", "path": str(path)},
        "size": {"kind": "resolution", "width": 1080, "height": 1920, "strategy": "exact", "fit": "contain"},
        "fit": {"kind": "fit", "inputs": {"image": "load", "size": "size"}},
        "color": {"kind": "color_correct", "input": "fit", "contrast": 1.1},
        "export": {"kind": "export", "input": "color", "width": 1080, "height": 1920, "name": "{recipe}_{prompt}"},
    })
    job = dict(JOB, recipe="retouch", prompt="../../escape")
    manifest = Executor(g, store, RunContext(job=job)).execute()
    out = tmp_path / "run"
    out.mkdir()
    written = write_outputs(manifest, out)
    assert written == {"export": str(out.resolve() / "retouch_escape.png")}
    with PILImage.open(written["export"]) as img:
        assert img.size == (1080, 1920) and json.loads(img.text["zitflow"])["prompt"] == "../../escape"
    again = Executor(g, store, RunContext(job=job)).execute()
    assert {r.name: r.status for r in again.stages}["export"] == "hit"


def test_parse_a1111_parameters_from_other_tools():
    text = ("masterpiece, a cat\nsitting on a chair\nNegative prompt: lowres, bad hands\nsecond neg line\n"
            'Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 123456789, Size: 832x1216, '
            'Model hash: 6ce0161689, Model: sdxl_base, Denoising strength: 0.4, '
            'Lora hashes: "detail: 0123abcd, style: 4567ef01", Hires upscale: 1.5, Version: v1.7.0')
    p = metadata.parse_parameters(text)
    assert p["prompt"] == "masterpiece, a cat\nsitting on a chair"
    assert p["negative_prompt"] == "lowres, bad hands\nsecond neg line"
    assert (p["steps"], p["sampler"], p["cfg_scale"], p["seed"]) == (28, "DPM++ 2M Karras", 7.5, 123456789)
    assert (p["width"], p["height"], p["model"], p["version"]) == (832, 1216, "sdxl_base", "v1.7.0")
    assert p["ignored"] == ["Model hash", "Denoising strength", "Lora hashes", "Hires upscale"]
    assert p["fields"]["Lora hashes"] == "detail: 0123abcd, style: 4567ef01"


def test_parse_parameters_without_a_settings_line_is_all_prompt():
    p = metadata.parse_parameters("just a prompt, with a comma")
    assert p["prompt"] == "just a prompt, with a comma" and p["fields"] == {} and p["ignored"] == []
    bad = metadata.parse_parameters("x\nSteps: many, Seed: 1, Size: 10x10")
    assert bad["ignored"] == ["Steps"] and bad["seed"] == 1 and "steps" not in bad


def test_parse_reads_files_from_disk_and_lists_foreign_chunks(tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "a dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 64x64")
    info.add_text("workflow", "{}")
    path = tmp_path / "other.png"
    PILImage.fromarray(data.chelsea()[:64, :64]).save(path, pnginfo=info)
    m = metadata.parse(path)
    assert m["zitflow"] is None and m["fields"]["prompt"] == "a dog" and m["fields"]["sampler"] == "Euler a"
    assert m["other"] == ["workflow"]


@pytest.mark.parametrize("entry, words", [
    ({"format": "gif"}, ["field 'format'", "'gif'", "'png', 'jpeg', 'webp'"]),
    ({"quality": 0}, ["field 'quality'", "got 0", "quality >= 1"]),
    ({"quality": 101}, ["field 'quality'", "got 101", "quality <= 100"]),
    ({"name": "{user}_{seed}"}, ["field 'name'", "{user}", "{recipe}", "{prompt}"]),
    ({"name": "{recipe.__class__}"}, ["field 'name'", "unknown placeholder", "{seed}"]),
    ({"name": "{prompt!r}"}, ["field 'name'", "conversion"]),
    ({"width": -1}, ["field 'width'", "got -1", "width >= 0"]),
    ({"background": "nocolor"}, ["field 'background'", "'nocolor'", "'white'"]),
    ({"optimize": "very"}, ["field 'optimize'", "very", "bool"]),
])
def test_param_errors_name_field_value_and_allowed(entry, words):
    with pytest.raises(RecipeError) as e:
        build_graph("r", {"src": {"kind": "t_source"}, "export": {"kind": "export", "input": "src", **entry}})
    msg = str(e.value)
    assert "stage 'export'" in msg
    for w in words:
        assert w in msg, msg


def test_two_sinks_with_one_file_name_both_land(tmp_path, caplog):
    from zitflow.executor import Manifest

    a, b = File(b"first", "cover.png"), File(b"second", "cover.png")
    written = write_outputs(Manifest("r", [], {"wide": a, "tall": b}), tmp_path)
    assert sorted(written) == ["tall", "wide"]
    assert (tmp_path / "cover.png").read_bytes() == b"first"
    assert (tmp_path / "cover-tall.png").read_bytes() == b"second"
    assert "both export 'cover.png'" in caplog.text


def test_run_only_overrides_stay_out_of_the_job_facts():
    from zitflow.job import semantic_overrides

    given = ["seed=3", "runtime.progress=plain", "cache.dir=/x", "+hydra.job.chdir=true", "model=tiny",
             "stages.sharpen.amount=0.5", "explain=true", "recipe=poster"]
    assert semantic_overrides(given) == ["seed=3", "model=tiny", "stages.sharpen.amount=0.5", "recipe=poster"]


def test_dpi_is_written_for_png_and_jpeg_and_refused_for_webp(tmp_path):
    from zitflow.stages.export import ExportParams, encode

    pil = PILImage.fromarray(data.chelsea()[:64, :64])
    for fmt in ("png", "jpeg"):
        with PILImage.open(io.BytesIO(encode(pil, ExportParams(format=fmt, dpi=300), None))) as img:
            assert [round(v) for v in img.info["dpi"]] == [300, 300], fmt
    with PILImage.open(io.BytesIO(encode(pil, ExportParams(format="png"), None))) as img:
        assert "dpi" not in img.info
    with pytest.raises(RecipeError, match=r"field 'dpi'.*webp"):
        build_graph("r", {"src": {"kind": "t_source"}, "export": {"kind": "export", "input": "src",
                                                                   "format": "webp", "dpi": 300}})


def test_jpeg_optimize_survives_a_noise_like_image():
    """Pillow's optimize buffer (~1 byte/pixel) is too small for noise at quality 90, 4:4:4."""
    from zitflow.stages.export import ExportParams, encode

    rng = np.random.default_rng(0)
    pil = PILImage.fromarray(rng.integers(0, 256, (256, 384, 3), dtype=np.uint8))
    payload = encode(pil, ExportParams(format="jpeg", quality=90, optimize=True), None)
    with PILImage.open(io.BytesIO(payload)) as img:
        assert img.size == (384, 256) and img.format == "JPEG"
