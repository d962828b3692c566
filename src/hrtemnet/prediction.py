"""Prediction on any focal series: resample to the model's sampling, run the network (tiled when large),
extract and classify the columns, report them in Å (frame independent) and in the input's pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hrtemnet.columns import CLASS_NAMES, NUM_LABELS, Columns, write_columns_csv
from hrtemnet.errors import UserError
from hrtemnet.io import MIN_SIZE_PX, FocalSeries, resample_series

TILE_PX = 512  # larger images run in tiles of this size ...
TILE_MARGIN_PX = 96  # ... overlapping by this much; only each tile's centre part is kept


@torch.inference_mode()
def predict_probabilities(model, series: np.ndarray, tile_px: int = TILE_PX,
                          margin_px: int = TILE_MARGIN_PX) -> np.ndarray:
    """Softmax probabilities (4, H, W) of a series already at the model's sampling.

    The series is normalised as a whole (as in training), then run in one pass or in overlapping tiles.
    """
    from hrtemnet.models import normalize_series

    net = model.net.eval()
    x = torch.from_numpy(normalize_series(series))
    height, width = x.shape[-2:]
    if height <= tile_px and width <= tile_px:
        return torch.softmax(net(x[None]), dim=1)[0].numpy()
    core = tile_px - 2 * margin_px
    out = np.empty((NUM_LABELS, height, width), dtype=np.float32)
    for row in range(0, height, core):
        for col in range(0, width, core):
            r0, c0 = max(0, row - margin_px), max(0, col - margin_px)
            r1, c1 = min(height, row + core + margin_px), min(width, col + core + margin_px)
            tile = torch.softmax(net(x[None, :, r0:r1, c0:c1]), dim=1)[0].numpy()
            rows, cols = slice(row, min(row + core, height)), slice(col, min(col + core, width))
            out[:, rows, cols] = tile[:, rows.start - r0: rows.stop - r0, cols.start - c0: cols.stop - c0]
    return out


def predict_series(model, series: FocalSeries, peak_config=None) -> Columns:
    """Columns of one focal series, in Å (pixel (row, col) of the input is at x = col*s, y = row*s)."""
    from hrtemnet.peaks import PeakConfig, extract_columns

    images = resample_series(series.images, series.sampling_A, model.sampling_A)
    if min(images.shape[-2:]) < MIN_SIZE_PX:
        raise UserError(f"{series.source}: {images.shape[-1]}x{images.shape[-2]} px at {model.sampling_A} Å/px is too "
                        f"small; the network needs at least {MIN_SIZE_PX} px ({MIN_SIZE_PX * model.sampling_A:.1f} Å)")
    probabilities = predict_probabilities(model, images)
    config = peak_config or PeakConfig(**(model.peak_params or {}))
    columns = extract_columns(probabilities, model.sampling_A, config)
    height, width = series.images.shape[-2:]
    inside = (columns.xy_A[:, 0] <= (width - 1) * series.sampling_A) & (
        columns.xy_A[:, 1] <= (height - 1) * series.sampling_A)
    return columns.subset(inside)


@dataclass
class PredictionSummary:
    counts: dict[str, int]

    @property
    def s_vacancy_fraction(self) -> float:
        """S / (S + S2): the share of sulfur sites with one S missing."""
        sulfur_sites = self.counts["S"] + self.counts["S2"]
        return self.counts["S"] / sulfur_sites if sulfur_sites else float("nan")

    def line(self) -> str:
        counts = ", ".join(f"{n} {name}" for name, n in self.counts.items())
        return f"{sum(self.counts.values())} columns ({counts}); S-vacancy fraction {self.s_vacancy_fraction:.3f}"


def summarize(columns: Columns) -> PredictionSummary:
    return PredictionSummary(columns.counts())


def plot_prediction(series: FocalSeries, columns: Columns, path: Path, title: str = "") -> Path:
    """The three images with the columns coloured by class (colour-blind-safe), axes in Å."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hrtemnet.evaluation import CLASS_COLOURS

    s = series.sampling_A
    height, width = series.images.shape[-2:]
    extent = (-s / 2, (width - 0.5) * s, (height - 0.5) * s, -s / 2)
    fig, axes = plt.subplots(1, len(series.images), figsize=(4.2 * len(series.images), 4.6), squeeze=False)
    markers = {"Mo": "o", "S2": "s", "S": "^"}
    for index, (ax, image) in enumerate(zip(axes[0], series.images, strict=True)):
        ax.imshow(image, cmap="gray", extent=extent)
        for class_index, name in enumerate(CLASS_NAMES):
            xy = columns.xy_A[columns.class_index == class_index]
            ax.scatter(xy[:, 0], xy[:, 1], s=14, marker=markers[name], facecolors="none",
                       edgecolors=CLASS_COLOURS[name], linewidths=1.0, label=f"{name} ({len(xy)})")
        ax.set_title(f"image {index + 1}")
        ax.set_xlabel("x (Å)")
        ax.set_ylabel("y (Å)")
    axes[0, -1].legend(loc="upper right", fontsize=8, framealpha=0.8)
    fig.suptitle(title or series.source)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_prediction(series: FocalSeries, columns: Columns, out_dir: Path) -> Path:
    """DIR/<stem>.csv with x_A, y_A, class, score, row_px, col_px (pixels of the input's frame)."""
    path = Path(out_dir) / f"{series.stem}.csv"
    write_columns_csv(path, columns, sampling_A=series.sampling_A)
    return path
