"""`hrtemnet evaluate` on a tiny in-memory store with fake models (no simulation, no network)."""

from __future__ import annotations

import csv
import sys
import types
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hrtemnet.cli import app
from hrtemnet.columns import NUM_LABELS, Columns
from hrtemnet.evaluation import EvaluationConfig, evaluate_models
from hrtemnet.models import flip_average_name, takes_defocus

SAMPLING_A = 0.15
SHAPE = (112, 112)


class FakeStore:
    """Series whose channel c shows the columns of class c as Gaussian blobs."""

    sampling_A = SAMPLING_A
    image_shape = SHAPE

    def __len__(self):
        return 4

    def read_columns(self, i):
        rng = np.random.default_rng(i)
        a, xy = 3.16, []
        shift = rng.uniform(0, a, 2)
        for m in range(-2, 9):
            for n in range(-2, 9):
                x, y = shift[0] + (m + n / 2) * a, shift[1] + n * a * np.sqrt(3) / 2
                xy += [(x, y), (x + a / 2, y + a / (2 * np.sqrt(3)))]
        xy = np.array(
            [p for p in xy if 0 <= p[0] < SHAPE[1] * SAMPLING_A and 0 <= p[1] < SHAPE[0] * SAMPLING_A]
        )
        return Columns(xy, rng.integers(0, 3, len(xy)))

    def read_images(self, i):
        columns = self.read_columns(i)
        rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]] * SAMPLING_A
        images = np.zeros((3, *SHAPE), dtype=np.float32)
        for (x, y), c in zip(columns.xy_A, columns.class_index, strict=True):
            images[c] += np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * 0.35**2))
        return images

    def read_params(self, i):
        return {
            "substrate_graphene": float(i % 2),
            "defocus_0_A": -30.0,
            "defocus_1_A": 20.0,
            "defocus_2_A": 70.0,
        }


@dataclass
class FakeModel:
    name: str
    swap_s: bool = False  # confuses S2 and S
    sampling_A: float = SAMPLING_A
    peak_params: dict | None = None
    card: str = ""
    net: object = None
    kwargs: dict = field(default_factory=dict)  # an image-only network


def fake_predict(model, series, *tiling):
    probabilities = np.zeros((NUM_LABELS, *series.shape[1:]))
    probabilities[1:] = np.clip(series, 0, 1) * 0.95
    if model.swap_s:
        probabilities[[2, 3]] = probabilities[[3, 2]]
    probabilities[0] = 1 - probabilities[1:].sum(axis=0)
    return probabilities


class FakeNoiseConfig:
    def __init__(self, dose_e_per_A2=None):
        self.dose_e_per_A2 = dose_e_per_A2


def fake_noise(images, sampling_A, rng, noise=None):
    dose = (
        noise.dose_e_per_A2
        if noise and noise.dose_e_per_A2
        else float(np.exp(rng.uniform(np.log(1e4), 11.5)))
    )
    return images + rng.normal(0, 30 / np.sqrt(dose), images.shape).astype(np.float32), dose


@pytest.fixture
def fakes(monkeypatch):
    """Stand-ins for the simulation, prediction, dataset and model modules."""
    modules = {
        "hrtemnet.simulation": {"NoiseConfig": FakeNoiseConfig, "add_imaging_noise": fake_noise},
        "hrtemnet.dataset": {"open_store": lambda path: FakeStore(), "open_stores": lambda paths: FakeStore()},
        "hrtemnet.models": {"load_model": lambda spec, flip_average=False: FakeModel(spec, swap_s=spec == "swapper"),
                            "takes_defocus": takes_defocus, "flip_average_name": flip_average_name},
    }
    monkeypatch.setattr("hrtemnet.prediction.predict_probabilities", fake_predict)
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)


def test_evaluate_models_writes_table_figures_and_report(fakes, tmp_path):
    models = [FakeModel("good"), FakeModel("swapper", swap_s=True)]
    config = EvaluationConfig(dose_sweep_e_per_A2=(1e3, 1e5), dose_sweep_images=2, progress=False)
    result = evaluate_models(FakeStore(), models, tmp_path, config)

    with open(tmp_path / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["substrate"] for r in rows} == {"bare", "graphene"}
    assert {"image_index", "dose_e_per_A2", "model", "f1", "position_f1", "f1_Mo", "f1_S2", "f1_S"} <= rows[
        0
    ].keys()
    # what was drawn for each series, to slice the failures by
    assert [float(r["substrate_graphene"]) for r in rows[::2]] == [i % 2 for i in range(4)]
    assert all(float(r["defocus_1_A"]) == 20.0 for r in rows)
    good = [s.f1 for s in result.scores["good"]]
    swapped = [s.f1 for s in result.scores["swapper"]]
    assert min(good) > 0.97 and max(swapped) < 0.9  # class confusion costs species-aware F1 ...
    assert min(s.position_f1 for s in result.scores["swapper"]) > 0.97  # ... but not position F1
    summary = {r["model"]: r for r in result.summary()}
    assert summary["good"]["pooled_f1_S"] > 0.97 and summary["swapper"]["pooled_f1_S"] < 0.5
    assert result.comparisons()[0]["a_better"] == 4

    for name in ("f1_histograms.png", "example_series.png", "confusion_matrices.png", "f1_vs_dose.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
        assert f"]({name})" in (tmp_path / "report.md").read_text()


def test_noise_does_not_depend_on_limit(fakes, tmp_path):
    config = EvaluationConfig(dose_sweep_e_per_A2=(), progress=False)
    full = evaluate_models(FakeStore(), [FakeModel("good")], tmp_path / "a", config)
    config.limit = 2
    part = evaluate_models(FakeStore(), [FakeModel("good")], tmp_path / "b", config)
    assert [r["dose_e_per_A2"] for r in part.rows] == [r["dose_e_per_A2"] for r in full.rows[:2]]
    assert not (tmp_path / "b" / "f1_vs_dose.png").exists()


def test_evaluate_command(fakes, tmp_path):
    store = tmp_path / "val.zarr"
    store.mkdir()
    runner = CliRunner()
    args = [
        "evaluate",
        str(store),
        "--model",
        "good",
        "--model",
        "swapper",
        "--out-dir",
        str(tmp_path / "out"),
    ]
    result = runner.invoke(app, [*args, "--limit", "2", "--dose-sweep", "", "--dose", "2e4"])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output and (tmp_path / "out" / "report.md").exists()
    result = runner.invoke(app, [*args, "--limit", "2", "--dose-sweep", "", "--flip-average", "yes"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "per_image.csv")
    assert set(table.model) == {"good +flips", "swapper +flips"}  # named apart from the same models without
    result = runner.invoke(app, [*args, "--limit", "2", "--dose-sweep", "", "--flip-average", "both"])
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(tmp_path / "out" / "per_image.csv").model.unique()) == [
        "good", "good +flips", "swapper", "swapper +flips"]
    for bad in (["--dose", "-1"], ["--limit", "0"], ["--dose-sweep", "1e4,x"], ["--flip-average", "maybe"]):
        assert runner.invoke(app, [*args, *bad]).exit_code == 2, bad
    missing = ["evaluate", str(tmp_path / "nope.zarr"), "--model", "good", "--out-dir", str(tmp_path / "o")]
    assert runner.invoke(app, missing).exit_code == 2


def test_dose_sweep_uses_images_spread_over_the_set(fakes, tmp_path):
    """A bare + graphene pair of stores is read as one: the sweep must not take only the first (bare) images."""

    class RecordingStore(FakeStore):
        def __init__(self):
            super().__init__()
            self.reads = []

        def read_images(self, i):
            self.reads.append(i)
            return super().read_images(i)

    store = RecordingStore()
    config = EvaluationConfig(dose_sweep_e_per_A2=(1e4,), dose_sweep_images=2, progress=False)
    result = evaluate_models(store, [FakeModel("good")], tmp_path, config)
    assert store.reads[len(store):] == [0, len(store) - 1]
    assert len(result.dose_sweep["good"][1e4]) == 2


def test_models_with_defocus_inputs_get_the_nominal_defocus_a_user_would_give():
    from types import SimpleNamespace

    from hrtemnet.evaluation import nominal_defocus_for

    store = SimpleNamespace(read_params=lambda i: {"defocus_0_A": -40.0, "defocus_1_A": 10.0, "defocus_2_A": 60.0,
                                                   "cs_A": 1e5})
    conditioned, plain = SimpleNamespace(kwargs={"in_channels": 6}), SimpleNamespace(kwargs={"depth": 100})
    assert nominal_defocus_for(plain, store, 0, 3) is None
    first = np.array([nominal_defocus_for(conditioned, store, 0, i) for i in range(200)])
    assert np.array_equal(first, [nominal_defocus_for(conditioned, store, 0, i) for i in range(200)])  # seeded
    errors = first - [-40.0, 10.0, 60.0]
    assert 12 < errors[:, 0].std() < 28 and abs(errors[:, 0].mean()) < 5  # the 20 Å offset
    assert 3 < (errors[:, 1] - errors[:, 0]).std() < 7  # the 5 Å step error
