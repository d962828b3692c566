"""Prediction: resampling and tiling leave the columns unchanged; `hrtemnet predict` on good and bad input."""


import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from hrtemnet.cli import app
from hrtemnet.columns import CLASS_NAMES, Columns
from hrtemnet.io import FocalSeries
from hrtemnet.models import LoadedModel
from hrtemnet.prediction import predict_probabilities, predict_series, summarize

runner = CliRunner()


class ChannelClassNet(nn.Module):
    """A stand-in 'network': class k's logit grows with (the 3x3 mean of) normalised image k.

    With the columns of class k drawn only in image k, it finds and classifies them like a trained net.
    """

    def forward(self, x):
        mean = nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([torch.full_like(x[:, :1], 2.0), 4.0 * mean], dim=1)


def fake_model(net=None) -> LoadedModel:
    return LoadedModel((net or ChannelClassNet()).eval(), "fake", {}, 0.15, {"threshold": 0.5}, {})


def render(columns: Columns, shape, sampling_A, sigma_A=0.35):
    """Image k holds the Gaussian columns of class k, rendered at pixel centres (col * s, row * s)."""
    y, x = np.meshgrid(np.arange(shape[0]) * sampling_A, np.arange(shape[1]) * sampling_A, indexing="ij")
    images = np.zeros((3, *shape))
    for (cx, cy), k in zip(columns.xy_A, columns.class_index, strict=True):
        images[k] += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma_A**2))
    return images.astype(np.float32)


def random_columns(size_A, rng, min_distance_A=2.5, n=40):
    xy = []
    while len(xy) < n:
        p = rng.uniform(0.5, size_A - 0.5, 2)
        if all(np.hypot(*(p - q)) >= min_distance_A for q in xy):
            xy.append(p)
    classes = np.resize(np.arange(3), n)  # every image gets columns
    return Columns(np.array(xy), rng.permutation(classes))


def matched(a: Columns, b: Columns, radius_A=0.1):
    """For each column of a, the distance to and class of the nearest column of b."""
    d = np.hypot(*(a.xy_A[:, None, :] - b.xy_A[None, :, :]).transpose(2, 0, 1))
    nearest = d.argmin(axis=1)
    return d[np.arange(len(a)), nearest], b.class_index[nearest]


def test_resampled_series_gives_the_same_columns_in_angstrom():
    size_A = 24.0
    truth = random_columns(size_A, np.random.default_rng(1))
    found = {}
    for s in (0.10, 0.15):
        n = int(round(size_A / s)) + 1
        series = FocalSeries(render(truth, (n, n), s), s, f"at {s}", "x")
        found[s] = predict_series(fake_model(), series)
    assert len(found[0.10]) == len(found[0.15]) == len(truth)
    for s in (0.10, 0.15):
        distance, classes = matched(truth, found[s])
        assert distance.max() < 0.05, s  # peak refinement of neighbouring columns: measured 0.026
        np.testing.assert_array_equal(classes, truth.class_index)
    # measured 1.4e-4 Å; skimage's rescale convention (a quarter input pixel off) gives 0.025 Å
    distance, _ = matched(found[0.10], found[0.15])
    assert distance.max() < 0.005


class RandomConvNet(nn.Module):
    """Random weights, receptive-field radius 1 + 2 + 1 = 4 px: a tiling seam would show."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(8, 8, 3, padding=2, dilation=2), nn.ReLU(),
                                    nn.Conv2d(8, 4, 3, padding=1))

    def forward(self, x):
        return self.layers(x)


def periodic_series(cell: np.ndarray, size_px=1024):
    """A series tiled from one cell: every crop aligned to the cell has the whole image's mean and std, so
    its normalisation (per image, as in training) is identical and crops are directly comparable."""
    reps = size_px // cell.shape[-1]
    return np.tile(cell, (1, reps, reps)).astype(np.float32)


def test_tiled_probabilities_equal_one_pass_and_crops():
    series = periodic_series(np.random.default_rng(0).random((3, 32, 32)))
    model = fake_model(RandomConvNet())
    tiled = predict_probabilities(model, series, tile_px=256, margin_px=16)
    whole = predict_probabilities(model, series, tile_px=2048)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    r, c, n, rf = 320, 448, 256, 4
    crop = predict_probabilities(model, series[:, r:r + n, c:c + n])
    interior = (slice(None), slice(r + rf, r + n - rf), slice(c + rf, c + n - rf))
    np.testing.assert_allclose(crop[:, rf:-rf, rf:-rf], tiled[interior], atol=1e-5)
    # with margins smaller than the receptive field the seams do show: the comparison above can fail
    assert np.abs(predict_probabilities(model, series, tile_px=256, margin_px=2) - whole).max() > 1e-3


def test_tiled_1024_series_gives_the_columns_of_its_256_crops():
    s = 0.15
    cell_columns = Columns(np.array([[8, 8], [24, 8], [8, 24], [24, 24]]) * s, np.array([0, 1, 2, 0]))
    series = periodic_series(render(cell_columns, (32, 32), s))
    full = predict_series(fake_model(), FocalSeries(series, s, "full", "full"), tile_px=256, margin_px=32)
    assert len(full) == 4 * 32 * 32
    r, c, n = 320, 448, 256
    crop = predict_series(fake_model(), FocalSeries(series[:, r:r + n, c:c + n], s, "crop", "crop"))
    shifted = Columns(crop.xy_A + np.array([c, r]) * s, crop.class_index, crop.score)
    margin_A = 3.0
    inside = np.all((full.xy_A >= np.array([c, r]) * s + margin_A)
                    & (full.xy_A <= np.array([c + n - 1, r + n - 1]) * s - margin_A), axis=1)
    in_crop = np.all((shifted.xy_A >= np.array([c, r]) * s + margin_A)
                     & (shifted.xy_A <= np.array([c + n - 1, r + n - 1]) * s - margin_A), axis=1)
    assert inside.sum() == in_crop.sum() > 100
    distance, classes = matched(full.subset(inside), shifted.subset(in_crop))
    assert distance.max() < 1e-4
    np.testing.assert_array_equal(classes, full.class_index[inside])


def test_summary_counts_and_vacancy_fraction():
    columns = Columns(np.zeros((6, 2)), np.array([0, 0, 1, 1, 1, 2]))
    summary = summarize(columns)
    assert summary.counts == {"Mo": 2, "S2": 3, "S": 1}
    assert summary.s_vacancy_fraction == pytest.approx(0.25)
    assert "S-vacancy fraction 0.250" in summary.line()
    assert np.isnan(summarize(Columns.empty()).s_vacancy_fraction)


def test_score_ranks_wrong_columns_below_right_ones():
    """Columns whose evidence is split between Mo and S2 (what misregistered frames give) are classified
    wrongly about half the time; the score puts every one of them below every clean column, while the
    column probability alone (the old score) does not tell them apart."""
    from hrtemnet.prediction import predict_focal_series

    s, size_A = 0.10, 20.0
    truth = random_columns(size_A, np.random.default_rng(4), n=36)
    n = int(round(size_A / s)) + 1
    images = render(truth, (n, n), s)
    split = np.flatnonzero(truth.class_index == 0)[:4]  # Mo columns drawn 30 % in image 1, 70 % in image 2
    split_truth = Columns(truth.xy_A[split], np.zeros(len(split), dtype=int))
    mixed = render(split_truth, (n, n), s)[0]
    images[0] -= 0.7 * mixed
    images[1] += 0.7 * mixed
    result = predict_focal_series(fake_model(), FocalSeries(images, s, "split", "split"), align=False,
                                  check_sampling=False)
    distance, true_class = matched(result.columns, truth)
    assert distance.max() < 0.1 and len(result.columns) == len(truth)
    right = result.columns.class_index == true_class
    assert (~right).sum() >= 3  # the split columns came out S2
    assert result.columns.score[~right].max() < result.columns.score[right].min()
    assert np.ptp(result.column_probability) < 1e-6  # saturated: no use for ranking


# ---- the command ------------------------------------------------------------------------------------------


@pytest.fixture
def fake_loaded(monkeypatch):
    import hrtemnet.models

    monkeypatch.setattr(hrtemnet.models, "load_model", lambda spec, flip_average=False: fake_model())


def test_predict_writes_csv_in_the_input_frame_and_plot(tmp_path, fake_loaded):
    s, size_A = 0.10, 12.0
    truth = random_columns(size_A, np.random.default_rng(3), n=12)
    n = int(round(size_A / s)) + 1
    np.savez(tmp_path / "series.npz", images=render(truth, (n, n), s), sampling_A=s)
    # the stand-in's frames hold different columns: nothing to align, and no MoS2 lattice to check
    result = runner.invoke(app, ["predict", str(tmp_path / "series.npz"), "--model", "msd", "--out-dir",
                                 str(tmp_path / "out"), "--plot", "--no-align", "--border-A", "0"])
    assert result.exit_code == 0, result.output
    assert "12 columns" in result.output and "S-vacancy fraction" in result.output
    rows = pd.read_csv(tmp_path / "out" / "series.csv", comment="#")
    assert list(rows.columns[:9]) == ["x_A", "y_A", "class", "score", "p_Mo", "p_S2", "p_S", "row_px", "col_px"]
    xy = rows[["x_A", "y_A"]].to_numpy()
    pixels = rows[["col_px", "row_px"]].to_numpy()
    np.testing.assert_allclose(pixels, xy / s, atol=1e-3)  # pixels of the 0.10 Å input, not of the model
    distance, classes = matched(Columns(xy, [CLASS_NAMES.index(c) for c in rows["class"]]), truth)
    assert distance.max() < 0.05
    assert (tmp_path / "out" / "series.png").read_bytes()[:4] == b"\x89PNG"
    comments = [line for line in (tmp_path / "out" / "series.csv").read_text().splitlines() if line.startswith("#")]
    for key in ("model: msd sha256 ", "pixel_size: 0.1000 Å/px (file", "frame_shifts: not aligned", "command: "):
        assert any(key in line for line in comments), (key, comments)
    # the summary counts the interior only: with the default 2 Å border fewer columns
    result = runner.invoke(app, ["predict", str(tmp_path / "series.npz"), "--out-dir", str(tmp_path / "out2"),
                                 "--no-align"])
    interior = rows[(rows.x_A >= 2) & (rows.x_A <= size_A - 2) & (rows.y_A >= 2) & (rows.y_A <= size_A - 2)]
    assert f"{len(interior)} columns" in result.output and len(interior) < 12


def test_threshold_option(tmp_path, fake_loaded):
    np.savez(tmp_path / "s.npz", images=np.random.default_rng(0).random((3, 64, 64)), sampling_A=0.15)
    result = runner.invoke(app, ["predict", str(tmp_path / "s.npz"), "--model", "msd", "--threshold", "1.5"])
    assert result.exit_code == 2 and "--threshold" in result.output


def test_each_bad_input_is_one_line_and_the_rest_is_written(tmp_path):
    """A real (tiny, untrained) model file, a good input and every kind of bad input in one call."""
    from hrtemnet.models import build_model, save_model_bundle

    model_file = save_model_bundle(tmp_path / "tiny.pt", build_model("msd", depth=3), "msd", {"depth": 3},
                                   0.15, {}, {})
    rng = np.random.default_rng(0)
    good = rng.random((3, 64, 64))

    def npz(name, images, sampling_A=0.15):
        path = tmp_path / f"{name}.npz"
        np.savez(path, images=images, sampling_A=sampling_A)
        return str(path)

    nan, constant = good.copy(), good.copy()
    nan[1, 5, 5] = np.nan
    constant[2] = 1.0
    np.save(tmp_path / "nocal.npy", good)
    (tmp_path / "text.tif").write_text("not a tiff")
    for i, shape in enumerate([(64, 64), (64, 64), (64, 60)]):
        np.savez(tmp_path / f"part{i}.npz", images=rng.random(shape), sampling_A=0.15)
    bad = {
        "wrong number": (npz("two", good[:2]), "holds 2 image"),
        "shapes differ": ("+".join(str(tmp_path / f"part{i}.npz") for i in range(3)), "differ in size"),
        "nan": (npz("nan", nan), "NaN"),
        "constant": (npz("constant", constant), "constant"),
        "unreadable": (str(tmp_path / "text.tif"), "not a readable TIFF"),
        "missing": (str(tmp_path / "absent.dm4"), "no such file"),
        "too small": (npz("small", good[:, :40, :40], 0.10), "at least 32 px"),
        "no pixel size": (str(tmp_path / "nocal.npy"), "--sampling"),
    }
    inputs = [npz("good", good)] + [spec for spec, _ in bad.values()] + [npz("good2", good)]
    out_dir = tmp_path / "o"
    result = runner.invoke(app, ["predict", *inputs, "--model", str(model_file), "--out-dir", str(out_dir)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    for kind, (spec, message) in bad.items():
        lines = [line for line in errors if spec.split("+")[0] in line and message in line]
        assert len(lines) == 1, (kind, result.output)
    assert len(errors) == len(bad) + 1 and "8 of 10 input(s) failed" in errors[-1]  # and the closing count
    assert sorted(p.name for p in out_dir.iterdir()) == ["good.csv", "good2.csv"]


def test_missing_model_is_one_line(tmp_path):
    np.savez(tmp_path / "s.npz", images=np.random.default_rng(0).random((3, 64, 64)), sampling_A=0.15)
    result = runner.invoke(app, ["predict", str(tmp_path / "s.npz"), "--model", str(tmp_path / "none.pt")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_inputs_with_one_name_keep_both_outputs(tmp_path, fake_loaded):
    specs = []
    for folder in ("day1", "day2"):
        (tmp_path / folder).mkdir()
        images = np.random.default_rng(0).random((3, 64, 64))
        np.savez(tmp_path / folder / "s.npz", images=images, sampling_A=0.15)
        specs.append(str(tmp_path / folder / "s.npz"))
    result = runner.invoke(app, ["predict", *specs, "--model", "msd", "--out-dir", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["s.csv", "s_2.csv"]


def test_a_model_with_defocus_inputs_needs_and_uses_the_defocus(tmp_path):
    """A tiny untrained model with defocus inputs: --defocus is required, checked and reaches the network;
    an image-only model given --defocus says it did not use it."""
    import hrtemnet
    from hrtemnet.errors import UserError
    from hrtemnet.models import build_model, load_model, save_model_bundle
    from hrtemnet.prediction import predict_probabilities

    torch.manual_seed(0)
    net = build_model("msd", depth=3, in_channels=6)
    torch.nn.init.normal_(net.final.weight)  # starts at zero: the output would not depend on anything
    conditioned = save_model_bundle(tmp_path / "cond.pt", net, "msd", {"depth": 3, "in_channels": 6}, 0.15, {}, {})
    plain = save_model_bundle(tmp_path / "plain.pt", build_model("msd", depth=3), "msd", {"depth": 3}, 0.15, {}, {})
    np.savez(tmp_path / "s.npz", images=np.random.default_rng(0).random((3, 64, 64)), sampling_A=0.15)
    base = ["predict", str(tmp_path / "s.npz"), "--no-align", "--out-dir", str(tmp_path / "out")]
    result = runner.invoke(app, [*base, "--model", str(conditioned)])
    assert result.exit_code == 2 and "takes the nominal defocus" in result.output and "--defocus" in result.output
    for bad, message in (("1,2", "3 values, got 2"), ("60,10,-40", "must increase"), ("a,b,c", "numbers in Å"),
                         ("-4e4,1,2", "check the unit")):
        result = runner.invoke(app, [*base, "--model", str(conditioned), "--defocus", bad])
        assert result.exit_code == 2 and message in result.output, (bad, result.output)
        assert "Traceback" not in result.output
    result = runner.invoke(app, [*base, "--model", str(conditioned), "--defocus=-40,10,60"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "s.csv").exists()
    result = runner.invoke(app, [*base, "--model", str(plain), "--defocus=-40,10,60", "--out-dir",
                                 str(tmp_path / "o")])
    assert result.exit_code == 0 and "does not take defocus values" in result.output
    model, images = load_model(conditioned), np.random.default_rng(1).random((3, 64, 64))
    near, far = (predict_probabilities(model, images, defocus_A=d) for d in ([-40, 10, 60], [40, 90, 140]))
    assert not np.allclose(near, far)
    with pytest.raises(UserError, match="takes the nominal defocus"):
        predict_probabilities(model, images)
    with pytest.raises(UserError, match="takes the nominal defocus"):
        hrtemnet.predict(images, sampling_A=0.15, model=str(conditioned), align=False)
    frame = hrtemnet.predict(images, sampling_A=0.15, model=str(conditioned), align=False, defocus_A=(-40, 10, 60))
    assert "x_A" in frame.columns
    # noise through an untrained network does not look like MoS2 (a field large enough to judge): the warning
    # names the defocus values too
    noise = np.random.default_rng(1).random((3, 128, 128))
    frame = hrtemnet.predict(noise, sampling_A=0.15, model=str(conditioned), align=False, defocus_A=(-40, 10, 60))
    (implausible,) = [w for w in frame.attrs["warnings"] if "do not look like MoS2" in w]
    assert "defocus values" in implausible and "±50 Å" in implausible
    image_only_net = build_model("msd", depth=3)
    torch.nn.init.normal_(image_only_net.final.weight)
    image_only = hrtemnet.predict(noise, sampling_A=0.15, align=False, model=str(save_model_bundle(
        tmp_path / "image_only.pt", image_only_net, "msd", {"depth": 3}, 0.15, {}, {})))
    (implausible,) = [w for w in image_only.attrs["warnings"] if "do not look like MoS2" in w]
    assert "defocus values" not in implausible
    assert FocalSeries(images, 0.15, "x", "x").defocus_A is None


def test_flip_average_option_reaches_the_network_and_is_recorded(tmp_path):
    """`--flip-average` / `flip_average=True`: the mean over the 8 views is what predicts, and the tables say so."""
    import hrtemnet
    from hrtemnet.models import build_model, save_model_bundle

    torch.manual_seed(0)
    net = build_model("msd", depth=3)
    torch.nn.init.normal_(net.final.weight)  # starts at zero: the output would not depend on the images
    path = save_model_bundle(tmp_path / "m.pt", net, "msd", {"depth": 3}, 0.15, {"threshold": 0.2}, {})
    images = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "s.npy", images)
    tables = {}
    for option in ([], ["--flip-average"]):
        out = tmp_path / f"out{len(option)}"
        result = runner.invoke(app, ["predict", str(tmp_path / "s.npy"), "--model", str(path), "--sampling", "0.15",
                                     "--no-align", "--out-dir", str(out), *option])
        assert result.exit_code == 0, result.output
        text = (out / "s.csv").read_text()
        assert (f"# model: {path} +flips sha256" in text) == bool(option)
        tables[bool(option)] = pd.read_csv(out / "s.csv", comment="#")
    assert not tables[False][["x_A", "y_A"]].equals(tables[True][["x_A", "y_A"]])  # a different network ran
    frame = hrtemnet.predict(images, sampling_A=0.15, model=str(path), align=False, flip_average=True)
    assert frame.attrs["model"] == f"{path} +flips"
    np.testing.assert_allclose(frame[["x_A", "y_A"]].to_numpy(), tables[True][["x_A", "y_A"]].to_numpy(), atol=1e-3)


def test_sublattice_vote_option_reaches_the_class_decision(tmp_path, monkeypatch):
    """`--sublattice-vote` / `sublattice_vote=True` turn the vote on for a model whose settings have it off."""
    import hrtemnet
    from hrtemnet import peaks
    from hrtemnet.models import build_model, save_model_bundle

    torch.manual_seed(0)
    net = build_model("msd", depth=3)
    torch.nn.init.normal_(net.final.weight)
    path = save_model_bundle(tmp_path / "m.pt", net, "msd", {"depth": 3}, 0.15, {"threshold": 0.2}, {})
    images = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "s.npy", images)
    calls = []
    real_vote = peaks.sublattice_vote
    monkeypatch.setattr(peaks, "sublattice_vote", lambda xy, shares: calls.append(len(xy)) or real_vote(xy, shares))
    for option in ([], ["--sublattice-vote"]):
        result = runner.invoke(app, ["predict", str(tmp_path / "s.npy"), "--model", str(path), "--sampling", "0.15",
                                     "--no-align", "--out-dir", str(tmp_path / f"out{len(option)}"), *option])
        assert result.exit_code == 0, result.output
        assert len(calls) == len(option)
        header = (tmp_path / f"out{len(option)}" / "s.csv").read_text()
        assert ("# class_decision: sublattice vote" in header) == bool(option)  # the table says how it was decided
    frame = hrtemnet.predict(images, sampling_A=0.15, model=str(path), align=False)
    assert len(calls) == 1 and frame.attrs["sublattice_vote"] is False
    frame = hrtemnet.predict(images, sampling_A=0.15, model=str(path), align=False, sublattice_vote=True)
    assert len(calls) == 2 and frame.attrs["sublattice_vote"] is True


def test_defocus_search_runs_only_when_the_given_values_score_low_and_keeps_the_most_confident_shift(monkeypatch):
    """`search_defocus_offset`: at the given values with confident columns nothing else is tried; with low scores
    it tries multiples of 20 Å within the range and keeps the shift whose columns (away from the edge) score
    highest, a tie going to the smaller shift, if it gains at least 0.1 in mean score over the given values."""
    from hrtemnet import prediction
    from hrtemnet.columns import Columns

    tried, confidence = [], {}

    def fake_columns(model, images, sampling_A, source, peak_config, tile_px, margin_px, defocus_A):
        offset = defocus_A[0] - (-40.0)
        tried.append(offset)
        xy = np.c_[np.linspace(3.0, 12.0, 25), np.full(25, 6.0)]
        xy = np.vstack([xy, [[0.5, 5.0]]])  # the last one is at the edge: not counted
        score = np.r_[np.full(25, confidence.get(offset, 0.6)), 1.0]
        return Columns(xy, np.zeros(26, dtype=int), score), np.tile([1.0, 0.0, 0.0], (26, 1))

    monkeypatch.setattr(prediction, "_columns_and_class_shares", fake_columns)
    images, nominal = np.zeros((3, 100, 100), dtype=np.float32), (-40.0, 10.0, 60.0)

    def search(range_A):
        tried.clear()
        return prediction.search_defocus_offset(None, images, 0.15, "x", None, 512, 32, nominal, range_A)

    confidence.update({0.0: 0.95, 20.0: 0.99})
    assert search(70.0)[0] == 0.0 and tried == [0.0]  # confident at the given values: no search
    confidence.clear()
    confidence.update({40.0: 0.95, -40.0: 0.95})  # low at the given values; two equally good shifts
    offset, columns, _ = search(70.0)
    assert sorted(tried) == [-60.0, -40.0, -20.0, 0.0, 20.0, 40.0, 60.0]  # multiples of 20 Å within ±70 Å
    assert offset == -40.0 and columns.score[0] == 0.95  # of +40 and -40 the first tried (nearer 0, then -)
    assert search(30.0)[0] == 0.0 and sorted(tried) == [-20.0, 0.0, 20.0]  # ±40 out of range: all tie at 0.6
    confidence.clear()
    confidence.update({20.0: 0.69})  # searched, but a gain of 0.09 in mean score is not enough to switch
    assert search(30.0)[0] == 0.0 and len(tried) == 3
    confidence.update({20.0: 0.71})
    assert search(30.0)[0] == 20.0


def test_defocus_search_option_is_checked_and_recorded(tmp_path):
    """--defocus-search: refused for an image-only model and out of range; with a defocus-input model the CSV says
    which defocus values the network was given."""
    from hrtemnet.models import build_model, save_model_bundle

    torch.manual_seed(0)
    net = build_model("msd", depth=3, in_channels=6)
    torch.nn.init.normal_(net.final.weight)
    conditioned = save_model_bundle(tmp_path / "cond.pt", net, "msd", {"depth": 3, "in_channels": 6}, 0.15, {}, {})
    np.savez(tmp_path / "s.npz", images=np.random.default_rng(0).random((3, 64, 64)), sampling_A=0.15)
    base = ["predict", str(tmp_path / "s.npz"), "--no-align", "--out-dir", str(tmp_path / "out")]
    result = runner.invoke(app, [*base, "--defocus-search", "60"])
    assert result.exit_code == 2 and "needs a model with the defocus input" in result.output, result.output
    conditioned_base = [*base, "--model", str(conditioned), "--defocus=-40,10,60"]
    for bad in ("-5", "1000", "nan"):
        result = runner.invoke(app, [*conditioned_base, "--defocus-search", bad])
        assert result.exit_code == 2 and "--defocus-search must lie in 0..300" in result.output, (bad, result.output)
    result = runner.invoke(app, [*conditioned_base, "--defocus-search", "40"])
    assert result.exit_code == 0, result.output
    header = [line for line in (tmp_path / "out" / "s.csv").read_text().splitlines() if line.startswith("# defocus")]
    assert len(header) == 1 and "the offset the search found" in header[0], header
    offset = float(header[0].split("nominal ")[1].split(" Å")[0])
    assert offset in (-40.0, -20.0, 0.0, 20.0, 40.0)
    values = [float(v) for v in header[0].split(": ")[1].split(" (")[0].split(", ")]
    np.testing.assert_allclose(values, np.array([-40.0, 10.0, 60.0]) + offset)
