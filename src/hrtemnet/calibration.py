"""The pixel size measured from the MoS2 lattice in the series' power spectrum.

Single-layer MoS2 has a = 3.16 Å, so its {100} reflections sit at 1/d₁₀₀ with d₁₀₀ = a √3 / 2 = 2.737 Å,
and the higher orders at √3, 2, √7, 3, ... times that, each family on a hexagon at a fixed orientation
relative to {100} (0° for 1, 2, 3; 30° for √3, √12; ±19.1° for √7). A reflection at f cycles/px is
therefore a pixel size s = f · d₁₀₀ / m for its order m.

`measure_sampling` averages the power spectra of all frames (mean-free, Hann-windowed, zero-padded),
divides it by its ring median (so reflections stand out as ratios, whatever the CTF and noise), takes
the prominent local maxima, and tries every "this peak is order m" hypothesis: the hypothesis whose
lattice explains the most prominence (peaks at an allowed radius ratio and orientation) wins (near-ties:
the coarsest reciprocal lattice, or the one nearest a stated pixel size), and its
pixel size is the weighted mean over the explained peaks (weights m², as the error of a peak's position
is the same for every order). Graphene (a = 2.46 Å, at 1.285 × the {100} radius of MoS2) and amorphous
carbon explain nothing and are ignored. The lattice constant is assumed unstrained: a strained or
different material gives a pixel size off by its strain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.feature import peak_local_max

MOS2_LATTICE_A = 3.16  # the same constant as hrtemnet.structures, which builds the training data
D100_A = MOS2_LATTICE_A * np.sqrt(3) / 2  # 2.737 Å
# |g| / |g100| of the hexagonal reflections and their orientation relative to {100} (degrees, mod 60).
ORDERS = ((1.0, (0.0,)), (np.sqrt(3), (30.0,)), (2.0, (0.0,)), (np.sqrt(7), (19.107, -19.107)),
          (3.0, (0.0,)), (np.sqrt(12), (30.0,)))
RADIUS_TOLERANCE = 0.04  # relative: the CTF envelope pulls a low-order peak by up to ~3 %
ANGLE_TOLERANCE_DEG = 3.0
MIN_PROMINENCE = 15.0  # power over its ring's median for a peak to count
MIN_EXPLAINED_PEAKS = 4  # fewer and no lattice is reported
SUPPORT_FRACTION = 0.9
SAMPLING_RANGE_A = (0.02, 0.8)  # pixel sizes considered without a nominal value, Å/px
LOWEST_FREQUENCY = 0.015  # cycles/px: below, the window's leakage


@dataclass
class LatticeMeasurement:
    sampling_A: float  # measured pixel size, Å/px
    peaks: int  # reflections explained by the lattice
    orientation_deg: float  # of the {100} reflections, mod 60
    orders: tuple[float, ...]  # |g|/|g100| of the explained reflections


def power_spectrum(images: np.ndarray, padding: int | None = None) -> np.ndarray:
    """Mean power spectrum of the frames (mean-free, Hann window, zero-padded), zero frequency centred.

    The default padding makes the grid at least 1024 wide: finer sampling of each reflection of a small
    image for the sub-pixel fit (a 1024² image has sharp reflections and is not padded).
    """
    images = np.asarray(images, dtype=np.float64).reshape(-1, *np.shape(images)[-2:])
    height, width = images.shape[-2:]
    if padding is None:
        padding = max(1, int(np.ceil(1024 / max(height, width))))
    window = np.outer(np.hanning(height), np.hanning(width))
    total = np.zeros((padding * height, padding * width))
    for image in images:
        total += np.abs(np.fft.fft2((image - image.mean()) * window, s=total.shape)) ** 2
    return np.fft.fftshift(total / len(images))


def _ring_normalised(spectrum: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spectrum / its 1-px ring median, radius in cycles/px, angle in degrees) on the centred grid."""
    rows, cols = spectrum.shape
    f_row = (np.arange(rows) - rows // 2)[:, None] / rows
    f_col = (np.arange(cols) - cols // 2)[None, :] / cols
    radius = np.hypot(f_row, f_col)
    angle = np.degrees(np.arctan2(f_row, f_col)) + 0 * f_col
    ring = np.rint(radius * max(rows, cols)).astype(np.int64)
    medians = ring_medians(spectrum, ring)
    return spectrum / np.maximum(medians[ring], 1e-300), radius, angle


def ring_medians(values: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Median of `values` over each label of `ring` (non-negative integers), by one sort (scipy's
    `ndimage.median` takes seconds for the ~1000 rings of a 1024² spectrum)."""
    values, ring = np.ravel(values), np.ravel(ring)
    order = np.lexsort((values, ring))
    counts = np.bincount(ring)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    medians = np.zeros(len(counts))
    present = counts > 0
    medians[present] = values[order][starts[present] + (counts[present] - 1) // 2]
    return medians


def _subpixel_peaks(spectrum: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """(row, col) of each peak refined by a parabola through the log spectrum along each axis (a Gaussian fit)."""
    log = np.log(np.maximum(spectrum, 1e-300))
    refined = peaks.astype(np.float64)
    for axis in range(2):
        step = np.eye(2, dtype=np.int64)[axis]
        lower, upper = peaks - step, peaks + step
        ok = (lower[:, axis] >= 0) & (upper[:, axis] < spectrum.shape[axis])
        left = log[tuple(np.where(ok[:, None], lower, peaks).T)]
        centre = log[tuple(peaks.T)]
        right = log[tuple(np.where(ok[:, None], upper, peaks).T)]
        curvature = left - 2 * centre + right
        offset = np.where(ok & (curvature < 0), 0.5 * (left - right) / np.where(curvature < 0, curvature, -1), 0.0)
        refined[:, axis] += np.clip(offset, -0.5, 0.5)
    return refined


def _angle_difference(a: np.ndarray, b: float) -> np.ndarray:
    """Smallest difference of orientations modulo 60° (a hexagon), degrees."""
    return np.abs((np.asarray(a) - b + 30.0) % 60.0 - 30.0)


def measure_sampling(images: np.ndarray, nominal_sampling_A: float | None = None) -> LatticeMeasurement | None:
    """The pixel size (Å/px) at which the series' strongest hexagonal lattice is MoS2, or None.

    Parameters
    ----------
    images : (n, H, W) or (H, W) frames of one area (a focal series); their spectra are averaged.
    nominal_sampling_A : the stated pixel size, Å/px; only chooses among hypotheses that explain the peaks
        about equally well (readings of one hexagon as different orders differ by 41 % or more).
    """
    images = np.asarray(images, dtype=np.float64)
    spectrum = power_spectrum(images)
    padding = spectrum.shape[-1] // images.shape[-1]
    prominence, radius, angle = _ring_normalised(spectrum)
    band = (radius >= LOWEST_FREQUENCY) & (radius <= 0.5)
    # maxima at least 2 unpadded pixels apart: one per reflection, not one per wiggle of the padded grid
    peaks = peak_local_max(np.where(band, prominence, 0), min_distance=2 * padding, threshold_abs=MIN_PROMINENCE,
                           exclude_border=False)
    if len(peaks) < MIN_EXPLAINED_PEAKS:
        return None
    centroids = _subpixel_peaks(spectrum, peaks)
    rows, cols = spectrum.shape
    f_row = (centroids[:, 0] - rows // 2) / rows
    f_col = (centroids[:, 1] - cols // 2) / cols
    peak_radius = np.hypot(f_row, f_col)
    peak_angle = np.degrees(np.arctan2(f_row, f_col))
    weight = np.log(prominence[tuple(peaks.T)])
    hypotheses = []  # (support, sampling_A, explained, orders, orientation)
    for index in range(len(peaks)):
        for order, orientations in ORDERS[:3]:  # a hypothesis: this peak is order 1, √3 or 2
            f100 = peak_radius[index] / order
            sampling_A = f100 * D100_A
            if not SAMPLING_RANGE_A[0] <= sampling_A <= SAMPLING_RANGE_A[1]:
                continue
            orientation = (peak_angle[index] - orientations[0]) % 60.0
            explained, orders = _explained(peak_radius / f100, peak_angle, orientation)
            # a lattice shows its first families ({100} or {110}): without them it is a finer lattice
            # (half the period, ...) that explains the real reflections as its higher orders
            fundamental = explained & (orders < 2.0)
            if explained.sum() >= MIN_EXPLAINED_PEAKS and fundamental.sum() >= 2:
                hypotheses.append((float(weight[explained].sum()), sampling_A, explained, orders, orientation))
    if not hypotheses:
        return None
    # A lattice with half the period explains every reflection too (as even orders), and stray peaks can
    # tip the balance: among the hypotheses within 10 % of the best support take the coarsest reciprocal
    # lattice (the largest pixel size), or with a stated pixel size the one closest to it.
    top = max(h[0] for h in hypotheses)
    close = [h for h in hypotheses if h[0] >= SUPPORT_FRACTION * top]
    if nominal_sampling_A is None:
        best = max(close, key=lambda h: (h[1], h[0]))
    else:
        best = min(close, key=lambda h: (abs(np.log(h[1] / nominal_sampling_A)), -h[0]))
    _, _, explained, orders, orientation = best
    m = orders[explained]
    f100 = np.sum(m**2 * weight[explained] * peak_radius[explained] / m) / np.sum(m**2 * weight[explained])
    return LatticeMeasurement(float(f100 * D100_A), int(explained.sum()), float(orientation),
                              tuple(float(v) for v in m))


def _explained(ratio: np.ndarray, angle: np.ndarray, orientation: float) -> tuple[np.ndarray, np.ndarray]:
    """Which peaks (radius ratio to {100}, angle) a lattice of that orientation explains, and their orders."""
    explained = np.zeros(len(ratio), dtype=bool)
    orders = np.zeros(len(ratio))
    for order, offsets in ORDERS:
        at_radius = np.abs(ratio / order - 1) <= RADIUS_TOLERANCE
        for offset in offsets:
            match = at_radius & (_angle_difference(angle, orientation + offset) <= ANGLE_TOLERANCE_DEG)
            explained |= match
            orders[match] = order
    return explained, orders


def lattice_constant_from_columns(xy_A: np.ndarray, min_columns: int = 12) -> float | None:
    """The lattice constant (Å, in the units of `xy_A`) of the hexagonal lattice of Mo column positions.

    Nearest-neighbour vectors give two lattice vectors; every column gets integer lattice coordinates
    relative to the first (by rounding) and a least-squares fit `xy = origin + n a1 + m a2` over all of
    them gives `a` to about the position error over the field's extent (0.1 % over 40 Å), far better than
    the power spectrum's peaks of small crystals. None when there are too few columns on one lattice.
    """
    from scipy.spatial import cKDTree

    xy = np.asarray(xy_A, dtype=np.float64).reshape(-1, 2)
    if len(xy) < min_columns:
        return None
    distance, neighbour = cKDTree(xy).query(xy, k=7)
    nearest = np.median(distance[:, 1])
    vectors = (xy[neighbour[:, 1:]] - xy[:, None, :]).reshape(-1, 2)
    lengths = np.hypot(*vectors.T)
    vectors = vectors[np.abs(lengths / nearest - 1) < 0.15]
    if len(vectors) < min_columns:
        return None
    angles = np.arctan2(vectors[:, 1], vectors[:, 0]) % (np.pi / 3)  # one of six directions, mod 60°
    reference = np.angle(np.mean(np.exp(6j * angles))) / 6 % (np.pi / 3)
    rotation = np.array([[np.cos(reference), -np.sin(reference)], [np.sin(reference), np.cos(reference)]])
    a1 = rotation @ np.array([nearest, 0.0])
    a2 = rotation @ np.array([nearest * 0.5, nearest * np.sqrt(3) / 2])
    basis = np.stack([a1, a2], axis=1)
    integer = np.rint(np.linalg.solve(basis, (xy - xy[0]).T).T)
    on_lattice = np.hypot(*(xy - xy[0] - integer @ basis.T).T) < 0.25 * nearest
    if on_lattice.sum() < min_columns:
        return None
    design = np.column_stack([np.ones(on_lattice.sum()), integer[on_lattice]])
    solution, *_ = np.linalg.lstsq(design, xy[on_lattice], rcond=None)  # rows: origin, a1, a2
    return float(0.5 * (np.hypot(*solution[1]) + np.hypot(*solution[2])))
