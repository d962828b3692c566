"""Edges of the peak-reading contract (hrtemnet.peaks) that mutation testing found unguarded.

Each test names the mistake it catches; docs/testing.md lists the mutants.
"""

from __future__ import annotations

import numpy as np
import pytest

from hrtemnet.columns import NUM_LABELS
from hrtemnet.peaks import PeakConfig, extract_columns

SAMPLING_A = 0.15
SHAPE = (96, 96)
MO, S2 = 0, 1


def maps_with_blobs(blobs, sigma_px=2.3):
    """Probability maps with a Gaussian blob of foreground `height` per (row, col, class, height), centred on
    the pixel, so the peak pixel holds exactly `height`."""
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    maps = np.zeros((NUM_LABELS, *SHAPE))
    for row, col, class_index, height in blobs:
        maps[1 + class_index] += height * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * sigma_px**2))
    maps[0] = 1.0 - maps[1:].sum(axis=0)
    return maps


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": -0.01}, "threshold"),
        ({"min_distance_A": 0.0}, "min_distance_A and class_radius_A must be positive"),
        ({"class_radius_A": 0.0}, "min_distance_A and class_radius_A must be positive"),
        ({"refine_fraction": 0.0}, r"refine_fraction must be in \(0, 1\)"),
        ({"refine_fraction": 1.0}, r"refine_fraction must be in \(0, 1\)"),
        ({"smoothing_A": -0.01}, "smoothing_A must be >= 0"),
    ],
)
def test_peak_config_refuses_values_outside_its_ranges(fields, message):
    with pytest.raises(ValueError, match=message):
        PeakConfig(**fields)


def test_peak_config_accepts_the_ends_of_its_ranges():
    PeakConfig(threshold=0.0, smoothing_A=0.0, refine_fraction=0.999, min_distance_A=0.01, class_radius_A=0.01)
    PeakConfig(threshold=0.999, refine_fraction=0.001)


def test_bad_probability_shape_says_what_shape_is_needed():
    with pytest.raises(ValueError, match=rf"shape \({NUM_LABELS}, H, W\)"):
        extract_columns(np.zeros((3, 10, 10)), SAMPLING_A)


def test_a_peak_exactly_at_the_threshold_is_dropped_and_the_score_is_the_unsmoothed_height():
    """Columns need a score *above* the threshold (peaks docstring): raising the threshold to a score drops it."""
    maps = maps_with_blobs([(30, 30, MO, 0.5), (60, 60, S2, 0.75)])
    kept = extract_columns(maps, SAMPLING_A, PeakConfig(threshold=0.5))
    assert len(kept) == 1 and kept.score[0] == 0.75
    both = extract_columns(maps, SAMPLING_A, PeakConfig(threshold=0.4999))
    assert sorted(both.score.tolist()) == [0.5, 0.75]


def test_weak_background_bumps_never_become_columns_even_at_threshold_zero():
    """DETECTION_FLOOR (0.05) keeps faint maxima out, whatever the threshold."""
    maps = maps_with_blobs([(30, 30, MO, 0.9), (70, 20, MO, 0.03), (20, 70, S2, 0.04)])
    columns = extract_columns(maps, SAMPLING_A, PeakConfig(threshold=0.0))
    assert len(columns) == 1 and columns.score[0] == pytest.approx(0.9)


def test_minimum_distance_between_equal_maxima_is_euclidean():
    """Two equal columns 6 px down and 6 px across (8.5 px = 1.27 Å apart) are both kept at min_distance 1.2 Å
    (8 px); a Chebyshev (or p=3) distance would call them 6 (7.6) px apart and drop one.

    Only equal maxima reach that Euclidean spacing step: skimage's `peak_local_max` first keeps the maxima of a
    *square* (2 d + 1)² window, so a lower maximum within 8 px along both axes of a higher one (up to 1.7 Å
    diagonally) is always dropped. Harmless for MoS2 at 0.15 Å/px (nearest columns 1.83 Å = 12 px apart)."""
    maps = maps_with_blobs([(40, 40, MO, 0.9), (46, 46, S2, 0.9)], sigma_px=1.5)
    columns = extract_columns(maps, SAMPLING_A, PeakConfig(min_distance_A=1.2, smoothing_A=0.0))
    assert len(columns) == 2


@pytest.mark.parametrize("heights", [(0.95, 0.3), (0.3, 0.95)])
def test_low_and_high_columns_side_by_side_are_both_located(heights):
    """Sub-pixel refinement cuts each peak at a fraction of its *own* height: a weak column next to a strong one
    (or alone at 0.3) keeps a finite centre within 0.05 px of the truth."""
    truth = np.array([(30.0, 30.0), (30.0, 50.0)])
    maps = maps_with_blobs([(r, c, MO, h) for (r, c), h in zip(truth, heights, strict=True)])
    columns = extract_columns(maps, SAMPLING_A, PeakConfig(threshold=0.2))
    assert len(columns) == 2
    found = columns.xy_A[np.argsort(columns.xy_A[:, 0])][:, ::-1] / SAMPLING_A  # (row, col) in px
    np.testing.assert_allclose(found, truth, atol=0.05)


@pytest.mark.parametrize("class_radius_A, expected", [(0.45, MO), (0.05, S2)])
def test_class_is_summed_over_a_disk_of_class_radius(class_radius_A, expected):
    """The peak pixel says S2, the ring 1-3 px around it says Mo. A 0.45 Å (3 px) disk sums to Mo; a 0.05 Å
    radius (0 px) reads the peak pixel alone, S2 (a radius in px taken as Å * s, or a disk never smaller than
    1 px, would get these wrong)."""
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    distance = np.hypot(rows - 40, cols - 40)
    maps = np.zeros((NUM_LABELS, *SHAPE))
    maps[1 + S2][distance == 0] = 0.9
    maps[1 + MO][(distance >= 1) & (distance <= 3)] = 0.4
    maps[0] = 1.0 - maps[1:].sum(axis=0)
    columns = extract_columns(maps, SAMPLING_A, PeakConfig(class_radius_A=class_radius_A, smoothing_A=0.0))
    assert len(columns) == 1 and columns.class_index[0] == expected


def test_class_shares_are_disk_sums_over_the_image_normalised_per_column():
    """`class_shares` (the p_Mo, p_S2, p_S of `hrtemnet predict`) against a direct sum over the disk, for
    columns in the middle, on an edge and in a corner: pixels outside the image count as zero (not mirrored),
    and each column's shares add up to 1 even where little class probability is left."""
    from hrtemnet.peaks import class_shares

    rng = np.random.default_rng(5)
    probabilities = rng.random((NUM_LABELS, 20, 24)) * 0.02  # small: every disk sum is below 1
    peaks = np.array([(10, 12), (0, 7), (19, 23), (0, 0), (5, 23)])
    radius_px = 2.4  # rounds to a disk of radius 2
    shares = class_shares(probabilities, peaks, radius_px)
    expected = np.zeros((len(peaks), NUM_LABELS - 1))
    for k, (row, col) in enumerate(peaks):
        for dr in range(-2, 3):
            for dc in range(-2, 3):
                r, c = row + dr, col + dc
                if dr * dr + dc * dc <= 4 and 0 <= r < 20 and 0 <= c < 24:
                    expected[k] += probabilities[1:, r, c]
    assert expected.sum(axis=1).max() < 1
    np.testing.assert_allclose(shares, expected / expected.sum(axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=1e-12)
