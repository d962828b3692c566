"""Columns as a napari Points layer: predict on an image layer, correct by hand, summarise, export.

The layer holds the columns in Å, as `(y_A, x_A)` rows (napari orders axes row, column), with the
features `class, score, p_Mo, p_S2, p_S`; its scale maps Å onto the image layer's world
coordinates, so the points sit on the columns whatever the image's scale. Everything the widget
does is here, without Qt, so notebooks and tests drive it directly.
"""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hrtemnet.columns import CLASS_NAMES, Columns
from hrtemnet.errors import UserError
from hrtemnet.io import NUM_IMAGES
from hrtemnet.napari._reader import METADATA_KEY

if TYPE_CHECKING:
    import napari
    import pandas as pd

COLUMNS_LAYER_NAME = "columns"
PROBABILITY_FEATURES = tuple(f"p_{name}" for name in CLASS_NAMES)
FEATURES = ("class", "score", *PROBABILITY_FEATURES)
EXTRA_FEATURES = ("p_column",)  # kept when the prediction has them, so an export keeps them too
# Markers about half the Mo-S2 distance (1.83 Å) across, so neighbours stay apart at any zoom.
POINT_SIZE_A = 0.9
# napari's names for the markers of our figures (matplotlib o, s, ^).
NAPARI_SYMBOLS = {"o": "disc", "s": "square", "^": "triangle_up"}
# A column the user adds by hand: an S2 column (the most common class), certain, no probabilities.
HAND_ADDED_CLASS = "S2"
HAND_ADDED_FEATURES = {"class": HAND_ADDED_CLASS, "score": 1.0}
# Keys that give the selected points a class: Mo, double S, single S (with Shift: plain letters and digits
# switch napari's layer modes).
CLASS_KEYS = {"Mo": "Shift-M", "S2": "Shift-D", "S": "Shift-S"}


def class_colours() -> dict[str, str]:
    """The project's class palette (the figures' colours)."""
    from hrtemnet.plotting import CLASS_COLOURS

    return dict(CLASS_COLOURS)


def class_symbols() -> dict[str, str]:
    """The figures' marker shapes (matplotlib o, s, ^) in napari's names."""
    from hrtemnet.plotting import CLASS_MARKERS

    return {name: NAPARI_SYMBOLS[marker] for name, marker in CLASS_MARKERS.items()}


# ---- prediction ------------------------------------------------------------------------------------------


def series_sampling_A(layer, sampling_A: float | str | None = None) -> tuple[float | str, str]:
    """Pixel size to predict `layer` with and where it comes from: ("given" | "file" | "lattice").

    `sampling_A`: a number (Å/px), "auto" (measured from the MoS2 lattice), or None: the file's
    calibration, else measured from the lattice. An image opened by another reader (no hrtemnet
    metadata) counts as calibrated in Å when its image axes have a scale other than 1.
    """
    if sampling_A is not None:
        if isinstance(sampling_A, str):
            if sampling_A != "auto":
                raise UserError(f"sampling_A must be a pixel size in Å/px or 'auto' (got {sampling_A!r})")
            return "auto", "lattice"
        if not (np.isfinite(sampling_A) and sampling_A > 0):
            raise UserError(f"sampling_A must be a positive pixel size in Å/px (got {sampling_A})")
        return float(sampling_A), "given"
    info = layer.metadata.get(METADATA_KEY)
    if info is not None and info.get("file_sampling_A"):
        return float(info["file_sampling_A"]), "file"
    scale_y, scale_x = (float(v) for v in layer.scale[-2:])
    if info is None and scale_x != 1.0 and np.isclose(scale_x, scale_y):
        return scale_x, "file"
    return "auto", "lattice"


def predict_table(images: np.ndarray, sampling_A: float | str, model: str = "msd", align: bool = True,
                  border_A: float = 2.0, sampling_source: str | None = None, defocus_A=None,
                  flip_average: bool = False, sublattice_vote: bool = False,
                  defocus_search_A: float = 0.0) -> pd.DataFrame:
    """Columns of one focal series `(3, H, W)` from `hrtemnet.predict` (the widget runs this in a thread);
    `defocus_A`, `flip_average`, `sublattice_vote` (False: the model's setting) and `defocus_search_A` as
    `hrtemnet.predict` takes them.

    `sampling_source` corrects the table's record of where a numeric pixel size came from ("file" when
    it is the file's calibration, which the API, handed an array, cannot know).
    """
    import hrtemnet

    images = np.asarray(images)
    if images.ndim != 3 or len(images) != NUM_IMAGES:
        raise UserError(f"the image layer holds {images.shape}; the plugin works on one focal series "
                        f"({NUM_IMAGES}, H, W) (time series: `hrtemnet predict --frames-per-series 3`)")
    table = hrtemnet.predict(images, sampling_A=sampling_A, model=model, align=align, border_A=border_A,
                             defocus_A=defocus_A, flip_average=flip_average,
                             sublattice_vote=sublattice_vote or None, defocus_search_A=defocus_search_A)
    if sampling_source == "file" and table.attrs.get("sampling_source") == "given":
        table.attrs["sampling_source"] = "file"
    return table


def add_columns(viewer: napari.components.ViewerModel, layer, model: str = "msd",
                sampling_A: float | str | None = None, align: bool = True,
                border_A: float = 2.0) -> napari.layers.Points:
    """Find the columns of the focal series in image layer `layer` (or its name); add them as `columns`.

    Parameters
    ----------
    viewer : a napari `Viewer` (or `ViewerModel`).
    layer : the image layer `(3, H, W)` holding the series, or its name.
    model : "msd", "unet", "unet-wide" (shipped) or a model file from `hrtemnet train`.
    sampling_A : pixel size in Å/px, "auto" (measured from the MoS2 lattice), or None: the file's
        calibration, else measured.
    align : register frames 2 and 3 to frame 1 first (positions stay in the frame of frame 1).
    border_A : the summary counts only columns at least this far (Å) inside the field all frames cover.

    Returns
    -------
    The Points layer `columns` (an existing one is replaced): positions in Å, features class, score,
    p_Mo, p_S2, p_S (and p_column). What looks wrong (pixel size, alignment) comes as `UserWarning`s.
    """
    image = viewer.layers[layer] if isinstance(layer, str) else layer
    sampling, source = series_sampling_A(image, sampling_A)
    table = predict_table(np.asarray(image.data), sampling, model, align, border_A, source)
    for message in table.attrs["warnings"]:
        warnings.warn(message, UserWarning, stacklevel=2)
    return show_columns(viewer, image, table)


def show_columns(viewer, image, table: pd.DataFrame) -> napari.layers.Points:
    """Add the predicted `table` (replacing any `columns` layer) over `image`; return the layer."""
    if COLUMNS_LAYER_NAME in viewer.layers:
        viewer.layers.remove(COLUMNS_LAYER_NAME)
    layer = columns_layer(table, image)
    viewer.layers.append(layer)
    if image.ndim == viewer.dims.ndim == 3:
        viewer.dims.set_current_step(0, 0)  # the columns are positions in the first frame
    return layer


def columns_layer(table: pd.DataFrame, image) -> napari.layers.Points:
    """A Points layer of the columns in `table` (from `hrtemnet.predict`) over image layer `image`."""
    import napari
    import pandas as pd

    names = [*FEATURES, *(name for name in EXTRA_FEATURES if name in table)]
    features = pd.DataFrame({name: table[name] if name in table else np.nan for name in names})
    features["class"] = pd.Categorical(table["class"].astype(str), categories=CLASS_NAMES)
    symbols = class_symbols()
    sampling_A = float(table.attrs["sampling_A"])
    height, width = np.shape(image.data)[-2:]
    image_scale = np.asarray(image.scale[-2:], dtype=float)
    offset_yx_A = np.asarray(table.attrs["offset_A"], dtype=float)[::-1]  # (x, y) in attrs
    info = {
        "image": image.name,
        "source": image.metadata.get(METADATA_KEY, {}).get("source", image.name),
        "image_shape": (int(height), int(width)),
        "field_A": tuple(table.attrs["field_A"]),  # (x0, y0, x1, y1) Å: the field every frame covers
        "border_A": float(table.attrs["border_A"]),
        "attrs": dict(table.attrs),
    }
    layer = napari.layers.Points(
        table[["y_A", "x_A"]].to_numpy(dtype=float).reshape(-1, 2),
        name=COLUMNS_LAYER_NAME,
        features=features,
        feature_defaults={name: HAND_ADDED_FEATURES.get(name, np.nan) for name in names},
        size=POINT_SIZE_A,
        symbol=[symbols[name] for name in features["class"]] or "disc",
        face_color="transparent",
        border_color="class",
        border_color_cycle=class_colours(),
        border_width=0.18,
        # data in Å (plus any HyperSpy offset) onto the image's world coordinates
        scale=image_scale / sampling_A,
        translate=np.asarray(image.translate[-2:], dtype=float) - offset_yx_A * image_scale / sampling_A,
        units=tuple(image.units[-2:]),
        metadata={METADATA_KEY: info},
    )
    layer.current_symbol = symbols[HAND_ADDED_CLASS]
    for name, key in CLASS_KEYS.items():
        layer.bind_key(key, partial(set_class, name=name), overwrite=True)
    return layer


# ---- corrections ----------------------------------------------------------------------------------------


def set_class(layer: napari.layers.Points, name: str, indices=None) -> int:
    """Give the points `indices` (default: the selected ones) class `name`; returns how many changed."""
    if name not in CLASS_NAMES:
        raise UserError(f"unknown column class {name!r}; expected one of {', '.join(CLASS_NAMES)}")
    indices = sorted(layer.selected_data if indices is None else indices)
    if not indices:
        return 0
    features, defaults = layer.features.copy(), layer.feature_defaults
    features.loc[features.index[indices], "class"] = name
    layer.features = features
    layer.feature_defaults = defaults  # setting features resets them
    symbols = np.asarray(layer.symbol, dtype=object).copy()
    symbols[indices] = class_symbols()[name]
    layer.symbol = symbols
    layer.refresh_colors()
    return len(indices)


# ---- what the layer now says ----------------------------------------------------------------------------


def layer_columns(layer: napari.layers.Points) -> Columns:
    """The columns of the layer as they are now (after any edits)."""
    from hrtemnet.columns import class_index_of

    data = np.asarray(layer.data, dtype=float).reshape(-1, 2)
    classes = [class_index_of(str(name)) for name in layer.features["class"]]
    return Columns(data[:, ::-1], np.asarray(classes, dtype=np.int64), layer.features["score"].to_numpy(float))


def layer_table(layer: napari.layers.Points) -> pd.DataFrame:
    """The layer as a prediction table (x_A, y_A, class, score, p_Mo, p_S2, p_S[, p_column]; attrs kept)."""
    import pandas as pd

    data = np.asarray(layer.data, dtype=float).reshape(-1, 2)
    table = pd.DataFrame({"x_A": data[:, 1], "y_A": data[:, 0]})
    for name in (*FEATURES, *(name for name in EXTRA_FEATURES if name in layer.features)):
        values = layer.features[name]
        table[name] = values.astype(str).to_numpy() if name == "class" else values.to_numpy(float)
    table.attrs.update(layer.metadata.get(METADATA_KEY, {}).get("attrs", {}))
    return table


def _info(layer: napari.layers.Points) -> dict:
    info = layer.metadata.get(METADATA_KEY)
    if not info:
        raise UserError(f"layer {layer.name!r} was not made by hrtemnet (Find columns or add_columns)")
    return info


def _interior(layer: napari.layers.Points, columns: Columns) -> np.ndarray:
    """Columns at least border_A inside the field every frame covers (as `hrtemnet.predict` counts)."""
    info = _info(layer)
    x0, y0, x1, y1 = info["field_A"]
    border = info["border_A"]
    x, y = (columns.xy_A - np.asarray(info["attrs"]["offset_A"])).T
    return (x >= x0 + border) & (x <= x1 - border) & (y >= y0 + border) & (y <= y1 - border)


def interior_summary(layer: napari.layers.Points):
    """`prediction.PredictionSummary` (counts, S-vacancy fraction) of the layer's interior columns, now."""
    from hrtemnet.prediction import summarize

    columns = layer_columns(layer)
    return summarize(columns.subset(_interior(layer, columns)))


def summary_line(layer: napari.layers.Points) -> str:
    """Counts per class and the S-vacancy fraction of the columns at least border_A inside the field."""
    return f"interior (≥ {_info(layer)['border_A']:g} Å from the edges): {interior_summary(layer).line()}"


def layer_prediction(layer: napari.layers.Points):
    """The layer, with its edits, as the `prediction.SeriesPrediction` that `hrtemnet predict` writes."""
    from hrtemnet.prediction import SeriesPrediction

    info, table = _info(layer), layer_table(layer)
    attrs = info["attrs"]
    offset_A = np.asarray(attrs["offset_A"], dtype=float)
    columns = layer_columns(layer)
    interior = _interior(layer, columns)
    return SeriesPrediction(
        columns=Columns(columns.xy_A - offset_A, columns.class_index, columns.score),
        class_probabilities=table[list(PROBABILITY_FEATURES)].to_numpy(float).reshape(-1, len(CLASS_NAMES)),
        column_probability=table["p_column"].to_numpy(float) if "p_column" in table else np.full(len(table), np.nan),
        interior=interior,
        sampling_A=float(attrs["sampling_A"]),
        sampling_source=attrs["sampling_source"],
        measured_sampling_A=attrs["measured_sampling_A"],
        shifts_A=np.asarray(attrs["shifts_A"], dtype=float),
        aligned=bool(attrs["aligned"]),
        field_A=tuple(info["field_A"]),
        border_A=float(info["border_A"]),
        image_shape=tuple(info["image_shape"]),
        warnings=list(attrs["warnings"]),
        drift_A=np.asarray(attrs["drift_A"], dtype=float),
        offset_A=offset_A,
    )


def export_columns(layer: napari.layers.Points, path) -> Path:
    """Write the layer's columns, with any corrections, as the column CSV `hrtemnet predict` writes.

    The `#` lines say where the series and the model came from and that the columns were corrected in
    napari; columns added by hand have score 1 and no probabilities. Returns the path (`.csv` added).
    """
    from hrtemnet.prediction import metadata_lines, write_prediction_table

    path = Path(path)
    if path.suffix.lower() != ".csv":
        path = path.with_suffix(".csv")
    info = _info(layer)
    attrs = info["attrs"]
    command = (f"napari (hrtemnet plugin): {attrs['model']} columns of layer {info['image']!r}, "
               f"corrected by hand and exported (hand-added columns: score 1, no probabilities)")
    prediction = layer_prediction(layer)
    header = metadata_lines(prediction, str(attrs["model"]), str(attrs["model_sha256"]), command, str(info["source"]))
    return write_prediction_table(path, prediction, header, "csv")
