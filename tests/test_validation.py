"""hrtemnet.validation: configs checked by field-name convention, so fields added later are covered."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hrtemnet.errors import UserError
from hrtemnet.validation import check_number, validate_config, writable_file, writable_folder


@dataclass
class Inner:
    gain_counts_per_e_range: tuple[float, float] = (0.5, 10.0)
    offset_counts_range: tuple[float, float] = (-5.0, 100.0)  # signed by name


@dataclass
class FutureConfig:
    """Fields nobody wrote a check for: the names alone say what is allowed."""

    contamination_probability: float = 0.5
    thickness_A_range: tuple[float, float] = (0.0, 10.0)
    first_defocus_A_range: tuple[float, float] = (-150.0, 100.0)
    tilt_axis_rad: float = -1.0
    num_defocus: int = 3
    num_layers: int = 0
    energy_eV: float = 80e3
    label: str = "x"
    enabled: bool = True
    dose_e_per_A2: float | None = None
    camera: Inner | None = field(default_factory=Inner)


def test_a_config_that_follows_the_conventions_passes():
    config = FutureConfig()
    assert validate_config(config) is config
    validate_config(FutureConfig(camera=None, dose_e_per_A2=1e4))


@pytest.mark.parametrize("changes, fragment", [
    ({"contamination_probability": 7}, "between 0 and 1"),
    ({"contamination_probability": float("nan")}, "finite"),
    ({"thickness_A_range": (10.0, 0.0)}, "reversed"),
    ({"thickness_A_range": (-1.0, 0.0)}, "0 or more"),
    ({"thickness_A_range": (0.0, 1.0, 2.0)}, "pair"),
    ({"thickness_A_range": "0-10"}, "pair"),
    ({"thickness_A_range": (0.0, float("inf"))}, "finite"),
    ({"num_defocus": 0}, "at least 1"),
    ({"num_defocus": 3.0}, "whole number"),
    ({"num_defocus": True}, "whole number"),
    ({"num_layers": -1}, "at least 0"),
    ({"energy_eV": 0.0}, "positive"),
    ({"energy_eV": "80 keV"}, "number"),
    ({"label": 3}, "text"),
    ({"enabled": "yes"}, "true or false"),
    ({"dose_e_per_A2": -1.0}, "positive"),
    ({"camera": Inner(gain_counts_per_e_range=(0.0, 1.0))}, "camera.gain_counts_per_e_range"),
])
def test_a_field_breaking_its_naming_convention_is_refused_by_name(changes, fragment):
    config = FutureConfig(**changes)
    with pytest.raises(UserError, match=fragment) as error:
        validate_config(config)
    assert isinstance(error.value, ValueError)  # the Python API raises ValueError
    assert "\n" not in str(error.value)


def test_signed_quantities_may_be_negative():
    validate_config(FutureConfig(first_defocus_A_range=(-300.0, -200.0), tilt_axis_rad=-3.0,
                                 camera=Inner(offset_counts_range=(-50.0, -10.0))))


def test_the_project_configs_follow_the_conventions():
    from hrtemnet.dataset import DatasetConfig
    from hrtemnet.peaks import PeakConfig
    from hrtemnet.simulation import NoiseConfig, OpticsParams

    for config in (DatasetConfig(), NoiseConfig(), PeakConfig(), OpticsParams()):
        validate_config(config)


def test_every_numeric_field_of_the_dataset_config_is_checked():
    """Setting any numeric field of the dataset config to NaN is refused, naming that field: new fields
    the realism work adds are covered without a check of their own."""
    from hrtemnet.dataset import DatasetConfig

    data = json.loads(json.dumps(DatasetConfig().to_dict()))
    tried = 0
    for section, values in data.items():
        if not isinstance(values, dict):
            continue
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float | list):
                continue
            bad = [math.nan] * len(value) if isinstance(value, list) else math.nan
            with pytest.raises(UserError, match=f"{section}.{name}"):
                DatasetConfig.from_dict({section: {name: bad}})
            tried += 1
    assert tried >= 15


# allow_subnormal=False: other tests call torch.set_flush_denormal(True), which hypothesis detects
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["structure", "optics", "simulation", "image_dtype", "other"]),
                       st.one_of(st.dictionaries(st.sampled_from(
                           ["sheet_probability", "flake_radius_A_range", "num_defocus", "cs_A_range",
                            "energy_eV", "num_phonons", "sampling_A", "field_of_view_A", "bogus"]),
                           st.one_of(st.floats(allow_nan=True, allow_subnormal=False), st.integers(-10, 10**7),
                                     st.text(max_size=3), st.none(),
                                     st.lists(st.floats(-1e6, 1e6, allow_subnormal=False), max_size=3)), max_size=3),
                           st.integers(), st.text(max_size=3)), max_size=3))
def test_any_config_dict_is_accepted_valid_or_refused_with_a_user_error(data):
    from hrtemnet.dataset import DatasetConfig

    try:
        config = DatasetConfig.from_dict(data)
    except UserError as error:
        assert "\n" not in str(error)
        return
    except (TypeError, ValueError) as error:  # load_config turns these into one line naming the file
        assert not isinstance(error, KeyError | AttributeError)
        return
    validate_config(config)  # anything accepted obeys the conventions


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet="xyA_,class0123456789.-MoS2#\n\r \ufeffnaif", max_size=80))
def test_any_text_as_a_column_csv_is_read_or_refused_in_one_line(tmp_path_factory, text):
    from hrtemnet.columns import read_columns_csv

    path = tmp_path_factory.mktemp("csv") / "c.csv"
    path.write_text("x_A,y_A,class\n" + text, encoding="utf-8")
    try:
        columns = read_columns_csv(path)
    except UserError as error:
        assert "\n" not in str(error).strip()
        return
    assert np.isfinite(columns.xy_A).all()


def test_check_number():
    assert check_number(None, "--x") is None
    assert check_number(0.0, "--x") == 0.0
    for value in (float("nan"), float("inf"), -1.0):
        with pytest.raises(UserError, match="--x"):
            check_number(value, "--x")
    with pytest.raises(UserError, match="positive"):
        check_number(0.0, "--x", positive=True)


def test_output_paths_are_checked_before_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        writable_folder(tmp_path / "file", "--out-dir")
    with pytest.raises(UserError, match="cannot be created"):
        writable_folder(tmp_path / "file" / "sub", "--out-dir")
    assert writable_folder(tmp_path / "new" / "deep", "--out-dir").is_dir()
    with pytest.raises(UserError, match="is a folder"):
        writable_file(tmp_path / "new", "--out")
    assert writable_file(tmp_path / "other" / "s.csv", "--out").parent.is_dir()


# --- training checkpoints ---------------------------------------------------------------------------------


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    from hrtemnet.training import _restore_rng_states, _rng_states

    random.seed(5)
    torch.manual_seed(5)
    torch.save({"rng": _rng_states()}, tmp_path / "c.pt")
    expected = (random.random(), torch.rand(1).item())
    random.seed(0)
    torch.manual_seed(0)
    _restore_rng_states(torch.load(tmp_path / "c.pt", weights_only=True)["rng"])
    assert (random.random(), torch.rand(1).item()) == expected
    # checkpoints written before the states were plain types still resume
    random.seed(5)
    old = {"torch": torch.get_rng_state(), "python": random.getstate()}
    expected = random.random()
    torch.save({"rng": old}, tmp_path / "old.pt")
    _restore_rng_states(torch.load(tmp_path / "old.pt", weights_only=True)["rng"])
    assert random.random() == expected


def test_a_torn_log_line_is_dropped_and_reported(tmp_path, capsys):
    from hrtemnet.training import _truncate_log

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 1}\n{"step": 2, "loss": 1}\n{"step": 3, "loss": 1}\n{"step": 4, "lo')
    _truncate_log(log, 2)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
    assert "skipped 1" in capsys.readouterr().out


# --- dataset store ------------------------------------------------------------------------------------------


def test_a_store_locked_by_another_simulate_is_refused(tmp_path):
    import fcntl

    from hrtemnet.dataset import DatasetConfig, create_store, store_lock
    from hrtemnet.simulation import SimulationConfig
    from hrtemnet.structures import StructureConfig

    config = DatasetConfig(structure=StructureConfig(field_of_view_A=(7.2, 7.2)),
                           simulation=SimulationConfig(num_phonons=0))
    create_store(tmp_path / "d.zarr", config, 2, 0)
    assert not list(tmp_path.glob(".d.zarr.creating-*"))  # built aside, then renamed into place
    with open(tmp_path / "d.zarr" / "zarr.json", "rb") as other:  # what a second process holds
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="another `hrtemnet simulate`"), store_lock(tmp_path / "d.zarr"):
            pass
    with store_lock(tmp_path / "d.zarr"):  # released: free again
        pass


def test_model_size_is_limited_before_allocation():
    from hrtemnet.models import MAX_PARAMETERS, build_model, parameter_count

    for name, kwargs in (("msd", {}), ("msd", {"depth": 8, "width": 2}), ("unet", {"base_channels": 8})):
        built = sum(p.numel() for p in build_model(name, **kwargs).parameters())
        assert parameter_count(name, **kwargs) == pytest.approx(built, rel=0.01)
    assert parameter_count("msd", depth=10**8) > MAX_PARAMETERS
    with pytest.raises(UserError, match="parameters"):
        build_model("msd", depth=10**8)
    for bad in (0, 2.5, True, "3"):
        with pytest.raises(UserError, match="whole number"):
            build_model("unet", depth=bad)
