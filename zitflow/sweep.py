"""Sweep summaries built from the job folders on disk: contact sheet, HTML gallery, CSV, JSON.

Hydra writes each multirun job into ``<sweep>/<n>/`` with ``.hydra/overrides.yaml``; zitflow
adds ``manifest.json``. :func:`summarise_sweep` reads them back, finds which override keys vary
(the swept axes), and writes into the sweep folder:

* ``contact_sheet.png`` - a grid like A1111's X/Y plot: columns are the last swept key, rows
  every combination of the others, each axis labelled with ``key=value``;
* ``index.html`` - a gallery of thumbnails with parameters and links to full images; it opens
  from the file system (relative links, no script, no server);
* ``jobs.csv`` and ``jobs.json`` - per job: overrides, outputs, stage keys, hits, seconds.
"""

from __future__ import annotations

import csv
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from PIL import Image, ImageDraw, ImageFont

THUMB = 256


@dataclass
class JobRecord:
    """One job of a sweep as read from its folder."""

    num: int
    folder: Path
    overrides: dict[str, str]
    outputs: dict[str, str] = field(default_factory=dict)
    stages: list[dict] = field(default_factory=list)
    error: str | None = None

    @property
    def image(self) -> Path | None:
        for path in self.outputs.values():
            if Path(path).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
                return Path(path)
        return None


def read_jobs(sweep_dir: Path) -> list[JobRecord]:
    """Every ``<sweep>/<n>/`` with Hydra's overrides; manifest fields where the job finished."""
    jobs = []
    for folder in sorted(Path(sweep_dir).iterdir(), key=lambda p: (len(p.name), p.name)):
        ov_file = folder / ".hydra" / "overrides.yaml"
        if not (folder.is_dir() and folder.name.isdigit() and ov_file.exists()):
            continue
        overrides = {}
        for item in yaml.safe_load(ov_file.read_text()) or []:
            k, _, v = str(item).partition("=")
            overrides[k.lstrip("+~")] = v
        job = JobRecord(int(folder.name), folder, overrides)
        mpath = folder / "manifest.json"
        if mpath.exists():
            m = json.loads(mpath.read_text())
            job.outputs = m.get("outputs", {})
            job.stages = m.get("stages", [])
        else:
            job.error = "no manifest (the job failed or is still running)"
        jobs.append(job)
    return jobs


def swept_keys(jobs: list[JobRecord]) -> list[str]:
    """Override keys whose value differs between jobs, in the order they were given."""
    keys: list[str] = []
    for j in jobs:
        for k in j.overrides:
            if k not in keys:
                keys.append(k)
    return [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def contact_sheet(jobs: list[JobRecord], keys: list[str], thumb: int = THUMB) -> Image.Image:
    """Grid of job images: columns = values of the last swept key, rows = the rest."""
    x_key = keys[-1] if keys else None
    y_keys = keys[:-1]
    xs = list(dict.fromkeys(j.overrides.get(x_key, "") for j in jobs)) if x_key else [""]
    ys = list(dict.fromkeys(tuple(j.overrides.get(k, "") for k in y_keys) for j in jobs)) or [()]
    font = _font(14)
    label_w = max([len(", ".join(f"{k}={v}" for k, v in zip(y_keys, y))) for y in ys] + [0]) * 8 + 16
    label_h = 28 if x_key else 0
    sheet = Image.new("RGB", (label_w + thumb * len(xs), label_h + thumb * len(ys)), "white")
    draw = ImageDraw.Draw(sheet)
    for ci, x in enumerate(xs):
        if x_key:
            draw.text((label_w + ci * thumb + 6, 6), f"{x_key}={x}", fill="black", font=font)
    for ri, y in enumerate(ys):
        if y_keys:
            draw.text((6, label_h + ri * thumb + thumb // 2 - 8),
                      ", ".join(f"{k}={v}" for k, v in zip(y_keys, y)), fill="black", font=font)
        for ci, x in enumerate(xs):
            match = [j for j in jobs if (not x_key or j.overrides.get(x_key, "") == x)
                     and tuple(j.overrides.get(k, "") for k in y_keys) == y]
            box = (label_w + ci * thumb, label_h + ri * thumb)
            if match and match[0].image and match[0].image.exists():
                with Image.open(match[0].image) as im:
                    im = im.convert("RGB")
                    im.thumbnail((thumb - 4, thumb - 4), Image.Resampling.LANCZOS)
                    sheet.paste(im, (box[0] + (thumb - im.width) // 2, box[1] + (thumb - im.height) // 2))
            else:
                draw.text((box[0] + 10, box[1] + thumb // 2), "missing", fill="red", font=font)
    return sheet


def write_gallery(sweep_dir: Path, jobs: list[JobRecord], keys: list[str], thumb: int = THUMB) -> Path:
    """``index.html`` with one card per job: thumbnail, swept values, link to the full image."""
    thumbs = sweep_dir / "thumbs"
    thumbs.mkdir(exist_ok=True)
    cards = []
    for j in jobs:
        params = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                         for k, v in j.overrides.items())
        runs = sum(1 for s in j.stages if s.get("status") in ("run", "rebuilt"))
        if j.image and j.image.exists():
            tpath = thumbs / f"{j.num}.jpg"
            with Image.open(j.image) as im:
                im = im.convert("RGB")
                im.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
                im.save(tpath, quality=88)
            full = Path(j.image).resolve().relative_to(sweep_dir.resolve()) \
                if Path(j.image).resolve().is_relative_to(sweep_dir.resolve()) else Path(j.image).resolve()
            img = (f'<a href="{html.escape(full.as_posix())}"><img src="thumbs/{j.num}.jpg" '
                   f'alt="job {j.num}"></a>')
        else:
            img = f'<div class="missing">{html.escape(j.error or "no image")}</div>'
        cards.append(f'<figure class="job" id="job-{j.num}">{img}<figcaption>job {j.num} '
                     f"({runs} stage(s) ran)<table>{params}</table></figcaption></figure>")
    title = f"sweep over {', '.join(keys) or 'nothing'}"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
figure.job {{ margin: 0; width: {thumb}px; }}
figure.job img {{ width: {thumb}px; height: auto; display: block; }}
table {{ font-size: 12px; border-collapse: collapse; }} th {{ text-align: left; padding-right: .5em; }}
.missing {{ width: {thumb}px; height: {thumb // 2}px; background: #fee; color: #900; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{len(jobs)} jobs. <a href="contact_sheet.png">contact sheet</a> · <a href="jobs.csv">jobs.csv</a></p>
<div class="grid">
{chr(10).join(cards)}
</div></body></html>
"""
    out = sweep_dir / "index.html"
    out.write_text(page, encoding="utf-8")
    return out


def write_tables(sweep_dir: Path, jobs: list[JobRecord]) -> None:
    """``jobs.json`` (everything) and ``jobs.csv`` (one row per job)."""
    rows = []
    for j in jobs:
        rows.append({
            "job": j.num, "overrides": " ".join(f"{k}={v}" for k, v in j.overrides.items()),
            "output": str(j.image or ""), "stages_run": sum(1 for s in j.stages if s.get("status") in ("run", "rebuilt")),
            "stages_cached": sum(1 for s in j.stages if s.get("status") in ("hit", "shared")),
            "seconds": round(sum(float(s.get("seconds") or 0) for s in j.stages), 4),
            "keys": " ".join(f"{s['name']}:{s['key'][:12]}" for s in j.stages), "error": j.error or ""})
    (sweep_dir / "jobs.json").write_text(json.dumps(
        [r | {"stages": j.stages, "outputs": j.outputs} for r, j in zip(rows, jobs)], indent=2, ensure_ascii=False))
    with open(sweep_dir / "jobs.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["job"])
        w.writeheader()
        w.writerows(rows)


def summarise_sweep(sweep_dir: str | Path) -> dict[str, Path]:
    """Write the contact sheet, gallery and tables for a finished sweep; returns their paths."""
    sweep_dir = Path(sweep_dir)
    jobs = read_jobs(sweep_dir)
    keys = swept_keys(jobs)
    write_tables(sweep_dir, jobs)
    out = {"jobs_csv": sweep_dir / "jobs.csv", "jobs_json": sweep_dir / "jobs.json"}
    if any(j.image for j in jobs):
        contact_sheet(jobs, keys).save(sweep_dir / "contact_sheet.png")
        out["contact_sheet"] = sweep_dir / "contact_sheet.png"
    out["gallery"] = write_gallery(sweep_dir, jobs, keys)
    return out
