"""The napari plugin, headless: reader, add_columns on a simulated series, class edits + export scored by
`hrtemnet score`, the widget's worker, and no napari/Qt cost for `import hrtemnet` and the CLI.

Layers live in a `napari.components.ViewerModel` (the viewer without a canvas: no OpenGL needed); the
widget is real Qt on the offscreen platform.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from hrtemnet.cli import app
from hrtemnet.columns import CLASS_NAMES, Columns, write_columns_csv

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before Qt is first imported

SAMPLING_A = 0.15
GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy", "superqt")


def test_import_hrtemnet_and_cli_load_no_napari_or_qt():
    code = ("import sys, hrtemnet, hrtemnet.cli; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {GUI_MODULES!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def napari():
    return pytest.importorskip("napari")


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A noise-free 38.4 Å MoS2 sheet (0 phonons) saved as a calibrated .npz, and its true columns."""
    from hrtemnet.simulation import OpticsParams, SimulationConfig, simulate_focal_series
    from hrtemnet.structures import StructureConfig, random_structure

    config = StructureConfig(sheet_probability=1.0, graphene_probability=0.0, single_s_vacancy_rate_range=(0.05, 0.10))
    for name, clean in (("carbon_probability", 0.0), ("tilt_rad_range", (0.0, 0.0))):
        if hasattr(config, name):  # the realism options, where present: no contamination, no tilt
            setattr(config, name, clean)
    sample = random_structure(np.random.default_rng(7), config)
    images = simulate_focal_series(sample.atoms, OpticsParams(),
                                   SimulationConfig(sampling_A=SAMPLING_A, num_phonons=0))
    path = tmp_path_factory.mktemp("napari") / "sheet.npz"
    np.savez(path, images=images, sampling_A=SAMPLING_A)
    return path, images, sample.columns


def open_series(napari, path):
    from hrtemnet.napari import read_series

    viewer = napari.components.ViewerModel()
    for data, kwargs, kind in read_series(path):
        assert kind == "image"
        viewer.add_image(data, **kwargs)
    return viewer, viewer.layers[-1]


def table_columns(table) -> Columns:
    return Columns(table[["x_A", "y_A"]].to_numpy(), [CLASS_NAMES.index(c) for c in table["class"]],
                   table["score"].to_numpy())


def test_reader_gives_three_frames_on_a_slider_scaled_in_angstrom(napari, tmp_path):
    from hrtemnet.napari._reader import get_reader

    images = np.random.default_rng(0).normal(size=(3, 40, 50)).astype(np.float32)
    np.savez(tmp_path / "series.npz", images=images, sampling_A=0.12)
    folder = tmp_path / "folder"
    folder.mkdir()
    for index, image in enumerate(images):
        np.save(folder / f"frame{index + 1}.npy", image)  # no calibration in plain .npy files

    import npe2

    npe2.PluginManager.instance().discover()  # what napari.Viewer does at start
    viewer = napari.components.ViewerModel()
    viewer.open(str(tmp_path / "series.npz"), plugin="hrtemnet")  # through the installed npe2 manifest
    layer = viewer.layers["series"]
    np.testing.assert_array_equal(layer.data, images)
    np.testing.assert_allclose(layer.scale, (1.0, 0.12, 0.12))
    assert viewer.dims.nsteps[0] == 3  # the frames are on the slider

    (data, kwargs, kind), = get_reader(str(folder))(str(folder))
    np.testing.assert_array_equal(data, images)
    assert kind == "image" and kwargs["scale"] == (1.0, 1.0, 1.0)  # uncalibrated: pixels

    import tifffile

    tifffile.imwrite(tmp_path / "series.tif", images, imagej=True, resolution=(1 / 0.015, 1 / 0.015),
                     metadata={"unit": "nm"})  # ImageJ calibration: 66.7 pixels per nm
    (data, kwargs, kind), = get_reader(str(tmp_path / "series.tif"))(str(tmp_path / "series.tif"))
    np.testing.assert_array_equal(data, images)
    np.testing.assert_allclose(kwargs["scale"], (1.0, 0.15, 0.15), rtol=1e-6)
    assert get_reader(str(tmp_path / "notes.txt")) is None


def test_reader_and_add_columns_refuse_bad_input_with_one_line(napari, tmp_path):
    from hrtemnet.errors import UserError
    from hrtemnet.napari import add_columns, read_series

    images = np.random.default_rng(0).normal(size=(3, 40, 40))
    images[1, 5, 5] = np.nan
    np.save(tmp_path / "nan.npy", images)
    with pytest.raises(UserError, match="NaN"):
        read_series(str(tmp_path / "nan.npy"))
    viewer = napari.components.ViewerModel()
    viewer.add_image(np.random.default_rng(0).normal(size=(3, 64, 64)), name="uncalibrated")
    with pytest.raises(UserError, match="pixel size"):  # none in the file, no lattice to measure it from
        add_columns(viewer, "uncalibrated")
    viewer.add_image(np.random.default_rng(0).normal(size=(6, 64, 64)), name="six frames", scale=(1, 0.15, 0.15))
    with pytest.raises(UserError, match="one focal series"):
        add_columns(viewer, "six frames")


def test_add_columns_finds_the_simulated_columns(napari, simulated):
    from matplotlib.colors import to_rgba

    from hrtemnet.metrics import score_image
    from hrtemnet.napari import add_columns, layer_table
    from hrtemnet.napari._columns import interior_summary
    from hrtemnet.plotting import CLASS_COLOURS

    path, images, truth = simulated
    viewer, image = open_series(napari, path)
    layer = add_columns(viewer, image, model="msd")

    assert isinstance(layer, napari.layers.Points) and layer.name == "columns"
    assert {"class", "score", "p_Mo", "p_S2", "p_S"} <= set(layer.features.columns)
    shares = layer.features[["p_Mo", "p_S2", "p_S"]].to_numpy()
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-3)  # class shares of every column
    assert np.all(shares.argmax(axis=1) == [CLASS_NAMES.index(c) for c in layer.features["class"]])
    np.testing.assert_allclose(layer.scale, (1.0, 1.0))  # data in Å on an image scaled in Å
    expected = [to_rgba(CLASS_COLOURS[c]) for c in layer.features["class"]]
    np.testing.assert_allclose(layer.border_color, expected, atol=1e-6)
    height, width = images.shape[-2:]
    score = score_image(truth, table_columns(layer_table(layer)), (width * SAMPLING_A, height * SAMPLING_A))
    assert score.f1 >= 0.95, score.as_row()
    assert interior_summary(layer).counts == layer.metadata["hrtemnet"]["attrs"]["counts"]  # = hrtemnet.predict's
    # a second run replaces the layer instead of stacking copies
    add_columns(viewer, image.name, sampling_A=SAMPLING_A)
    assert [layer.name for layer in viewer.layers] == [image.name, "columns"]


def test_uncalibrated_file_opens_in_pixels_and_the_pixel_size_is_measured(napari, simulated, tmp_path):
    from hrtemnet.metrics import score_image
    from hrtemnet.napari import add_columns, layer_table

    _, images, truth = simulated
    np.save(tmp_path / "plain.npy", images)  # no calibration
    viewer, image = open_series(napari, tmp_path / "plain.npy")
    np.testing.assert_allclose(image.scale, (1.0, 1.0, 1.0))
    layer = add_columns(viewer, image)  # sampling_A=None: measured from the MoS2 lattice
    table = layer_table(layer)
    assert table.attrs["sampling_source"] == "lattice"
    assert table.attrs["sampling_A"] == pytest.approx(SAMPLING_A, rel=0.01)
    np.testing.assert_allclose(layer.scale, 1.0 / table.attrs["sampling_A"])  # Å onto the image's pixels
    height, width = images.shape[-2:]
    score = score_image(truth, table_columns(table), (width * SAMPLING_A, height * SAMPLING_A))
    assert score.f1 >= 0.95, score.as_row()


def score_cli(truth_csv, pred_csv, tmp_path) -> dict:
    out = tmp_path / f"scores_{pred_csv.stem}.csv"
    result = CliRunner().invoke(app, ["score", str(truth_csv), str(pred_csv), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open(out, newline="") as f:
        return next(csv.DictReader(f))


def test_class_edit_move_delete_and_export_round_trip_through_score(napari, simulated, tmp_path):
    import pandas as pd

    from hrtemnet.metrics import inside_border, match_image
    from hrtemnet.napari import add_columns, export_columns, layer_table, set_class, summary_line

    path, images, truth = simulated
    viewer, image = open_series(napari, path)
    layer = add_columns(viewer, image)
    truth_csv = tmp_path / "truth.csv"
    write_columns_csv(truth_csv, truth)
    before = score_cli(truth_csv, export_columns(layer, tmp_path / "as_predicted.csv"), tmp_path)
    summary = summary_line(layer)

    # three correct interior columns (away from the border band score measures from the true columns)
    height, width = images.shape[-2:]
    predicted = table_columns(layer_table(layer))
    match = match_image(truth, predicted, (width * SAMPLING_A, height * SAMPLING_A))
    interior = np.flatnonzero(inside_border(predicted.xy_A, (width * SAMPLING_A, height * SAMPLING_A), 4.0))
    correct = [i for i in interior if _is_correct(match, predicted, i)]
    to_reclassify, to_move, to_delete = correct[:3]
    old_class = str(layer.features["class"][to_reclassify])
    new_class = "S" if old_class != "S" else "S2"
    assert set_class(layer, new_class, [to_reclassify]) == 1
    moved = layer.data.copy()
    moved[to_move] += (0.0, 1.0)  # 1 Å along x: beyond the 0.5 Å match radius (a drag in select mode)
    layer.data = moved
    layer.selected_data = {to_delete}
    layer.remove_selected()  # what the Delete key does
    assert summary_line(layer) != summary

    edited = export_columns(layer, tmp_path / "corrected.csv")
    after = score_cli(truth_csv, edited, tmp_path)
    assert int(after["tp"]) == int(before["tp"]) - 3
    assert int(after["fn"]) == int(before["fn"]) + 3  # the three true columns are no longer found right
    assert int(after["fp"]) == int(before["fp"]) + 2  # reclassified and moved: wrong predictions
    with open(edited, newline="") as f:
        comments = [line for line in f if line.startswith("#")]
    table = pd.read_csv(edited, comment="#")
    assert any("corrected by hand" in line for line in comments)
    assert list(table.columns[:7]) == ["x_A", "y_A", "class", "score", "p_Mo", "p_S2", "p_S"]
    assert len(table) == len(predicted) - 1
    assert table["class"][to_reclassify] == new_class
    np.testing.assert_allclose(table["x_A"][to_move], predicted.xy_A[to_move, 0] + 1.0, atol=1e-3)


def _is_correct(match, predicted: Columns, index: int) -> bool:
    """Whether predicted column `index` is a true positive of `match` (which saw the border-cut set)."""
    hits = np.flatnonzero(np.all(np.isclose(match.pred.xy_A, predicted.xy_A[index]), axis=1))
    return len(hits) == 1 and bool(match.correct_pred()[hits[0]])


def wait_for_worker(widget, application, timeout_s: float = 120.0) -> None:
    """Let Qt run until the widget's worker has finished (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while widget.worker is not None and time.monotonic() < deadline:
        application.processEvents()
        time.sleep(0.02)


def test_widget_finds_columns_in_a_worker_and_exports(napari, simulated, tmp_path):
    from napari.utils.key_bindings import KeymapHandler
    from qtpy.QtWidgets import QApplication

    from hrtemnet.napari._widget import ColumnsWidget

    application = QApplication.instance() or QApplication([])
    path, _, truth = simulated
    viewer, image = open_series(napari, path)
    widget = ColumnsWidget(viewer)
    assert widget.image.value == image.name
    widget.find_columns()
    assert widget.worker is not None  # running in a thread
    wait_for_worker(widget, application)
    assert "columns" in viewer.layers, widget.status.value
    assert "S-vacancy fraction" in widget.summary.value

    layer = viewer.layers["columns"]
    layer.selected_data = {0, 1}
    widget.new_class.value = "Mo"
    widget.set_selected_class()
    assert list(layer.features["class"][:2]) == ["Mo", "Mo"]
    keys = KeymapHandler()  # what the canvas does with a key press on the active layer
    keys.keymap_providers = [layer]
    layer.selected_data = {1}
    keys.press_key("Shift-S")  # single S
    assert list(layer.features["class"][:2]) == ["Mo", "S"]
    widget.export_path.value = tmp_path / "widget.csv"
    widget.export_columns()
    assert (tmp_path / "widget.csv").is_file(), widget.status.value

    widget.model.value = "file"  # but no file chosen: one line, no worker
    widget.find_columns()
    assert widget.worker is None and widget.status.value.startswith("error:")
    widget.model.value = "msd"
    widget.defocus.value = "10,60"  # not one value per frame: one line, no worker
    widget.find_columns()
    assert widget.worker is None and "3 values, got 2" in widget.status.value

    widget.defocus.value = ""
    widget.flip_average.value = True  # reaches the network: the exported table says which model ran
    widget.find_columns()
    wait_for_worker(widget, application)
    widget.export_path.value = tmp_path / "flips.csv"
    widget.export_columns()
    assert "# model: msd +flips sha256" in (tmp_path / "flips.csv").read_text(), widget.status.value

    # an error inside the worker is one line in the dock, not a crash: unet-wide without a defocus
    widget.model.value = "unet-wide"
    widget.find_columns()
    wait_for_worker(widget, application)
    assert "takes the nominal defocus" in widget.status.value, widget.status.value
    # the defocus search and the sublattice vote reach hrtemnet.predict: a search with an image-only model is refused
    # in one line from the worker
    widget.model.value = "msd"
    widget.flip_average.value = False
    widget.sublattice_vote.value = True
    widget.defocus_search_A.value = 60.0
    widget.find_columns()
    wait_for_worker(widget, application)
    assert "needs a model with the defocus input" in widget.status.value, widget.status.value
