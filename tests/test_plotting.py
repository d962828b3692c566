"""hrtemnet.plotting: every figure is drawn from plain data and written as a PNG."""

from __future__ import annotations

import numpy as np
import pytest

from hrtemnet import plotting
from hrtemnet.columns import Columns
from hrtemnet.io import FocalSeries
from hrtemnet.metrics import CONFUSION_LABELS, match_image, total_score

SAMPLING_A = 0.2


def test_image_extent_puts_pixel_centres_at_multiples_of_the_sampling():
    left, right, bottom, top = plotting.image_extent((3, 10, 20), SAMPLING_A)
    assert (left, top) == pytest.approx((-0.1, -0.1))  # pixel (0, 0) is centred on (0, 0)
    assert (right, bottom) == pytest.approx((19.5 * SAMPLING_A, 9.5 * SAMPLING_A))


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    series = rng.random((3, 64, 80)).astype(np.float32)
    truth = Columns(rng.uniform(2, 10, (12, 2)), rng.integers(0, 3, 12))
    pred = Columns(truth.xy_A[:10] + 0.05, np.r_[truth.class_index[:9], (truth.class_index[9] + 1) % 3])
    size_A = (80 * SAMPLING_A, 64 * SAMPLING_A)
    return series, truth, pred, size_A


def is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_figure_is_written(tmp_path, scene):
    series, truth, pred, size_A = scene
    match = match_image(truth, pred, size_A)
    scores = {"a": [match.score()] * 3, "b": [match.score()] * 3}
    files = [
        plotting.plot_prediction(FocalSeries(series, SAMPLING_A, "x", "x"), pred, tmp_path / "sub" / "p.png"),
        plotting.plot_f1_histograms({k: [s.f1 for s in v] for k, v in scores.items()}, ["bare", "graphene", "bare"],
                                    ("bare", "graphene"), tmp_path / "h.png"),
        plotting.plot_example_series(series, SAMPLING_A, {"a": match, "b": match}, [-50.0, 0.0, None], 2.0,
                                     "example", tmp_path / "e.png"),
        plotting.plot_confusion_matrices({k: total_score(v).confusion for k, v in scores.items()}, CONFUSION_LABELS,
                                         tmp_path / "c.png"),
        plotting.plot_f1_vs_dose({k: {1e4: v, 1e5: v[:2]} for k, v in scores.items()}, tmp_path / "d.png"),
    ]
    assert all(is_png(path) for path in files)
