"""napari reader: a focal series in any form `hrtemnet predict` accepts, as one image layer in Å.

Reading is `hrtemnet.io`'s (no second reader). The frames lie on axis 0 (napari's
slider), the image axes are scaled by the file's pixel size, so pixel (row, col) sits at
(y, x) = (row * s, col * s) Å in the viewer, the convention of every column CSV. A file without a
calibration opens in pixels (scale 1); the widget then asks for the pixel size.
"""

from __future__ import annotations

from pathlib import Path

from hrtemnet.io import IMAGE_SUFFIXES, read_image_stack

# Where the reader leaves what it knows about the series for the widget and `add_columns`.
METADATA_KEY = "hrtemnet"


def get_reader(path: str | list[str]):
    """The npe2 reader hook: a reader for a focal-series file or folder, None for anything else."""
    if isinstance(path, list):
        if len(path) != 1:
            return None  # napari hands several files over one by one unless stacking; one series per layer
        path = path[0]
    candidate = Path(path)
    if candidate.is_dir() or candidate.suffix.lower() in IMAGE_SUFFIXES:
        return read_series
    return None


def read_series(path: str | list[str]) -> list[tuple]:
    """`[(images (n, H, W), layer kwargs, "image")]` for napari; raises `UserError` on bad input.

    A file without calibration opens too (in pixels); a stack of 3k frames (a time series) opens whole.
    """
    spec = str(path[0] if isinstance(path, list) else path)
    series = read_image_stack(spec, None, require_sampling=False)
    return [(series.images, layer_kwargs(series.stem, spec, series.file_sampling_A), "image")]


def layer_kwargs(name: str, source: str, sampling_A: float | None) -> dict:
    """Image-layer keyword arguments of a focal series with pixel size `sampling_A` (None: pixels)."""
    scale, unit = (1.0, "pixel") if sampling_A is None else (sampling_A, "angstrom")
    return {
        "name": name,
        "scale": (1.0, scale, scale),
        "units": ("pixel", unit, unit),  # the scale bar then reads in Å
        "axis_labels": ("frame", "y", "x"),
        "colormap": "gray",
        "metadata": {METADATA_KEY: {"source": source, "file_sampling_A": sampling_A}},
    }
