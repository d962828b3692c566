"""Prediction on any focal series: align the frames, check the pixel size against the MoS2 lattice,
resample to the model's sampling, run the network (tiled when large), extract and classify the columns,
and report them in Å in the frame of the first image, with class probabilities and a score.

Positions in Å mean the same place at every sampling (pixel (row, col) is at x = col * s, y = row * s),
so columns found on the resampled series are already in the input's frame; its pixel coordinates are
x / s_input, y / s_input.

Layers: `predict_probabilities` (network) -> `predict_series` (columns of a registered series; the path
`evaluate` uses) -> `predict_focal_series` (alignment, pixel-size check, probabilities, score, summary
over the interior: a `SeriesPrediction`) -> `predict_stack` (a time series of focal series, aligned to
each other) -> `predict_files` (files in, CSVs out: what `hrtemnet predict` runs) and `hrtemnet.predict`
(arrays, paths or HyperSpy signals in, a pandas DataFrame out).
"""

from __future__ import annotations

import hashlib
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from hrtemnet.columns import CLASS_NAMES, NUM_LABELS, Columns
from hrtemnet.errors import UserError
from hrtemnet.io import MIN_SIZE_PX, NUM_IMAGES, FocalSeries, resample_series, resampled_shape

# Larger images run in tiles of this size: bounds the memory (MSD-net keeps all its ~100 feature maps,
# 0.4 GB per 1024² image) ...
TILE_PX = 1024
# ... overlapping by this margin, of which only each tile's centre part is kept. 128 px = 19 Å is far
# beyond the range of HRTEM contrast transfer and the 96 px crops the networks are trained on.
TILE_MARGIN_PX = 128


def predict_probabilities(model, series: np.ndarray, tile_px: int = TILE_PX,
                          margin_px: int = TILE_MARGIN_PX, defocus_A=None) -> np.ndarray:
    """Softmax probabilities `(4, H, W)` of a series `(3, H, W)` already at the model's sampling.

    `model` is a `hrtemnet.models.LoadedModel` (anything with a fully convolutional `.net`). The series
    is normalised as a whole, as in training, so all tiles see the same intensity scale; an image up to
    `tile_px` on both sides runs in one pass, a larger one in tiles whose outer `margin_px` are dropped
    (except at the image border), so the result equals one pass wherever the network's effective
    receptive field is within the margin. A model trained with `--defocus-input` needs `defocus_A` (nominal
    defocus per frame, Å); other models do not use it.
    """
    from hrtemnet.models import network_input, require_defocus, takes_defocus

    if not 0 <= 2 * margin_px < tile_px:
        raise ValueError(f"tiles of {tile_px} px cannot keep a centre inside margins of {margin_px} px")
    require_defocus(model, defocus_A)
    net = model.net.eval()
    x = torch.from_numpy(network_input(series, defocus_A if takes_defocus(model) else None))
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
    """Columns of one (registered) focal series in Å, inside the input's field (pixel centres 0 .. (n - 1) * s).

    `peak_config` (a `hrtemnet.peaks.PeakConfig`) defaults to the one stored with the model. The score is
    the column probability at the peak (what the threshold applies to).
    """
    columns, _ = _columns_and_class_shares(model, series.images, series.sampling_A, series.source, peak_config,
                                           tile_px, margin_px, series.defocus_A)
    return columns


def _columns_and_class_shares(model, images: np.ndarray, sampling_A: float, source: str, peak_config=None,
                              tile_px: int = TILE_PX, margin_px: int = TILE_MARGIN_PX,
                              defocus_A=None) -> tuple[Columns, np.ndarray]:
    """Columns (score = column probability at the peak) and their class shares `(n, 3)` (rows sum to 1)."""
    from hrtemnet.peaks import class_shares, extract_columns

    shape = resampled_shape(images.shape[-2:], sampling_A, model.sampling_A)  # checked before resampling
    if min(shape) < MIN_SIZE_PX:
        raise UserError(f"{source}: {images.shape[-1]}x{images.shape[-2]} px at "
                        f"{sampling_A:.4g} Å/px is {shape[1]}x{shape[0]} px at the "
                        f"model's {model.sampling_A} Å/px; at least {MIN_SIZE_PX} px "
                        f"({MIN_SIZE_PX * model.sampling_A:.1f} Å) a side are needed: give a larger field")
    try:
        resampled = resample_series(images, sampling_A, model.sampling_A)
    except UserError as error:
        raise UserError(f"{source}: {error}") from None
    try:
        probabilities = predict_probabilities(model, resampled, tile_px, margin_px, defocus_A)
    except UserError as error:
        raise UserError(f"{source}: {error}") from None
    config = peak_config or model_peak_config(model)
    columns = extract_columns(probabilities, model.sampling_A, config)
    # The resampled field lies inside the input's; sub-pixel refinement may not, by a fraction of a pixel.
    height, width = images.shape[-2:]
    x, y = columns.xy_A.T
    inside = (x >= 0) & (y >= 0) & (x <= (width - 1) * sampling_A) & (y <= (height - 1) * sampling_A)
    columns = columns.subset(inside)
    pixels = np.clip(np.rint(columns.xy_A[:, ::-1] / model.sampling_A).astype(np.int64), 0,
                     np.array(probabilities.shape[1:]) - 1)
    return columns, class_shares(probabilities, pixels, config.class_radius_A / model.sampling_A,
                                 config.loss_class_weights)


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


# ---- one focal series, as a microscope delivers it -------------------------------------------------------

# Given and measured pixel sizes may differ by this fraction before a warning (the lattice measurement is
# good to ~0.3 %, see hrtemnet.calibration).
SAMPLING_TOLERANCE = 0.03
BORDER_A = 2.0  # summaries leave out columns this close to the field common to all frames
# The plausibility signature (measured in benchmarks/RESULTS.md): in a MoS2 field, about half the interior
# columns are Mo (the lattice has one Mo and one S2 column per cell; edges and Mo vacancies move it a
# little), and most columns have a neighbour at the Mo-S2 distance a / sqrt(3) = 1.82 Å.
MO_SHARE_RANGE = (0.3, 0.7)
NEIGHBOUR_DISTANCE_A = (1.5, 2.15)
MIN_NEIGHBOUR_SHARE = 0.6
MIN_COLUMNS_FOR_SIGNATURE = 20
# ... and the network is sure of almost every column: a share above this scoring below LOW_SCORE means it is
# not (frames swapped, out of range); an interior this large (Å²) without a single column is suspicious.
LOW_SCORE = 0.9
MAX_LOW_SCORE_SHARE = 0.2
EMPTY_FIELD_WARNING_A2 = 100.0


@dataclass
class SeriesPrediction:
    """The columns of one focal series and everything needed to trust (or distrust) them.

    Positions are in Å in the frame of the series' first image (or of the first series of a time series:
    then `drift_A` says how far this series' first image had moved), pixel (row, col) at (col s, row s).
    """

    columns: Columns  # score = `score` below
    class_probabilities: np.ndarray  # (n, 3): p_Mo, p_S2, p_S, each column's class shares
    column_probability: np.ndarray  # (n,): 1 - p(background) at the peak
    interior: np.ndarray  # (n,) bool: inside the common field less `border_A`; summaries count these
    sampling_A: float  # the pixel size used, Å/px
    sampling_source: str  # "file", "given" or "lattice" (measured by hrtemnet.calibration)
    measured_sampling_A: float | None  # from the lattice (None: not measured / no lattice found)
    shifts_A: np.ndarray  # (n_frames, 2): (dx, dy) of each frame's content relative to frame 1, Å
    aligned: bool
    field_A: tuple[float, float, float, float]  # (x0, y0, x1, y1): the field every frame covers, Å
    border_A: float
    image_shape: tuple[int, int]  # (H, W) of the input, px
    warnings: list[str] = field(default_factory=list)
    drift_A: np.ndarray = field(default_factory=lambda: np.zeros(2))  # of frame 1 against series 0's frame 1
    offset_A: np.ndarray = field(default_factory=lambda: np.zeros(2))  # (x, y) of pixel (0, 0), e.g. HyperSpy
    # the defocus values the network was given (Å), and the offset `defocus_search_A` added to the nominal ones
    defocus_A: tuple[float, ...] | None = None
    defocus_offset_A: float | None = None
    sublattice_vote: bool = False  # the class decision voted Mo against S2/S per patch (`peaks.sublattice_vote`)

    @property
    def score(self) -> np.ndarray:
        return self.columns.score

    def summary(self) -> PredictionSummary:
        """Counts and S-vacancy fraction over the interior columns only."""
        return summarize(self.columns.subset(self.interior))

    def shifts_line(self) -> str:
        if not self.aligned:
            return "not aligned (--no-align)"
        return ", ".join(f"frame {i + 1} ({dx:+.2f}, {dy:+.2f}) Å"
                         for i, (dx, dy) in enumerate(self.shifts_A) if i > 0)

    def sampling_line(self) -> str:
        measured = ("; lattice not found, unchecked" if self.measured_sampling_A is None
                    else f"; lattice {self.measured_sampling_A:.4f}" if self.sampling_source != "lattice" else "")
        return f"{self.sampling_A:.4f} Å/px ({self.sampling_source}{measured})"

    def to_dataframe(self):
        """pandas DataFrame: x_A, y_A, class, score, p_Mo, p_S2, p_S, row_px, col_px, p_column, interior."""
        import pandas as pd

        xy = self.columns.xy_A + self.offset_A
        pixels = (self.columns.xy_A + self.drift_A) / self.sampling_A  # pixels of this series' first image
        frame = pd.DataFrame({
            "x_A": xy[:, 0], "y_A": xy[:, 1],
            "class": [CLASS_NAMES[i] for i in self.columns.class_index],
            "score": self.columns.score,
            **{f"p_{name}": self.class_probabilities[:, i] for i, name in enumerate(CLASS_NAMES)},
            "row_px": pixels[:, 1], "col_px": pixels[:, 0],
            "p_column": self.column_probability,
            "interior": self.interior.astype(bool),
        })
        summary = self.summary()
        frame.attrs.update({
            "sampling_A": self.sampling_A, "sampling_source": self.sampling_source,
            "measured_sampling_A": self.measured_sampling_A,
            "shifts_A": self.shifts_A.tolist(), "aligned": self.aligned,
            "drift_A": self.drift_A.tolist(), "offset_A": self.offset_A.tolist(),
            "field_A": list(self.field_A), "border_A": self.border_A,
            "counts": summary.counts, "s_vacancy_fraction": summary.s_vacancy_fraction,
            "warnings": list(self.warnings), "defocus_A": None if self.defocus_A is None else list(self.defocus_A),
            "defocus_offset_A": self.defocus_offset_A, "sublattice_vote": self.sublattice_vote,
        })
        return frame


def column_score(column_probability: np.ndarray, class_probabilities: np.ndarray) -> np.ndarray:
    """Probability that a detection is a column of the class it was given: p(column) x winning class share.

    The column probability alone saturates (confident wrong columns score 0.99 like right ones); a column
    whose class evidence is split between Mo and S2 (misregistered frames, out-of-range input) scores low.
    """
    if len(class_probabilities) == 0:
        return np.zeros(0)
    return column_probability * class_probabilities.max(axis=1)


def check_defocus_search(model, defocus_search_A: float, name: str = "--defocus-search") -> float:
    """The search range (Å) as a float, with a one-line error for a bad value or a model that takes no defocus."""
    from hrtemnet.models import takes_defocus

    try:
        value = float(defocus_search_A)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a distance in Å (got {defocus_search_A!r})") from None
    if not 0 <= value <= MAX_DEFOCUS_SEARCH_A:
        raise UserError(f"{name} must lie in 0..{MAX_DEFOCUS_SEARCH_A:g} Å (got {defocus_search_A}); e.g. 60 "
                        "when the absolute defocus is known to a few tens of Å")
    if value > 0 and not takes_defocus(model):
        raise UserError(f"{name} needs a model with the defocus input (e.g. --model unet-wide); this "
                        f"{model.name} model takes the images only")
    return value


MAX_DEFOCUS_SEARCH_A = 300.0  # beyond this the focal series is not known well enough to give its defocus
DEFOCUS_SEARCH_STEP_A = 20.0  # finer than the defocus error a defocus-input model was trained to tolerate
DEFOCUS_SEARCH_EDGE_A = 2.0  # columns this near the image edge do not count towards the search's score
DEFOCUS_SEARCH_MIN_GAIN = 0.1  # mean column score a shift must gain over the values given to replace them


def search_defocus_offset(model, images: np.ndarray, sampling_A: float, source: str, peak_config, tile_px: int,
                          margin_px: int, defocus_A, search_A: float) -> tuple[float, Columns, np.ndarray]:
    """The shift of the nominal defocus to use, with its columns and their class shares: 0 when the columns at the
    nominal values look confident (at most `MAX_LOW_SCORE_SHARE` of them, away from the edges, score below
    `LOW_SCORE`: what the plausibility check accepts); otherwise the multiple of `DEFOCUS_SEARCH_STEP_A` within
    ±`search_A` whose columns score highest on average (ties to the smaller shift), if that beats the nominal
    values' mean score by at least `DEFOCUS_SEARCH_MIN_GAIN`.

    Users know the focal step well and the absolute defocus poorly; a defocus-input network given values far off
    the truth draws its columns with low scores. But some right series score low too (high defocus with large
    astigmatism), and a confident wrong lattice (the contrast of the other sublattice at another defocus) can
    outscore them a little: searching every series, or every low-scoring one without the margin, turned a right
    series at the high-defocus edge into a wrong one (mean score 0.85 right, 0.89 wrong; the series the search
    is for: 0.79 at the given values, 0.96 at the right ones; experiments/realism/RESULTS.md). One network pass
    (8 with flip averaging) per shift tried."""
    steps = int(np.floor(search_A / DEFOCUS_SEARCH_STEP_A + 1e-9))
    offsets = sorted((DEFOCUS_SEARCH_STEP_A * k for k in range(-steps, steps + 1)), key=abs)
    height, width = np.asarray(images).shape[-2:]
    nominal = best = None
    for offset in offsets:
        shifted = tuple(float(d) + offset for d in defocus_A)
        columns, shares = _columns_and_class_shares(model, images, sampling_A, source, peak_config, tile_px,
                                                    margin_px, shifted)
        x, y = columns.xy_A.T if len(columns) else (np.zeros(0), np.zeros(0))
        inside = ((x >= DEFOCUS_SEARCH_EDGE_A) & (x <= width * sampling_A - DEFOCUS_SEARCH_EDGE_A)
                  & (y >= DEFOCUS_SEARCH_EDGE_A) & (y <= height * sampling_A - DEFOCUS_SEARCH_EDGE_A))
        scores = column_score(columns.score, shares.reshape(-1, len(CLASS_NAMES)))[inside]
        mean_score = float(scores.mean()) if len(scores) else 0.0
        if offset == 0:
            nominal = (mean_score, 0.0, columns, shares)
            if len(scores) >= MIN_COLUMNS_FOR_SIGNATURE and np.mean(scores < LOW_SCORE) <= MAX_LOW_SCORE_SHARE:
                return 0.0, columns, shares  # confident at the values given: no search
        if best is None or mean_score > best[0]:
            best = (mean_score, offset, columns, shares)
    assert nominal is not None and best is not None  # offsets starts with 0
    chosen = best if best[0] >= nominal[0] + DEFOCUS_SEARCH_MIN_GAIN else nominal
    return chosen[1], chosen[2], chosen[3]


def predict_focal_series(model, series: FocalSeries, peak_config=None, align: bool = True,
                         border_A: float = BORDER_A, sampling_source: str | None = None,
                         check_sampling: bool = True, tile_px: int = TILE_PX,
                         margin_px: int = TILE_MARGIN_PX, refine_sampling: int = 3) -> SeriesPrediction:
    """Columns of one focal series `(3, H, W)` as a microscope delivers it.

    Parameters
    ----------
    model : a `hrtemnet.models.LoadedModel`.
    series : the images in defocus order; `series.sampling_A` in Å/px, NaN to measure it from the lattice;
        for a model with the defocus input `series.defocus_A`, and with `series.defocus_search_A` > 0 shifts of
        them when their columns score low (`search_defocus_offset`).
    peak_config : `hrtemnet.peaks.PeakConfig`, default the model's.
    align : register frames 2..n to frame 1 first (`hrtemnet.registration`); positions stay in frame 1.
    border_A : summaries leave out columns within this distance (Å) of the field all frames cover.
    sampling_source : where `series.sampling_A` came from ("file", "given"); default from the series.
    check_sampling : measure the pixel size from the MoS2 lattice and warn when it differs by > 3 %.
    refine_sampling : with a pixel size measured from the lattice, refine it on the lattice of the Mo
        columns found and predict again, at most this many times (small flakes: 3 % -> < 1 %).

    Returns
    -------
    SeriesPrediction; its `warnings` list what looks wrong (pixel size, alignment, plausibility).
    """
    from hrtemnet.calibration import measure_sampling
    from hrtemnet.registration import apply_shifts, common_field_A, register_frames

    peak_config = peak_config or model_peak_config(model)
    images = np.asarray(series.images, dtype=np.float32)
    if images.ndim != 3 or len(images) != NUM_IMAGES:
        raise UserError(f"{series.source}: a focal series is {NUM_IMAGES} images (3, H, W); got shape "
                        f"{images.shape}")
    if border_A < 0 or not np.isfinite(border_A):
        raise UserError(f"--border-A must be a distance >= 0 in Å (got {border_A})")
    warnings: list[str] = []
    sampling_A = float(series.sampling_A)
    if sampling_source is None:
        sampling_source = "given" if series.file_sampling_A is None or series.sampling_overridden else "file"
    measured = None
    if check_sampling or not np.isfinite(sampling_A):
        measured = measure_sampling(images, None if not np.isfinite(sampling_A) else sampling_A)
    if not np.isfinite(sampling_A):
        if measured is None:
            note = f" ({series.calibration_note})" if series.calibration_note else ""
            raise UserError(f"{series.source}: no pixel size given{note} and no MoS2 lattice found to measure it; "
                            f"give it with --sampling S (Å/px)")
        sampling_A, sampling_source = measured.sampling_A, "lattice"
    measured_sampling_A = None if measured is None else measured.sampling_A
    shifts_A = np.zeros((len(images), 2))
    if align:
        registration = register_frames(images, sampling_A)
        shifts_A = registration.shifts_A
        warnings += registration.warnings
        images = apply_shifts(images, shifts_A, sampling_A)
    from hrtemnet.models import takes_defocus

    defocus_A, defocus_offset_A = series.defocus_A, None
    if series.defocus_search_A > 0 and takes_defocus(model) and defocus_A is not None:
        defocus_offset_A, columns, shares = search_defocus_offset(model, images, sampling_A, series.source,
                                                                  peak_config, tile_px, margin_px, defocus_A,
                                                                  series.defocus_search_A)
        defocus_A = tuple(float(d) + defocus_offset_A for d in defocus_A)
    else:
        columns, shares = _columns_and_class_shares(model, images, sampling_A, series.source, peak_config,
                                                    tile_px, margin_px, defocus_A)
    # The power spectrum's peaks of a small crystal are pulled by the CTF envelope (up to ~3 %); the lattice
    # of the Mo columns just found gives the pixel size to ~0.1 % (when they lie on one lattice).
    from hrtemnet.calibration import MOS2_LATTICE_A, lattice_constant_from_columns

    # The network, trained at one pixel size, pulls the columns of a mis-scaled input part of the way towards
    # the lattice it knows, so a fit at a wrong pixel size sees only part of the error: `auto` iterates
    # (at most `refine_sampling` passes, until the change is below 0.2 %), and the check warns when the spectrum
    # says > 3 % and the columns agree by more than half that, or the columns alone say > 3 %.
    mo = columns.class_index == CLASS_NAMES.index("Mo")
    lattice_A = lattice_constant_from_columns(columns.xy_A[mo & (columns.score > 0.5)])
    fitted_sampling_A = None
    if lattice_A is not None and abs(lattice_A / MOS2_LATTICE_A - 1) < 0.1:
        fitted_sampling_A = sampling_A * MOS2_LATTICE_A / lattice_A
    if sampling_source == "lattice" and refine_sampling and fitted_sampling_A is not None \
            and abs(fitted_sampling_A / sampling_A - 1) > 0.002:
        refined = replace(series, sampling_A=fitted_sampling_A)
        result = predict_focal_series(model, refined, peak_config, align, border_A, "lattice", False,
                                      tile_px, margin_px, refine_sampling=int(refine_sampling) - 1)
        result.measured_sampling_A = result.sampling_A
        return result
    mis_stated = False
    if measured is not None:
        spectrum_deviation = abs(sampling_A / measured.sampling_A - 1)
        if fitted_sampling_A is None:
            mis_stated = spectrum_deviation > SAMPLING_TOLERANCE
        else:
            columns_deviation = abs(sampling_A / fitted_sampling_A - 1)
            mis_stated = columns_deviation > SAMPLING_TOLERANCE or (
                spectrum_deviation > SAMPLING_TOLERANCE and columns_deviation > SAMPLING_TOLERANCE / 2)
            # the columns' value is the precise one when the stated size is right; when it is wrong they are
            # pulled towards it, and the spectrum's is the better estimate
            measured_sampling_A = measured.sampling_A if mis_stated and spectrum_deviation > SAMPLING_TOLERANCE \
                else fitted_sampling_A
    if mis_stated and measured_sampling_A is not None:  # mis_stated implies a measurement
        warnings.append(f"pixel size {sampling_A:.4f} Å/px ({sampling_source}) differs from the "
                        f"{measured_sampling_A:.4f} Å/px measured from the MoS2 lattice by "
                        f"{100 * (sampling_A / measured_sampling_A - 1):+.1f} %; columns will be wrong "
                        f"unless the lattice is strained: check the calibration or use --sampling auto")
    column_probability = columns.score
    columns = Columns(columns.xy_A, columns.class_index, column_score(column_probability, shares))
    field_A = common_field_A(images.shape[-2:], sampling_A, shifts_A)
    x, y = columns.xy_A.T if len(columns) else (np.zeros(0), np.zeros(0))
    interior = ((x >= field_A[0] + border_A) & (x <= field_A[2] - border_A)
                & (y >= field_A[1] + border_A) & (y <= field_A[3] - border_A))
    result = SeriesPrediction(columns, shares.reshape(-1, len(CLASS_NAMES)), column_probability, interior,
                              sampling_A, sampling_source, measured_sampling_A, shifts_A, align, field_A,
                              border_A, tuple(images.shape[-2:]), warnings,
                              defocus_A=defocus_A if takes_defocus(model) else None,
                              defocus_offset_A=defocus_offset_A,
                              sublattice_vote=peak_config.sublattice_vote)
    implausible = plausibility_warnings(result)
    if implausible and takes_defocus(model):
        # unet-wide failed on outside series only with the nominal defocus ~50 Å off (experiments/realism/RESULTS.md)
        implausible[0] += (" For this model with the defocus input, also the defocus values: it fails when they "
                           "are ~50 Å or more off the truth (try them shifted by ±50 Å, or --defocus-search 60)")
    result.warnings += implausible
    if series.defocus_A is not None and not takes_defocus(model):
        result.warnings.append(f"this {model.name} model does not take defocus values; the ones given were not "
                               "used (only models trained with --defocus-input do)")
    return result


def plausibility_warnings(prediction: SeriesPrediction) -> list[str]:
    """Warnings when the interior columns do not look like MoS2 (frames out of order, out of the trained
    range, wrong pixel size): no columns at all, many columns with a low score, the Mo share of the
    columns, the share with a neighbour at 1.5-2.15 Å. False alarms and detections: benchmarks/RESULTS.md."""
    from scipy.spatial import cKDTree

    columns = prediction.columns.subset(prediction.interior)
    x0, y0, x1, y1 = prediction.field_A
    interior_area_A2 = max(0.0, x1 - x0 - 2 * prediction.border_A) * max(0.0, y1 - y0 - 2 * prediction.border_A)
    if len(columns) == 0 and interior_area_A2 >= EMPTY_FIELD_WARNING_A2:
        return [f"no columns found in {interior_area_A2:.0f} Å² of interior: is there MoS2 in the field, are the "
                f"frames in defocus order, is the pixel size right?"]
    if len(columns) < MIN_COLUMNS_FOR_SIGNATURE:
        return []
    mo_share = float(np.mean(columns.class_index == CLASS_NAMES.index("Mo")))
    distance, _ = cKDTree(prediction.columns.xy_A).query(columns.xy_A, k=2)
    neighbour_share = float(np.mean((distance[:, 1] >= NEIGHBOUR_DISTANCE_A[0])
                                    & (distance[:, 1] <= NEIGHBOUR_DISTANCE_A[1])))
    low_score_share = float(np.mean(columns.score < LOW_SCORE))
    problems = []
    if low_score_share > MAX_LOW_SCORE_SHARE:
        problems.append(f"{100 * low_score_share:.0f} % score below {LOW_SCORE} (in range: almost none)")
    if not MO_SHARE_RANGE[0] <= mo_share <= MO_SHARE_RANGE[1]:
        problems.append(f"{100 * mo_share:.0f} % of the columns are Mo (MoS2: ~50 %)")
    if neighbour_share < MIN_NEIGHBOUR_SHARE:
        problems.append(f"only {100 * neighbour_share:.0f} % have a neighbour 1.5-2.15 Å away (MoS2: > 90 %)")
    if not problems:
        return []
    return ["the columns do not look like MoS2 (" + "; ".join(problems) + "): are the frames in defocus "
            "order, is the pixel size right, is the series inside the trained range?"]


# ---- a time series of focal series -----------------------------------------------------------------------


def split_stack(series: FocalSeries, frames_per_series: int = NUM_IMAGES) -> list[FocalSeries]:
    """A stack of `k * frames_per_series` frames as k consecutive focal series (stems `<stem>_NNNN` when k > 1)."""
    n = len(series.images)
    if frames_per_series != NUM_IMAGES:
        raise UserError(f"--frames-per-series must be {NUM_IMAGES}: the networks take {NUM_IMAGES}-image focal "
                        f"series (got {frames_per_series})")
    if n == 0 or n % frames_per_series:
        raise UserError(f"{series.source}: holds {n} image(s), not a multiple of {frames_per_series}; a "
                        f"time series is k consecutive focal series of {frames_per_series} images each")
    k = n // frames_per_series
    return [replace(series, images=series.images[i * frames_per_series:(i + 1) * frames_per_series],
                    stem=series.stem if k == 1 else f"{series.stem}_{i:04d}") for i in range(k)]


def series_drifts(stack: list[FocalSeries], sampling_A: float) -> tuple[np.ndarray, list[list[str]]]:
    """(k, 2) drift (dx, dy) in Å of each series' first image relative to the first series' first image, and
    the warnings of each series' drift (empty lists where it is trustworthy)."""
    from hrtemnet.registration import MIN_PEAK_SNR, register_frames

    firsts = np.stack([s.images[0] for s in stack])
    registration = register_frames(firsts, sampling_A)
    warnings = [[] if snr >= MIN_PEAK_SNR else
                [f"drift against series 0 unreliable (correlation peak {snr:.1f} x its background, < "
                 f"{MIN_PEAK_SNR:g}): positions may not be comparable with the other series"]
                for snr in registration.peak_snr]
    return registration.shifts_A, warnings


# ---- files in, tables out --------------------------------------------------------------------------------

FORMATS = ("csv", "napari", "imagej")


def model_sha256(model_spec) -> str:
    """sha256 of the model file behind `model_spec` (a shipped name, a file or a training folder)."""
    from hrtemnet.models import _resolve_model_path  # the one place that maps names to files

    digest = hashlib.sha256()
    with open(_resolve_model_path(model_spec), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def metadata_lines(prediction: SeriesPrediction, model_name: str, sha256: str, command: str | None = None,
                   source: str = "") -> list[str]:
    """The `#` comment lines that open every column CSV (pandas: `read_csv(path, comment='#')`)."""
    from hrtemnet import __version__

    summary = prediction.summary()
    x0, y0, x1, y1 = prediction.field_A
    lines = [
        f"hrtemnet {__version__} column table; read with pandas.read_csv(path, comment='#')",
        f"input: {source}",
        f"model: {model_name} sha256 {sha256}",
        f"pixel_size: {prediction.sampling_line()}",
        f"frame_shifts: {prediction.shifts_line()}",
        f"series_drift_A: {prediction.drift_A[0]:+.3f}, {prediction.drift_A[1]:+.3f}",
        *([f"defocus_A: {', '.join(f'{d:g}' for d in prediction.defocus_A)} (network input"
           + (f"; nominal {prediction.defocus_offset_A:+g} Å, the offset the search found)"
              if prediction.defocus_offset_A is not None else ")")] if prediction.defocus_A is not None else []),
        f"interior: {prediction.border_A:g} Å inside x {x0:.2f}..{x1:.2f} Å, y {y0:.2f}..{y1:.2f} Å "
        f"(the field every frame covers)",
        f"summary (interior): {summary.line()}",
        "class_decision: " + ("sublattice vote (Mo against S2/S per patch of the 2H lattice)"
                              if prediction.sublattice_vote else "per column"),
        "score: p(column) x share of the winning class; p_Mo, p_S2, p_S: class shares; p_column: 1 - p(background)",
    ]
    lines += [f"warning: {w}" for w in prediction.warnings]
    if command:
        lines.append(f"command: {command}")
    return [f"# {line}" for line in lines]


def write_prediction_table(path: Path, prediction: SeriesPrediction, header: list[str], fmt: str = "csv") -> Path:
    """Write the columns: `csv` (x_A,y_A,class,score,p_Mo,p_S2,p_S,row_px,col_px,p_column,interior after the
    `#` lines), `napari` (a points layer CSV: index, axis-0 (row), axis-1 (col) in px and the features
    class and score) or `imagej` (X, Y in px of the first image, class, score: File > Import > Results)."""
    frame = prediction.to_dataframe()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        table = frame
    elif fmt == "napari":
        import pandas as pd

        table = pd.DataFrame({"index": np.arange(len(frame)), "axis-0": frame["row_px"], "axis-1": frame["col_px"],
                              "class": frame["class"], "score": frame["score"]})
    elif fmt == "imagej":
        import pandas as pd

        table = pd.DataFrame({"X": frame["col_px"], "Y": frame["row_px"], "class": frame["class"],
                              "score": frame["score"]})
    else:
        raise UserError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        if fmt == "csv":
            f.write("\n".join(header) + "\n")
        table.to_csv(f, index=False, float_format="%.4f", lineterminator="\n")
    tmp.replace(path)  # a killed run leaves no half-written table (time-series reruns skip finished ones)
    return path


def output_path(out_dir: Path, stem: str, fmt: str) -> Path:
    suffix = {"csv": ".csv", "napari": "_napari.csv", "imagej": "_imagej.csv"}[fmt]
    return Path(out_dir) / f"{stem}{suffix}"


@dataclass
class FileResult:
    """What `predict_files` did with one series of one input."""

    source: str
    stem: str
    path: Path | None  # the table written (None: nothing, e.g. an error)
    prediction: SeriesPrediction | None  # None when skipped (already written) or failed
    series_index: int = 0
    series_count: int = 1
    skipped: bool = False
    plot: Path | None = None
    summary_path: Path | None = None  # the time series' summary table (on its last series)
    summary_plot: Path | None = None


def read_summary_row(path: Path) -> dict:
    """Counts, S-vacancy fraction and drift from a column CSV written by `write_prediction_table`."""
    import pandas as pd

    drift: tuple[float, ...] = (np.nan, np.nan)
    with open(path) as f:
        for line in f:
            if not line.startswith("#"):
                break
            if line.startswith("# series_drift_A:"):
                drift = tuple(float(v) for v in line.split(":", 1)[1].split(","))
    frame = pd.read_csv(path, comment="#")
    interior = frame[frame["interior"].astype(bool)] if "interior" in frame else frame
    counts = {name: int((interior["class"] == name).sum()) for name in CLASS_NAMES}
    return {"counts": counts, "s_vacancy_fraction": PredictionSummary(counts).s_vacancy_fraction, "drift_A": drift}


def write_time_series_summary(path: Path, rows: list[dict], dose_per_series: float | None = None) -> Path:
    """`<stem>_summary.csv`: series, n_Mo, n_S2, n_S, s_vacancy_fraction, drift_x_A, drift_y_A[, dose]."""
    import pandas as pd

    table = pd.DataFrame({
        "series": np.arange(len(rows)),
        **{f"n_{name}": [row["counts"][name] for row in rows] for name in CLASS_NAMES},
        "s_vacancy_fraction": [row["s_vacancy_fraction"] for row in rows],
        "drift_x_A": [row["drift_A"][0] for row in rows], "drift_y_A": [row["drift_A"][1] for row in rows],
    })
    if dose_per_series is not None:
        table["cumulative_dose_e_per_A2"] = dose_per_series * (table["series"] + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format="%.4f")
    return path


def model_peak_config(model, threshold: float | None = None, sublattice_vote: bool | None = None):
    """The model's peak settings (`hrtemnet.peaks.PeakConfig`) with what the user overrides (None: the model's)."""
    from hrtemnet.peaks import PeakConfig

    config = PeakConfig(**(model.peak_params or {}))
    if threshold is not None:
        config = replace(config, threshold=threshold)
    if sublattice_vote is not None:
        config = replace(config, sublattice_vote=bool(sublattice_vote))
    return config


def predict_files(inputs: Sequence[str], model_spec: str = "msd", sampling: float | str | None = None,
                  out_dir: Path = Path("predictions"), align: bool = True, border_A: float = BORDER_A,
                  threshold: float | None = None, plot: bool = False, fmt: str = "csv",
                  frames_per_series: int = NUM_IMAGES, dose_per_series: float | None = None,
                  command: str | None = None, on_error: Callable[[str, Exception], None] | None = None,
                  progress: bool = False, defocus_A=None, flip_average: bool = False,
                  sublattice_vote: bool | None = None, defocus_search_A: float = 0.0) -> Iterator[FileResult]:
    """The work of `hrtemnet predict`: each input (a focal series or a stack of k of them) to tables.

    Parameters
    ----------
    inputs : file specs as `hrtemnet.io.read_image_stack` takes them.
    sampling : pixel size in Å/px (overrides the files' calibration), "auto" (measure it from the MoS2
        lattice) or None (the files' calibration, checked against the lattice).
    out_dir : tables `<stem>.csv` (time series: `<stem>_NNNN.csv` and `<stem>_summary.csv`).
    threshold : column probability threshold (default the model's).
    fmt : "csv", "napari" or "imagej".
    defocus_A : nominal defocus of each frame (Å), for models trained with `--defocus-input`; every input
        (and each focal series of a time series) is taken to have been recorded at these values.
    flip_average : predict with the mean over the 8 flips/rotations of each series (`hrtemnet.models.FlipAverage`;
        8x the network time); the tables' model line says so.
    sublattice_vote : decide Mo against S2/S per patch of the 2H lattice (`hrtemnet.peaks.sublattice_vote`; for
        single-phase 2H samples). None: the model's setting (off for every model shipped so far).
    defocus_search_A : when the columns at the nominal defocus score low, also try it shifted by up to this much
        (Å) either way (`search_defocus_offset`; models with the defocus input only).
    on_error : called with (input, error) for an input that fails (a `UserError`, or any other exception
        for a failure nobody foresaw); it is skipped and the next one runs. Without it the error is raised.

    Yields a `FileResult` per series, as each is done (time series already written are skipped, so a
    killed run, rerun, continues).
    """
    from hrtemnet.io import check_defocus, check_sampling, read_image_stack
    from hrtemnet.models import flip_average_name, load_model, require_defocus
    from hrtemnet.validation import writable_folder

    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    auto = isinstance(sampling, str)
    if auto and sampling != "auto":
        raise UserError(f"--sampling must be a pixel size in Å/px or 'auto' (got {sampling!r})")
    if not auto and sampling is not None:
        check_sampling(sampling, "--sampling")
    if threshold is not None and not 0 <= threshold < 1:
        raise UserError(f"--threshold must lie in [0, 1) (got {threshold})")
    if border_A < 0:
        raise UserError(f"--border-A must be >= 0 Å (got {border_A})")
    if dose_per_series is not None and not dose_per_series > 0:
        raise UserError(f"--dose-per-series must be a positive dose in e/Å² (got {dose_per_series})")
    defocus = None if defocus_A is None else check_defocus(defocus_A)
    writable_folder(out_dir, "--out-dir")  # before any network runs
    torch.set_flush_denormal(True)  # denormals slow the CPU convolutions
    loaded = load_model(model_spec, flip_average=flip_average)
    require_defocus(loaded, defocus, f"model {model_spec}: ")  # before any file is read
    defocus_search_A = check_defocus_search(loaded, defocus_search_A)
    sha256 = model_sha256(model_spec)
    model_label = flip_average_name(str(model_spec), flip_average)  # as the tables name the model
    peak_config = model_peak_config(loaded, threshold, sublattice_vote)
    command = command or shlex.join(["hrtemnet", *sys.argv[1:]])  # argv[1] is the command
    stems: set[str] = set()
    for spec in inputs:
        try:
            stack = read_image_stack(spec, None if isinstance(sampling, str) else sampling, require_sampling=False)
            if auto:
                stack = replace(stack, sampling_A=float("nan"))
            stack = replace(stack, defocus_A=defocus, defocus_search_A=defocus_search_A)
            stem, copy = stack.stem, 1
            while stack.stem in stems:  # two inputs with one name: keep both
                copy += 1
                stack.stem = f"{stem}_{copy}"
            stems.add(stack.stem)
            source = ("lattice" if auto else "given" if sampling is not None else "file")
            parts = split_stack(stack, frames_per_series)
            if len(parts) == 1:
                yield _predict_one(loaded, parts[0], peak_config, align, border_A, source, out_dir, fmt, plot,
                                   sha256, model_label, command)
                continue
            yield from _predict_time_series(loaded, stack, parts, peak_config, align, border_A, source, out_dir,
                                            fmt, plot, sha256, model_label, command, dose_per_series, progress)
        except Exception as error:  # one bad input must not stop the batch: `on_error` reports it
            if isinstance(error, MemoryError):
                error = UserError(f"{spec}: does not fit in memory; crop the images or bin them (and give the "
                                  "new --sampling)")
            if on_error is None:
                raise error from None
            on_error(spec, error)


def _predict_one(model, series: FocalSeries, peak_config, align, border_A, source, out_dir, fmt, plot, sha256,
                 model_label, command, drift_A=None, index=0, count=1, drift_warnings=()) -> FileResult:
    if not np.isfinite(series.sampling_A) and source != "lattice":
        source = "lattice"  # no calibration anywhere: measure it (the result says so)
    prediction = predict_focal_series(model, series, peak_config, align, border_A, source)
    if drift_A is not None:
        prediction.drift_A = np.asarray(drift_A, dtype=np.float64)
        prediction.columns = Columns(prediction.columns.xy_A - prediction.drift_A, prediction.columns.class_index,
                                     prediction.columns.score)
    prediction.warnings += list(drift_warnings)
    header = metadata_lines(prediction, model_label, sha256, command, series.source)
    path = write_prediction_table(output_path(out_dir, series.stem, fmt), prediction, header, fmt)
    result = FileResult(series.source, series.stem, path, prediction, index, count)
    if plot:
        from hrtemnet.plotting import plot_prediction

        aligned = replace(series, sampling_A=prediction.sampling_A)
        result.plot = plot_prediction(aligned, prediction.columns, path.with_suffix(".png"),
                                      f"{series.source}: {model.name} columns")
    return result


def _predict_time_series(model, stack, parts, peak_config, align, border_A, source, out_dir, fmt, plot, sha256,
                         model_label, command, dose_per_series, progress) -> Iterator[FileResult]:
    """k focal series of one stack, each drift-corrected to the first; series already written are read back."""
    from hrtemnet.progress import progress_bar

    rows, drifts = [], None
    with progress_bar("series", progress) as bar:
        task = bar.add_task(stack.stem, total=len(parts))
        for index, part in enumerate(parts):
            path = output_path(out_dir, part.stem, fmt)
            if fmt == "csv" and path.is_file():  # a rerun continues where a killed run stopped
                rows.append(read_summary_row(path))
                result = FileResult(part.source, part.stem, path, None, index, len(parts), skipped=True)
            else:
                if drifts is None:  # one registration of all first images, once something is left to do
                    drifts, drift_warnings = _stack_drifts(stack, parts, align)
                result = _predict_one(model, part, peak_config, align, border_A, source, out_dir, fmt, plot,
                                      sha256, model_label, command, drifts[index], index, len(parts),
                                      drift_warnings[index])
                assert result.prediction is not None  # _predict_one always predicts
                summary = result.prediction.summary()
                rows.append({"counts": summary.counts, "s_vacancy_fraction": summary.s_vacancy_fraction,
                             "drift_A": tuple(result.prediction.drift_A)})
            bar.advance(task)
            if index == len(parts) - 1:
                _finish_time_series(result, stack, rows, out_dir, plot, dose_per_series)
            yield result


def _stack_drifts(stack: FocalSeries, parts: list[FocalSeries], align: bool) -> tuple[np.ndarray, list[list[str]]]:
    """(k, 2) drift of each series' first image against the first series' (zeros without alignment), and
    each series' drift warnings."""
    if not align:
        return np.zeros((len(parts), 2)), [[] for _ in parts]
    sampling_A = stack.sampling_A
    if not np.isfinite(sampling_A):
        from hrtemnet.calibration import measure_sampling

        measured = measure_sampling(stack.images[:NUM_IMAGES], None)
        if measured is None:
            note = f" ({stack.calibration_note})" if stack.calibration_note else ""
            raise UserError(f"{stack.source}: no pixel size given{note} and no MoS2 lattice found to measure it; "
                            f"give it with --sampling S (Å/px)")
        sampling_A = measured.sampling_A
    return series_drifts(parts, sampling_A)


def _finish_time_series(result: FileResult, stack, rows, out_dir, plot, dose_per_series) -> None:
    result.summary_path = write_time_series_summary(Path(out_dir) / f"{stack.stem}_summary.csv", rows,
                                                    dose_per_series)
    if plot:
        import pandas as pd

        from hrtemnet.plotting import plot_time_series

        png = result.summary_path.with_suffix(".png")
        result.summary_plot = plot_time_series(pd.read_csv(result.summary_path), png,
                                               f"{stack.source}: columns per focal series")
