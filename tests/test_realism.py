"""The realism features of the training distribution (docs: training distribution): amorphous carbon,
focal series anywhere in the window, specimen tilt, camera, misregistration and pixel-size jitter."""

import numpy as np
import pytest

from hrtemnet.columns import Columns
from hrtemnet.simulation import CameraConfig, NoiseConfig, OpticsRanges, add_imaging_noise, apply_camera
from hrtemnet.structures import (
    CARBON_ATOMS_PER_A3_PER_G_CM3,
    MOS2_S_S_HEIGHT_A,
    StructureConfig,
    amorphous_carbon_positions,
    random_structure,
)
from hrtemnet.training import AugmentationConfig, draw_training_crop, render_label_map

CARBON_ALWAYS = dict(carbon_probability=1.0, carbon_thickness_A_range=(6.0, 10.0), tilt_rad_range=(0.0, 0.0))


def _mos2_and_carbon(atoms):
    symbols = np.array(atoms.get_chemical_symbols())
    return atoms.positions[symbols != "C"], atoms.positions[symbols == "C"]


@pytest.mark.parametrize("seed", range(6))
def test_carbon_is_never_labelled_and_never_within_the_mos2_planes(seed):
    config = StructureConfig(graphene_probability=0.0, **CARBON_ALWAYS)
    sample = random_structure(np.random.default_rng(seed), config)
    mos2, carbon = _mos2_and_carbon(sample.atoms)
    assert len(carbon) > 0 and sample.params["carbon_top_A"] + sample.params["carbon_bottom_A"] > 0
    z_low, z_high = mos2[:, 2].min(), mos2[:, 2].max()
    assert z_high - z_low == pytest.approx(MOS2_S_S_HEIGHT_A, abs=1e-6)
    gap = np.minimum(np.abs(carbon[:, 2] - z_low), np.abs(carbon[:, 2] - z_high))
    assert np.all((carbon[:, 2] < z_low) | (carbon[:, 2] > z_high))
    assert gap.min() >= config.carbon_gap_A - 1e-9
    # the labels are the MoS2 columns only: as many labels as distinct Mo/S positions in projection
    n_mo = np.sum(np.array(sample.atoms.get_chemical_symbols()) == "Mo")
    assert np.sum(sample.columns.class_index == 0) == n_mo
    assert len(sample.columns) < len(mos2)


def test_carbon_on_both_sides_of_a_graphene_supported_sheet_stays_outside():
    config = StructureConfig(graphene_probability=1.0, sheet_probability=1.0, **CARBON_ALWAYS)
    for seed in range(8):
        sample = random_structure(np.random.default_rng(seed), config)
        symbols = np.array(sample.atoms.get_chemical_symbols())
        s_z = sample.atoms.positions[symbols == "S", 2]
        c_z = sample.atoms.positions[symbols == "C", 2]
        between = (c_z > s_z.min() - 1e-6) & (c_z < s_z.max() + 1e-6)
        assert not np.any(between)


def test_amorphous_carbon_has_the_density_and_hard_core_asked_for():
    extent = np.array([30.0, 30.0])
    positions = amorphous_carbon_positions(extent, (5.0, 15.0), 2.0, 1.3, np.random.default_rng(0))
    expected = 30 * 30 * 10 * 2.0 * CARBON_ATOMS_PER_A3_PER_G_CM3
    assert len(positions) == pytest.approx(expected, abs=1)
    assert np.all((positions[:, 2] >= 5.0) & (positions[:, 2] <= 15.0))
    from scipy.spatial import cKDTree

    tree = cKDTree(positions, boxsize=[30.0, 30.0, 1e9])
    assert len(tree.query_pairs(1.3)) == 0


def test_about_half_the_default_samples_are_contaminated_on_top_below_or_both():
    config = StructureConfig()
    drawn = [random_structure(np.random.default_rng(seed), config).params for seed in range(80)]
    top = np.array([p["carbon_top_A"] for p in drawn])
    bottom = np.array([p["carbon_bottom_A"] for p in drawn])
    contaminated = (top > 0) | (bottom > 0)
    assert 0.3 < contaminated.mean() < 0.7
    assert np.any((top > 0) & (bottom == 0)) and np.any((top == 0) & (bottom > 0)) and np.any((top > 0) & (bottom > 0))
    assert top.max() <= 10.0 and bottom.max() <= 10.0


def test_defocus_draws_lie_in_the_window_and_increase():
    ranges = OpticsRanges()
    rng = np.random.default_rng(0)
    draws = np.array([ranges.draw(rng).defocus_A for _ in range(2000)])
    assert draws.shape[1] == 3
    assert draws[:, 0].min() >= -150 and draws[:, 0].max() <= 100
    assert draws[:, 0].min() < -140 and draws[:, 0].max() > 90  # the whole window is used
    steps = np.diff(draws, axis=1)
    assert steps.min() >= 20 and steps.max() <= 120


def test_tilt_moves_projected_positions_as_geometry_says():
    tilt = np.radians(2.0)
    config = StructureConfig(graphene_probability=0.0, carbon_probability=0.0, sheet_probability=0.0,
                             single_s_vacancy_rate_range=(0, 0), mo_vacancy_rate_range=(0, 0),
                             tilt_rad_range=(tilt, tilt))
    sample = random_structure(np.random.default_rng(3), config)
    assert sample.params["tilt_rad"] == pytest.approx(tilt)
    symbols = np.array(sample.atoms.get_chemical_symbols())
    s_xyz = sample.atoms.positions[symbols == "S"]
    mo_xy = sample.atoms.positions[symbols == "Mo", :2]
    # the two S atoms of a column, 3.17 Å apart in z, are 3.17 sin(2°) = 0.111 Å apart in projection
    from scipy.spatial import cKDTree

    distance, partner = cKDTree(s_xyz[:, :2]).query(s_xyz[:, :2], k=2)
    assert np.allclose(distance[:, 1], MOS2_S_S_HEIGHT_A * np.sin(tilt), atol=2e-3)
    # labels sit at the projected Mo atoms and at the midpoint of the two S atoms
    mo_labels = sample.columns.xy_A[sample.columns.class_index == 0]
    assert np.max(cKDTree(mo_xy).query(mo_labels)[0]) < 1e-6
    s2_labels = sample.columns.xy_A[sample.columns.class_index == 1]
    midpoints = (s_xyz[:, :2] + s_xyz[partner[:, 1], :2]) / 2
    assert np.max(cKDTree(midpoints).query(s2_labels)[0]) < 1e-3


def test_camera_preserves_the_mean_and_adds_read_noise():
    rng = np.random.default_rng(0)
    flat = np.full((3, 128, 128), 0.8, dtype=np.float32)
    camera = CameraConfig(gain_counts_per_e_range=(2.0, 2.0), offset_counts_range=(50, 50),
                          read_noise_e_range=(3.0, 3.0), gain_nonuniformity_range=(0.0, 0.0))
    electrons_per_pixel = 10.0
    recorded = apply_camera(flat, electrons_per_pixel, camera, rng)
    assert recorded.mean() == pytest.approx(0.8, abs=0.005)
    # read noise of 3 e rms on 10 e per pixel: std 0.3 in vacuum units (plus rounding of 0.5 e / sqrt 12)
    assert recorded.std() == pytest.approx(np.hypot(3.0, 0.5 / np.sqrt(12)) / electrons_per_pixel, rel=0.05)


def test_full_noise_model_keeps_the_mean_at_low_dose():
    rng = np.random.default_rng(1)
    flat = np.ones((3, 128, 128), dtype=np.float32)
    noisy, dose = add_imaging_noise(flat, 0.15, rng, NoiseConfig(dose_e_per_A2=1e3))
    assert dose == 1e3
    assert noisy.mean() == pytest.approx(1.0, abs=0.02)
    drawn = [add_imaging_noise(flat[:, :16, :16], 0.15, rng)[1] for _ in range(300)]
    assert 1e3 <= min(drawn) < 2e3 and 5e4 < max(drawn) <= 1e5  # log-uniform over [1e3, 1e5]


def _blob_image(columns: Columns, shape, sampling_A, sigma_A=0.3):
    """A periodic image with a Gaussian at every column (what a perfectly focused column would look like)."""
    height, width = shape
    rows, cols = np.mgrid[0:height, 0:width] * sampling_A
    image = np.zeros(shape)
    for x, y in columns.xy_A:
        dx = (cols - x + width * sampling_A / 2) % (width * sampling_A) - width * sampling_A / 2
        dy = (rows - y + height * sampling_A / 2) % (height * sampling_A) - height * sampling_A / 2
        image += np.exp(-(dx**2 + dy**2) / (2 * sigma_A**2))
    return image


@pytest.mark.parametrize("seed", range(4))
def test_training_crops_keep_labels_on_the_atoms_with_jitter_and_misregistration(seed):
    sampling = 0.15
    sample = random_structure(np.random.default_rng(seed), StructureConfig(sheet_probability=1.0,
                                                                          field_of_view_A=(19.2, 19.2)))
    image = _blob_image(sample.columns, (128, 128), sampling)
    series = np.stack([image] * 3).astype(np.float32)
    augmentation = AugmentationConfig(misregistration_A_max=0.3, sampling_jitter_fraction=0.1)
    rng = np.random.default_rng(seed)
    crop, columns, true_sampling = draw_training_crop(series, sample.columns, sampling, 96, augmentation, rng)
    assert 0.9 * sampling <= true_sampling <= 1.1 * sampling
    labels = render_label_map(columns, (96, 96), sampling, radius_A=0.2)
    inside = labels > 0
    # frame 1 is the labels' frame: bright exactly under every label, dark elsewhere
    assert crop[0][inside].mean() > 0.85
    assert crop[0][~inside].mean() < 0.35
    # frames 2 and 3 are displaced by at most 0.3 Å: still brighter under the labels, but not identical
    for frame in crop[1:]:
        assert frame[inside].mean() > 0.45
    assert not np.allclose(crop[0], crop[1])
