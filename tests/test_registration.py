"""Frame alignment: known sub-pixel shifts recovered between every pair of defoci, bare and on graphene, with
noise; shifts applied and undone; unrelated frames flagged."""

import numpy as np
import pytest
from drifted_series import shift_frames, simulated_series

from hrtemnet.registration import apply_shifts, common_field_A, register_frames
from hrtemnet.simulation import NoiseConfig, add_imaging_noise

S = 0.15


@pytest.fixture(scope="module")
def noisy_series():
    series = []
    for graphene in (False, True):
        images, _ = simulated_series(graphene, seed=3)
        noisy, _ = add_imaging_noise(images, S, np.random.default_rng(int(graphene)), NoiseConfig(dose_e_per_A2=2e4))
        series.append(noisy)
    return series


def test_known_subpixel_shifts_are_recovered_at_every_defocus_pair(noisy_series):
    rng = np.random.default_rng(0)
    errors = {pair: [] for pair in ((0, 1), (0, 2), (1, 2))}
    for images in noisy_series:
        for _ in range(3):
            angle, length = rng.uniform(0, 2 * np.pi, 2), rng.uniform(0, 3.5, 2)  # Å, sub-pixel in general
            shifts = np.vstack([[0, 0], np.stack([length * np.cos(angle), length * np.sin(angle)], axis=1)])
            drifted = shift_frames(images, shifts, S)
            for first, second in errors:
                found = register_frames(drifted[[first, second]], S).shifts_A[1]
                errors[(first, second)].append(np.hypot(*(found - (shifts[second] - shifts[first]))))
    for pair, values in errors.items():
        assert np.median(values) < 0.1, (pair, np.round(values, 3))


def test_apply_shifts_undoes_the_drift_and_common_field(noisy_series):
    images = noisy_series[0]
    shifts = np.array([[0, 0], [1.3, -0.7], [-2.2, 1.9]])
    registration = register_frames(shift_frames(images, shifts, S), S)
    assert registration.reliable, registration.warnings
    aligned = apply_shifts(shift_frames(images, shifts, S), registration.shifts_A, S)
    x0, y0, x1, y1 = common_field_A(images.shape[-2:], S, shifts)
    assert (x0, y0) == pytest.approx((2.2, 0.7)) and x1 == pytest.approx((images.shape[-1] - 1) * S - 1.3)
    inner = (slice(None), slice(30, -30), slice(30, -30))  # away from the edges the shift leaves undefined
    residual = np.abs(aligned[inner] - images[inner]).mean() / images[inner].std()
    unaligned = np.abs(shift_frames(images, shifts, S)[inner] - images[inner]).mean() / images[inner].std()
    assert residual < 0.2 * unaligned


def test_unrelated_frames_correlate_less_and_an_empty_frame_is_flagged(noisy_series):
    images = noisy_series[0]
    related = register_frames(images, S)
    frames = np.stack([images[0], np.random.default_rng(1).normal(size=images[0].shape)])
    unrelated = register_frames(frames, S)
    assert unrelated.peak_snr[1] < 0.7 * related.peak_snr[1:].min()
    flat = np.stack([images[0], np.ones_like(images[0])])
    registration = register_frames(flat, S)
    assert not registration.reliable and "frame 2: alignment unreliable" in registration.warnings[0]
