import json

import numpy as np
import pytest

from hrtemnet.dataset import (
    DatasetConfig,
    _simulate_and_write,
    create_store,
    load_config,
    missing_indices,
    open_group,
    open_store,
    simulate_dataset,
)
from hrtemnet.errors import UserError


def small_config(num_phonons=0):
    config = DatasetConfig()
    config.structure.field_of_view_A = (19.2, 19.2)  # 128 px: keeps the tests fast
    config.simulation.num_phonons = num_phonons
    return config


def assert_same_store(a, b):
    """Labels and parameters identical; images to float32 rounding (FFTW_MEASURE may pick another plan per process)."""
    a, b = open_store(a), open_store(b)
    assert len(a) == len(b)
    for i in range(len(a)):
        np.testing.assert_allclose(a.read_images(i), b.read_images(i), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(a.read_columns(i).xy_A, b.read_columns(i).xy_A)
        assert a.read_params(i) == pytest.approx(b.read_params(i), nan_ok=True)


def test_store_reads_by_index_with_labels_and_parameters(tmp_path):
    config = small_config()
    simulate_dataset(tmp_path / "d.zarr", 2, seed=1, config=config, workers=0, progress=False)
    store = open_store(tmp_path / "d.zarr")
    assert len(store) == 2 and store.sampling_A == 0.15 and store.image_shape == (128, 128)
    assert store.completed().all()
    images, columns, params = store.read_images(1), store.read_columns(1), store.read_params(1)
    assert images.shape == (3, 128, 128)
    assert len(columns) == params["num_columns"] > 0
    assert params["defocus_0_A"] < params["defocus_1_A"] < params["defocus_2_A"]
    assert DatasetConfig.from_dict(store.config).to_dict() == config.to_dict()


def test_same_seed_same_data_whatever_the_worker_count(tmp_path):
    config = small_config()
    simulate_dataset(tmp_path / "serial.zarr", 3, seed=7, config=config, workers=0, progress=False)
    simulate_dataset(tmp_path / "dask.zarr", 3, seed=7, config=config, workers=2, progress=False)
    assert_same_store(tmp_path / "serial.zarr", tmp_path / "dask.zarr")
    simulate_dataset(tmp_path / "other.zarr", 3, seed=8, config=config, workers=0, progress=False)
    assert not np.array_equal(open_store(tmp_path / "other.zarr").read_images(0),
                              open_store(tmp_path / "serial.zarr").read_images(0))


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path):
    config = small_config()
    simulate_dataset(tmp_path / "full.zarr", 4, seed=3, config=config, workers=0, progress=False)
    # an interrupted run: samples 0 and 2 finished, sample 1 died after writing its images
    partial = tmp_path / "partial.zarr"
    create_store(partial, config, 4, 3)
    for index in (0, 2):
        _simulate_and_write(str(partial), config.to_dict(), 3, index)
    open_group(partial, mode="r+")["images"][1] = np.full((3, 128, 128), 5.0, dtype=np.float32)
    assert list(missing_indices(partial)) == [1, 3]
    summary = simulate_dataset(partial, 4, seed=3, config=config, workers=0, progress=False)
    assert summary["simulated"] == 2 and summary["already_done"] == 2
    assert_same_store(tmp_path / "full.zarr", partial)
    assert simulate_dataset(partial, 4, seed=3, config=config, workers=0, progress=False)["simulated"] == 0


def test_resuming_with_different_settings_is_refused(tmp_path):
    config = small_config()
    simulate_dataset(tmp_path / "d.zarr", 1, seed=1, config=config, workers=0, progress=False)
    with pytest.raises(UserError, match="different seed"):
        simulate_dataset(tmp_path / "d.zarr", 1, seed=2, config=config, workers=0, progress=False)


def test_config_file_errors_are_clear(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"optics": {"cs_um": 5}}))
    with pytest.raises(UserError, match="unknown field"):
        load_config(path)
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_config(path)
    path.write_text(json.dumps({"simulation": {"num_phonons": 2}, "optics": {"cs_A_range": [1e4, 2e4]}}))
    config = load_config(path)
    assert config.simulation.num_phonons == 2 and config.optics.cs_A_range == (1e4, 2e4)


def test_open_store_rejects_what_is_not_a_store(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_store(tmp_path / "missing.zarr")
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="not an hrtemnet dataset"):
        open_store(tmp_path / "folder")
