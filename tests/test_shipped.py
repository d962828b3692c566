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


@pytest.mark.slow
def test_shipped_msd_gives_the_same_columns_on_a_large_series_as_on_its_tiles():
    """A 1024² series (a periodic 256² simulation repeated 4x4) against the 256² original, away from its edges."""
    import numpy as np

    from hrtemnet.columns import Columns
    from hrtemnet.io import FocalSeries
    from hrtemnet.metrics import match_image
    from hrtemnet.prediction import predict_series
    from hrtemnet.simulation import (
        NoiseConfig,
        OpticsParams,
        SimulationConfig,
        add_imaging_noise,
        simulate_focal_series,
    )
    from hrtemnet.structures import StructureConfig, random_structure

    sample = random_structure(np.random.default_rng(8), StructureConfig(sheet_probability=1.0))
    clean = simulate_focal_series(sample.atoms, OpticsParams(), SimulationConfig(num_phonons=2))
    small, _ = add_imaging_noise(clean, 0.15, np.random.default_rng(0), NoiseConfig(dose_e_per_A2=5e4))
    large = np.tile(small, (1, 4, 4))
    model = load_model("msd")
    small_columns = predict_series(model, FocalSeries(small, 0.15, "small", "small"))
    large_columns = predict_series(model, FocalSeries(large, 0.15, "large", "large"))

    def central(columns, origin_A):
        xy = columns.xy_A - origin_A
        return columns.subset(np.all((xy > 8.0) & (xy < 30.4), axis=1))

    # the copy in the middle of the large series, moved back onto the small one
    shifted = Columns(large_columns.xy_A - 38.4, large_columns.class_index)
    a, b = central(small_columns, 0.0), central(shifted, 0.0)
    assert len(a) > 50
    score = match_image(a, b, (38.4, 38.4), 0.2, 0.0).score()
    assert score.f1 >= 0.99, score.as_row()
