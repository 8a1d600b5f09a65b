"""Sweeps: N seeds x M post variants cost N generations; the summary (contact sheet, gallery,
tables) shows every job; the gallery renders in headless Chromium from the file system."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image as PILImage
from skimage import data

from tests.test_cli import zitflow
from zitflow.sweep import THUMB, contact_sheet, read_jobs, summarise_sweep, swept_keys

#: A generation recipe at 256x256 (the tiny model: seconds on a CPU), with a post chain.
SWEEP_RECIPE = """\
# @package _global_
schema_version: 1
description: "sweep test: tiny generation at 256x256, sharpen, export"
stages:
  encode:
    kind: encode
    prompt: ${prompt}
    with_negative: false
  denoise:
    kind: denoise
    inputs: {embeds: encode}
    seed: ${seed}
    width: 256
    height: 256
    steps: 2
  decode:
    kind: decode
    input: denoise
  sharpen:
    kind: sharpen
    input: decode
    amount: 0.5
  export:
    kind: export
    input: sharpen
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """One real multirun: seed=1,2 x stages.sharpen.amount=0.4,0.8 on the tiny model."""
    root = tmp_path_factory.mktemp("sweep")
    (root / "pack" / "recipe").mkdir(parents=True)
    (root / "pack" / "recipe" / "tsweep.yaml").write_text(SWEEP_RECIPE)
    zitflow("-m", "recipe=tsweep", "model=tiny", "runtime=cpu", "prompt=a red kite", "seed=1,2",
            "stages.sharpen.amount=0.4,0.8", f"hydra.sweep.dir={root}/out", cache=root / "cache",
            env={"ZITFLOW_RECIPE_PATH": str(root / "pack"), "ZITFLOW_MODELS_DIR": str(root / "models")})
    return root / "out"


def manifests(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/manifest.json"))]


def runs_of(stage: str, ms: list[dict]) -> int:
    return sum(1 for m in ms for s in m["stages"] if s["name"] == stage and s["status"] in ("run", "rebuilt"))


def test_n_seeds_times_m_variants_cost_n_generations(sweep):
    ms = manifests(sweep)
    assert len(ms) == 4
    assert runs_of("encode", ms) == 1      # one prompt
    assert runs_of("denoise", ms) == 2     # two seeds
    assert runs_of("decode", ms) == 2
    assert runs_of("sharpen", ms) == 4     # every (seed, amount) pair is new
    outs = [Path(p) for m in ms for p in m["outputs"].values()]
    assert len(outs) == 4 and all(p.exists() for p in outs)
    assert len({p.read_bytes() for p in outs}) == 4  # four different pictures


def test_summary_tables_list_every_job(sweep):
    rows = list(csv.DictReader(open(sweep / "jobs.csv", encoding="utf-8")))
    assert len(rows) == 4
    assert sorted(r["overrides"].count("seed=") for r in rows) == [1, 1, 1, 1]
    assert sum(int(r["stages_run"]) for r in rows) == 1 + 2 + 2 + 4 + 4  # encode, denoise, decode, sharpen, export
    assert all(Path(r["output"]).exists() for r in rows)
    js = json.loads((sweep / "jobs.json").read_text())
    assert {s["name"] for s in js[0]["stages"]} == {"encode", "denoise", "decode", "sharpen", "export"}


def test_contact_sheet_places_each_job_under_its_axes(sweep):
    jobs = read_jobs(sweep)
    keys = swept_keys(jobs)
    assert keys == ["seed", "stages.sharpen.amount"]
    sheet = np.asarray(PILImage.open(sweep / "contact_sheet.png").convert("RGB")).astype(int)
    label_h = 28
    label_w = sheet.shape[1] - 2 * THUMB
    assert sheet.shape[0] == label_h + 2 * THUMB and label_w > 0
    # the axis labels are drawn (dark pixels in the label strips)
    assert (sheet[:label_h, label_w:] < 128).any() and (sheet[label_h:, :label_w] < 128).any()
    for j in jobs:
        row = ["1", "2"].index(j.overrides["seed"])
        col = ["0.4", "0.8"].index(j.overrides["stages.sharpen.amount"])
        cell = sheet[label_h + row * THUMB + 2: label_h + (row + 1) * THUMB - 2,
                     label_w + col * THUMB + 2: label_w + (col + 1) * THUMB - 2]
        with PILImage.open(j.image) as im:
            thumb = im.convert("RGB")
            thumb.thumbnail((THUMB - 4, THUMB - 4), PILImage.Resampling.LANCZOS)
        assert abs(cell.mean() - np.asarray(thumb).mean()) < 2.0  # this job's picture, not another's


def test_gallery_links_every_image_relatively(sweep):
    page = (sweep / "index.html").read_text(encoding="utf-8")
    assert page.count("<img ") == 4 and "<script" not in page
    for j in read_jobs(sweep):
        assert f'src="thumbs/{j.num}.jpg"' in page and (sweep / "thumbs" / f"{j.num}.jpg").exists()
        assert Path(j.image).relative_to(sweep).as_posix() in page


def chromium_driver():
    """A headless Chromium WebDriver, or None with the reason it is unavailable."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        return None, "needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver)"
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "needs selenium (pip install -e '.[browser]')"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--allow-file-access-from-files"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts), None


@pytest.mark.browser
def test_gallery_shows_every_image_in_headless_chromium(sweep):
    driver, why = chromium_driver()
    if driver is None:
        pytest.skip(why)
    try:
        driver.get((sweep / "index.html").resolve().as_uri())
        shown = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width,"
            " i.closest('a').href])")
        assert len(shown) == 4
        for complete, natural, width, href in shown:
            assert complete and natural > 0 and width > 0, (complete, natural, width)
            assert href.startswith("file://") and Path(href[len("file://"):]).exists()
    finally:
        driver.quit()


def fake_sweep(root: Path, jobs: list[tuple[dict, np.ndarray | None]]) -> Path:
    """A sweep folder as Hydra and zitflow leave it, with real photos as the job outputs."""
    for n, (ov, pixels) in enumerate(jobs):
        d = root / str(n)
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in ov.items()]))
        if pixels is not None:
            PILImage.fromarray(pixels).save(d / "out.png")
            (d / "manifest.json").write_text(json.dumps({"outputs": {"export": str(d / "out.png")}, "stages": [
                {"name": "export", "key": "k" * 64, "status": "run", "seconds": 0.1}]}))
    return root


def test_a_failed_job_is_marked_not_dropped(tmp_path):
    photo = data.astronaut()[::4, ::4]
    root = fake_sweep(tmp_path, [({"seed": 1}, photo), ({"seed": 2}, None), ({"seed": 3}, data.chelsea()[::2, ::2])])
    out = summarise_sweep(root)
    page = out["gallery"].read_text()
    assert page.count("<img ") == 2 and "no manifest" in page
    rows = list(csv.DictReader(open(out["jobs_csv"], encoding="utf-8")))
    assert [r["error"] != "" for r in rows] == [False, True, False]
    sheet = np.asarray(PILImage.open(out["contact_sheet"]).convert("RGB"))
    assert sheet.shape[1] - THUMB * 3 > 0  # one column per seed
    # the missing job's cell carries the red "missing" mark
    cell = sheet[28:, sheet.shape[1] - 2 * THUMB: sheet.shape[1] - THUMB]
    assert ((cell[..., 0] > 200) & (cell[..., 1] < 80)).any()


def test_three_swept_keys_make_rows_of_combinations(tmp_path):
    img = data.coffee()[::4, ::4]
    jobs = [({"seed": s, "a": a, "b": b}, img) for s in (1, 2) for a in ("x", "y") for b in ("p", "q", "r")]
    root = fake_sweep(tmp_path, jobs)
    recs = read_jobs(root)
    keys = swept_keys(recs)
    assert keys == ["seed", "a", "b"]
    sheet = contact_sheet(recs, keys, thumb=64)
    assert sheet.height == 28 + 4 * 64 and sheet.width > 3 * 64  # rows: (seed, a) pairs; columns: b


def test_parallel_joblib_jobs_generate_each_latent_once(tmp_path):
    """Three worker processes on one cache dir: 2 seeds x 3 amounts still cost 2 generations;
    the waiting workers read the entries the first one wrote ('shared' or 'hit')."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="hydra-joblib-launcher is in the dev extra")
    (tmp_path / "pack" / "recipe").mkdir(parents=True)
    (tmp_path / "pack" / "recipe" / "tsweep.yaml").write_text(SWEEP_RECIPE)
    zitflow("-m", "recipe=tsweep", "model=tiny", "runtime=cpu", "prompt=a kite", "seed=1,2",
            "stages.sharpen.amount=0.4,0.8,1.2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=3",
            f"hydra.sweep.dir={tmp_path}/out", cache=tmp_path / "cache",
            env={"ZITFLOW_RECIPE_PATH": str(tmp_path / "pack"), "ZITFLOW_MODELS_DIR": str(tmp_path / "models")})
    ms = manifests(tmp_path / "out")
    assert len(ms) == 6
    assert runs_of("encode", ms) == 1 and runs_of("denoise", ms) == 2 and runs_of("decode", ms) == 2
    assert runs_of("sharpen", ms) == 6
