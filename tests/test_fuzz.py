"""Hostile and careless inputs against every command (issue 12).

Every case runs the real CLI in-process on tiny files built in a temporary folder and checks what a user
sees: the exit code (2 for input the user can fix, 0 when nothing is wrong), a single `error:` line, no
traceback, nothing written outside the output folder, good inputs of the same batch still written, and,
for crafted pickles in every kind of file the project reads, that none of their code ran.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hrtemnet.cli import app

MARKER = "PWNED"


class Exploit:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def run(args: list[str], cwd: Path | None = None):
    """Invoke the CLI; returns the result with `.lines` = the non-empty lines on stderr."""
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)
    result.lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result


def assert_refused(result, *fragments: str, code: int = 2) -> None:
    """Exit `code` with one error line on stderr (containing the fragments) and no traceback."""
    text = result.output + result.stderr
    assert "Traceback" not in text, text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, (result.exit_code, text)
    # predict adds a summary line after the batch ("1 of 2 input(s) failed"): one line per failed input
    errors = [line for line in result.lines if line.startswith("error:") and "input(s) failed" not in line]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment.lower() in errors[0].lower(), errors[0]


def good_series(path: Path, size: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.save(path, (1 + 0.1 * rng.standard_normal((3, size, size))).astype(np.float32))
    return path


def tiny_model(path: Path, **changes) -> Path:
    """A valid (untrained) MSD model file of depth 2, with fields replaced by `changes`."""
    from hrtemnet.models import build_model, save_model_bundle

    save_model_bundle(path, build_model("msd", depth=2), "msd", {"depth": 2}, 0.15, {}, {})
    if changes:
        bundle = torch.load(path, weights_only=True)
        for key, value in changes.items():
            if value is None:
                bundle.pop(key)
            else:
                bundle[key] = value
        torch.save(bundle, path)
    return path


def tiny_store(path: Path, n: int = 3, complete: int | None = None) -> Path:
    """A dataset store of `n` 48x48 px series with fake images (no simulation); `complete` finished samples."""
    from hrtemnet.dataset import DatasetConfig, create_store, write_sample
    from hrtemnet.simulation import SimulationConfig
    from hrtemnet.structures import StructureConfig

    config = DatasetConfig(structure=StructureConfig(field_of_view_A=(7.2, 7.2)),
                           simulation=SimulationConfig(num_phonons=0))
    create_store(path, config, n, 0)
    rng = np.random.default_rng(0)
    for index in range(n if complete is None else complete):
        images = (1 + 0.1 * rng.standard_normal((config.optics.num_defocus, 48, 48))).astype(np.float32)
        table = np.array([[1.0, 1.0, 0], [3.0, 3.0, 1], [5.0, 5.0, 2]], dtype=np.float32)
        params = np.arange(len(config.param_names), dtype=np.float64) + 1
        write_sample(path, index, images, table, params)
    return path


# --- crafted pickles: nothing runs ------------------------------------------------------------------------


def _write_pickle(path: Path, kind: str, marker: Path) -> Path:
    if kind == "torch":
        torch.save({"model_name": Exploit(marker)}, path)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(Exploit(marker)))
    elif kind == "numpy":
        with open(path, "wb") as file:  # np.save would add .npy to other suffixes
            np.save(file, np.array([Exploit(marker)], dtype=object), allow_pickle=True)
    elif kind == "npz":
        with open(path, "wb") as file:
            np.savez(file, images=np.array([Exploit(marker)], dtype=object))
    return path


PICKLE_TARGETS = {
    # name: (file name, how the file is used)
    "model": ("evil.pt", lambda f, t: ["predict", good_series(t / "a.npy"), "--model", f, "--sampling", "0.15",
                                      "--out-dir", t / "out"]),
    "init-from": ("evil.pt", lambda f, t: ["train", tiny_store(t / "d.zarr"), "--model", "msd", "--out", t / "run",
                                          "--init-from", f, "--crop", "16", "--steps", "1"]),
    "evaluate-model": ("evil.pt", lambda f, t: ["evaluate", tiny_store(t / "d.zarr"), "--model", f,
                                               "--out-dir", t / "out"]),
    "checkpoint": ("run/checkpoint.pt", lambda f, t: ["train", tiny_store(t / "d.zarr"), "--model", "msd",
                                                     "--depth", "2", "--out", t / "run", "--resume",
                                                     "--crop", "16", "--steps", "1"]),
    "npy-input": ("evil.npy", lambda f, t: ["predict", f, "--model", tiny_model(t / "m.pt"), "--sampling", "0.15",
                                           "--out-dir", t / "out"]),
    "npz-input": ("evil.npz", lambda f, t: ["predict", f, "--model", tiny_model(t / "m.pt"), "--sampling", "0.15",
                                           "--out-dir", t / "out"]),
    "structure-traj": ("evil.traj", lambda f, t: ["simulate-series", f, "-o", t / "o.npy"]),
    "structure-xyz": ("evil.xyz", lambda f, t: ["simulate-series", f, "-o", t / "o.npy"]),
    "config-json": ("evil.json", lambda f, t: ["simulate", t / "d.zarr", "--n", "1", "--config", f]),
    "vibrations-json": ("evil.json", lambda f, t: ["simulate", t / "d.zarr", "--n", "1", "--vibrations", f,
                                                  "--phonons", "1"]),
    "zarr-attrs": ("store.zarr/zarr.json", lambda f, t: ["train", t / "store.zarr", "--model", "msd",
                                                        "--out", t / "run"]),
    "score-csv": ("evil.csv", lambda f, t: ["score", f, f]),
}
PICKLE_KINDS = {"model": "torch", "init-from": "torch", "evaluate-model": "torch", "checkpoint": "torch",
                "npy-input": "numpy", "npz-input": "npz"}


@pytest.mark.parametrize("kind", ["native", "pickle"])
@pytest.mark.parametrize("target", sorted(PICKLE_TARGETS))
def test_a_crafted_pickle_runs_nothing_and_is_refused(tmp_path, target, kind):
    marker = tmp_path / MARKER
    name, make_args = PICKLE_TARGETS[target]
    path = tmp_path / name
    if target == "zarr-attrs":
        tiny_store(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    pickle_kind = PICKLE_KINDS.get(target, "pickle") if kind == "native" else "pickle"
    args = make_args(path, tmp_path)
    _write_pickle(path, pickle_kind, marker)
    result = run(args, cwd=tmp_path)
    assert not marker.exists(), "the pickle's code ran"
    assert_refused(result)


def test_checkpoints_load_without_pickled_code(tmp_path):
    """The checkpoint `train` writes loads with weights_only=True, and --resume continues from it."""
    store = tiny_store(tmp_path / "d.zarr")
    args = ["train", store, "--model", "msd", "--depth", "2", "--out", tmp_path / "run", "--crop", "16",
            "--val-every", "2", "--batch", "1", "--steps"]
    assert run([*args, "2"]).exit_code == 0
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2 and state["rng"]["torch"].dtype == torch.uint8
    result = run([*args, "4", "--resume"])
    assert result.exit_code == 0, result.output + result.stderr
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 4
    assert json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])["step"] == 4


# --- predict: inputs, pixel sizes, output folder ----------------------------------------------------------


@pytest.fixture
def model_file(tmp_path):
    return tiny_model(tmp_path / "m.pt")


def npz_series(path: Path, sampling_A, size: int = 64) -> Path:
    rng = np.random.default_rng(1)
    np.savez(path, images=(1 + 0.1 * rng.standard_normal((3, size, size))).astype(np.float32),
             sampling_A=np.float64(sampling_A))
    return path


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def predict(tmp_path, model_file, inputs, *options, out="out"):
    return run(["predict", *inputs, "--model", model_file, "--out-dir", tmp_path / out, *options], cwd=tmp_path)


@pytest.mark.parametrize("sampling_A, fragment", [(-1, "sampling"), (0, "sampling"), (float("nan"), "sampling"),
                                                   (float("inf"), "sampling")])
def test_predict_refuses_a_bad_pixel_size_in_an_npz_and_goes_on_with_the_batch(tmp_path, model_file, sampling_A,
                                                                              fragment):
    bad = npz_series(tmp_path / "bad.npz", sampling_A)
    good = npz_series(tmp_path / "good.npz", 0.15)
    before = files_under(tmp_path)
    result = predict(tmp_path, model_file, [bad, good])
    assert_refused(result, "bad.npz", fragment)
    assert "differ" not in result.stderr  # NaN once read as "pixel sizes differ (nan Å)"
    assert (tmp_path / "out" / "good.csv").is_file() and not (tmp_path / "out" / "bad.csv").exists()
    assert {p for p in files_under(tmp_path) - before if tmp_path / "out" not in p.parents} == set()


@pytest.mark.parametrize("sampling", ["0", "-1", "nan", "100", "2", "1e-6", "inf"])
def test_predict_refuses_an_implausible_sampling_option_before_any_work(tmp_path, model_file, monkeypatch,
                                                                       sampling):
    from hrtemnet import io, prediction

    monkeypatch.setattr(io, "resample_series", lambda *a, **k: pytest.fail("resampled before the check"))
    monkeypatch.setattr(prediction, "resample_series", lambda *a, **k: pytest.fail("resampled before the check"))
    result = predict(tmp_path, model_file, [good_series(tmp_path / "a.npy", size=256)], "--sampling", sampling)
    assert_refused(result, "sampling")
    assert not (tmp_path / "out" / "a.csv").exists()


def test_predict_refuses_an_image_that_resampling_would_make_too_large(tmp_path, model_file, monkeypatch):
    from hrtemnet import io

    # the stated budget is 8192² px; a smaller one here keeps the test input small
    monkeypatch.setattr(io, "MAX_RESAMPLED_PIXELS", 100_000, raising=False)
    monkeypatch.setattr(io.ndimage, "affine_transform", lambda *a, **k: pytest.fail("resampled before the check"))
    path = good_series(tmp_path / "wide.npy", size=256)  # 256² px at 0.3 Å/px is 511² px at 0.15 Å/px
    result = predict(tmp_path, model_file, [path], "--sampling", "0.3")
    assert_refused(result, "wide.npy", "--sampling")


@pytest.mark.parametrize("out_kind", ["file", "under-a-file"])
def test_predict_checks_the_output_folder_before_running_the_network(tmp_path, model_file, monkeypatch, out_kind):
    from hrtemnet import prediction

    monkeypatch.setattr(prediction, "predict_probabilities", lambda *a, **k: pytest.fail("network ran"))
    (tmp_path / "taken").write_text("a file")
    out = "taken" if out_kind == "file" else "taken/sub"
    result = predict(tmp_path, model_file, [good_series(tmp_path / "a.npy")], "--sampling", "0.15", out=out)
    assert_refused(result, "out-dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_predict_refuses_a_read_only_output_folder(tmp_path, model_file, monkeypatch):
    from hrtemnet import prediction

    monkeypatch.setattr(prediction, "predict_probabilities", lambda *a, **k: pytest.fail("network ran"))
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    result = predict(tmp_path, model_file, [good_series(tmp_path / "a.npy")], "--sampling", "0.15", out="ro")
    assert_refused(result, "writable")


def test_predict_refuses_a_fifo_without_blocking(tmp_path, model_file):
    import signal

    fifo = tmp_path / "x.npy"
    os.mkfifo(fifo)
    good = good_series(tmp_path / "good.npy")

    class Hung(BaseException):  # not an OSError, which the readers would turn into an error line
        pass

    def hung(*_):
        raise Hung("blocked on the FIFO")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        result = predict(tmp_path, model_file, [fifo, good], "--sampling", "0.15")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert_refused(result, "x.npy")
    assert (tmp_path / "out" / "good.csv").is_file()


def test_predict_goes_on_after_an_input_that_does_not_fit_in_memory(tmp_path, model_file, monkeypatch):
    from hrtemnet import io

    real = io._read_file

    def read(path):
        if Path(path).name == "huge.npy":
            raise MemoryError
        return real(path)

    monkeypatch.setattr(io, "_read_file", read)
    huge, good = good_series(tmp_path / "huge.npy"), good_series(tmp_path / "good.npy")
    result = predict(tmp_path, model_file, [huge, good], "--sampling", "0.15")
    assert_refused(result, "huge.npy", "memory")
    assert (tmp_path / "out" / "good.csv").is_file()


BAD_INPUTS = {
    "missing": lambda t: t / "nothing.npy",
    "empty-file": lambda t: (t / "empty.npy").write_bytes(b"") or t / "empty.npy",
    "text-as-npy": lambda t: (t / "text.npy").write_text("hello") or t / "text.npy",
    "2d-array": lambda t: np.save(t / "flat.npy", np.ones((4, 4))) or t / "flat.npy",
    "nan-pixels": lambda t: np.save(t / "nan.npy", np.full((3, 64, 64), np.nan, np.float32)) or t / "nan.npy",
    "constant": lambda t: np.save(t / "const.npy", np.ones((3, 64, 64), np.float32)) or t / "const.npy",
    "complex": lambda t: np.save(t / "cplx.npy", np.ones((3, 64, 64), np.complex64)) or t / "cplx.npy",
    "strings": lambda t: np.save(t / "str.npy", np.array(["a", "b"])) or t / "str.npy",
    "four-images": lambda t: np.save(t / "four.npy", np.random.rand(4, 64, 64)) or t / "four.npy",
    "tiny": lambda t: np.save(t / "tiny.npy", np.random.rand(3, 4, 4)) or t / "tiny.npy",
    "empty-folder": lambda t: (t / "folder").mkdir() or t / "folder",
    "unknown-suffix": lambda t: (t / "a.jpg").write_bytes(b"\xff\xd8") or t / "a.jpg",
    "broken-tiff": lambda t: (t / "a.tif").write_bytes(b"II*\x00garbage") or t / "a.tif",
    "broken-dm4": lambda t: (t / "a.dm4").write_bytes(b"\x00" * 64) or t / "a.dm4",
    "plus-two-files": lambda t: f"{good_series(t / 'p1.npy')}+{good_series(t / 'p2.npy')}",
    "device": lambda t: "/dev/zero",
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_predict_reports_a_bad_input_in_one_line_and_writes_the_good_one(tmp_path, model_file, kind):
    bad = BAD_INPUTS[kind](tmp_path)
    good = good_series(tmp_path / "good.npy")
    before = files_under(tmp_path)
    result = predict(tmp_path, model_file, [bad, good], "--sampling", "0.15")
    assert_refused(result)
    assert (tmp_path / "out" / "good.csv").is_file()
    assert {p for p in files_under(tmp_path) - before if tmp_path / "out" not in p.parents} == set()


@pytest.mark.parametrize("option", ids=" ".join, argvalues=[
    ["--threshold", "nan"], ["--threshold", "1"], ["--threshold", "-0.1"]])
def test_predict_refuses_bad_options(tmp_path, model_file, option):
    result = predict(tmp_path, model_file, [good_series(tmp_path / "a.npy")], "--sampling", "0.15", *option)
    assert_refused(result)


# --- model files -----------------------------------------------------------------------------------------


BAD_MODELS = {
    "sampling-zero": {"sampling_A": 0.0},
    "sampling-negative": {"sampling_A": -0.15},
    "sampling-nan": {"sampling_A": float("nan")},
    "sampling-text": {"sampling_A": "0.15"},
    "no-peak-params": {"peak_params": None},
    "unknown-peak-key": {"peak_params": {"bogus": 1}},
    "bad-peak-value": {"peak_params": {"threshold": "high"}},
    "huge-depth": {"model_kwargs": {"depth": 100_000_000}},
    "float-depth": {"model_kwargs": {"depth": 1e8}},
    "huge-unet": {"model_name": "unet", "model_kwargs": {"base_channels": 1_000_000}},
    "unknown-name": {"model_name": "resnet"},
    "unknown-kwarg": {"model_kwargs": {"depth": 2, "colour": 1}},
    "kwargs-not-dict": {"model_kwargs": [2]},
    "no-state-dict": {"state_dict": None},
    "state-dict-list": {"state_dict": [1, 2]},
    "no-card": {"card": None},
}


@pytest.mark.parametrize("kind", sorted(BAD_MODELS))
def test_a_broken_model_file_is_refused_in_one_line(tmp_path, kind, monkeypatch):
    import time

    model = tiny_model(tmp_path / "m.pt", **BAD_MODELS[kind])
    start = time.perf_counter()
    result = predict(tmp_path, model, [good_series(tmp_path / "a.npy")], "--sampling", "0.15")
    if kind == "no-card":  # provenance only: the model still works
        assert result.exit_code == 0, result.stderr
        return
    assert_refused(result, "m.pt")
    assert time.perf_counter() - start < 20  # refused before building a huge network


@pytest.mark.parametrize("damage", ["truncated", "empty", "zip-of-text"])
def test_a_damaged_model_file_is_refused_in_one_line(tmp_path, damage):
    path = tiny_model(tmp_path / "m.pt")
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        import zipfile

        with zipfile.ZipFile(path, "w") as z:
            z.writestr("a.txt", "hello")
    result = predict(tmp_path, path, [good_series(tmp_path / "a.npy")], "--sampling", "0.15")
    assert_refused(result, "m.pt")


# --- score ------------------------------------------------------------------------------------------------


TRUTH = "x_A,y_A,class\n5,5,Mo\n8,5,S2\n5,8,S\n20,20,Mo\n"


def score(tmp_path, truth: str, pred: str, *options):
    (tmp_path / "t.csv").write_bytes(truth.encode() if isinstance(truth, str) else truth)
    (tmp_path / "p.csv").write_bytes(pred.encode() if isinstance(pred, str) else pred)
    return run(["score", tmp_path / "t.csv", tmp_path / "p.csv", *options], cwd=tmp_path)


@pytest.mark.parametrize("option", ["--width-A", "--height-A", "--border-A", "--match-radius-A"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_score_refuses_a_bad_number_option(tmp_path, option, value):
    result = score(tmp_path, TRUTH, "x_A,y_A,class\n", option, value)
    assert_refused(result, option)


@pytest.mark.parametrize("text", ["x_A,y_A,class\n5,5\n", "x_A,y_A,class\n5,5,Xx\n", "x_A,y_A,class\n5,five,Mo\n",
                                  "x_A,y_A,class\nnan,5,Mo\n", "x,y,class\n5,5,Mo\n", "", "\x00\xff\xfe",
                                  "x_A,y_A,class,score\n5,5,Mo,high\n"])
def test_score_refuses_a_broken_csv_in_one_line(tmp_path, text):
    result = score(tmp_path, TRUTH, text)
    assert_refused(result, "p.csv")


@pytest.mark.parametrize("pred", ["\ufeffx_A,y_A,class\n5,5,Mo\n8,5,S2\n5,8,S\n",
                                  "# model msd\n# sampling 0.15\nx_A,y_A,class,score\n5,5,Mo,0.9\n8,5,S2,1\n5,8,S,1\n",
                                  "x_A,y_A,class\r\n5,5,Mo\r\n8,5,S2\r\n5,8,S\r\n"])
def test_score_reads_bom_comments_and_windows_line_ends(tmp_path, pred):
    result = score(tmp_path, TRUTH, pred, "--width-A", "25", "--height-A", "25")
    assert result.exit_code == 0, result.stderr
    assert "mean F1 0.8571" in result.output  # 3 of the 4 true columns found, no false positives


def test_score_writes_out_into_a_new_folder_or_refuses_clearly(tmp_path):
    result = score(tmp_path, TRUTH, TRUTH, "--out", tmp_path / "new" / "scores.csv")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "new" / "scores.csv").is_file()
    (tmp_path / "afile").write_text("x")
    result = score(tmp_path, TRUTH, TRUTH, "--out", tmp_path / "afile" / "scores.csv")
    assert_refused(result, "--out")


def test_score_refuses_an_out_that_is_a_folder(tmp_path):
    (tmp_path / "folder").mkdir()
    result = score(tmp_path, TRUTH, TRUTH, "--out", tmp_path / "folder")
    assert_refused(result, "--out")


# --- simulate: configs refused before anything is written -------------------------------------------------


BAD_CONFIGS = {
    "num-defocus-0": {"optics": {"num_defocus": 0}},
    "num-defocus-negative": {"optics": {"num_defocus": -2}},
    "probability-7": {"structure": {"sheet_probability": 7}},
    "probability-negative": {"structure": {"graphene_probability": -0.1}},
    "fraction-2": {"structure": {"double_s_vacancy_fraction": 2}},
    "reversed-radius": {"structure": {"flake_radius_A_range": [17, 9]}},
    "negative-cs": {"optics": {"cs_A_range": [-5e4, 25e4]}},
    "nan-range": {"optics": {"astigmatism_A_range": [float("nan"), 50]}},
    "inf-range": {"optics": {"focal_spread_A_range": [20, float("inf")]}},
    "three-value-range": {"optics": {"focal_spread_A_range": [20, 30, 40]}},
    "text-range": {"optics": {"focal_spread_A_range": "20-40"}},
    "text-number": {"optics": {"energy_eV": "50 keV"}},
    "negative-energy": {"optics": {"energy_eV": -50000}},
    "negative-focal-spread": {"optics": {"focal_spread_A_range": [-10, 40]}},
    "rate-above-1": {"structure": {"single_s_vacancy_rate_range": [0, 1.5]}},
    "negative-phonons": {"simulation": {"num_phonons": -1}},
    "zero-oversampling": {"simulation": {"oversampling": 0}},
    "huge-field": {"structure": {"field_of_view_A": [1e6, 1e6]}},
    "nan-field": {"structure": {"field_of_view_A": [float("nan"), 38.4]}},
    "unknown-section": {"camera": {}},
    "unknown-field": {"optics": {"cs_um": 10}},
    "section-not-object": {"optics": [1, 2]},
    "not-an-object": [1, 2, 3],
    "image-dtype": {"image_dtype": "int8"},
}


@pytest.mark.parametrize("kind", sorted(BAD_CONFIGS))
def test_simulate_refuses_a_bad_config_before_creating_the_store(tmp_path, kind):
    config = tmp_path / "c.json"
    config.write_text(json.dumps(BAD_CONFIGS[kind]))
    result = run(["simulate", tmp_path / "d.zarr", "--n", "2", "--workers", "0", "--config", config], cwd=tmp_path)
    assert_refused(result)
    assert not (tmp_path / "d.zarr").exists()


@pytest.mark.parametrize("args", ids=" ".join, argvalues=[
    ["--n", "0"], ["--n", "-1"], ["--n", "2", "--workers", "-1"],
                                  ["--n", "2", "--phonons", "-1"], ["--n", "2", "--vibrations", "missing.json"],
                                  ["--n", "2", "--config", "missing.json"]])
def test_simulate_refuses_bad_options_before_creating_the_store(tmp_path, args):
    result = run(["simulate", tmp_path / "d.zarr", *args], cwd=tmp_path)
    assert_refused(result)
    assert not (tmp_path / "d.zarr").exists()


def fake_simulation(monkeypatch):
    """Replace the physics by random images (the store logic is what is tested)."""
    from hrtemnet import dataset

    def simulate_sample(config, seed, index, vibration_table=None, threads=1):
        height, width = config.image_shape()
        images = np.random.default_rng([seed, index]).random((config.optics.num_defocus, height, width))
        params = np.full(len(config.param_names), float(index))
        return images.astype(np.float32), np.array([[1.0, 1.0, 0]], np.float32), params

    monkeypatch.setattr(dataset, "simulate_sample", simulate_sample)


SMALL = {"structure": {"field_of_view_A": [7.2, 7.2]}, "simulation": {"num_phonons": 0}}


def simulate_small(tmp_path, store, n=3):
    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL))
    return run(["simulate", store, "--n", str(n), "--workers", "0", "--config", config], cwd=tmp_path)


def test_simulate_into_a_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "d.zarr").write_text("not a store")
    result = simulate_small(tmp_path, tmp_path / "d.zarr")
    assert_refused(result, "d.zarr")


def test_a_half_created_store_is_reported_by_every_command(tmp_path, monkeypatch):
    import shutil

    fake_simulation(monkeypatch)
    store = tmp_path / "d.zarr"
    assert simulate_small(tmp_path, store).exit_code == 0
    shutil.rmtree(store / "params")  # a store killed while being created
    for args in (["train", store, "--model", "msd", "--out", tmp_path / "run", "--crop", "16"],
                 ["evaluate", store, "--model", tiny_model(tmp_path / "m.pt"), "--out-dir", tmp_path / "ev"]):
        assert_refused(run(args, cwd=tmp_path), "d.zarr")
    result = simulate_small(tmp_path, store)
    assert result.exit_code in (0, 2), result.stderr
    assert "Traceback" not in result.output + result.stderr
    if result.exit_code == 2:
        assert_refused(result, "d.zarr")


def corrupt_chunk(store: Path, array: str = "images", index: int = 1) -> None:
    chunks = sorted(p for p in (store / array).rglob("*") if p.is_file() and p.name != "zarr.json"
                    and p.relative_to(store / array).parts[:2] == ("c", str(index)))
    assert chunks, list((store / array).rglob("*"))
    chunks[0].write_bytes(b"garbage" * 10)


def test_a_damaged_sample_is_reported_by_index_and_simulated_again(tmp_path, monkeypatch):
    fake_simulation(monkeypatch)
    store = tmp_path / "d.zarr"
    assert simulate_small(tmp_path, store).exit_code == 0
    corrupt_chunk(store, "images", 1)
    result = run(["train", store, "--model", "msd", "--depth", "2", "--out", tmp_path / "run", "--crop", "16",
                  "--steps", "4", "--batch", "2", "--val-every", "100"], cwd=tmp_path)
    assert_refused(result, "sample 1")
    result = simulate_small(tmp_path, store)
    assert result.exit_code == 0, result.stderr
    assert "1" in result.output and "damaged" in (result.output + result.stderr).lower()
    from hrtemnet.dataset import open_store

    assert open_store(store).read_images(1).shape == (3, 48, 48)


def _simulate_in_child(store: str, config: str, queue) -> None:
    import pytest as _pytest

    monkeypatch = _pytest.MonkeyPatch()
    fake_simulation(monkeypatch)
    result = CliRunner().invoke(app, ["simulate", store, "--n", "6", "--workers", "0", "--config", config])
    queue.put((result.exit_code, result.output + result.stderr + repr(result.exception)))


def test_two_simulate_processes_on_one_new_store_neither_crash_nor_corrupt_it(tmp_path):
    import multiprocessing

    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_simulate_in_child, args=(str(tmp_path / "d.zarr"), str(config), queue))
                for _ in range(2)]
    for child in children:
        child.start()
    outcomes = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=30)
    for code, text in outcomes:
        assert "Traceback" not in text and "ContainsArrayError" not in text, text
        assert code in (0, 2), text
        if code == 2:
            assert "error:" in text and ("lock" in text.lower() or "another" in text.lower()), text
    assert any(code == 0 for code, _ in outcomes)
    from hrtemnet.dataset import open_store

    store = open_store(tmp_path / "d.zarr")
    assert store.completed().sum() in (0, 6) or all(code == 0 for code, _ in outcomes)
    for index in np.flatnonzero(store.completed()):
        assert store.read_images(int(index)).shape == (3, 48, 48)


def test_a_corrected_config_after_a_refused_one_simulates(tmp_path, monkeypatch):
    fake_simulation(monkeypatch)
    store = tmp_path / "d.zarr"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(SMALL | {"optics": {"cs_A_range": [-5e4, 1e5]}}))
    assert_refused(run(["simulate", store, "--n", "2", "--workers", "0", "--config", bad]))
    assert simulate_small(tmp_path, store, n=2).exit_code == 0


# --- simulate-series ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ids=" ".join, argvalues=[
    ["--sampling", "0"], ["--sampling", "nan"], ["--cs-um", "-5"],
                                    ["--cs-um", "nan"], ["--energy-eV", "-1"], ["--phonons", "-1"],
                                    ["--defocus", "70,20,-30"], ["--defocus", ""], ["--focal-spread-A", "-1"],
                                    ["--astigmatism-A", "nan"], ["--dose", "0"], ["--dose", "nan"]])
def test_simulate_series_refuses_bad_options_before_simulating(tmp_path, option, monkeypatch):
    from hrtemnet import simulation

    monkeypatch.setattr(simulation, "simulate_focal_series", lambda *a, **k: pytest.fail("simulated"))
    structure = tmp_path / "s.xyz"
    structure.write_text('1\nLattice="10 0 0 0 10 0 0 0 10" Properties=species:S:1:pos:R:3 pbc="T T T"\n'
                         "Mo 5 5 5\n")
    result = run(["simulate-series", structure, "-o", tmp_path / "o.npy", *option], cwd=tmp_path)
    assert_refused(result)
    assert not (tmp_path / "o.npy").exists()


# --- train ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ids=" ".join, argvalues=[
    ["--crop", "0"], ["--steps", "0"], ["--lr", "nan"], ["--lr", "-1"],
                                    ["--checkpoint-minutes", "nan"], ["--threads", "0"], ["--batch", "0"],
                                    ["--depth", "0"], ["--depth", "100000000"], ["--model", "resnet"],
                                    ["--val-every", "0"], ["--val-images", "0"]])
def test_train_refuses_bad_options_before_writing(tmp_path, option):
    store = tiny_store(tmp_path / "d.zarr")
    args = ["train", store, "--model", "msd", "--out", tmp_path / "run", "--crop", "16", "--depth", "2"]
    result = run([*args, *option], cwd=tmp_path)
    assert_refused(result)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("dataset", ["missing.zarr", "file.zarr", "empty-dir.zarr"])
def test_train_and_evaluate_refuse_a_missing_or_foreign_dataset(tmp_path, dataset):
    (tmp_path / "file.zarr").write_text("x")
    (tmp_path / "empty-dir.zarr").mkdir()
    for args in (["train", tmp_path / dataset, "--model", "msd", "--out", tmp_path / "run"],
                 ["evaluate", tmp_path / dataset, "--model", tiny_model(tmp_path / "m.pt"),
                  "--out-dir", tmp_path / "ev"]):
        assert_refused(run(args, cwd=tmp_path), dataset)


def test_resume_skips_a_torn_last_log_line(tmp_path):
    store = tiny_store(tmp_path / "d.zarr")
    args = ["train", store, "--model", "msd", "--depth", "2", "--out", tmp_path / "run", "--crop", "16",
            "--val-every", "2", "--batch", "1", "--steps"]
    assert run([*args, "2"]).exit_code == 0
    with open(tmp_path / "run" / "log.jsonl", "a") as log:
        log.write('{"step": 3, "loss": 0.')
    result = run([*args, "3", "--resume"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "skipped 1" in result.output
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps[-1] == 3


def test_resume_refuses_a_checkpoint_that_is_not_one(tmp_path):
    store = tiny_store(tmp_path / "d.zarr")
    (tmp_path / "run").mkdir()
    torch.save({"step": 1}, tmp_path / "run" / "checkpoint.pt")
    result = run(["train", store, "--model", "msd", "--depth", "2", "--out", tmp_path / "run", "--crop", "16",
                  "--resume"])
    assert_refused(result, "checkpoint")


# --- evaluate, demo, vibrations -------------------------------------------------------------------------


@pytest.mark.parametrize("option", ids=" ".join, argvalues=[
    ["--dose", "nan"], ["--dose", "0"], ["--limit", "0"], ["--dose-sweep", "a,b"],
                                    ["--dose-sweep", "nan"], ["--dose-sweep-images", "-1"], ["--example", "-1"],
                                    ["--example", "99"]])
def test_evaluate_refuses_bad_options_before_writing(tmp_path, option):
    store = tiny_store(tmp_path / "d.zarr")
    result = run(["evaluate", store, "--model", tiny_model(tmp_path / "m.pt"), "--out-dir", tmp_path / "ev",
                  *option], cwd=tmp_path)
    assert_refused(result)
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("option", ids=" ".join, argvalues=[
    ["--n", "0"], ["--dose", "nan"], ["--dose", "-1"]])
def test_demo_refuses_bad_options(tmp_path, option):
    result = run(["demo", "--out-dir", tmp_path / "demo", *option], cwd=tmp_path)
    assert_refused(result)
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("option", ids=" ".join, argvalues=[
    ["--temperature-K", "-5"], ["--temperature-K", "nan"], ["--time-ps", "0"],
                                    ["--substrate", "gold"], ["--structures", "cube"]])
def test_vibrations_refuses_bad_options_before_running_md(tmp_path, option, monkeypatch):
    try:
        from hrtemnet import md
    except ImportError:  # before the MD pipeline moved to its own module
        from hrtemnet import vibrations as md
    monkeypatch.setattr(md, "measure_vibrations", lambda *a, **k: pytest.fail("MD ran"))
    result = run(["vibrations", tmp_path / "v.json", *option], cwd=tmp_path)
    assert_refused(result)
    assert not (tmp_path / "v.json").exists()


# --- unexpected errors: one line and exit 1; --debug shows the traceback -----------------------------------


def test_an_unexpected_error_is_one_line_pointing_to_debug(tmp_path, model_file, monkeypatch):
    from hrtemnet import models

    def broken(*a, **k):
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(models, "load_model", broken)
    result = predict(tmp_path, model_file, [good_series(tmp_path / "a.npy")], "--sampling", "0.15")
    assert_refused(result, "--debug", "something nobody expected", code=1)
    result = run(["--debug", "predict", good_series(tmp_path / "a.npy"), "--model", model_file, "--sampling",
                  "0.15", "--out-dir", tmp_path / "out"])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError) or "Traceback" in result.stderr


# --- every command: an output path that cannot be written is refused before the work ----------------------


def _no_work(monkeypatch):
    """Make the long part of every command fail the test if it is reached."""
    from hrtemnet import dataset, evaluation, prediction, simulation

    try:
        from hrtemnet import md
    except ImportError:  # before the MD pipeline moved to its own module
        from hrtemnet import vibrations as md
    fail = lambda *a, **k: pytest.fail("the work started before the output path was checked")  # noqa: E731
    for module, name in ((md, "measure_vibrations"), (simulation, "simulate_focal_series"),
                         (dataset, "simulate_sample"), (prediction, "predict_probabilities"), (evaluation, "run"),
                         (evaluation, "run_evaluation")):
        monkeypatch.setattr(module, name, fail, raising=False)


OUTPUT_COMMANDS = {
    "vibrations": lambda t, out: ["vibrations", out / "v.json"],
    "simulate-series": lambda t, out: ["simulate-series", t / "s.xyz", "-o", out / "o.npy"],
    "simulate": lambda t, out: ["simulate", out / "d.zarr", "--n", "1", "--workers", "0"],
    "train": lambda t, out: ["train", tiny_store(t / "d.zarr"), "--model", "msd", "--depth", "2", "--crop", "16",
                             "--out", out / "run"],
    "evaluate": lambda t, out: ["evaluate", tiny_store(t / "d.zarr"), "--model", tiny_model(t / "m.pt"),
                                "--out-dir", out / "ev"],
    "demo": lambda t, out: ["demo", "--out-dir", out / "demo"],
    "predict": lambda t, out: ["predict", good_series(t / "a.npy"), "--model", tiny_model(t / "m.pt"),
                               "--sampling", "0.15", "--out-dir", out / "p"],
    "score": lambda t, out: ["score", t / "t.csv", t / "t.csv", "--out", out / "s.csv"],
}


@pytest.mark.parametrize("command", sorted(OUTPUT_COMMANDS))
def test_an_output_under_a_file_is_refused_before_any_work(tmp_path, monkeypatch, command):
    _no_work(monkeypatch)
    (tmp_path / "s.xyz").write_text('1\nLattice="10 0 0 0 10 0 0 0 10" Properties=species:S:1:pos:R:3 '
                                    'pbc="T T T"\nMo 5 5 5\n')
    (tmp_path / "t.csv").write_text(TRUTH)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    result = run(OUTPUT_COMMANDS[command](tmp_path, tmp_path / "blocker"), cwd=tmp_path)
    assert_refused(result, "blocker")


@pytest.mark.parametrize("name", ["fftw_wisdom.pickle", "fftw_wisdom.json"])
def test_a_crafted_fftw_wisdom_cache_runs_nothing(tmp_path, monkeypatch, name):
    """The FFTW plan cache in ~/.cache/hrtemnet is read by every simulation: it is JSON, never unpickled."""
    from hrtemnet import simulation

    if not hasattr(simulation, "_fftw_wisdom_path"):
        pytest.skip("no FFTW wisdom cache in this version")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(simulation, "_wisdom_loaded", False)
    monkeypatch.setattr(simulation, "_FFT_PLANS", {})
    (tmp_path / "cache" / "hrtemnet").mkdir(parents=True)
    marker = tmp_path / MARKER
    _write_pickle(tmp_path / "cache" / "hrtemnet" / name, "pickle", marker)
    (tmp_path / "s.xyz").write_text('1\nLattice="6 0 0 0 6 0 0 0 6" Properties=species:S:1:pos:R:3 pbc="T T T"\n'
                                    "Mo 3 3 3\n")
    result = run(["simulate-series", tmp_path / "s.xyz", "-o", tmp_path / "o.npy", "--phonons", "0"], cwd=tmp_path)
    assert not marker.exists(), "the pickle's code ran"
    assert result.exit_code == 0, result.stderr
    assert np.load(tmp_path / "o.npy").shape == (3, 40, 40)
    cache = Path(simulation._fftw_wisdom_path())
    if cache.exists() and cache.read_bytes()[:1] == b"{":  # rewritten if this process measured new plans: JSON
        assert json.loads(cache.read_text())["wisdom"]


def test_a_store_with_pickled_object_chunks_runs_nothing(tmp_path):
    """A zarr (v2) store whose array is of object dtype with a pickle codec: refused, nothing unpickled."""
    store = tmp_path / "d.zarr"
    (store / "images").mkdir(parents=True)
    (store / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    (store / ".zattrs").write_text(json.dumps({"format": "hrtemnet-series-v1", "n": 1}))
    (store / "images" / ".zarray").write_text(json.dumps(
        {"zarr_format": 2, "shape": [1], "chunks": [1], "dtype": "|O", "compressor": None, "fill_value": 0,
         "filters": [{"id": "pickle"}], "order": "C"}))
    (store / "images" / "0").write_bytes(pickle.dumps(Exploit(tmp_path / MARKER)))
    for args in (["train", store, "--model", "msd", "--out", tmp_path / "run"],
                 ["evaluate", store, "--model", tiny_model(tmp_path / "m.pt"), "--out-dir", tmp_path / "ev"],
                 ["simulate", store, "--n", "1", "--workers", "0"]):
        assert_refused(run(args, cwd=tmp_path), "d.zarr")
    assert not (tmp_path / MARKER).exists()
