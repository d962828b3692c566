"""Pixel size from the MoS2 lattice: recovered within 1 % at two pixel sizes, bare and on graphene; a mis-stated
pixel size warns (given and measured in the line), `auto` uses the measured one; no lattice, no answer."""

import numpy as np
import pytest
from drifted_series import simulated_series

from hrtemnet.calibration import measure_sampling
from hrtemnet.io import FocalSeries
from hrtemnet.simulation import NoiseConfig, add_imaging_noise


@pytest.fixture(scope="module")
def series_by_sampling():
    found = {}
    for sampling_A, graphene in ((0.15, False), (0.12, True)):
        # sheets: the power spectrum of a small flake is pulled by up to 3 % (the column fit corrects that)
        images, _ = simulated_series(graphene, seed=5, sampling_A=sampling_A, sheet=True)
        noisy, _ = add_imaging_noise(images, sampling_A, np.random.default_rng(0), NoiseConfig(dose_e_per_A2=2e4))
        found[sampling_A] = noisy
    return found


def test_lattice_gives_the_pixel_size_within_one_percent(series_by_sampling):
    for sampling_A, images in series_by_sampling.items():
        measured = measure_sampling(images)
        assert measured is not None and measured.peaks >= 6
        assert measured.sampling_A == pytest.approx(sampling_A, rel=0.01)
        # a stated pixel size only breaks ties: a wrong one does not pull the measurement
        assert measure_sampling(images, 1.2 * sampling_A).sampling_A == pytest.approx(sampling_A, rel=0.01)


def test_noise_has_no_lattice():
    assert measure_sampling(np.random.default_rng(0).normal(size=(3, 128, 128))) is None


class _NoNetwork:
    """Only the pixel-size bookkeeping is under test: a model whose network finds no columns."""

    sampling_A, peak_params, name = 0.15, {"threshold": 0.5}, "none"

    class net:  # noqa: N801 - mimics LoadedModel.net
        @staticmethod
        def eval():
            import torch

            return lambda x: torch.cat([torch.full_like(x[:, :1], 10.0), torch.zeros_like(x)], dim=1)


@pytest.mark.parametrize("stated_factor", [0.8, 0.95, 1.05, 1.25])
def test_a_mis_stated_pixel_size_warns_with_both_values(series_by_sampling, stated_factor):
    from hrtemnet.prediction import predict_focal_series

    images = series_by_sampling[0.15]
    stated = 0.15 * stated_factor
    result = predict_focal_series(_NoNetwork(), FocalSeries(images, stated, "s", "s", stated), align=False)
    lines = [w for w in result.warnings if w.startswith("pixel size")]
    measured = f"{result.measured_sampling_A:.4f} Å/px measured"
    assert len(lines) == 1 and f"{stated:.4f} Å/px" in lines[0] and measured in lines[0], result.warnings
    assert result.sampling_A == stated and result.sampling_source == "file"
    auto = predict_focal_series(_NoNetwork(), FocalSeries(images, float("nan"), "s", "s", stated), align=False)
    assert auto.sampling_source == "lattice" and auto.sampling_A == pytest.approx(0.15, rel=0.01)
    assert not [w for w in auto.warnings if w.startswith("pixel size")]


def test_a_right_pixel_size_does_not_warn(series_by_sampling):
    from hrtemnet.prediction import predict_focal_series

    for sampling_A, images in series_by_sampling.items():
        result = predict_focal_series(_NoNetwork(), FocalSeries(images, sampling_A, "s", "s", sampling_A), align=False)
        assert not [w for w in result.warnings if w.startswith("pixel size")]
        assert result.measured_sampling_A == pytest.approx(sampling_A, rel=0.01)


@pytest.mark.parametrize("scale", [0.97, 1.0, 1.04])
def test_lattice_constant_from_noisy_mo_columns(scale):
    from hrtemnet.calibration import MOS2_LATTICE_A, lattice_constant_from_columns
    from hrtemnet.structures import mos2_columns

    xy, classes = mos2_columns(0.4, np.array([20.0, 20.0]), 18.0)  # a flake of ~130 Mo columns
    mo = xy[classes == 0] * scale + np.random.default_rng(0).normal(0, 0.05, (int(np.sum(classes == 0)), 2))
    assert lattice_constant_from_columns(mo) == pytest.approx(scale * MOS2_LATTICE_A, rel=0.003)
    assert lattice_constant_from_columns(mo[:5]) is None
