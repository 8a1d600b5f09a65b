"""Trust: a recipe from a shared folder cannot make zitflow import or run code outside the user's
allow-list, export paths cannot leave the output dir, and weights never load through pickle.
"""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from zitflow.artifacts import File
from zitflow.executor import Manifest
from zitflow.job import safe_join, write_outputs
from zitflow.naming import PLACEHOLDERS, render_name
from zitflow.recipe import RecipeError, build_graph

PACKAGE = Path(REPO) / "zitflow"


# -- weights never load through pickle ---------------------------------------------------------------
def _sources():
    for path in sorted([*PACKAGE.rglob("*.py"), *(Path(REPO) / "hydra_plugins").rglob("*.py")]):
        yield path, ast.parse(path.read_text(), str(path))


def test_no_module_imports_a_pickle_loader():
    banned = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "_pickle"}
    found = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names if n.split(".")[0] in banned]
    assert found == []


def test_every_torch_load_is_weights_only_and_nothing_evals():
    torch_loads, bad = 0, []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if name == "load" and owner == "torch":
                torch_loads += 1
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    bad.append(f"{where} torch.load without weights_only=True")
            if name == "load" and owner in ("np", "numpy") and "allow_pickle" in kw:
                bad.append(f"{where} np.load(allow_pickle=...)")
            if name in ("eval", "exec") and isinstance(f, ast.Name):
                bad.append(f"{where} {name}()")
            if name == "from_pretrained" and "use_safetensors" in kw:
                v = kw["use_safetensors"]
                if not (isinstance(v, ast.Constant) and v.value is True):
                    bad.append(f"{where} from_pretrained(use_safetensors=...) not True")
    assert bad == []
    assert torch_loads >= 1  # the SR user-weights path is checked, not absent


def test_model_weights_load_with_safetensors_only():
    """Every model ``from_pretrained`` in the pool passes use_safetensors=True (tokenizers and
    schedulers load JSON configs, no weights)."""
    tree = ast.parse((PACKAGE / "models" / "pool.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr == "from_pretrained"]
    model_calls = [c for c in calls if any(k.arg in ("dtype", "torch_dtype") for k in c.keywords)]
    assert model_calls and all(any(k.arg == "use_safetensors" for k in c.keywords) for c in model_calls)


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_in_place_of_sr_weights_is_refused_without_running(tmp_path):
    from zitflow.sr.models import WeightsError, _state_dict, resolve

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"params": _Payload(str(marker))}))
    ref = resolve("custom", str(evil))
    with pytest.raises(WeightsError, match="cannot be read as plain weights"):
        _state_dict(ref, tmp_path)
    assert not marker.exists()


# -- recipes cannot import code --------------------------------------------------------------------
def test_target_outside_the_allow_list_is_not_imported(tmp_path, monkeypatch):
    (tmp_path / "evilpkg").mkdir()
    (tmp_path / "evilpkg" / "__init__.py").write_text(f"open({str(tmp_path / 'IMPORTED')!r}, 'w')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for target in ("evilpkg.Stage", "os.system", "builtins.exec", "zitflowx.Stage", "tests_evil.X"):
        with pytest.raises(RecipeError, match=r"field '_target_'.*is not allowed"):
            build_graph("shared", {"s": {"_target_": target}}, allow_modules=["tests"])
    assert not (tmp_path / "IMPORTED").exists() and "evilpkg" not in sys.modules
    # allowed but not a Stage: imported by the user's choice, still refused
    with pytest.raises(RecipeError, match="not a zitflow Stage subclass"):
        build_graph("shared", {"s": {"_target_": "evilpkg.__name__"}}, allow_modules=["evilpkg"])


PACK = """\
# @package _global_
schema_version: 1
{extra}
stages:
  src: {{_target_: tests.conftest.TestSource, value: 3}}
"""


def _pack_run(tmp_path, extra: str, *args, env=None):
    pack = tmp_path / "pack"
    (pack / "recipe").mkdir(parents=True, exist_ok=True)
    (pack / "recipe" / "shared.yaml").write_text(PACK.format(extra=extra))
    e = dict(os.environ, ZITFLOW_CACHE_DIR=str(tmp_path / "cache"), HYDRA_FULL_ERROR="0", **(env or {}))
    if "ZITFLOW_ALLOW_MODULES" not in (env or {}):
        e.pop("ZITFLOW_ALLOW_MODULES", None)
    return subprocess.run([sys.executable, "-m", "zitflow", f"hydra.searchpath=[file://{pack}]", "recipe=shared",
                           "model=tiny", "runtime=cpu", f"hydra.run.dir={tmp_path / 'run'}", *args],
                          cwd=REPO, env=e, capture_output=True, text=True)


def test_recipe_cannot_allow_list_itself_through_hydra_env_set(tmp_path):
    """A recipe is composed into Hydra's config, so it can set ``hydra.job.env_set``: that put
    ZITFLOW_ALLOW_MODULES in the environment before zitflow read it, and the recipe's _target_
    was imported. It is now ignored with a warning."""
    p = _pack_run(tmp_path, "hydra:\n  job:\n    env_set:\n      ZITFLOW_ALLOW_MODULES: tests\n")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "ignoring hydra.job.env_set.ZITFLOW_ALLOW_MODULES set by the recipe" in p.stdout + p.stderr
    assert "field '_target_': _target_ 'tests.conftest.TestSource' is not allowed" in p.stderr
    # the user's own environment and command line still work
    assert _pack_run(tmp_path, "", env={"ZITFLOW_ALLOW_MODULES": "tests"}).returncode == 0
    assert _pack_run(tmp_path, "", "+hydra.job.env_set.ZITFLOW_ALLOW_MODULES=tests").returncode == 0


def test_recipe_hydra_callback_cannot_run_code(tmp_path):
    marker = tmp_path / "PWNED"
    extra = (f"hydra:\n  callbacks:\n    pwn:\n      _target_: builtins.exec\n"
             f"      _args_: [\"open('{marker}', 'w')\"]\n")
    p = _pack_run(tmp_path, extra, "allow_modules=[tests]")
    assert p.returncode != 0 and not marker.exists()
    assert "blocklisted" in p.stderr  # Hydra's own instantiate policy refuses exec-like targets


# -- export paths stay in the output dir ---------------------------------------------------------
@pytest.mark.parametrize("name", ["../evil.png", "/etc/evil.png", "a/b.png", "..", ".", "", "x/../../y.png",
                                  "..\\evil.png" if os.sep == "\\" else "sub/", "evil.png/"])
def test_safe_join_refuses_names_that_leave(tmp_path, name):
    with pytest.raises(ValueError, match="would leave the output dir"):
        safe_join(tmp_path / "out", name)


def test_write_outputs_writes_nothing_outside(tmp_path):
    out = tmp_path / "run"
    m = Manifest("r", [], {"export": File(b"x", "../../escaped.png")})
    with pytest.raises(ValueError, match="would leave the output dir"):
        write_outputs(m, out)
    assert not list(tmp_path.rglob("escaped.png"))


@settings(max_examples=300, deadline=None)
@given(template=st.lists(st.sampled_from([*("{" + p + "}" for p in PLACEHOLDERS), "_", "-", "..", "/", "\\", "x"]),
                         min_size=1, max_size=8).map("".join),
       prompt=st.text(max_size=300), seed=st.one_of(st.integers(), st.none(), st.text(max_size=20)))
def test_rendered_export_names_always_stay_inside(tmp_path_factory, template, prompt, seed):
    out = tmp_path_factory.getbasetemp() / "out"
    values = {"recipe": "../r", "seed": seed, "stage": "export", "prompt": prompt, "config_hash": "ab/cd",
              "model": "..", "width": 64, "height": 64, "format": "png"}
    try:
        name = render_name(template, values, "png")
    except ValueError:
        return  # a template the export stage refuses when the recipe is checked
    path = safe_join(out, name)
    assert path.parent == out.resolve() and name.endswith(".png")
    assert all(c.isalnum() or c in "._-" for c in name)
