"""Atomic columns from the network output: peaks of the column probability, refined and classified.

The network gives per-pixel probabilities `(NUM_LABELS, H, W)`: channel 0 background, 1 + i for
class `CLASS_NAMES[i]`. Columns are local maxima of the foreground probability `1 - p(background)`,
located on a lightly smoothed copy, at least `min_distance_A` from a higher maximum. A column's
score is the (unsmoothed) foreground probability at its maximum, and columns with a score not above
`threshold` are dropped, so raising the threshold equals dropping low-score columns
(`evaluation.choose_peak_config` relies on this). The position is refined to sub-pixel precision by the centre
of mass of the peak above half its height (weights fall to zero at the edge of that region, so
pixelisation biases it very little); the class is the one with the largest class probability
summed over a disk of `class_radius_A`, after dividing out the weights the training loss gave the classes
(`loss_class_weights`, when the model records them).

Why divide: a network trained with class-weighted cross-entropy outputs p(c) proportional to w_c times the
posterior, so with S (vacancy) weighted 3x it calls a column S whenever it is 1/4 sure. Where columns are
ambiguous (amorphous carbon on the specimen) that invents vacancies; divided out, the decision is the most
probable class again (docs/realism.md: the S-vacancy fraction under carbon).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree
from skimage.feature import peak_local_max
from skimage.morphology import disk
from skimage.segmentation import watershed

from hrtemnet.columns import BACKGROUND_LABEL, NUM_LABELS, Columns

# Raised whenever `extract_columns` changes which columns it finds: scores cached by `hrtemnet evaluate --condition`
# are keyed by it, so a rerun after such a change rescores instead of reusing stale results.
# 2: local maxima over a disk of min_distance_A, not a square.
PEAK_EXTRACTION_VERSION = 2

# Smoothed maxima below this are never columns; keeps background noise out of the refinement.
DETECTION_FLOOR = 0.05


@dataclass
class PeakConfig:
    """How columns are read off the probability maps. Stored with each model (`peak_params`)."""

    threshold: float = 0.5  # minimum peak height of 1 - p(background)
    # Below the shortest column distance in projected MoS2 (Mo-S2, 1.83 Å), above label blob size.
    min_distance_A: float = 1.2
    class_radius_A: float = 0.45  # disk over which class probabilities are summed
    refine_fraction: float = 0.5  # sub-pixel refinement uses the peak above this fraction of its height
    # Maxima are located on the foreground smoothed by this Gaussian σ: a saturated (flat-topped) or
    # noisy column then has one maximum near its middle, not many at random, even at its rim.
    smoothing_A: float = 0.15
    # The training loss's weights of the column classes (Mo, S2, S), divided out of the class decision (module
    # doc). None: plain argmax (model files written before models recorded them).
    loss_class_weights: tuple[float, ...] | None = None
    # Decide Mo against S2/S per connected patch of the 2H lattice rather than per column (`sublattice_vote`):
    # for single-phase 2H samples only (grain and twin boundaries, other phases break its assumption).
    sublattice_vote: bool = False

    def __post_init__(self):
        if self.loss_class_weights is not None:
            self.loss_class_weights = tuple(float(w) for w in self.loss_class_weights)
            if len(self.loss_class_weights) != NUM_LABELS - 1 or not all(w > 0 for w in self.loss_class_weights):
                raise ValueError(f"loss_class_weights must be {NUM_LABELS - 1} positive numbers (Mo, S2, S), "
                                 f"got {self.loss_class_weights}")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")
        if self.min_distance_A <= 0 or self.class_radius_A <= 0:
            raise ValueError("min_distance_A and class_radius_A must be positive")
        if not 0.0 < self.refine_fraction < 1.0:
            raise ValueError(f"refine_fraction must be in (0, 1), got {self.refine_fraction}")
        if self.smoothing_A < 0:
            raise ValueError(f"smoothing_A must be >= 0, got {self.smoothing_A}")


def foreground_probability(probabilities: np.ndarray) -> np.ndarray:
    """`1 - p(background)`: the probability that a pixel belongs to any column."""
    return 1.0 - probabilities[BACKGROUND_LABEL]


def extract_columns(
    probabilities: np.ndarray, sampling_A: float, config: PeakConfig | None = None
) -> Columns:
    """Columns (positions in Å, class, score = peak height) from softmax probabilities `(4, H, W)`."""
    config = config or PeakConfig()
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 3 or probabilities.shape[0] != NUM_LABELS:
        raise ValueError(f"probabilities must have shape ({NUM_LABELS}, H, W), got {probabilities.shape}")
    foreground = foreground_probability(probabilities)
    smoothed = ndimage.gaussian_filter(foreground, config.smoothing_A / sampling_A, mode="nearest")
    min_distance_px = max(1, round(config.min_distance_A / sampling_A))
    peaks = peak_local_max(
        smoothed,
        min_distance=min_distance_px,
        # A disk, not skimage's default square: the square's corners reach 1.41 x min_distance, so a column whose
        # neighbour 1.83 Å away lies near the diagonal was suppressed whenever the neighbour was a little higher.
        footprint=disk(min_distance_px).astype(bool),
        threshold_abs=DETECTION_FLOOR,  # the threshold applies to the unsmoothed height below
        exclude_border=False,  # border columns are the metric's business, not the detector's
        p_norm=2,  # Euclidean distance, as the minimum distance is physical
    )
    heights = foreground[tuple(peaks.T)]
    peaks, heights = peaks[heights > config.threshold], heights[heights > config.threshold]
    if len(peaks) == 0:
        return Columns.empty()
    rows_cols = _refine_peaks(foreground, peaks, config.refine_fraction)
    shares = class_shares(probabilities, peaks, config.class_radius_A / sampling_A, config.loss_class_weights)
    xy_A = rows_cols[:, ::-1] * sampling_A
    class_index = sublattice_vote(xy_A, shares) if config.sublattice_vote else np.argmax(shares, axis=1)
    return Columns(xy_A, class_index, heights)


# Bonds of the projected 2H lattice: Mo-S2 columns are 1.83 Å apart (a / sqrt 3); the band allows for tilt, strain
# and position errors while staying clear of the next distance, a = 3.16 Å.
SUBLATTICE_BOND_A = (1.5, 2.2)
# A patch with more bonds joining columns of the same sublattice than this fraction is not one clean 2H lattice
# (false columns at hexagon centres, a boundary): its columns keep their own decision.
SUBLATTICE_MAX_CONFLICTS = 0.02
SUBLATTICE_MIN_COLUMNS = 6


def sublattice_vote(xy_A: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Class index (Mo, S2, S) per column, with Mo against S2/S decided per patch of the lattice.

    In projected 2H-MoS2 every nearest neighbour of a Mo column (1.83 Å) is an S2 or S column and vice versa, so
    the columns joined by such bonds split into two sublattices. Under amorphous carbon the network loses the
    sublattice in patches (Mo and S2 swapped together); the columns around them still know it. So: 2-colour each
    connected patch along its bonds, and give Mo to the colour whose columns' class shares favour it in total
    (sum of log p(Mo) on one colour and log p(S2 or S) on the other, against the swap); an S-type column stays
    S2 or S by its own shares. Patches under `SUBLATTICE_MIN_COLUMNS` columns or with more than
    `SUBLATTICE_MAX_CONFLICTS` of their bonds inside one colour keep each column's own decision.
    """
    xy_A = np.asarray(xy_A, dtype=np.float64).reshape(-1, 2)
    shares = np.asarray(shares, dtype=np.float64).reshape(len(xy_A), NUM_LABELS - 1)
    decided = np.argmax(shares, axis=1)
    if len(xy_A) < SUBLATTICE_MIN_COLUMNS:
        return decided
    pairs = cKDTree(xy_A).query_pairs(SUBLATTICE_BOND_A[1], output_type="ndarray")
    lengths = np.linalg.norm(xy_A[pairs[:, 0]] - xy_A[pairs[:, 1]], axis=1)
    pairs = pairs[lengths >= SUBLATTICE_BOND_A[0]]
    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(xy_A),) * 2)
    num_patches, patch = csgraph.connected_components(graph, directed=False)
    colour = np.zeros(len(xy_A), dtype=np.int64)
    for start in np.unique(patch, return_index=True)[1]:
        order, predecessors = csgraph.breadth_first_order(graph, start, directed=False)
        for node in order[1:]:  # breadth-first order: every predecessor is coloured before its successors
            colour[node] = 1 - colour[predecessors[node]]
    conflicts = np.bincount(patch[pairs[:, 0]], weights=colour[pairs[:, 0]] == colour[pairs[:, 1]],
                            minlength=num_patches)
    bonds = np.bincount(patch[pairs[:, 0]], minlength=num_patches)
    voting = (np.bincount(patch, minlength=num_patches) >= SUBLATTICE_MIN_COLUMNS) & \
        (conflicts <= SUBLATTICE_MAX_CONFLICTS * bonds)
    log_mo = np.log(np.maximum(shares[:, 0], 1e-12))
    log_s_type = np.log(np.maximum(shares[:, 1] + shares[:, 2], 1e-12))
    # each patch's log-likelihood of "colour 0 is Mo" and of "colour 1 is Mo"
    if_mo_is_0 = np.bincount(patch, weights=np.where(colour == 0, log_mo, log_s_type), minlength=num_patches)
    if_mo_is_1 = np.bincount(patch, weights=np.where(colour == 1, log_mo, log_s_type), minlength=num_patches)
    mo_colour = np.where(if_mo_is_0 >= if_mo_is_1, 0, 1)
    voted = np.where(colour == mo_colour[patch], 0, np.where(shares[:, 1] >= shares[:, 2], 1, 2))
    return np.where(voting[patch], voted, decided)


def _refine_peaks(foreground: np.ndarray, peaks: np.ndarray, refine_fraction: float) -> np.ndarray:
    """Sub-pixel (row, col) of each peak: centre of mass of `foreground - fraction * height`.

    Only the connected part above that level that contains the peak and lies in the peak's
    watershed basin counts, so neighbouring columns and suppressed side maxima do not pull on it.
    """
    labels = np.arange(1, len(peaks) + 1)
    markers = np.zeros(foreground.shape, dtype=np.int64)
    markers[tuple(peaks.T)] = labels
    basins = watershed(-foreground, markers)
    weights = foreground - refine_fraction * foreground[tuple(peaks.T)][basins - 1]
    components, _ = ndimage.label(weights > 0)
    own_component = components == components[tuple(peaks.T)][basins - 1]
    weights = np.where(own_component, weights, 0.0)
    return np.array(ndimage.center_of_mass(weights, basins, labels)).reshape(-1, 2)


def class_shares(probabilities: np.ndarray, peaks: np.ndarray, radius_px: float,
                 loss_class_weights: tuple[float, ...] | None = None) -> np.ndarray:
    """`(n, n_classes)`: each class's share of the class probability summed over a disk around each peak,
    each divided by its training loss weight if given (module doc).

    `peaks` are integer (row, col) pixels; rows sum to 1 (the classes compete, background is left out).
    """
    peaks = np.asarray(peaks, dtype=np.int64).reshape(-1, 2)
    footprint = disk(max(0, round(radius_px))).astype(np.float64)
    summed = np.stack(
        [ndimage.correlate(channel, footprint, mode="constant") for channel in probabilities[1:]]
    )[:, peaks[:, 0], peaks[:, 1]].T
    if loss_class_weights is not None:
        summed = summed / np.asarray(loss_class_weights, dtype=np.float64)
    return summed / np.maximum(summed.sum(axis=1, keepdims=True), 1e-300)
