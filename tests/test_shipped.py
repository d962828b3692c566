"""The shipped models and `hrtemnet demo`: what a new user runs first."""

import json
import re

import pytest
from typer.testing import CliRunner

from hrtemnet.cli import app
from hrtemnet.models import SHIPPED_MODELS_DIR, load_model


@pytest.mark.parametrize("name", ["msd", "unet"])
def test_shipped_model_is_small_and_has_a_model_card(name):
    path = SHIPPED_MODELS_DIR / f"{name}.pt"
    assert path.stat().st_size < 5e6
    model = load_model(name)
    assert model.name == name and model.sampling_A == 0.15
    card = json.loads((SHIPPED_MODELS_DIR / f"{name}.json").read_text())
    assert card["training_command"].startswith("hrtemnet train")
    assert card["training_set"]["series"] > 0
    for key in ("mean_f1_bare", "mean_f1_graphene", "pooled_f1_S"):
        assert 0 <= card["validation"][key] <= 1
    assert (SHIPPED_MODELS_DIR / f"{name}.md").read_text().startswith("# Model card")
    assert model.peak_params == card["peak_params"]


@pytest.mark.slow
def test_demo_simulates_predicts_and_scores(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--n", "2", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    scores = {name: [float(v) for v in re.findall(rf"{name} F1 ([0-9.]+)", result.output)] for name in ("msd", "unet")}
    assert len(scores["msd"]) == len(scores["unet"]) == 2
    # the shipped networks find and classify the columns of fresh series (bare and on graphene)
    assert min(scores["msd"]) > 0.85 and min(scores["unet"]) > 0.85
    assert (tmp_path / "example_series.png").stat().st_size > 10_000
    assert (tmp_path / "report.md").exists()
