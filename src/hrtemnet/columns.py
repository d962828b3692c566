"""Atomic columns: the currency shared by structures (truth), peaks (predictions), metrics and io.

Conventions (docs/conventions.md): positions in Å, x along image columns, y along image rows,
pixel (row, col) has its centre at (x, y) = (col * s, row * s).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hrtemnet.errors import UserError

CLASS_NAMES: tuple[str, ...] = ("Mo", "S2", "S")
# Label maps use 0 for background and 1 + class_index for the column classes.
BACKGROUND_LABEL = 0
NUM_LABELS = 1 + len(CLASS_NAMES)


@dataclass
class Columns:
    """A set of atomic columns: xy_A (n, 2) in Å, class_index (n,) into CLASS_NAMES, score (n,)."""

    xy_A: np.ndarray
    class_index: np.ndarray
    score: np.ndarray = field(default=None)  # type: ignore[arg-type]  # None: every score 1

    def __post_init__(self):
        self.xy_A = np.asarray(self.xy_A, dtype=np.float64).reshape(-1, 2)
        self.class_index = np.asarray(self.class_index, dtype=np.int64).reshape(-1)
        if self.score is None:
            self.score = np.ones(len(self.class_index))
        self.score = np.asarray(self.score, dtype=np.float64).reshape(-1)
        if not (len(self.xy_A) == len(self.class_index) == len(self.score)):
            raise ValueError("xy_A, class_index and score must have the same length")

    def __len__(self) -> int:
        return len(self.class_index)

    @classmethod
    def empty(cls) -> Columns:
        return cls(np.zeros((0, 2)), np.zeros(0, dtype=np.int64), np.zeros(0))

    def subset(self, mask: np.ndarray) -> Columns:
        return Columns(self.xy_A[mask], self.class_index[mask], self.score[mask])

    @classmethod
    def from_table(cls, table) -> Columns:
        """Columns from a table with `x_A, y_A, class[, score]` columns (`hrtemnet.predict`'s DataFrame)."""
        scores = np.asarray(table["score"], dtype=float) if "score" in table else np.ones(len(table))
        return cls(np.asarray(table[["x_A", "y_A"]], dtype=float),
                   np.array([class_index_of(name) for name in table["class"]], dtype=np.int64), scores)

    def counts(self) -> dict[str, int]:
        return {name: int(np.sum(self.class_index == i)) for i, name in enumerate(CLASS_NAMES)}


def class_index_of(name: str) -> int:
    try:
        return CLASS_NAMES.index(name.strip())
    except ValueError:
        raise UserError(f"unknown column class {name!r}; expected one of {', '.join(CLASS_NAMES)}") from None


def write_columns_csv(path: str | Path, columns: Columns, sampling_A: float | None = None) -> None:
    """Write `x_A,y_A,class,score` (+ `row_px,col_px` when the sampling is known)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        header = ["x_A", "y_A", "class", "score"]
        if sampling_A is not None:
            header += ["row_px", "col_px"]
        writer.writerow(header)
        for (x, y), c, s in zip(columns.xy_A, columns.class_index, columns.score, strict=True):
            row = [f"{x:.4f}", f"{y:.4f}", CLASS_NAMES[c], f"{s:.4f}"]
            if sampling_A is not None:
                row += [f"{y / sampling_A:.3f}", f"{x / sampling_A:.3f}"]
            writer.writerow(row)


def read_columns_csv(path: str | Path) -> Columns:
    """Read a column CSV with at least `x_A,y_A,class` (score optional, defaults to 1).

    Leading `#` comment lines (docs/conventions.md) and a UTF-8 byte-order mark (spreadsheet exports) are allowed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            numbered = [(n, line) for n, line in enumerate(f, start=1) if not line.lstrip().startswith("#")]
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text CSV file") from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror or error})") from None
    if any("\x00" in line for _, line in numbered):
        raise UserError(f"{path}: not a text CSV file")
    reader = csv.DictReader(line for _, line in numbered)
    fields = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = fields
    missing = {"x_A", "y_A", "class"} - set(fields)
    if missing:
        raise UserError(
            f"{path}: missing CSV column(s) {', '.join(sorted(missing))}; "
            "expected a header x_A,y_A,class[,score]"
        )
    xy, cls, score = [], [], []
    for row in reader:
        line_no = numbered[reader.line_num - 1][0] if reader.line_num <= len(numbered) else reader.line_num
        if None in (row["x_A"], row["y_A"], row["class"]):
            raise UserError(f"{path}:{line_no}: the row has fewer fields than the header (x_A,y_A,class)")
        try:
            x, y = float(row["x_A"]), float(row["y_A"])
            s = float(row["score"]) if row.get("score") not in (None, "") else 1.0
        except (TypeError, ValueError):
            raise UserError(f"{path}:{line_no}: x_A, y_A and score must be numbers") from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise UserError(f"{path}:{line_no}: position is not finite")
        try:
            cls.append(class_index_of(row["class"]))
        except UserError as error:
            raise UserError(f"{path}:{line_no}: {error}") from None
        xy.append((x, y))
        score.append(s)
    if not xy:
        return Columns.empty()
    return Columns(np.array(xy), np.array(cls), np.array(score))
