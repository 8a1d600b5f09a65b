"""examples/optuna: Hydra's Optuna sweeper maximises the run's objective (quality.score)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.test_cli import zitflow

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="hydra-optuna-sweeper is in the dev extra")


def test_search_reports_the_best_trial(tmp_path):
    p = zitflow("-m", "recipe=retouch_scored", "input=samples/chelsea.png", "hydra/sweeper=optuna",
                "hydra.sweeper.direction=maximize", "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=3",
                "stages.sharpen.amount=interval(0,3)", "stages.color.contrast=interval(0.8,1.6)",
                f"hydra.sweep.dir={tmp_path}/sweep", cache=tmp_path / "cache",
                env={"ZITFLOW_RECIPE_PATH": str(Path(REPO) / "examples" / "optuna")})
    sweep = tmp_path / "sweep"
    ms = [json.loads(f.read_text()) for f in sorted(sweep.glob("*/manifest.json"))]
    assert len(ms) == 4, p.stdout + p.stderr
    values = [m["objective"]["value"] for m in ms]
    assert len(set(values)) == 4  # four different settings, four different scores
    res = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert res["best_value"] == pytest.approx(max(values))
    assert 0 <= res["best_params"]["stages.sharpen.amount"] <= 3
    assert 0.8 <= res["best_params"]["stages.color.contrast"] <= 1.6
    loads = [s["status"] for m in ms for s in m["stages"] if s["name"] == "load"]
    assert loads.count("run") == 1  # every trial after the first reuses the loaded photo


def test_objective_must_name_a_stage(tmp_path):
    p = zitflow("recipe=retouch_scored", "objective=nosuch.score", f"hydra.run.dir={tmp_path}/run",
                cache=tmp_path / "cache", check=False,
                env={"ZITFLOW_RECIPE_PATH": str(Path(REPO) / "examples" / "optuna")})
    assert p.returncode == 2
    assert "field 'objective'" in p.stderr and "quality.score" in p.stderr and "Traceback" not in p.stderr
