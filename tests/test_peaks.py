"""Peak extraction (hrtemnet.peaks) on synthetic probability maps."""

from __future__ import annotations

import numpy as np
import pytest

from hrtemnet.columns import NUM_LABELS, Columns
from hrtemnet.evaluation import choose_peak_config
from hrtemnet.metrics import match_columns
from hrtemnet.peaks import PeakConfig, class_shares, extract_columns, sublattice_vote

SAMPLING_A = 0.15
SHAPE = (128, 128)


def synthetic_columns(rng, n=40, spacing_A=2.0):
    """Random sub-pixel columns at least `spacing_A` apart, away from the edges."""
    xy = []
    while len(xy) < n:
        p = rng.uniform(1.0, SHAPE[1] * SAMPLING_A - 1.0, 2)
        if all(np.hypot(*(p - q)) >= spacing_A for q in xy):
            xy.append(p)
    return Columns(np.array(xy), rng.integers(0, 3, n))


def probability_maps(columns, sigma_A=0.35, heights=None, saturate=False):
    """Softmax-like maps: a Gaussian blob per column in its class channel, the rest background."""
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]] * SAMPLING_A
    maps = np.zeros((NUM_LABELS, *SHAPE))
    heights = np.full(len(columns), 0.95) if heights is None else heights
    for (x, y), c, h in zip(columns.xy_A, columns.class_index, heights, strict=True):
        blob = np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma_A**2))
        maps[1 + c] += np.minimum(3 * blob, 1.0) * h if saturate else h * blob
    maps[0] = 1.0 - maps[1:].sum(axis=0)
    return maps


@pytest.mark.parametrize("saturate", [False, True])
def test_recovers_gaussian_columns_to_sub_pixel_precision(saturate):
    rng = np.random.default_rng(1)
    truth = synthetic_columns(rng)
    found = extract_columns(probability_maps(truth, saturate=saturate), SAMPLING_A)
    assert len(found) == len(truth)
    ti, pi, distance = match_columns(truth.xy_A, found.xy_A, 0.5)
    assert len(ti) == len(truth)
    assert distance.max() < 0.05  # Å; pixels are 0.15 Å
    assert np.array_equal(truth.class_index[ti], found.class_index[pi])
    assert np.all((found.score > 0.88) & (found.score < 0.951))  # peak height on the pixel grid


def test_threshold_and_min_distance():
    truth = Columns([[5.0, 5.0], [10.0, 10.0], [10.9, 10.0]], [0, 1, 2])
    maps = probability_maps(truth, sigma_A=0.2, heights=np.array([0.3, 0.9, 0.8]))
    default = extract_columns(maps, SAMPLING_A)
    assert len(default) == 1 and default.class_index[0] == 1  # weak peak below 0.5, close one suppressed
    loose = extract_columns(maps, SAMPLING_A, PeakConfig(threshold=0.2, min_distance_A=0.5))
    assert len(loose) == 3


@pytest.mark.parametrize("angle_deg", [0.0, 30.0, 45.0, 60.0, 135.0])
@pytest.mark.parametrize("distance_A", [1.5, 1.7, 1.83])
def test_min_distance_is_euclidean_in_every_direction(angle_deg, distance_A):
    # Two columns 1.5-1.83 Å apart (projected MoS2: Mo-S2 1.83 Å, less under tilt, strain or pixel rounding), the
    # second a little lower: both are columns whatever the direction between them. A square neighbourhood of
    # half-side min_distance (skimage's default, 1.2 Å) reaches 1.70 Å along the diagonal and dropped the lower one,
    # most often under carbon, where neighbouring heights differ.
    angle = np.radians(angle_deg)
    first = np.array([9.0, 9.0])
    truth = Columns([first, first + distance_A * np.array([np.cos(angle), np.sin(angle)])], [0, 1])
    found = extract_columns(probability_maps(truth, sigma_A=0.3, heights=np.array([0.99, 0.9])), SAMPLING_A)
    assert len(found) == 2
    ti, _, distance = match_columns(truth.xy_A, found.xy_A, 0.5)
    assert len(ti) == 2 and distance.max() < 0.1


def test_no_columns():
    maps = np.zeros((NUM_LABELS, *SHAPE))
    maps[0] = 1.0
    assert len(extract_columns(maps, SAMPLING_A)) == 0
    with pytest.raises(ValueError):
        extract_columns(maps[:3], SAMPLING_A)


def test_choose_peak_config_rejects_weak_false_peaks():
    rng = np.random.default_rng(2)
    validation = []
    for _ in range(2):
        truth = synthetic_columns(rng, n=30, spacing_A=2.5)
        decoys = synthetic_columns(rng, n=10, spacing_A=2.5)
        keep = np.all(np.hypot(*(decoys.xy_A[:, None] - truth.xy_A[None]).transpose(2, 0, 1)) > 2.0, axis=1)
        both = Columns(
            np.vstack([truth.xy_A, decoys.xy_A[keep]]), np.r_[truth.class_index, decoys.class_index[keep]]
        )
        heights = np.r_[np.full(len(truth), 0.9), np.full(keep.sum(), 0.4)]
        validation.append((probability_maps(both, heights=heights), truth, (SHAPE[1] * SAMPLING_A,) * 2))
    base = PeakConfig(threshold=0.5, class_radius_A=0.3)
    chosen = choose_peak_config(validation, SAMPLING_A, base, thresholds=(0.1, 0.2, 0.3, 0.45, 0.6, 0.95))
    assert chosen.threshold == 0.45
    assert chosen.class_radius_A == 0.3  # the rest of the base config is kept


def test_the_class_decision_divides_out_the_loss_class_weights():
    """A weighted loss (S 3x) makes the network say S at p(S) / p(S2) = 3 x the odds; divided out, a column the
    network sees as 45 % S and 40 % S2 (weighted) is S2, one at 80 % S stays S, and Mo/S2 are unaffected."""
    columns = Columns(np.array([[5.0, 5.0], [10.0, 5.0], [15.0, 5.0]]), np.array([1, 2, 0]))
    maps = probability_maps(columns)
    left = np.arange(SHAPE[1]) * SAMPLING_A < 7.5  # the first column's half of the map
    foreground = maps[1:].sum(axis=0)
    for channel, share in zip((1, 2, 3), (0.15, 0.40, 0.45), strict=True):  # Mo, S2, S
        maps[channel] = np.where(left, share * foreground, maps[channel])
    plain = extract_columns(maps, SAMPLING_A, PeakConfig())
    undone = extract_columns(maps, SAMPLING_A, PeakConfig(loss_class_weights=(1.0, 1.0, 3.0)))
    order = np.argsort(plain.xy_A[:, 0])
    assert list(plain.class_index[order]) == [2, 2, 0]  # the ambiguous column comes out S
    assert list(undone.class_index[np.argsort(undone.xy_A[:, 0])]) == [1, 2, 0]
    np.testing.assert_array_equal(plain.xy_A, undone.xy_A)  # positions and scores do not depend on it
    with pytest.raises(ValueError, match="loss_class_weights"):
        PeakConfig(loss_class_weights=(1.0, 0.0, 3.0))


def test_class_shares_with_loss_weights_are_the_reweighted_shares_and_name_the_decided_class():
    rng = np.random.default_rng(3)
    columns = synthetic_columns(rng, n=20)
    maps = probability_maps(columns)
    maps[1:] = maps[1:] * rng.uniform(0.2, 1.0, (3, 1, 1)) + 0.02 * rng.random(maps[1:].shape)
    pixels = np.rint(columns.xy_A[:, ::-1] / SAMPLING_A).astype(int)
    weights = (1.0, 2.0, 3.0)
    plain, undone = class_shares(maps, pixels, 3.0), class_shares(maps, pixels, 3.0, weights)
    expected = plain / weights
    np.testing.assert_allclose(undone, expected / expected.sum(axis=1, keepdims=True))
    found = extract_columns(maps, SAMPLING_A, PeakConfig(loss_class_weights=weights, class_radius_A=0.45))
    matched = match_columns(columns.xy_A, found.xy_A, 0.3)
    assert len(matched[0]) == len(columns)
    np.testing.assert_array_equal(found.class_index[matched[1]], np.argmax(undone[matched[0]], axis=1))


def honeycomb(cells=5, a_A=3.16):
    """(x, y) Å and class (0 Mo, 1 S2) of a projected 2H-MoS2 patch: every Mo's nearest neighbours (1.83 Å) are S2."""
    a1, a2 = np.array([a_A, 0.0]), np.array([a_A / 2, a_A * np.sqrt(3) / 2])
    cells_xy = np.array([i * a1 + j * a2 for i in range(cells) for j in range(cells)]) + 3.0
    xy = np.concatenate([cells_xy, cells_xy + (a1 + a2) / 3])
    return xy, np.repeat([0, 1], len(cells_xy))


def shares_for(classes, confidence=0.8):
    shares = np.full((len(classes), 3), (1 - confidence) / 2)
    shares[np.arange(len(classes)), classes] = confidence
    return shares


def test_sublattice_vote_restores_a_patch_where_the_network_swapped_mo_and_s2():
    xy, truth = honeycomb()
    believed = truth.copy()
    swapped = np.hypot(*(xy - xy.mean(axis=0)).T) < 3.5  # a patch in the middle, Mo and S2 swapped together
    believed[swapped] = 1 - believed[swapped]
    believed[0] = 2  # and one column the network calls S (a vacancy on a Mo site: wrong; Mo is the vote)
    assert 4 <= swapped.sum() < len(xy) / 3
    shares = shares_for(believed, confidence=0.6)
    assert not np.array_equal(np.argmax(shares, axis=1), truth)
    assert np.array_equal(sublattice_vote(xy, shares), truth)


def test_sublattice_vote_keeps_vacancies_and_stays_out_of_patches_that_are_not_one_lattice():
    xy, truth = honeycomb()
    truth[np.flatnonzero(truth == 1)[3]] = 2  # an S vacancy on an S2 site stays S
    shares = shares_for(truth)
    assert np.array_equal(sublattice_vote(xy, shares), truth)
    # a false column at a hexagon centre bonds to three Mo and three S2: no clean 2-colouring, each keeps its own
    centre = xy[truth == 0][6] + 2 * np.array([3.16 / 2, 3.16 * np.sqrt(3) / 6])  # 2/3 of a1 + a2 from a Mo
    with_false = np.vstack([xy, centre])
    assert np.sum(np.abs(np.hypot(*(xy - centre).T) - 1.83) < 0.1) >= 6
    believed = np.append(truth, 1)
    believed[:4] = 1 - believed[:4].clip(max=1)  # four wrong columns that a vote would otherwise fix
    shares = shares_for(believed)
    assert np.array_equal(sublattice_vote(with_false, shares), believed)
    assert np.array_equal(sublattice_vote(xy[:3], shares_for(truth[:3])), truth[:3])  # too few to vote


def test_extract_columns_applies_the_sublattice_vote_when_the_model_asks_for_it():
    xy, truth = honeycomb(cells=4)
    believed = truth.copy()
    believed[:3] = 1 - believed[:3]
    maps = probability_maps(Columns(xy, believed), sigma_A=0.3)
    plain = extract_columns(maps, SAMPLING_A)
    voted = extract_columns(maps, SAMPLING_A, PeakConfig(sublattice_vote=True))
    ti, pi, _ = match_columns(xy, voted.xy_A, 0.3)
    assert len(ti) == len(xy) == len(plain)
    assert np.array_equal(voted.class_index[pi], truth[ti])
    assert not np.array_equal(plain.class_index[match_columns(xy, plain.xy_A, 0.3)[1]], truth)
