"""What the simulator keeps between calls and processes to be fast (issue 14), and that it changes nothing."""

import os
from pathlib import Path

import numpy as np
import pytest

from hrtemnet import simulation


class Exploit:
    """Unpickling this creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """A cache folder of its own and nothing kept in memory: every kernel is loaded or computed afresh."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(simulation, "_FOURIER_ARRAYS", {})
    return tmp_path / "cache" / "hrtemnet"


KERNEL_ARGS = ("Mo", (64, 48), (0.1, 0.125), "lobato")


def computed_kernel() -> np.ndarray:
    """abTEM's kernel computed here, as `_potential_kernel` does without a cache."""
    from abtem.integrals import ScatteringFactorProjectionIntegrals, sinc

    symbol, gpts, sampling, parametrization = KERNEL_ARGS
    factor = ScatteringFactorProjectionIntegrals(parametrization).get_scattering_factor(
        symbol, gpts, sampling, "cpu") / sinc(gpts, sampling, "cpu")
    return (factor[:, : gpts[1] // 2 + 1] / (gpts[0] * gpts[1])).astype(np.complex64)


def test_potential_kernel_is_cached_on_disk_and_the_cached_one_is_the_computed_one(empty_cache, monkeypatch):
    first = simulation._potential_kernel(*KERNEL_ARGS)
    files = list(empty_cache.glob("potential-*.npy"))
    assert len(files) == 1 and first.shape == (64, 25) and first.dtype == np.complex64
    np.testing.assert_array_equal(first, computed_kernel())
    # a fresh process: nothing in memory, the file is read instead of computing
    monkeypatch.setattr(simulation, "_FOURIER_ARRAYS", {})
    import abtem.integrals

    integrals = abtem.integrals.ScatteringFactorProjectionIntegrals
    monkeypatch.setattr(abtem.integrals, "ScatteringFactorProjectionIntegrals", None)  # computing would fail
    np.testing.assert_array_equal(simulation._potential_kernel(*KERNEL_ARGS), first)
    # another element or grid is another file
    monkeypatch.setattr(abtem.integrals, "ScatteringFactorProjectionIntegrals", integrals)
    simulation._potential_kernel("S", *KERNEL_ARGS[1:])
    simulation._potential_kernel("Mo", (64, 64), KERNEL_ARGS[2], "lobato")
    assert len(list(empty_cache.glob("potential-*.npy"))) == 3


@pytest.mark.parametrize("content", ["pickle", "wrong shape", "garbage"])
def test_a_bad_kernel_cache_file_is_computed_again_and_runs_nothing(empty_cache, monkeypatch, tmp_path, content):
    simulation._potential_kernel(*KERNEL_ARGS)
    (path,) = empty_cache.glob("potential-*.npy")
    marker = tmp_path / "PWNED"
    if content == "pickle":
        with open(path, "wb") as file:
            np.save(file, np.array([Exploit(marker)], dtype=object), allow_pickle=True)
    elif content == "wrong shape":
        np.save(path, np.zeros((3, 3), dtype=np.complex64))
    else:
        path.write_bytes(b"not a numpy file")
    monkeypatch.setattr(simulation, "_FOURIER_ARRAYS", {})
    np.testing.assert_array_equal(simulation._potential_kernel(*KERNEL_ARGS), computed_kernel())
    assert not marker.exists(), "the pickle's code ran"
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), computed_kernel())  # written anew


def test_an_unwritable_cache_folder_only_costs_the_computation(tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(simulation, "_FOURIER_ARRAYS", {})
    np.testing.assert_array_equal(simulation._potential_kernel(*KERNEL_ARGS), computed_kernel())


def test_one_worker_simulates_in_this_process_without_a_cluster(tmp_path, monkeypatch):
    """`--workers 1` needs no dask cluster (its start-up and a second import of everything in the worker)."""
    import distributed

    from hrtemnet.dataset import DatasetConfig, open_store, simulate_dataset

    def no_cluster(*args, **kwargs):
        raise AssertionError("a dask cluster was started")

    monkeypatch.setattr(distributed, "LocalCluster", no_cluster)
    config = DatasetConfig()
    config.structure.field_of_view_A = (12.0, 12.0)
    config.simulation.num_phonons = 1
    simulate_dataset(tmp_path / "one.zarr", 2, seed=4, config=config, workers=1, progress=False)
    simulate_dataset(tmp_path / "zero.zarr", 2, seed=4, config=config, workers=0, progress=False)
    one, zero = open_store(tmp_path / "one.zarr"), open_store(tmp_path / "zero.zarr")
    assert one.completed().all()
    for index in range(2):
        np.testing.assert_array_equal(one.read_images(index), zero.read_images(index))
        assert one.read_params(index) == pytest.approx(zero.read_params(index), nan_ok=True)


@pytest.mark.parametrize("phonons", [0, 2])
def test_fast_multislice_equals_abtem_pipeline_when_the_first_slices_are_empty(phonons):
    """Atoms high in the cell: the first slices hold none (the plane wave is propagated before anything transmits
    it), and three elements share the slice with atoms."""
    from ase import Atoms
    from test_speed_equivalence import abtem_pipeline_focal_series

    from hrtemnet.simulation import OpticsParams, SimulationConfig, simulate_focal_series, slice_thicknesses

    atoms = Atoms("MoSC", positions=[(5.0, 6.0, 9.0), (8.0, 3.5, 9.2), (2.0, 9.0, 8.9)], cell=[12.0, 12.6, 12.0],
                  pbc=True)
    assert len(slice_thicknesses(atoms)) == 3
    optics = OpticsParams(defocus_A=(-20.0, 30.0), cs_A=10e4, astigmatism_A=10.0, focal_spread_A=20.0)
    config = SimulationConfig(num_phonons=phonons)
    fast = simulate_focal_series(atoms, optics, config, seed=3)
    reference = abtem_pipeline_focal_series(atoms, optics, config, seed=3)
    assert fast.shape == reference.shape == (2, 84, 80)
    assert fast.std() > 1e-3  # the atoms are seen
    np.testing.assert_allclose(fast, reference, atol=2e-5, rtol=0)


def three_element_atoms():
    """Atoms high in the cell (the first slices hold none) and three elements sharing one slice."""
    from ase import Atoms

    return Atoms("MoSC", positions=[(5.0, 6.0, 9.0), (8.0, 3.5, 9.2), (2.0, 9.0, 8.9)], cell=[12.0, 12.6, 12.0],
                 pbc=True)


@pytest.mark.parametrize("structure", ["three elements", "random"])
def test_configurations_on_threads_give_the_same_images_to_the_bit(structure, monkeypatch):
    """Configurations run on several threads, each on its own buffers; their intensities are added in their order,
    so any thread count gives the images of one thread exactly, already in float64 before interpolation."""
    from hrtemnet.simulation import OpticsParams, SimulationConfig, simulate_focal_series
    from hrtemnet.structures import random_structure

    atoms = three_element_atoms() if structure == "three elements" else random_structure(
        np.random.default_rng(101)).atoms
    optics = OpticsParams(defocus_A=(-20.0, 30.0), cs_A=10e4, astigmatism_A=10.0, focal_spread_A=20.0)
    config = SimulationConfig(num_phonons=7)
    intensities = []
    interpolate = simulation._fourier_interpolate
    monkeypatch.setattr(simulation, "_fourier_interpolate",
                        lambda values, shape: intensities.append(values.copy()) or interpolate(values, shape))
    one = simulate_focal_series(atoms, optics, config, seed=3, threads=1)
    assert one.std() > 1e-3 and intensities[0].dtype == np.float64
    for threads in (2, 3, 8):
        np.testing.assert_array_equal(simulate_focal_series(atoms, optics, config, seed=3, threads=threads), one)
        np.testing.assert_array_equal(intensities[-1], intensities[0])


def test_first_slice_taken_in_fourier_space_keeps_the_band_limit(monkeypatch):
    """The first slice's wave is aperture · FFT(t) · propagator (which holds the aperture again): with a wide
    taper, where aperture² differs from the aperture, still abTEM's pipeline."""
    import abtem
    from test_speed_equivalence import abtem_pipeline_focal_series

    from hrtemnet.simulation import OpticsParams, SimulationConfig, simulate_focal_series
    from hrtemnet.structures import random_structure

    monkeypatch.setattr(simulation, "_FOURIER_ARRAYS", {})  # apertures of the default taper are kept per grid
    atoms = random_structure(np.random.default_rng(102)).atoms
    optics = OpticsParams(defocus_A=(-40.0, 60.0), cs_A=15e4, astigmatism_A=30.0, focal_spread_A=30.0)
    with abtem.config.set({"antialias.taper": 0.5}):
        fast = simulate_focal_series(atoms, optics, SimulationConfig(num_phonons=0), seed=5)
        reference = abtem_pipeline_focal_series(atoms, optics, SimulationConfig(num_phonons=0), seed=5)
    np.testing.assert_allclose(fast, reference, atol=2e-5, rtol=0)


def test_one_worker_uses_every_core_and_writes_what_one_thread_writes(tmp_path, monkeypatch):
    """`--workers 1` is the only job: its samples' configurations go on a thread per core, same store."""
    import gc

    import hrtemnet.dataset as dataset
    from hrtemnet.dataset import DatasetConfig, open_store, simulate_dataset

    config = DatasetConfig()
    config.structure.field_of_view_A = (12.0, 12.0)
    config.simulation.num_phonons = 3
    used, frozen = [], []
    simulate = dataset.simulate_focal_series

    def spy(*args, threads=1, **kwargs):
        used.append(threads)
        frozen.append(gc.get_freeze_count())
        return simulate(*args, threads=threads, **kwargs)

    monkeypatch.setattr(dataset, "simulate_focal_series", spy)
    frozen_before = gc.get_freeze_count()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    simulate_dataset(tmp_path / "three.zarr", 2, seed=4, config=config, workers=1, progress=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    simulate_dataset(tmp_path / "one.zarr", 2, seed=4, config=config, workers=1, progress=False)
    assert used == [3, 3, 1, 1]
    # the heap of the imports is left out of the run's full collections, and given back to them afterwards
    assert min(frozen) > 10_000 and gc.get_freeze_count() == frozen_before
    three, one = open_store(tmp_path / "three.zarr"), open_store(tmp_path / "one.zarr")
    for index in range(2):
        np.testing.assert_array_equal(three.read_images(index), one.read_images(index))


@pytest.mark.parametrize("gpts,extent", [((96, 80), (12.0, 10.0)), ((75, 90), (11.0, 13.5))])
def test_ctf_kernel_is_abtems_wherever_the_aperture_passes_the_wave(gpts, extent):
    """Evaluated on the aperture's bounding box only: abTEM's values inside it, zero where the wave is zero."""
    import abtem

    simulation.configure_abtem()
    sampling = (extent[0] / gpts[0], extent[1] / gpts[1])
    ctf = abtem.CTF(defocus=abtem.distributions.from_values(np.array([-30.0, 40.0])), Cs=12e4, astigmatism=25.0,
                    astigmatism_angle=0.4, focal_spread=30.0, energy=50e3)
    full = np.asarray(ctf._evaluate_kernel(abtem.Waves(np.zeros(gpts, np.complex64), energy=50e3, extent=extent)))
    kernel = simulation._ctf_kernel(ctf, gpts, extent, sampling, 50e3)
    assert kernel.shape == full.shape == (2, *gpts) and kernel.dtype == np.complex64
    passed = simulation._antialias_aperture(gpts, sampling) > 0
    assert 0.2 < passed.mean() < 0.5
    np.testing.assert_allclose(kernel[:, passed], full[:, passed], rtol=2e-5, atol=2e-6)
    assert np.abs(kernel).sum() > 0.9 * np.abs(full[:, passed]).sum()  # not left zero
    kernel_again = simulation._ctf_kernel(ctf, gpts, extent, sampling, 50e3)  # the kept array, written again
    np.testing.assert_array_equal(kernel_again, kernel)


@pytest.mark.parametrize("shape_in,shape_out", [((3, 64, 48), (32, 24)), ((2, 75, 90), (37, 45))])
def test_fourier_interpolation_is_abtems(shape_in, shape_out):
    from abtem.core.fft import fft_interpolate

    simulation.configure_abtem()
    intensities = np.random.default_rng(0).random(shape_in)
    ours = simulation._fourier_interpolate(intensities, shape_out)
    reference = np.real(fft_interpolate(intensities, shape_out))
    assert ours.shape == reference.shape == (shape_in[0], *shape_out)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-6)


def test_intensities_are_added_in_float64_as_numpy_adds_them():
    rng = np.random.default_rng(1)
    wave = (rng.standard_normal((40, 30)) + 1j * rng.standard_normal((40, 30))).astype(np.complex64)
    out = rng.random((40, 30))
    # re² and im² in float32, their sum in float64, then added
    expected = out + ((wave.real * wave.real).astype(np.float64) + (wave.imag * wave.imag).astype(np.float64))
    simulation._add_intensity(wave, out)
    np.testing.assert_array_equal(out, expected)


IMPORT_ABTEM = """
import numba, os, sys
from numba.core import caching
hits = []
load = caching.Cache.load_overload
caching.Cache.load_overload = lambda self, *a: hits.append(load(self, *a)) or hits[-1]
if sys.argv[1] == "unwritable":
    os.access = lambda path, mode: False
vectorize = numba.vectorize
from hrtemnet.simulation import import_abtem
abtem = import_abtem()
import abtem.core.complex
import numpy as np
assert numba.vectorize is vectorize, "numba.vectorize not restored"
np.testing.assert_allclose(abtem.core.complex.complex_exponential(np.float32([0.5])), np.exp(0.5j), rtol=1e-6)
print(sum(hit is not None for hit in hits))
"""


def test_abtems_numba_ufuncs_are_cached_by_numba_next_to_abtem_and_never_in_our_cache(tmp_path):
    """The second fresh process loads both ufuncs compiled; our cache folder (read without running anything) gets
    no numba file (they are pickles); without a writable folder next to abTEM nothing is cached."""
    import subprocess
    import sys

    import abtem.core.complex

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("NUMBA_CACHE_DIR", None)
    runs = [subprocess.run([sys.executable, "-c", IMPORT_ABTEM, mode], env=env, capture_output=True, text=True)
            for mode in ("writable", "writable", "unwritable")]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert int(runs[1].stdout) >= 2 and int(runs[2].stdout) == 0  # loaded compiled; not even looked up
    assert list((Path(abtem.core.complex.__file__).parent / "__pycache__").glob("complex*.nbi"))
    assert not [path for path in tmp_path.rglob("*") if path.suffix in (".nbi", ".nbc")]
