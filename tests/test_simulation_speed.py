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
