"""Columns as a napari Points layer: predict on an image layer, correct by hand, summarise, export.

The layer holds the columns in Å, as `(y_A, x_A)` rows (napari orders axes row, column), with the
features `class, score, p_Mo, p_S2, p_S`; its scale maps Å onto the image layer's world
coordinates, so the points sit on the columns whatever the image's scale. Everything the widget
does is here, without Qt, so notebooks and tests drive it directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hrtemnet.columns import CLASS_NAMES, Columns
from hrtemnet.errors import UserError
from hrtemnet.napari._reader import METADATA_KEY

if TYPE_CHECKING:
    import napari
    import pandas as pd

COLUMNS_LAYER_NAME = "columns"
PROBABILITY_FEATURES = tuple(f"p_{name}" for name in CLASS_NAMES)
FEATURES = ("class", "score", *PROBABILITY_FEATURES)
# Markers about half the Mo-S2 distance (1.83 Å) across, so neighbours stay apart at any zoom.
POINT_SIZE_A = 0.9
# napari's names for the markers of our figures (matplotlib o, s, ^).
NAPARI_SYMBOLS = {"o": "disc", "s": "square", "^": "triangle_up"}
# A column the user adds by hand: an S2 column (the most common class), certain, no probabilities.
HAND_ADDED_FEATURES = {"class": "S2", "score": 1.0, **{name: np.nan for name in PROBABILITY_FEATURES}}


def class_colours() -> dict[str, str]:
    """The project's class palette (the figures' colours)."""
    from hrtemnet.plotting import CLASS_COLOURS

    return dict(CLASS_COLOURS)


def class_symbols() -> dict[str, str]:
    """The figures' marker shapes (matplotlib o, s, ^) in napari's names."""
    from hrtemnet.plotting import CLASS_MARKERS

    return {name: NAPARI_SYMBOLS[marker] for name, marker in CLASS_MARKERS.items()}


# ---- prediction ------------------------------------------------------------------------------------------


def series_sampling_A(layer, sampling_A: float | str | None = None) -> float | str:
    """Pixel size (Å/px) to predict `layer` with: the one given (a number or "auto"), else the file's.

    An image opened by another reader (no hrtemnet metadata) counts as calibrated in Å when its image
    axes have a scale other than 1.
    """
    if sampling_A is not None:
        if isinstance(sampling_A, str):
            if sampling_A != "auto":
                raise UserError(f"sampling_A must be a pixel size in Å/px or 'auto' (got {sampling_A!r})")
            return sampling_A
        if not (np.isfinite(sampling_A) and sampling_A > 0):
            raise UserError(f"sampling_A must be a positive pixel size in Å/px (got {sampling_A})")
        return float(sampling_A)
    info = layer.metadata.get(METADATA_KEY)
    if info is not None and info.get("file_sampling_A"):
        return float(info["file_sampling_A"])
    scale_y, scale_x = (float(v) for v in layer.scale[-2:])
    if info is None and scale_x != 1.0 and np.isclose(scale_x, scale_y):
        return scale_x
    raise UserError(f"{layer.name}: no pixel size (the file has no calibration); give the pixel size in "
                    f"Å/px or 'auto'")


def predict_table(images: np.ndarray, sampling_A: float | str, model: str = "msd", align: bool = True,
                  border_A: float = 2.0) -> pd.DataFrame:
    """Columns of a focal series `(n, H, W)` as the Python API gives them (runs in a worker thread)."""
    import hrtemnet

    if hasattr(hrtemnet, "predict"):
        return hrtemnet.predict(images, sampling_A=sampling_A, model=model, align=align, border_A=border_A)
    return _predict_table_without_api(images, sampling_A, model)


def _predict_table_without_api(images: np.ndarray, sampling_A: float | str, model: str) -> pd.DataFrame:
    """Stand-in until `hrtemnet.predict` lands: the same library path `hrtemnet predict` runs."""
    import pandas as pd

    from hrtemnet.io import FocalSeries
    from hrtemnet.models import load_model
    from hrtemnet.prediction import predict_series

    if isinstance(sampling_A, str):
        raise UserError("pixel size 'auto' needs hrtemnet.predict (not in this version); give it in Å/px")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or len(images) != 3:
        raise UserError(f"a focal series is 3 images (3, H, W); the layer holds {images.shape}")
    loaded = load_model(model)
    columns = predict_series(loaded, FocalSeries(images, sampling_A, "layer", "layer"))
    table = pd.DataFrame({"x_A": columns.xy_A[:, 0], "y_A": columns.xy_A[:, 1],
                          "class": [CLASS_NAMES[i] for i in columns.class_index], "score": columns.score})
    for name in PROBABILITY_FEATURES:
        table[name] = np.nan
    table.attrs.update(sampling_A=float(sampling_A), model=str(model))
    return table


def add_columns(viewer: napari.components.ViewerModel, layer, model: str = "msd",
                sampling_A: float | str | None = None, align: bool = True,
                border_A: float = 2.0) -> napari.layers.Points:
    """Find the columns of the focal series in image layer `layer` (or its name); add them as `columns`.

    Parameters
    ----------
    viewer : a napari `Viewer` (or `ViewerModel`).
    layer : the image layer `(n, H, W)` holding the series, or its name.
    model : "msd", "unet" (shipped) or a model file from `hrtemnet train`.
    sampling_A : pixel size in Å/px, "auto" (measured from the MoS2 lattice), or None for the file's.
    align : register frames 2..n to frame 1 first (positions stay in frame 1).
    border_A : columns this near the border (Å) are left out of the summary.

    Returns
    -------
    The Points layer `columns` (an existing one is replaced), in Å, with features class, score,
    p_Mo, p_S2, p_S.
    """
    image = viewer.layers[layer] if isinstance(layer, str) else layer
    sampling = series_sampling_A(image, sampling_A)
    table = predict_table(np.asarray(image.data), sampling, model, align, border_A)
    return show_columns(viewer, image, table, sampling, border_A)


def show_columns(viewer, image, table: pd.DataFrame, sampling_A: float | str,
                 border_A: float = 2.0) -> napari.layers.Points:
    """Add the predicted `table` (replacing any `columns` layer) over `image`; return the layer."""
    sampling = float(table.attrs.get("sampling_A", sampling_A))  # what "auto" measured, if it was auto
    if COLUMNS_LAYER_NAME in viewer.layers:
        viewer.layers.remove(COLUMNS_LAYER_NAME)
    layer = columns_layer(table, image, sampling, border_A)
    viewer.layers.append(layer)
    if image.ndim == viewer.dims.ndim == 3:
        viewer.dims.set_current_step(0, 0)  # the columns are positions in the first frame
    return layer


def columns_layer(table: pd.DataFrame, image, sampling_A: float, border_A: float = 2.0) -> napari.layers.Points:
    """A Points layer of the columns in `table` (Å), placed over image layer `image`."""
    import napari
    import pandas as pd

    features = pd.DataFrame({name: table[name] if name in table else np.nan for name in FEATURES})
    features["class"] = pd.Categorical(table["class"].astype(str), categories=CLASS_NAMES)
    symbols = class_symbols()
    height, width = np.shape(image.data)[-2:]
    info = {
        "image": image.name,
        "source": image.metadata.get(METADATA_KEY, {}).get("source", image.name),
        "sampling_A": sampling_A,
        "field_A": (width * sampling_A, height * sampling_A),
        "border_A": border_A,
        "attrs": dict(table.attrs),
    }
    layer = napari.layers.Points(
        table[["y_A", "x_A"]].to_numpy(dtype=float).reshape(-1, 2),
        name=COLUMNS_LAYER_NAME,
        features=features,
        feature_defaults=HAND_ADDED_FEATURES,
        size=POINT_SIZE_A,
        symbol=[symbols[name] for name in features["class"]] or "disc",
        face_color="transparent",
        border_color="class",
        border_color_cycle=class_colours(),
        border_width=0.18,
        scale=np.asarray(image.scale[-2:], dtype=float) / sampling_A,
        translate=np.asarray(image.translate[-2:], dtype=float),
        units=tuple(image.units[-2:]),
        metadata={METADATA_KEY: info},
    )
    layer.current_symbol = symbols[HAND_ADDED_FEATURES["class"]]
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
    """The layer as a prediction table (columns x_A, y_A, class, score, p_Mo, p_S2, p_S; attrs kept)."""
    import pandas as pd

    data = np.asarray(layer.data, dtype=float).reshape(-1, 2)
    table = pd.DataFrame({"x_A": data[:, 1], "y_A": data[:, 0]})
    for name in FEATURES:
        values = layer.features[name]
        table[name] = values.astype(str).to_numpy() if name == "class" else values.to_numpy(float)
    table.attrs.update(layer.metadata.get(METADATA_KEY, {}).get("attrs", {}))
    return table


def interior_summary(layer: napari.layers.Points):
    """`prediction.PredictionSummary` of the columns at least the layer's border_A from the image edges."""
    from hrtemnet.metrics import inside_border
    from hrtemnet.prediction import summarize

    info = layer.metadata.get(METADATA_KEY, {})
    columns = layer_columns(layer)
    if "field_A" in info:
        columns = columns.subset(inside_border(columns.xy_A, info["field_A"], float(info.get("border_A", 2.0))))
    return summarize(columns)


def summary_line(layer: napari.layers.Points) -> str:
    """Counts per class and the S-vacancy fraction of the columns at least border_A from the edges."""
    border_A = float(layer.metadata.get(METADATA_KEY, {}).get("border_A", 2.0))
    return f"interior (≥ {border_A:g} Å from the edges): {interior_summary(layer).line()}"


def export_columns(layer: napari.layers.Points, path) -> Path:
    """Write the layer's columns (with any corrections) as the column CSV `hrtemnet predict` writes."""
    from hrtemnet.columns import write_columns_csv

    path = Path(path)
    if path.suffix.lower() != ".csv":
        path = path.with_suffix(".csv")
    sampling_A = layer.metadata.get(METADATA_KEY, {}).get("sampling_A")
    write_columns_csv(path, layer_columns(layer), sampling_A=sampling_A)
    return path
