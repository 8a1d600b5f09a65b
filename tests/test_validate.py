"""`python -m zitflow validate` on the tiny model: the table, the determinism check, the plot."""

from __future__ import annotations

import json

import pytest
from PIL import Image as PILImage

from zitflow.validate import main, parse_sizes


def test_validate_on_the_tiny_model(tmp_path, capsys):
    assert main(["model=tiny", "runtime.device=cpu", "--sizes", "128,256x128", "--repeats", "1",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "latents identical" in out
    report = json.loads((tmp_path / "validate.json").read_text())
    assert report["deterministic"] is True and report["model"] == "tiny"
    rows = {f"{r['width']}x{r['height']}": r for r in report["rows"]}
    assert set(rows) == {"128x128", "256x128"}
    for r in rows.values():
        assert r["error"] is None and set(r["seconds"]) == {"encode", "denoise", "decode"}
        assert all(v > 0 for v in r["seconds"].values())
        assert r["quality"]["sharpness"] > 0 and r["estimate_gib"] > 0 and r["plan"] == "resident"
    with PILImage.open(tmp_path / "validate.png") as im:
        assert im.size == (900, 420)


@pytest.mark.parametrize("bad", ["100", "512x", "abc", ""])
def test_bad_sizes_are_one_clear_error(bad, tmp_path, capsys):
    assert main(["model=tiny", "--sizes", bad, "--out", str(tmp_path)]) == 2
    assert "--sizes" in capsys.readouterr().out


def test_unknown_model_and_override(tmp_path, capsys):
    assert main(["model=nosuch", "--out", str(tmp_path)]) == 2
    assert "allowed: " in capsys.readouterr().out
    assert main(["model=tiny", "seed=3", "--out", str(tmp_path)]) == 2
    assert "unknown override" in capsys.readouterr().out


def test_parse_sizes():
    assert parse_sizes("512, 1088x1920") == [(512, 512), (1088, 1920)]

