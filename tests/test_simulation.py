import numpy as np
import pytest
from ase import Atoms

from hrtemnet.simulation import (
    NoiseConfig,
    OpticsParams,
    SimulationConfig,
    add_imaging_noise,
    simulate_focal_series,
)
from hrtemnet.structures import StructureConfig, random_structure

STATIC = SimulationConfig(num_phonons=0)


def lone_atom(x, y, cell=(38.4, 30.0)):
    return Atoms("Mo", positions=[(x, y, 2.0)], cell=[cell[0], cell[1], 4.0], pbc=True)


@pytest.mark.parametrize("defocus, dark", [(-40.0, False), (60.0, True)])
def test_lone_mo_atom_lights_up_pixel_row_y_col_x_with_abtem_defocus_sign(defocus, dark):
    x, y = 10.2, 25.5  # non-square cell: a transposed image would put the atom elsewhere (or out of range)
    image = simulate_focal_series(lone_atom(x, y), OpticsParams(defocus_A=(defocus,)), STATIC)[0]
    assert image.shape == (200, 256)  # rows = y extent / s, cols = x extent / s
    contrast = image - np.median(image)
    row, col = np.unravel_index(np.argmax(np.abs(contrast)), image.shape)
    assert (row, col) == (round(y / 0.15), round(x / 0.15))
    # abTEM convention: positive defocus is underfocus, where atoms at this Cs look dark
    assert (contrast[row, col] < 0) == dark


def test_one_exit_wave_with_three_ctfs_equals_three_full_simulations():
    import abtem

    # no amorphous carbon: its ~1 Å random slices make the reference (1 Å slices) differ at r ~ 0.998
    sample = random_structure(np.random.default_rng(2), StructureConfig(carbon_probability=0.0))
    optics = OpticsParams(defocus_A=(-30.0, 20.0, 70.0), cs_A=12e4, astigmatism_A=20, astigmatism_angle_rad=0.4,
                          focal_spread_A=25)
    series = simulate_focal_series(sample.atoms, optics, STATIC)
    for index, defocus in enumerate(optics.defocus_A):
        # an independent, plain abTEM run per defocus on the same grid
        potential = abtem.Potential(sample.atoms, gpts=512, slice_thickness=1.0, projection="infinite")
        wave = abtem.PlaneWave(energy=optics.energy_eV).multislice(potential)
        ctf = abtem.CTF(defocus=defocus, Cs=optics.cs_A, astigmatism=optics.astigmatism_A,
                        astigmatism_angle=optics.astigmatism_angle_rad, focal_spread=optics.focal_spread_A,
                        energy=optics.energy_eV)
        image = wave.apply_ctf(ctf).intensity().interpolate(gpts=256).compute().array.T
        r = np.corrcoef(image.ravel(), series[index].ravel())[0, 1]
        assert r > 0.999, (defocus, r)


def test_focal_series_differs_between_defocus_values_and_vacuum_is_one():
    sample = random_structure(np.random.default_rng(4))
    series = simulate_focal_series(sample.atoms, OpticsParams(), STATIC)
    assert series.shape == (3, 256, 256) and series.dtype == np.float32
    assert abs(series.mean() - 1.0) < 0.05
    assert np.corrcoef(series[0].ravel(), series[2].ravel())[0, 1] < 0.9


def test_phonons_blur_columns_and_are_reproducible():
    sample = random_structure(np.random.default_rng(6))
    optics = OpticsParams()
    config = SimulationConfig(num_phonons=3)
    a = simulate_focal_series(sample.atoms, optics, config, seed=1)
    b = simulate_focal_series(sample.atoms, optics, config, seed=1)
    c = simulate_focal_series(sample.atoms, optics, config, seed=2)
    static = simulate_focal_series(sample.atoms, optics, STATIC)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.std() < static.std()  # thermal smearing lowers contrast
    # the average runs over phonon configurations, not over the defocus values: with 3 configurations and 3
    # defocus values both give (3, H, W), but only the right one keeps each image at its own defocus
    correlation = np.corrcoef(a.reshape(3, -1), static.reshape(3, -1))[:3, 3:]
    assert list(correlation.argmax(axis=1)) == [0, 1, 2], correlation
    assert np.all(np.diag(correlation) > 0.9), correlation


def test_dose_noise_is_poisson_with_the_right_mean_and_variance():
    rng = np.random.default_rng(0)
    images = np.ones((3, 128, 128), dtype=np.float32)
    noisy, dose = add_imaging_noise(images, 0.15, rng, NoiseConfig(dose_e_per_A2=1e4, blur_sigma_px_range=(0, 0),
                                                                  camera=None))
    electrons_per_pixel = 1e4 * 0.15**2
    assert dose == 1e4
    assert noisy.mean() == pytest.approx(1.0, abs=0.01)
    assert noisy.var() * electrons_per_pixel == pytest.approx(1.0, rel=0.05)
    _, drawn = add_imaging_noise(images, 0.15, rng)
    low, high = NoiseConfig().dose_e_per_A2_range
    assert low <= drawn <= high


def test_frozen_phonons_displace_each_atom_with_the_sigma_of_its_coordination():
    import abtem

    from hrtemnet.simulation import phonon_sigmas
    from hrtemnet.structures import StructureConfig
    from hrtemnet.vibrations import VibrationTable, coordination_numbers

    # distinct sigmas per (element, coordination), so a mix-up cannot pass
    entries = {("Mo", 6): (0.04, 0.06), ("Mo", 5): (0.08, 0.10), ("Mo", 4): (0.12, 0.14), ("Mo", 3): (0.16, 0.18),
               ("S", 3): (0.05, 0.07), ("S", 2): (0.11, 0.13), ("S", 1): (0.2, 0.22)}
    table = VibrationTable(300.0, "test", entries)
    config = StructureConfig(sheet_probability=0.0, graphene_probability=0.0, carbon_probability=0.0)
    atoms = random_structure(np.random.default_rng(3), config).atoms
    frozen = abtem.FrozenPhonons(atoms, num_configs=300, sigmas=phonon_sigmas(atoms, table), seed=0)
    displacements = np.stack([a.positions - atoms.positions for a in frozen.to_atoms_ensemble().trajectory])
    symbols = np.array(atoms.get_chemical_symbols())
    coordination = coordination_numbers(atoms)
    checked = 0
    for (element, cn), (sigma_xy, sigma_z) in entries.items():
        group = (symbols == element) & (coordination == cn)
        if group.sum() < 3:
            continue
        measured = displacements[:, group]
        assert measured[..., :2].std() == pytest.approx(sigma_xy, rel=0.06), (element, cn)
        assert measured[..., 2].std() == pytest.approx(sigma_z, rel=0.08), (element, cn)
        checked += 1
    assert checked >= 3  # bulk and edge coordinations of a flake


def test_abtem_is_configured_once_per_process():
    import abtem

    from hrtemnet.simulation import configure_abtem

    configure_abtem()
    assert abtem.config.get("dask.lazy") is False and abtem.config.get("fftw.threads") == 1
    with abtem.config.set({"fftw.threads": 3}):  # a user's own setting is not overwritten by later calls
        configure_abtem()
        assert abtem.config.get("fftw.threads") == 3


@pytest.mark.parametrize(
    "fields",
    [
        {"defocus_A": (-10.0, -9.5, 0.0)},  # steps below 1 Å are still increasing
        {"energy_eV": 1e3}, {"energy_eV": 3e6}, {"cs_A": 0.0}, {"cs_A": 1e8},
        {"astigmatism_A": 0.0, "focal_spread_A": 0.0},
    ],
)
def test_optics_accepts_the_ends_of_its_ranges(fields):
    OpticsParams(**fields).validate()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"defocus_A": ()}, "defocus"),
        ({"defocus_A": (0.0, float("nan"))}, "defocus"),
        ({"defocus_A": (0.0, 0.0, 10.0)}, "strictly increasing"),
        ({"defocus_A": (10.0, 0.0)}, "strictly increasing"),
        ({"energy_eV": 999.0}, "energy"),
        ({"energy_eV": 3.1e6}, "energy"),
        ({"cs_A": -1.0}, "cs"),
        ({"cs_A": 1.1e8}, "cs"),
        ({"astigmatism_A": -1.0}, "astigmatism"),
        ({"focal_spread_A": -1.0}, "focal.spread"),
    ],
)
def test_optics_refuses_values_outside_its_ranges(fields, message):
    from hrtemnet.errors import UserError

    with pytest.raises(UserError, match=f"(?i){message}"):  # the message names what is wrong
        OpticsParams(**fields).validate()


def test_simulation_grid_is_the_smallest_fast_fft_size():
    from scipy import fft as sp_fft

    from hrtemnet.simulation import simulation_gpts

    assert simulation_gpts(256, 2) == 512 and simulation_gpts(49, 2) == 98  # 98 = 2 * 7²: fast for complex FFTs
    for n, oversampling in ((100, 2), (257, 2), (193, 3)):
        size = simulation_gpts(n, oversampling)
        assert size >= n * oversampling and size == sp_fft.next_fast_len(n * oversampling, real=False)
