"""Species-aware F1 of predicted against true atomic columns, as docs/conventions.md defines it.

One image: columns within `border_A` of the image border are left out of both sets (each set by
its own positions), then predicted columns are matched one-to-one to true columns within
`match_radius_A` (Hungarian, `scipy.optimize.linear_sum_assignment`: the most pairs, and among
those the smallest summed distance). A matched pair with the same class is a true positive;
every other prediction is a false positive, every other true column a false negative;
F1 = 2TP / (2TP + FP + FN). Position-only F1 counts every matched pair as a true positive.

Empty cases: a ratio with a zero denominator is 1.0, because nothing was there to get wrong.
Both sets empty gives F1 = 1.0; true columns but no predictions give F1 = 0 (and precision 1.0,
recall 0); predictions but no true columns give F1 = 0 (precision 0, recall 1.0).

Everything is derived from one confusion matrix, `(4, 4)`: rows true class (Mo, S2, S, none),
columns predicted class (Mo, S2, S, none); the "none" row counts false columns (unmatched
predictions), the "none" column missed columns (unmatched true columns). Scores over many images
add up (`total_score`) for pooled per-class F1; the paper's statistic is the mean per-image F1.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from hrtemnet.columns import CLASS_NAMES, Columns, read_columns_csv
from hrtemnet.errors import UserError

MATCH_RADIUS_A = 0.5
BORDER_A = 2.0
NONE = len(CLASS_NAMES)  # row/column of the confusion matrix for "no column"
CONFUSION_LABELS: tuple[str, ...] = (*CLASS_NAMES, "none")


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, and 1.0 when there was nothing to count (denominator 0)."""
    return float(numerator / denominator) if denominator > 0 else 1.0


def f1_from_counts(tp: float, fp: float, fn: float) -> float:
    return _ratio(2 * tp, 2 * tp + fp + fn)


@dataclass(frozen=True)
class ClassScore:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return f1_from_counts(self.tp, self.fp, self.fn)


@dataclass
class ImageScore:
    """Scores of one image (or, summed with `+`, of many)."""

    confusion: np.ndarray = field(default_factory=lambda: np.zeros((NONE + 1, NONE + 1), dtype=np.int64))
    squared_error_sum_A2: float = 0.0  # summed squared position error of matched pairs

    @property
    def n_true(self) -> int:
        return int(self.confusion[:NONE].sum())

    @property
    def n_pred(self) -> int:
        return int(self.confusion[:, :NONE].sum())

    @property
    def n_matched(self) -> int:
        return int(self.confusion[:NONE, :NONE].sum())

    @property
    def tp(self) -> int:
        return int(np.trace(self.confusion[:NONE, :NONE]))

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        return self.n_true - self.tp

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.n_pred)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.n_true)

    @property
    def f1(self) -> float:
        """Species-aware F1."""
        return f1_from_counts(self.tp, self.fp, self.fn)

    @property
    def position_f1(self) -> float:
        """F1 that ignores the class: every matched pair is a true positive."""
        return f1_from_counts(self.n_matched, self.n_pred - self.n_matched, self.n_true - self.n_matched)

    @property
    def rms_error_A(self) -> float:
        """RMS distance of matched pairs (nan without any)."""
        return float(np.sqrt(self.squared_error_sum_A2 / self.n_matched)) if self.n_matched else float("nan")

    @property
    def per_class(self) -> dict[str, ClassScore]:
        c = self.confusion
        tp, predicted, true = np.diag(c), c.sum(axis=0), c.sum(axis=1)
        return {
            name: ClassScore(tp=int(tp[i]), fp=int(predicted[i] - tp[i]), fn=int(true[i] - tp[i]))
            for i, name in enumerate(CLASS_NAMES)
        }

    def __add__(self, other: ImageScore) -> ImageScore:
        squared_error_sum_A2 = self.squared_error_sum_A2 + other.squared_error_sum_A2
        return ImageScore(self.confusion + other.confusion, squared_error_sum_A2)

    def as_row(self) -> dict[str, float | int]:
        """Flat record for tables: f1, position_f1, f1_<class>, counts, rms_error_A."""
        row: dict[str, float | int] = {"f1": self.f1, "position_f1": self.position_f1}
        row |= {f"f1_{name}": s.f1 for name, s in self.per_class.items()}
        row |= {"tp": self.tp, "fp": self.fp, "fn": self.fn, "n_true": self.n_true, "n_pred": self.n_pred}
        row["rms_error_A"] = self.rms_error_A
        return row


def total_score(scores: Iterable[ImageScore]) -> ImageScore:
    """Pooled counts over images: per-class and overall F1 of the whole set."""
    return sum(scores, ImageScore())


def mean_f1(scores: Iterable[ImageScore]) -> float:
    """Mean of per-image species-aware F1 (nan for no images)."""
    values = [s.f1 for s in scores]
    return float(np.mean(values)) if values else float("nan")


def inside_border(xy_A: np.ndarray, image_size_A: tuple[float, float], border_A: float) -> np.ndarray:
    """Mask of positions at least `border_A` from every edge of `[0, width] x [0, height]`."""
    size = np.asarray(image_size_A, dtype=np.float64)
    return np.all((xy_A >= border_A) & (xy_A <= size - border_A), axis=1)


def match_columns(
    truth_xy_A: np.ndarray, pred_xy_A: np.ndarray, match_radius_A: float = MATCH_RADIUS_A
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching within the radius: (truth indices, prediction indices, distances in Å).

    The most pairs, and among those the smallest summed distance: pairs farther apart than the
    radius cost more than any set of allowed pairs together, so the assignment avoids them.
    """
    if len(truth_xy_A) == 0 or len(pred_xy_A) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    distance = cdist(truth_xy_A, pred_xy_A)
    allowed = distance <= match_radius_A
    forbidden_cost = 2 * match_radius_A * (min(distance.shape) + 1) + 1
    rows, cols = linear_sum_assignment(np.where(allowed, distance, forbidden_cost))
    keep = allowed[rows, cols]
    return rows[keep], cols[keep], distance[rows[keep], cols[keep]]


@dataclass
class ImageMatch:
    """The columns left after the border cut and how they pair up (indices into those)."""

    truth: Columns
    pred: Columns
    truth_index: np.ndarray
    pred_index: np.ndarray
    distance_A: np.ndarray

    def _same_class(self, side_index: np.ndarray, n: int) -> np.ndarray:
        same = self.truth.class_index[self.truth_index] == self.pred.class_index[self.pred_index]
        mask = np.zeros(n, dtype=bool)
        mask[side_index[same]] = True
        return mask

    def correct_pred(self) -> np.ndarray:
        """Mask over `pred`: matched with the right class (true positives; the rest are false)."""
        return self._same_class(self.pred_index, len(self.pred))

    def found_truth(self) -> np.ndarray:
        """Mask over `truth`: matched with the right class (the rest are false negatives)."""
        return self._same_class(self.truth_index, len(self.truth))

    def score(self) -> ImageScore:
        predicted_as = np.full(len(self.truth), NONE)
        predicted_as[self.truth_index] = self.pred.class_index[self.pred_index]
        unmatched_pred = np.ones(len(self.pred), dtype=bool)
        unmatched_pred[self.pred_index] = False
        confusion = np.zeros((NONE + 1, NONE + 1), dtype=np.int64)
        np.add.at(confusion, (self.truth.class_index, predicted_as), 1)  # matched pairs and misses
        confusion[NONE] += np.bincount(self.pred.class_index[unmatched_pred], minlength=NONE + 1)  # false columns
        return ImageScore(confusion, float(np.sum(self.distance_A**2)))


def match_image(
    truth: Columns,
    pred: Columns,
    image_size_A: tuple[float, float],
    match_radius_A: float = MATCH_RADIUS_A,
    border_A: float = BORDER_A,
) -> ImageMatch:
    """Border cut on both sets, then one-to-one matching; see the module docstring."""
    truth = truth.subset(inside_border(truth.xy_A, image_size_A, border_A))
    pred = pred.subset(inside_border(pred.xy_A, image_size_A, border_A))
    return ImageMatch(truth, pred, *match_columns(truth.xy_A, pred.xy_A, match_radius_A))


def score_image(
    truth: Columns,
    pred: Columns,
    image_size_A: tuple[float, float],
    match_radius_A: float = MATCH_RADIUS_A,
    border_A: float = BORDER_A,
) -> ImageScore:
    """Score one image; `image_size_A` is (width along x, height along y) in Å, origin at 0."""
    return match_image(truth, pred, image_size_A, match_radius_A, border_A).score()


# ---- CSV files: what `hrtemnet score` runs on -----------------------------------------------


def score_csv(
    truth_path: Path,
    pred_path: Path,
    width_A: float | None = None,
    height_A: float | None = None,
    match_radius_A: float = MATCH_RADIUS_A,
    border_A: float = BORDER_A,
) -> ImageScore:
    """Score two column CSVs. The image is `[0, width] x [0, height]` where the size is given;

    along an axis without a size, the bounding box of the true columns stands in for the image
    (of the predictions if there are no true columns), so the border band is measured from the
    outermost true columns: a little more is left out than with the real image size.
    """
    check_score_settings(width_A, height_A, match_radius_A, border_A)
    truth, pred = _read_csv(truth_path), _read_csv(pred_path)
    reference = truth if len(truth) else pred
    origin = np.zeros(2)
    size = np.zeros(2)
    for axis, given in enumerate((width_A, height_A)):
        if given is not None:
            size[axis] = given
        elif len(reference):
            origin[axis] = reference.xy_A[:, axis].min()
            size[axis] = reference.xy_A[:, axis].max() - origin[axis]
    shift = lambda c: Columns(c.xy_A - origin, c.class_index, c.score)  # noqa: E731
    return score_image(shift(truth), shift(pred), (size[0], size[1]), match_radius_A, border_A)


def check_score_settings(width_A: float | None, height_A: float | None, match_radius_A: float,
                         border_A: float) -> None:
    """UserError unless the image size (if given) and match radius are positive and finite, the border >= 0."""
    from hrtemnet.validation import check_number

    check_number(width_A, "--width-A", positive=True)
    check_number(height_A, "--height-A", positive=True)
    check_number(match_radius_A, "--match-radius-A", positive=True)
    check_number(border_A, "--border-A")


def _read_csv(path: Path) -> Columns:
    """`read_columns_csv`, with the file named in every error."""
    try:
        return read_columns_csv(path)
    except UserError as error:
        if str(path) in str(error):
            raise
        raise UserError(f"{path}: {error}") from None


def pair_csv_files(truth_dir: Path, pred_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Same-named `*.csv` in both folders: (name, truth, prediction) pairs and problem messages."""
    truth_files = {p.name: p for p in sorted(truth_dir.glob("*.csv"))}
    pred_files = {p.name: p for p in sorted(pred_dir.glob("*.csv"))}
    pairs = [(name, truth_files[name], pred_files[name]) for name in truth_files if name in pred_files]
    problems = [f"{name}: no prediction in {pred_dir}" for name in truth_files if name not in pred_files]
    problems += [f"{name}: no truth in {truth_dir}" for name in pred_files if name not in truth_files]
    return pairs, problems


def write_scores_csv(path: Path, names: list[str], scores: list[ImageScore]) -> None:
    """Per-image scores as CSV: image plus the fields of `ImageScore.as_row`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"image": name, **score.as_row()} for name, score in zip(names, scores, strict=True)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", *ImageScore().as_row()])
        writer.writeheader()
        writer.writerows(rows)


def check_score_inputs(truth: Path, pred: Path) -> bool:
    """True for two folders, False for two files; UserError for anything else."""
    for path, what in ((truth, "truth"), (pred, "prediction")):
        if not path.exists():
            raise UserError(f"{what} path {path} does not exist")
    if truth.is_dir() != pred.is_dir():
        raise UserError("give two CSV files or two folders of same-named CSV files, not one of each")
    return truth.is_dir()
