"""Scoring: our one-to-one Hungarian matching (`hrtemnet.metrics.score_image`) against the plain way many
scripts score column finders (greedy: each prediction takes its nearest free true column within 0.5 Å,
predictions in score order), measured in the same run on the same perturbed column sets.

    python benchmarks/metrics.py [--images 200]

Reported: seconds per image and how far the greedy F1 is from the optimal one-to-one F1.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.spatial import cKDTree

from hrtemnet.columns import Columns
from hrtemnet.metrics import BORDER_A, MATCH_RADIUS_A, inside_border, score_image
from hrtemnet.structures import random_structure

SIZE_A = (38.4, 38.4)


def perturbed_prediction(truth: Columns, rng: np.random.Generator) -> Columns:
    """Jitter of 0.2 Å, 3 % missed, 3 % false columns near true ones, 2 % class swaps."""
    keep = rng.random(len(truth)) > 0.03
    xy = truth.xy_A[keep] + rng.normal(0, 0.2, (keep.sum(), 2))
    classes = truth.class_index[keep].copy()
    swap = rng.random(len(classes)) < 0.02
    classes[swap] = (classes[swap] + 1) % 3
    extra = rng.random(len(truth)) < 0.03
    xy = np.concatenate([xy, truth.xy_A[extra] + rng.normal(0, 0.35, (extra.sum(), 2))])
    classes = np.concatenate([classes, rng.integers(0, 3, extra.sum())])
    return Columns(xy, classes, rng.random(len(classes)))


def greedy_f1(truth: Columns, pred: Columns) -> float:
    truth = truth.subset(inside_border(truth.xy_A, SIZE_A, BORDER_A))
    pred = pred.subset(inside_border(pred.xy_A, SIZE_A, BORDER_A))
    tree = cKDTree(truth.xy_A)
    taken = np.zeros(len(truth), dtype=bool)
    tp = 0
    for i in np.argsort(-pred.score):
        distances, indices = tree.query(pred.xy_A[i], k=4, distance_upper_bound=MATCH_RADIUS_A)
        for distance, j in zip(np.atleast_1d(distances), np.atleast_1d(indices), strict=True):
            if np.isfinite(distance) and not taken[j]:
                taken[j] = True
                tp += int(truth.class_index[j] == pred.class_index[i])
                break
    fp, fn = len(pred) - tp, len(truth) - tp
    return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = []
    for index in range(args.images):
        truth = random_structure(np.random.default_rng(index)).columns
        cases.append((truth, perturbed_prediction(truth, rng)))
    start = time.perf_counter()
    ours = [score_image(t, p, SIZE_A).f1 for t, p in cases]
    ours_s = (time.perf_counter() - start) / len(cases)
    start = time.perf_counter()
    greedy = [greedy_f1(t, p) for t, p in cases]
    greedy_s = (time.perf_counter() - start) / len(cases)
    difference = np.array(ours) - np.array(greedy)
    print(f"{len(cases)} images, {np.mean([len(t) for t, _ in cases]):.0f} true columns each on average")
    print(f"{'':28} {'ms/image':>9} {'mean F1':>8}")
    print(f"{'Hungarian (hrtemnet score)':28} {ours_s * 1e3:9.2f} {np.mean(ours):8.4f}")
    print(f"{'greedy nearest neighbour':28} {greedy_s * 1e3:9.2f} {np.mean(greedy):8.4f}")
    print(f"optimal minus greedy F1: mean {difference.mean():+.4f}, max {difference.max():+.4f}, "
          f"images where greedy is lower: {np.sum(difference > 1e-12)} / {len(cases)}")


if __name__ == "__main__":
    main()
