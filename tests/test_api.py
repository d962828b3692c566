"""The Python API: same table as the CLI, HyperSpy-like signals (scale and offset), clear errors; time series
and export formats through `hrtemnet predict`."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_prediction import fake_model, random_columns, render
from typer.testing import CliRunner

import hrtemnet
from hrtemnet.cli import app

runner = CliRunner()
S = 0.10
SIZE_A = 12.0


@pytest.fixture(scope="module")
def rendered():
    """A series whose image k holds the columns of class k (the stand-in network's input): no lattice, and
    no common content to align, so these tests run with align=False."""
    truth = random_columns(SIZE_A, np.random.default_rng(3), n=12)
    n = int(round(SIZE_A / S)) + 1
    return render(truth, (n, n), S)


@pytest.fixture
def fake_loaded(monkeypatch):
    import hrtemnet.models

    monkeypatch.setattr(hrtemnet.models, "load_model", lambda spec, flip_average=False: fake_model())


def test_api_returns_the_cli_table(tmp_path, rendered, fake_loaded):
    np.savez(tmp_path / "s.npz", images=rendered, sampling_A=S)
    result = runner.invoke(app, ["predict", str(tmp_path / "s.npz"), "--out-dir", str(tmp_path), "--no-align"])
    assert result.exit_code == 0, result.output
    cli = pd.read_csv(tmp_path / "s.csv", comment="#")
    api = hrtemnet.predict(rendered, sampling_A=S, model=fake_model(), align=False)
    assert list(api.columns) == list(cli.columns)
    assert list(api.columns[:7]) == ["x_A", "y_A", "class", "score", "p_Mo", "p_S2", "p_S"]
    assert len(api) == len(cli) == 12
    np.testing.assert_allclose(api[["x_A", "y_A", "score", "p_Mo"]], cli[["x_A", "y_A", "score", "p_Mo"]], atol=1e-4)
    assert list(api["class"]) == list(cli["class"])
    assert api.attrs["sampling_A"] == S and api.attrs["sampling_source"] == "given"
    assert api.attrs["shifts_A"] == [[0.0, 0.0]] * 3 and "counts" in api.attrs
    np.testing.assert_allclose(api[["p_Mo", "p_S2", "p_S"]].sum(axis=1), 1.0, atol=1e-6)


def hyperspy_like(data, scale_nm, offset_nm):
    axis = lambda offset: SimpleNamespace(scale=scale_nm, offset=offset, units="nm")  # noqa: E731
    axes = SimpleNamespace(signal_axes=(axis(offset_nm[0]), axis(offset_nm[1])))
    metadata = SimpleNamespace(General=SimpleNamespace(title="stack"))
    return SimpleNamespace(data=data, axes_manager=axes, metadata=metadata)


def test_hyperspy_scale_and_offset_are_honoured(rendered):
    plain = hrtemnet.predict(rendered, sampling_A=S, model=fake_model(), align=False)
    signal = hyperspy_like(rendered, S / 10, (1.5, -0.5))  # nm
    table = hrtemnet.predict(signal, model=fake_model(), align=False)
    assert table.attrs["sampling_A"] == pytest.approx(S) and table.attrs["sampling_source"] == "file"
    np.testing.assert_allclose(table["x_A"], plain["x_A"] + 15.0, atol=1e-6)
    np.testing.assert_allclose(table["y_A"], plain["y_A"] - 5.0, atol=1e-6)
    np.testing.assert_allclose(table["col_px"], plain["col_px"], atol=1e-6)  # pixels stay pixels


@pytest.mark.parametrize(("data", "message"), [
    (np.zeros((64, 64)), "2-D array"),
    (np.full((3, 64, 64), np.nan), "NaN"),
    (np.ones((3, 64, 64)), "constant"),
    (np.random.default_rng(0).random((4, 64, 64)), "not a multiple of 3"),
])
def test_bad_arrays_raise_one_line_value_errors(data, message):
    with pytest.raises(ValueError, match=message) as error:
        hrtemnet.predict(data, sampling_A=S, model=fake_model(), align=False)
    assert "\n" not in str(error.value)


def test_time_series_gives_a_table_per_series_a_summary_and_resumes(tmp_path, rendered, fake_loaded):
    stack = np.concatenate([rendered, np.roll(rendered, 7, axis=-1)])  # two focal series, the second moved
    np.savez(tmp_path / "movie.npz", images=stack, sampling_A=S)
    args = ["predict", str(tmp_path / "movie.npz"), "--out-dir", str(tmp_path / "o"), "--no-align", "--plot",
            "--dose-per-series", "5e4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == ["movie_0000.csv", "movie_0000.png", "movie_0001.csv", "movie_0001.png", "movie_summary.csv",
                     "movie_summary.png"]
    summary = pd.read_csv(tmp_path / "o" / "movie_summary.csv")
    assert list(summary["series"]) == [0, 1]
    assert list(summary["cumulative_dose_e_per_A2"]) == [5e4, 1e5]
    first = pd.read_csv(tmp_path / "o" / "movie_0000.csv", comment="#")
    assert summary.loc[0, "n_Mo"] == (first["interior"] & (first["class"] == "Mo")).sum()
    # a rerun skips what is written and gives the same summary
    (tmp_path / "o" / "movie_0001.csv").unlink()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "already written, skipped" in again.output and "[series 1]" in again.output
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "o" / "movie_summary.csv"), summary)


def test_export_formats(tmp_path, rendered, fake_loaded):
    np.savez(tmp_path / "s.npz", images=rendered, sampling_A=S)
    for fmt, columns in (("napari", ["index", "axis-0", "axis-1", "class", "score"]),
                         ("imagej", ["X", "Y", "class", "score"])):
        result = runner.invoke(app, ["predict", str(tmp_path / "s.npz"), "--out-dir", str(tmp_path), "--no-align",
                                     "--format", fmt])
        assert result.exit_code == 0, result.output
        table = pd.read_csv(tmp_path / f"s_{fmt}.csv")
        assert list(table.columns) == columns and len(table) == 12
    full = hrtemnet.predict(rendered, sampling_A=S, model=fake_model(), align=False)
    napari = pd.read_csv(tmp_path / "s_napari.csv")
    np.testing.assert_allclose(napari["axis-0"], full["row_px"], atol=1e-3)
    result = runner.invoke(app, ["predict", str(tmp_path / "s.npz"), "--format", "xml"])
    assert result.exit_code == 2 and "--format" in result.output


def test_time_series_drift_of_an_unrelated_series_is_warned(rendered):
    other = rendered.copy()
    other[0] = np.linspace(0, 1, other.shape[-1])[None, :] * np.ones_like(other[0])  # a ramp: nothing to align
    table = hrtemnet.predict(np.concatenate([rendered, rendered, other]), sampling_A=S, model=fake_model())
    assert sorted(set(table["series"])) == [0, 1, 2]
    drift_warnings = [[w for w in attrs["warnings"] if "drift against series 0" in w]
                      for attrs in table.attrs["series"]]
    assert drift_warnings[0] == [] and drift_warnings[1] == [] and len(drift_warnings[2]) == 1
    assert table.attrs["series"][1]["drift_A"] == pytest.approx([0.0, 0.0], abs=0.05)
