"""``list`` and ``show`` over the search path, recipe packs (examples/recipe_pack through
ZITFLOW_RECIPE_PATH and hydra.searchpath) and the schema-version message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_cli import zitflow
from zitflow.catalog import chain_text, compose_recipe, output_sizes
from zitflow.commands import cmd_list, cmd_show
from zitflow.recipe import SCHEMA_VERSION, RecipeError, build_graph, check_schema

PACK = Path(REPO) / "examples" / "recipe_pack"
RECIPES = sorted(p.stem for p in (Path(REPO) / "recipes").glob("*.yaml"))


@pytest.fixture
def with_pack(monkeypatch):
    monkeypatch.setenv("ZITFLOW_RECIPE_PATH", str(PACK))


def test_list_shows_every_recipe_with_description_size_and_chain(capsys, with_pack):
    assert cmd_list([]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [ln.split()[0] for ln in lines if ln and not ln.startswith(" ")]
    assert names == sorted(RECIPES + ["square_stamp", "wechat_cover"])
    row = {ln.split()[0]: (ln, lines[i + 1]) for i, ln in enumerate(lines) if ln and not ln.startswith(" ")}
    head, chain = row["ecommerce_main"]
    assert "1200x1500, 800x800" in head and "gen 1024x1024" in head and "from one 1024x1024 generation" in head
    assert chain.strip().startswith("resolution -> encode -> denoise -> decode -> { fit ->") and " | fit" in chain
    head, chain = row["print_a4_300dpi"]
    assert "2480x3508" in head and "gen 832x1216" in head and "super_resolve" in chain and "BROKEN" not in head
    head, _ = row["retouch"]
    assert "no generation" in head
    head, chain = row["wechat_cover"]
    assert "900x383" in head and "gen 1536x640" in head


def test_list_marks_a_broken_recipe_with_its_reason(tmp_path, capsys, monkeypatch):
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "old_one.yaml").write_text("# @package _global_\nschema_version: 0\nstages: {}\n")
    monkeypatch.setenv("ZITFLOW_RECIPE_PATH", str(tmp_path))
    cmd_list([])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("old_one"))
    assert "BROKEN: recipe 'old_one' is written for recipe schema 0" in line and "schema_version: 1" in line


def test_show_prints_the_resolved_dag_with_overrides(capsys):
    assert cmd_show(["recipe=banner", "stages.sharpen.amount=0.9"]) == 0
    out = capsys.readouterr().out
    assert "generates 1344x768; delivers export 1920x1080" in out
    assert "sharpen (sharpen) [image<-fit]" in out and "amount=0.9" in out
    assert "strategy='native'" in out


def test_show_writes_mermaid_and_graphviz(tmp_path, capsys):
    assert cmd_show(["recipe=ecommerce_main", "--out", str(tmp_path / "g.mmd")]) == 0
    mmd = (tmp_path / "g.mmd").read_text()
    assert mmd.startswith("flowchart LR") and "decode -->|image| fit_square" in mmd and "decode -->|image| fit\n" in mmd
    assert cmd_show(["recipe=ecommerce_main", "--out", str(tmp_path / "g.dot")]) == 0
    dot = (tmp_path / "g.dot").read_text()
    assert dot.startswith('digraph "ecommerce_main"') and '"decode" -> "fit_square"' in dot
    assert cmd_show(["recipe=poster", "--out", str(tmp_path / "g.md")]) == 0
    assert (tmp_path / "g.md").read_text().startswith("```mermaid\nflowchart LR")
    code = cmd_show(["recipe=poster", "--out", str(tmp_path / "g.svg")])
    if shutil.which("dot"):
        assert code == 0 and (tmp_path / "g.svg").read_text().lstrip().startswith("<?xml")
    else:
        assert code == 2 and "needs Graphviz's 'dot'" in capsys.readouterr().err


def test_show_unknown_recipe_is_one_line_naming_the_known_ones(capsys):
    assert cmd_show(["recipe=postr"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no recipe 'postr'" in err and "poster" in err


def test_chain_text_and_sizes_of_a_post_only_recipe():
    g = build_graph("retouch", compose_recipe("retouch").stages)
    assert chain_text(g) == "load_image -> resolution -> fit -> sharpen -> color_correct -> export"
    assert output_sizes(g) == {"export": (1080, 1920)}


def test_example_pack_runs_through_hydra_searchpath_and_extends_a_builtin(tmp_path):
    """The pack from examples/ on the real command line: a pack recipe that extends banner."""
    p = zitflow(f"hydra.searchpath=[file://{PACK}]", "recipe=wechat_cover", "model=tiny", "runtime=cpu",
                "stages.denoise.steps=2", "prompt=misty bamboo", f"hydra.run.dir={tmp_path}/run", cache=tmp_path / "c")
    from PIL import Image as PILImage

    files = list((tmp_path / "run").glob("wechat_cover_*.jpg"))
    assert len(files) == 1, p.stdout + p.stderr
    with PILImage.open(files[0]) as img:
        assert img.size == (900, 383) and img.format == "JPEG"  # banner's JPEG, the pack's size


def test_example_pack_from_the_environment(with_pack):
    cfg = compose_recipe("square_stamp")
    assert cfg.description.startswith("256x256") and cfg.schema_version == SCHEMA_VERSION
    assert output_sizes(build_graph("square_stamp", cfg.stages)) == {"export": (256, 256)}
    wechat = compose_recipe("wechat_cover").stages
    assert (wechat.size.width, wechat.size.strategy, wechat.sharpen.amount) == (900, "native", 0.3)


def test_a_pack_recipe_cannot_shadow_a_builtin(tmp_path, monkeypatch):
    """The built-in recipes/ comes first on the search path: a pack's poster.yaml is not used."""
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "poster.yaml").write_text("# @package _global_\nschema_version: 1\n"
                                                     "description: impostor\nstages: {}\n")
    monkeypatch.setenv("ZITFLOW_RECIPE_PATH", str(tmp_path))
    assert compose_recipe("poster").description != "impostor"


@pytest.mark.parametrize("declared, words", [
    (None, ["declares no 'schema_version'", "(1) start the file with '# @package _global_'",
            "'stages:'", "then declare 'schema_version: 1'", "docs/recipes.md#schema"]),
    (0, ["written for recipe schema 0", "reads schema 1", "To update it", "'kind: <built-in kind>'",
         "then declare 'schema_version: 1'"]),
    (2, ["schema 2, newer than the schema 1", "upgrade zitflow"]),
    ("1.0", ["must be a whole number", "'1.0'", "write 'schema_version: 1'"]),
])
def test_schema_message_says_what_to_change(declared, words):
    with pytest.raises(RecipeError) as e:
        check_schema("old_recipe", declared)
    msg = str(e.value)
    assert msg.startswith("recipe 'old_recipe'")
    for w in words:
        assert w in msg, msg
    check_schema("current", SCHEMA_VERSION)


def test_old_schema_pack_recipe_fails_the_run_with_that_message(tmp_path):
    (tmp_path / "pack" / "recipe").mkdir(parents=True)
    text = (PACK / "recipe" / "square_stamp.yaml").read_text().replace("schema_version: 1", "schema_version: 0")
    (tmp_path / "pack" / "recipe" / "stamp_v0.yaml").write_text(text)
    p = zitflow("recipe=stamp_v0", "model=tiny", f"hydra.run.dir={tmp_path}/run", cache=tmp_path / "c",
                env={"ZITFLOW_RECIPE_PATH": str(tmp_path / "pack")}, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "recipe 'stamp_v0' is written for recipe schema 0" in p.stderr and "To update it" in p.stderr


def test_docs_table_matches_every_recipe():
    """docs/recipes.md has a row per recipe naming what it delivers and generates."""
    from zitflow.catalog import generation_size, fmt_size

    rows = {ln.split("|")[1].strip().strip("`"): ln for ln in
            (Path(REPO) / "docs" / "recipes.md").read_text().splitlines() if ln.startswith("| `")}
    for name in RECIPES:
        g = build_graph(name, compose_recipe(name).stages)
        row = rows[name]
        for size in output_sizes(g).values():
            assert fmt_size(size) in row.split("|")[2], (name, size)
        gen = generation_size(g)
        assert (fmt_size(gen) if gen else "nothing") in row.split("|")[3], name
