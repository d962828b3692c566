"""Reading columns off the network output: our `hrtemnet.peaks.extract_columns` (local maxima over a disk of
`min_distance_A`) against the plain call many scripts make, `skimage.feature.peak_local_max(min_distance=d)`,
whose neighbourhood is a square of side 2 d + 1, measured in the same run on the same probability maps.

The maps are the columns of our random MoS2 sheets (`structures.random_structure`: 2H, Mo-S2 columns 1.83 Å apart,
random rotation, vacancies) at 0.15 Å/px, one Gaussian blob per column with a height drawn from [0.6, 1.0]
(columns under amorphous carbon differ in height like this; on clean series they are all near 1). Reported: the
fraction of true columns found within 0.5 Å, false columns, and seconds per map (ours includes the sub-pixel
refinement and the class decision, the plain call only finds maxima).

    python benchmarks/peaks.py [--sizes 256 1024] [--maps 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from skimage.feature import peak_local_max

from hrtemnet.columns import NUM_LABELS
from hrtemnet.metrics import match_columns
from hrtemnet.peaks import DETECTION_FLOOR, PeakConfig, extract_columns, foreground_probability
from hrtemnet.structures import StructureConfig, random_structure

SAMPLING_A = 0.15


def lattice_columns(size_px: int, rng: np.random.Generator) -> np.ndarray:
    """(x, y) Å of the columns of one of our random MoS2 sheets (`structures.random_structure`) filling the field,
    1 Å from its edges."""
    extent = size_px * SAMPLING_A
    config = StructureConfig(field_of_view_A=(extent, extent), sheet_probability=1.0, graphene_probability=0.0,
                             carbon_probability=0.0, tilt_rad_range=(0.0, 0.0))
    xy = random_structure(rng, config).columns.xy_A
    return xy[np.all((xy > 1.0) & (xy < extent - 1.0), axis=1)]


def probability_maps(xy_A: np.ndarray, size_px: int, rng: np.random.Generator, sigma_A: float = 0.3) -> np.ndarray:
    """Softmax-like maps: one Gaussian blob of random height per column (all in the Mo channel)."""
    maps = np.zeros((NUM_LABELS, size_px, size_px))
    radius = int(np.ceil(4 * sigma_A / SAMPLING_A))
    for (x, y), height in zip(xy_A / SAMPLING_A, rng.uniform(0.6, 1.0, len(xy_A)), strict=True):
        r0, c0 = max(int(y) - radius, 0), max(int(x) - radius, 0)
        rows, cols = np.mgrid[r0:min(int(y) + radius + 1, size_px), c0:min(int(x) + radius + 1, size_px)]
        blob = height * np.exp(-((cols - x) ** 2 + (rows - y) ** 2) * SAMPLING_A**2 / (2 * sigma_A**2))
        maps[1, rows, cols] = np.maximum(maps[1, rows, cols], blob)
    maps[0] = 1.0 - maps[1]
    return maps


def square_neighbourhood(maps: np.ndarray, config: PeakConfig) -> np.ndarray:
    """(x, y) Å of the maxima the plain call finds: skimage's default square, the same threshold."""
    foreground = foreground_probability(maps)
    peaks = peak_local_max(foreground, min_distance=round(config.min_distance_A / SAMPLING_A),
                           threshold_abs=max(config.threshold, DETECTION_FLOOR), exclude_border=False)
    return peaks[:, ::-1] * SAMPLING_A


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--maps", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    config = PeakConfig()
    print("| map | method | columns found | false columns | s per map |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        results: dict[str, list[tuple[float, int, float]]] = {"ours (disk)": [], "peak_local_max (square)": []}
        for _ in range(args.maps):
            truth = lattice_columns(size, rng)
            maps = probability_maps(truth, size, rng)
            for name, find in (("ours (disk)", lambda m: extract_columns(m, SAMPLING_A, config).xy_A),
                               ("peak_local_max (square)", lambda m: square_neighbourhood(m, config))):
                start = time.perf_counter()
                found = find(maps)
                seconds = time.perf_counter() - start
                matched, _, _ = match_columns(truth, found, 0.5)
                results[name].append((len(matched) / len(truth), len(found) - len(matched), seconds))
        for name, rows in results.items():
            recall, false, seconds = (np.mean([r[k] for r in rows]) for k in range(3))
            print(f"| {size}² ({args.maps} maps) | {name} | {100 * recall:.1f} % | {false:.1f} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
