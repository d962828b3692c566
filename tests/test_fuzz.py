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
