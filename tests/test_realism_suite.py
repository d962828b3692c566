"""The realism suite (`hrtemnet evaluate --condition`): condition files, their draws, the table, the paired tests
and resuming. Series are tiny static-lattice simulations; predictions are mocked where the network does not matter."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import hrtemnet
from hrtemnet import peaks
from hrtemnet.cli import app
from hrtemnet.columns import CLASS_NAMES
from hrtemnet.errors import UserError
from hrtemnet.evaluation import (
    Condition,
    ConditionSuiteResult,
    condition_store,
    load_condition,
    load_conditions,
    run_conditions,
)
from hrtemnet.metrics import NONE, ImageScore

SUITE = Path(__file__).resolve().parents[1] / "experiments" / "realism" / "conditions"


def tiny(condition: Condition, n: int = 2) -> Condition:
    """The same condition on a 12.8 Å field with a static lattice: seconds instead of minutes."""
    dataset = condition.dataset
    dataset = replace(dataset, structure=replace(dataset.structure, field_of_view_A=(12.8, 12.8)),
                      simulation=replace(dataset.simulation, num_phonons=0))
    return replace(condition, dataset=dataset, n=n)


def write_condition(path: Path, **fields) -> Path:
    path.write_text(json.dumps({"label": path.stem, "base": "seed_window",
                                "dataset": {"simulation": {"num_phonons": 0},
                                            "structure": {"field_of_view_A": [12.8, 12.8]}},
                                "n": 1, "seed": 3} | fields))
    return path


class FakePredict:
    """Stands in for `hrtemnet.predict`: columns at the brightest spots of the mean image (a deterministic function
    of the series, so two runs agree only if they recorded the same series); records how it was called and can stop
    the run after `stop_after` calls, as an interruption would."""

    def __init__(self, stop_after: int | None = None):
        self.calls: list[dict] = []
        self.stop_after = stop_after

    def __call__(self, series, sampling_A=None, model="msd", align=True, **kwargs):
        from skimage.feature import peak_local_max

        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            raise KeyboardInterrupt
        self.calls.append({"model": model.name, "align": align, "series": series,
                           "flip_average": model.flip_average, "defocus_search_A": kwargs.get("defocus_search_A")})
        peaks = peak_local_max(series.mean(axis=0), min_distance=6)
        frame = pd.DataFrame({"x_A": peaks[:, 1] * sampling_A, "y_A": peaks[:, 0] * sampling_A,
                              "class": [CLASS_NAMES[i % 3] for i in range(len(peaks))]})
        frame.attrs.update(aligned=align, shifts_A=np.zeros((len(series), 2)).tolist(), warnings=[])
        return frame


@pytest.fixture
def fake_predict(monkeypatch):
    fake = FakePredict()
    monkeypatch.setattr(hrtemnet, "predict", fake)
    return fake


# ---- condition files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, message", [
    ({"dose": 1e3}, "unknown field(s) dose"),
    ({"dataset": {"optics": {"first_defocus_range": [0, 1]}}}, "unknown field(s) first_defocus_range"),
    ({"noise": {"dose_range": [1e3, 2e3]}}, "unknown noise field(s) dose_range"),
    ({"noise": {"camera": {"gain": 2}}}, "camera.gain"),
    ({"drift_A_range": [3.0, 1.0]}, "reversed"),
    ({"n": 0}, "n = 0 must be at least 1"),
    ({"align": "yes"}, "align = 'yes' must be true or false"),
    ({"base": "seed"}, "base 'seed' is not one of"),
])
def test_a_bad_condition_file_is_one_line_and_exit_2(tmp_path, fields, message):
    path = write_condition(tmp_path / "bad.json", **fields)
    with pytest.raises(UserError, match="condition file"):
        load_condition(path)
    result = CliRunner().invoke(app, ["evaluate", "--condition", str(path), "--model", "msd",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and str(path) in result.output
    assert result.output.count("error:") == 1 and not (tmp_path / "out").exists()


def test_the_suite_holds_the_issues_conditions():
    conditions = {c.name: c for c in load_conditions([SUITE])}
    assert len(conditions) >= 14
    low, high = conditions["03_defocus_low_edge"], conditions["04_defocus_high_edge"]
    assert low.dataset.optics.first_defocus_A_range == (-150.0, -80.0)
    assert high.dataset.optics.first_defocus_A_range == (40.0, 100.0)
    assert low.dataset.optics.defocus_step_A_range == high.dataset.optics.defocus_step_A_range == (80.0, 120.0)
    aligned, unaligned = conditions["06_drift_1_3A_aligned"], conditions["07_drift_1_3A_not_aligned"]
    assert aligned.align and not unaligned.align and aligned.drift_A_range == unaligned.drift_A_range == (1.0, 3.0)
    assert conditions["02_contamination_5_10A"].dataset.structure.carbon_probability == 1.0
    assert conditions["05_low_dose_1e3_3e3"].noise.dose_e_per_A2_range == (1e3, 3e3)
    assert conditions["01_in_distribution"].noise.camera is None and conditions["08_camera"].noise.camera
    assert {c.dataset.simulation.sampling_A for c in conditions.values()} == {0.10, 0.15, 0.20}
    assert conditions["11_large_field_77A"].dataset.structure.field_of_view_A == (76.8, 76.8)
    assert conditions["13_energy_80keV"].dataset.optics.energy_eV == 80e3
    assert conditions["14_full_realism"].dataset.optics.first_defocus_A_range == (-150.0, 100.0)
    # everything else about the seed-window conditions is the shipped models' window
    for condition in conditions.values():
        if condition.name != "14_full_realism":
            assert condition.dataset.structure.tilt_rad_range == (0.0, 0.0) or condition.name == "12_tilt_1_2deg"


@pytest.mark.parametrize("path", sorted(SUITE.glob("*.json")), ids=lambda p: p.stem)
def test_every_conditions_series_are_drawn_from_its_ranges(tmp_path, path):
    """What the store holds and what `record_condition_series` adds lie in the ranges the file states (the
    defocus edges start in their window, contamination is there in every series, the dose is low, ...)."""
    from hrtemnet.evaluation import record_condition_series

    condition = tiny(load_condition(path), n=3)
    structure, optics = condition.dataset.structure, condition.dataset.optics
    store = condition_store(tmp_path, condition, condition.n, workers=0, progress=False)
    for index in range(condition.n):
        params = store.read_params(index)
        defocus = [params[f"defocus_{i}_A"] for i in range(optics.num_defocus)]
        assert optics.first_defocus_A_range[0] <= defocus[0] <= optics.first_defocus_A_range[1]
        assert all(optics.defocus_step_A_range[0] <= step <= optics.defocus_step_A_range[1]
                   for step in np.diff(defocus))
        assert params["energy_eV"] == optics.energy_eV
        assert structure.tilt_rad_range[0] <= params["tilt_rad"] <= structure.tilt_rad_range[1]
        carbon = [params["carbon_top_A"], params["carbon_bottom_A"]]
        low, high = structure.carbon_thickness_A_range
        assert all(thickness == 0 or low <= thickness <= high for thickness in carbon)
        if structure.carbon_probability == 1:
            assert max(carbon) >= low > 0
        elif structure.carbon_probability == 0:
            assert carbon == [0, 0]
        _, shifts_A, dose = record_condition_series(condition, store.read_images(index), store.sampling_A, index)
        assert condition.noise.dose_e_per_A2_range[0] <= dose <= condition.noise.dose_e_per_A2_range[1]
        lengths = np.linalg.norm(shifts_A, axis=1)
        assert lengths[0] == 0 and all(condition.drift_A_range[0] <= d <= condition.drift_A_range[1]
                                       for d in lengths[1:])
    assert store.sampling_A == condition.dataset.simulation.sampling_A


def test_drift_conditions_drift_and_only_the_aligned_one_is_aligned(tmp_path, fake_predict):
    conditions = [tiny(load_condition(SUITE / f"{name}.json"))
                  for name in ("06_drift_1_3A_aligned", "07_drift_1_3A_not_aligned", "01_in_distribution")]
    result = run_conditions(conditions, ["msd"], tmp_path, workers=0, progress=False)
    assert [call["align"] for call in fake_predict.calls] == [True, True, False, False, True, True]
    rows = pd.read_csv(tmp_path / "per_image.csv")
    drifted = rows[rows.condition.str.startswith("0")
                   & rows.condition.str.contains("drift")]
    assert len(drifted) == 4 and drifted.drift_max_A.between(1.0, 3.0).all()
    assert (rows[rows.condition == "01_in_distribution"].drift_max_A == 0).all()
    assert list(rows[rows.condition.str.contains("not_aligned")].aligned) == [False, False]
    for record in map(json.loads, (tmp_path / "07_drift_1_3A_not_aligned" / "scores.jsonl").read_text().splitlines()):
        lengths = np.linalg.norm(record["applied_shifts_A"], axis=1)
        assert lengths[0] == 0 and all(1.0 <= length <= 3.0 for length in lengths[1:])
    # what predict got is the noise-free series moved by the recorded shifts (frames 2, 3), not the unmoved one
    from hrtemnet.dataset import open_store
    from hrtemnet.evaluation import shift_frames

    store = open_store(tmp_path / "06_drift_1_3A_aligned" / "series_n2.zarr")
    records = map(json.loads, (tmp_path / "06_drift_1_3A_aligned" / "scores.jsonl").read_text().splitlines())
    for index, (call, record) in enumerate(zip(fake_predict.calls[:2], records, strict=True)):
        clean = store.read_images(index)
        moved = shift_frames(clean, np.array(record["applied_shifts_A"]), store.sampling_A)
        for frame in (1, 2):
            recorded = call["series"][frame].ravel()
            to_moved = np.corrcoef(recorded, moved[frame].ravel())[0, 1]
            to_unmoved = np.corrcoef(recorded, clean[frame].ravel())[0, 1]
            assert to_moved > 0.8 and to_moved > to_unmoved + 0.3
    assert result.files["figure"].stat().st_size > 10_000


# ---- the table and the paired tests -----------------------------------------------------------------------


def _score(mo: int, s2: int, s: int, s2_called_s: int = 0, false_columns: int = 0) -> ImageScore:
    """A score with that many true Mo, S2 and S columns, all found, `s2_called_s` S2 labelled S."""
    confusion = np.zeros((NONE + 1, NONE + 1), dtype=np.int64)
    confusion[0, 0], confusion[1, 1], confusion[1, 2], confusion[2, 2] = mo, s2 - s2_called_s, s2_called_s, s
    confusion[NONE, 0] = false_columns
    return ImageScore(confusion)


def test_the_table_has_every_metric_and_a_wilcoxon_test_per_model_pair():
    condition = load_condition(SUITE / "02_contamination_5_10A.json")
    good = [_score(50, 45, 5) for _ in range(6)]
    vacancy_inventing = [_score(50, 45, 5, s2_called_s=5 + i) for i in range(6)]
    noisy = [_score(50, 45, 5, false_columns=i) for i in range(6)]
    result = ConditionSuiteResult([condition], ["good", "inventing", "noisy"],
                                  {(condition.name, "good"): good, (condition.name, "inventing"): vacancy_inventing,
                                   (condition.name, "noisy"): noisy}, rows=[])
    table = {r["model"]: r for r in result.table()}
    assert list(table["good"]) == ["condition", "label", "model", "n", "mean_f1", "sem_f1", "mean_position_f1",
                                   "pooled_f1_Mo", "pooled_f1_S2", "pooled_f1_S", "s_vacancy_fraction_true",
                                   "s_vacancy_fraction_predicted", "s_vacancy_fraction_relative_error"]
    assert table["good"]["n"] == 6 and table["good"]["mean_f1"] == 1.0
    assert table["good"]["s_vacancy_fraction_true"] == pytest.approx(0.1)
    assert table["good"]["s_vacancy_fraction_relative_error"] == pytest.approx(0.0)
    # 5 true S, 5 + 7.5 S2 called S on average: 12.5 / 50 = 0.25 predicted, 2.5x the truth
    assert table["inventing"]["s_vacancy_fraction_predicted"] == pytest.approx(0.25)
    assert table["inventing"]["s_vacancy_fraction_relative_error"] == pytest.approx(1.5)
    assert table["inventing"]["mean_position_f1"] == 1.0 > table["inventing"]["pooled_f1_S"]
    assert table["noisy"]["pooled_f1_Mo"] < 1.0 == table["noisy"]["pooled_f1_S2"]

    comparisons = result.comparisons()
    assert [(c["a"], c["b"]) for c in comparisons] == [("good", "inventing"), ("good", "noisy"),
                                                       ("inventing", "noisy")]
    good_vs_inventing = comparisons[0]
    assert good_vs_inventing["a_better"] == 6 and good_vs_inventing["mean_difference"] > 0
    assert good_vs_inventing["wilcoxon_p"] == pytest.approx(2 / 2**6)  # exact two-sided, all six one way
    assert comparisons[1]["ties"] == 1  # the noisy model's first series has no false column


# ---- resuming ---------------------------------------------------------------------------------------------


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    conditions = [tiny(load_condition(SUITE / f"{name}.json"), n=3)
                  for name in ("06_drift_1_3A_aligned", "05_low_dose_1e3_3e3")]
    models = ["msd", "unet"]
    monkeypatch.setattr(hrtemnet, "predict", FakePredict())
    run_conditions(conditions, models, tmp_path / "whole", workers=0, progress=False)

    interrupted = FakePredict(stop_after=8)  # all of the first condition, one series of the second
    monkeypatch.setattr(hrtemnet, "predict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_conditions(conditions, models, tmp_path / "resumed", workers=0, progress=False)
    log = tmp_path / "resumed" / "05_low_dose_1e3_3e3" / "scores.jsonl"
    log.write_text(log.read_text() + '{"model_sha256": "d7eb')  # a line cut short by the interruption
    resumed = FakePredict()
    monkeypatch.setattr(hrtemnet, "predict", resumed)
    run_conditions(conditions, models, tmp_path / "resumed", workers=0, progress=False)

    assert len(resumed.calls) == 12 - 8  # only what was missing
    for name in ("per_image.csv", "conditions_table.csv", "comparisons.csv", "conditions_table.md"):
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    assert len(log.read_text().splitlines()) == 6 and all(map(json.loads, log.read_text().splitlines()))
    # a larger --n reuses what is there; other settings in the same folder are refused
    more = FakePredict()
    monkeypatch.setattr(hrtemnet, "predict", more)
    run_conditions(conditions, models, tmp_path / "resumed", n=4, workers=0, progress=False)
    assert len(more.calls) == 2 * 2
    changed = replace(conditions[0], seed=conditions[0].seed + 1)
    with pytest.raises(UserError, match="other settings"):
        run_conditions([changed], models, tmp_path / "resumed", workers=0, progress=False)
    # the same models averaged over flips are scored apart, on the series already there
    flipped = FakePredict()
    monkeypatch.setattr(hrtemnet, "predict", flipped)
    run_conditions(conditions, models, tmp_path / "resumed", n=4, workers=0, progress=False, flip_average="both")
    assert len(flipped.calls) == 2 * 2 * 4 and all(call["flip_average"] for call in flipped.calls)
    assert set(pd.read_csv(tmp_path / "resumed" / "per_image.csv").model) == {"msd", "msd +flips", "unet",
                                                                              "unet +flips"}
    # scores read off the network output by another peak extraction are not reused: the models are rescored
    monkeypatch.setattr(peaks, "PEAK_EXTRACTION_VERSION", peaks.PEAK_EXTRACTION_VERSION + 1)
    rescored = FakePredict()
    monkeypatch.setattr(hrtemnet, "predict", rescored)
    run_conditions(conditions[:1], models, tmp_path / "resumed", n=4, workers=0, progress=False)
    assert len(rescored.calls) == 2 * 4


def test_a_defocus_search_is_scored_apart_for_models_with_the_defocus_input_only(tmp_path, monkeypatch):
    conditions = [tiny(load_condition(SUITE / "05_low_dose_1e3_3e3.json"), n=2)]
    models = ["unet", "unet-wide"]
    monkeypatch.setattr(hrtemnet, "predict", FakePredict())
    run_conditions(conditions, models, tmp_path, workers=0, progress=False)
    searched = FakePredict()
    monkeypatch.setattr(hrtemnet, "predict", searched)
    run_conditions(conditions, models, tmp_path, workers=0, progress=False, defocus_search_A=60)
    # the image-only model's scores are reused; the defocus-input one runs again, with the search
    assert [c["defocus_search_A"] for c in searched.calls] == [60.0, 60.0]  # 2 series of unet-wide only
    assert set(pd.read_csv(tmp_path / "per_image.csv").model) == {"unet", "unet-wide +search60"}
    with pytest.raises(UserError, match="must lie in 0..300"):
        run_conditions(conditions, models, tmp_path, workers=0, progress=False, defocus_search_A=-1)


# ---- the command, end to end with the shipped network -----------------------------------------------------


def test_evaluate_condition_command_with_a_shell_glob(tmp_path):
    files = [write_condition(tmp_path / "a.json", seed=1), write_condition(tmp_path / "b.json", seed=2,
                                                                           noise={"camera": None})]
    out = tmp_path / "out"
    args = ["evaluate", "--condition", *map(str, files), "--model", "msd", "--out", str(out), "--workers", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "conditions_table.csv")
    assert list(table.condition) == ["a", "b"] and (table.n == 1).all()
    assert table.mean_f1.between(0, 1).all() and "report:" in result.output
    assert "| a | 1 |" in (out / "conditions_table.md").read_text()
    store = tmp_path / "val.zarr"
    store.mkdir()
    mixed = CliRunner().invoke(app, ["evaluate", str(store), "--condition", str(files[0]), "--model", "msd",
                                     "--out", str(out)])
    assert mixed.exit_code == 2 and "not both" in mixed.output
    for bad, message in ((["--threads", "0"], "--threads must be"), (["--dose", "1e4"], "--dose and --limit")):
        refused = CliRunner().invoke(app, [*args, *bad])
        assert refused.exit_code == 2 and message in refused.output, refused.output
    suite_option_on_a_dataset = CliRunner().invoke(app, ["evaluate", str(store), "--model", "msd", "--n", "3",
                                                         "--out", str(out)])
    assert suite_option_on_a_dataset.exit_code == 2 and "apply to --condition" in suite_option_on_a_dataset.output


def test_a_retrained_model_is_told_apart_from_the_shipped_one_of_the_same_name():
    from hrtemnet.evaluation import model_display_names

    assert model_display_names(["msd", "unet", "runs/realism/stage2/msd/best.pt", "runs/realism/stage2/unet"]) == [
        "msd", "unet", "stage2/msd", "stage2/unet"]
    assert model_display_names(["a/stage1_msd_best.pt", "msd", "msd"]) == ["stage1_msd_best", "msd (2)", "msd (3)"]
