"""Prediction on any focal series: resample to the model's sampling, run the network (tiled when large),
extract and classify the columns, report them in Å (frame independent) and in the input's pixels.

Positions in Å mean the same place at every sampling (pixel (row, col) is at x = col * s, y = row * s),
so columns found on the resampled series are already in the input's frame; its pixel coordinates are
x / s_input, y / s_input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hrtemnet.columns import NUM_LABELS, Columns, write_columns_csv
from hrtemnet.errors import UserError
from hrtemnet.io import MIN_SIZE_PX, FocalSeries, resample_series

# Larger images run in tiles of this size: bounds the memory (MSD-net keeps all its ~100 feature maps,
# 0.4 GB per 1024² image) ...
TILE_PX = 1024
# ... overlapping by this margin, of which only each tile's centre part is kept. 128 px = 19 Å is far
# beyond the range of HRTEM contrast transfer and the 96 px crops the networks are trained on.
TILE_MARGIN_PX = 128


def predict_probabilities(model, series: np.ndarray, tile_px: int = TILE_PX,
                          margin_px: int = TILE_MARGIN_PX) -> np.ndarray:
    """Softmax probabilities `(4, H, W)` of a series `(3, H, W)` already at the model's sampling.

    `model` is a `hrtemnet.models.LoadedModel` (anything with a fully convolutional `.net`). The series
    is normalised as a whole, as in training, so all tiles see the same intensity scale; an image up to
    `tile_px` on both sides runs in one pass, a larger one in tiles whose outer `margin_px` are dropped
    (except at the image border), so the result equals one pass wherever the network's effective
    receptive field is within the margin.
    """
    from hrtemnet.models import normalize_series

    if not 0 <= 2 * margin_px < tile_px:
        raise ValueError(f"tiles of {tile_px} px cannot keep a centre inside margins of {margin_px} px")
    net = model.net.eval()
    x = torch.from_numpy(normalize_series(series))
    height, width = x.shape[-2:]
    with torch.inference_mode():
        if height <= tile_px and width <= tile_px:
            return torch.softmax(net(x[None]), dim=1)[0].numpy()
        core = tile_px - 2 * margin_px  # the part of each tile that is kept
        out = np.empty((NUM_LABELS, height, width), dtype=np.float32)
        for row in range(0, height, core):
            for col in range(0, width, core):
                r0, c0 = max(0, row - margin_px), max(0, col - margin_px)
                r1, c1 = min(height, row + core + margin_px), min(width, col + core + margin_px)
                tile = torch.softmax(net(x[None, :, r0:r1, c0:c1]), dim=1)[0].numpy()
                rows, cols = slice(row, min(row + core, height)), slice(col, min(col + core, width))
                out[:, rows, cols] = tile[:, rows.start - r0: rows.stop - r0, cols.start - c0: cols.stop - c0]
    return out


def predict_series(model, series: FocalSeries, peak_config=None, tile_px: int = TILE_PX,
                   margin_px: int = TILE_MARGIN_PX) -> Columns:
    """Columns of one focal series in Å, inside the input's field (pixel centres 0 .. (n - 1) * s).

    `peak_config` (a `hrtemnet.peaks.PeakConfig`) defaults to the one stored with the model.
    """
    from hrtemnet.peaks import PeakConfig, extract_columns

    images = resample_series(series.images, series.sampling_A, model.sampling_A)
    if min(images.shape[-2:]) < MIN_SIZE_PX:
        raise UserError(f"{series.source}: {series.images.shape[-1]}x{series.images.shape[-2]} px at "
                        f"{series.sampling_A:.4g} Å/px is {images.shape[-1]}x{images.shape[-2]} px at the "
                        f"model's {model.sampling_A} Å/px; at least {MIN_SIZE_PX} px "
                        f"({MIN_SIZE_PX * model.sampling_A:.1f} Å) a side are needed: give a larger field")
    probabilities = predict_probabilities(model, images, tile_px, margin_px)
    config = peak_config or PeakConfig(**(model.peak_params or {}))
    columns = extract_columns(probabilities, model.sampling_A, config)
    # The resampled field lies inside the input's; sub-pixel refinement may not, by a fraction of a pixel.
    height, width = series.images.shape[-2:]
    x, y = columns.xy_A.T
    s = series.sampling_A
    inside = (x >= 0) & (y >= 0) & (x <= (width - 1) * s) & (y <= (height - 1) * s)
    return columns.subset(inside)


@dataclass
class PredictionSummary:
    counts: dict[str, int]  # columns per class name

    @property
    def s_vacancy_fraction(self) -> float:
        """S / (S + S2): the share of sulfur columns with one S missing (per S site it is half this)."""
        sulfur_columns = self.counts["S"] + self.counts["S2"]
        return self.counts["S"] / sulfur_columns if sulfur_columns else float("nan")

    def line(self) -> str:
        counts = ", ".join(f"{n} {name}" for name, n in self.counts.items())
        fraction = "n/a" if np.isnan(self.s_vacancy_fraction) else f"{self.s_vacancy_fraction:.3f}"
        return f"{sum(self.counts.values())} columns ({counts}); S-vacancy fraction {fraction} (S/(S+S2))"


def summarize(columns: Columns) -> PredictionSummary:
    return PredictionSummary(columns.counts())


def write_prediction(series: FocalSeries, columns: Columns, out_dir: Path) -> Path:
    """`DIR/<stem>.csv`: x_A, y_A, class, score, row_px, col_px (pixels of the input's frame)."""
    path = Path(out_dir) / f"{series.stem}.csv"
    write_columns_csv(path, columns, sampling_A=series.sampling_A)
    return path

