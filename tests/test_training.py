import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hrtemnet import simulation, training
from hrtemnet.cli import app
from hrtemnet.columns import Columns
from hrtemnet.models import NominalDefocusError, dihedral
from hrtemnet.training import FocalSeriesDataset, TrainConfig, render_label_map, train

SAMPLING_A = 0.15


def honeycomb_columns(size_A: float, shift_A: float, rng) -> Columns:
    """Projected MoS2: Mo on a triangular lattice (a = 3.16 Å), S2 1.83 Å away; some S2 lose an S."""
    a = 3.16
    a1, a2 = np.array([a, 0.0]), np.array([a / 2, a * np.sqrt(3) / 2])
    ij = np.stack(np.meshgrid(np.arange(-3, 20), np.arange(-3, 20)), -1).reshape(-1, 2)
    mo = ij @ np.stack([a1, a2]) + shift_A
    s2 = mo + (a1 + a2) / 3
    xy = np.concatenate([mo, s2])
    cls = np.concatenate([np.zeros(len(mo)), np.where(rng.random(len(s2)) < 0.15, 2, 1)]).astype(int)
    inside = (xy >= 0).all(1) & (xy < size_A).all(1)
    return Columns(xy[inside], cls[inside])


class LatticeSource:
    """A tiny in-memory series source: Gaussian blobs, Mo dark, S2 darker at the 2nd defocus, S faint."""

    def __init__(self, n=4, size_px=48, seed=0):
        rng = np.random.default_rng(seed)
        self.sampling_A, self.image_shape = SAMPLING_A, (size_px, size_px)
        rows, cols = np.mgrid[:size_px, :size_px] * SAMPLING_A
        self.columns, self.images = [], []
        contrast = np.array([[0.5, 0.2, 0.1], [0.2, 0.5, 0.25], [0.3, 0.3, 0.1]])  # (class, defocus)
        for _ in range(n):
            columns = honeycomb_columns(size_px * SAMPLING_A, rng.uniform(0, 3, 2), rng)
            images = np.ones((3, size_px, size_px))
            for (x, y), c in zip(columns.xy_A, columns.class_index, strict=True):
                blob = np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * 0.3**2))
                images -= contrast[c][:, None, None] * blob
            self.columns.append(columns)
            self.images.append(images.astype(np.float32))

    def __len__(self):
        return len(self.images)

    def read_images(self, i):
        return self.images[i].copy()

    def read_columns(self, i):
        return self.columns[i]


def test_label_map_puts_the_class_on_the_right_pixel():
    columns = Columns(np.array([[3.0, 1.5], [0.0, 6.0]]), np.array([2, 0]))  # x along columns, y along rows
    labels = render_label_map(columns, (50, 40), SAMPLING_A, radius_A=0.45)
    assert labels[10, 20] == 3 and labels[40, 0] == 1  # (row = y / s, col = x / s), label 1 + class
    assert labels[20, 10] == 0
    assert (labels == 3).sum() == 29  # pixel centres within 3 px
    assert labels[10, 23] == 3 and labels[10, 24] == 0 and labels[13, 20] == 3


def test_flips_and_rotations_keep_images_and_targets_together(monkeypatch):
    monkeypatch.setattr(simulation, "add_imaging_noise", lambda images, s, rng, noise=None: (images, 1e5))
    source = LatticeSource(n=2)
    assert len({dihedral(np.arange(4).reshape(2, 2), t).tobytes() for t in range(8)}) == 8
    dataset = FocalSeriesDataset(source, crop_px=32, seed=3)
    for draw in range(8):
        series, labels = dataset[draw]
        assert series.shape == (3, 32, 32) and labels.shape == (32, 32)
        # Mo columns are the darkest spots of the first image: the target must sit on them.
        assert series[0][labels == 1].mean() < series[0][labels == 0].mean() - 1.0


def run_config(tmp_path, **kwargs):
    defaults = dict(dataset="mem", out_dir=str(tmp_path / "run"), model="msd", model_kwargs={"depth": 8},
                    steps=40, crop_px=32, batch_size=4, learning_rate=1e-2, val_every_steps=1000, val_images=1,
                    progress=False, seed=1)
    return TrainConfig(**(defaults | kwargs))


def log_lines(out_dir):
    return [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]


def test_a_few_steps_lower_the_loss_and_write_models(tmp_path):
    result = train(run_config(tmp_path), source=LatticeSource(n=4))
    losses = [line["loss"] for line in log_lines(tmp_path / "run") if "loss" in line]
    assert len(losses) == 40 and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert {"checkpoint", "log", "final", "best"} <= set(result.files)
    assert 0.0 <= result.best_val_f1 <= 1.0
    from hrtemnet.models import load_model

    model = load_model(result.files["best"])
    assert model.sampling_A == SAMPLING_A and "threshold" in model.peak_params
    assert tuple(model.peak_params["loss_class_weights"]) == training.DEFAULT_CLASS_WEIGHTS[1:]  # divided out


def test_resume_continues_at_the_saved_step_and_matches_an_uninterrupted_run(tmp_path, capsys):
    source = LatticeSource(n=4)
    full = train(run_config(tmp_path / "a", steps=6, model="unet", model_kwargs={"depth": 2, "base_channels": 4}),
                 source=source)
    config = run_config(tmp_path / "b", steps=4, model="unet", model_kwargs={"depth": 2, "base_channels": 4})
    train(config, source=source)
    with pytest.raises(training.UserError, match="--resume"):
        train(config, source=source)
    config.steps, config.resume = 6, True
    resumed = train(config, source=source)
    assert "at step 4 of 6" in capsys.readouterr().out
    assert resumed.steps == 6
    assert [line["step"] for line in log_lines(tmp_path / "b" / "run") if "loss" in line] == [1, 2, 3, 4, 5, 6]
    a, b = (torch.load(r.files["checkpoint"], weights_only=False)["model"] for r in (full, resumed))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)
    # a script that always passes --resume: the first call starts at step 0
    fresh = run_config(tmp_path / "c", steps=2, model="unet", model_kwargs={"depth": 2, "base_channels": 4},
                       resume=True)
    assert train(fresh, source=source).steps == 2
    assert "no checkpoint" in capsys.readouterr().out


def test_crop_drawing_processes_do_not_change_the_run(tmp_path):
    kwargs = {"steps": 4, "model": "unet", "model_kwargs": {"depth": 2, "base_channels": 4}}
    inline = train(run_config(tmp_path / "a", **kwargs), source=LatticeSource(n=4))
    workers = train(run_config(tmp_path / "b", loader_workers=2, **kwargs), source=LatticeSource(n=4))
    a, b = (torch.load(r.files["checkpoint"], weights_only=False)["model"] for r in (inline, workers))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("model,model_kwargs", [("unet", {"depth": 2, "base_channels": 4}), ("msd", {"depth": 8})])
def test_training_on_a_gpu_follows_the_cpu_run(tmp_path, model, model_kwargs):
    kwargs = {"steps": 4, "model": model, "model_kwargs": model_kwargs}
    train(run_config(tmp_path / "cpu", **kwargs), source=LatticeSource(n=4))
    gpu = train(run_config(tmp_path / "gpu", device="cuda", loader_workers=2, **kwargs), source=LatticeSource(n=4))
    cpu_losses, gpu_losses = ([line["loss"] for line in log_lines(tmp_path / name / "run") if "loss" in line]
                              for name in ("cpu", "gpu"))
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=2e-2)  # TF32 matrix multiplies on the GPU
    assert gpu.files["final"].exists()


def test_cosine_schedule_anneals_to_zero_on_the_step_budget(tmp_path):
    config = TrainConfig(dataset="-", out_dir="-", steps=100, learning_rate=1e-3, lr_schedule="cosine")
    rates = [training.learning_rate_at(config, step) for step in (0, 50, 100)]
    np.testing.assert_allclose(rates, [1e-3, 5e-4, 0.0], atol=1e-12)
    assert training.learning_rate_at(TrainConfig(dataset="-", out_dir="-", steps=100), 99) == 1e-3  # constant

    kwargs = {"steps": 6, "model": "unet", "model_kwargs": {"depth": 2, "base_channels": 4}}
    cosine = run_config(tmp_path / "cos", lr_schedule="cosine", **kwargs)
    train(cosine, source=LatticeSource(n=4))
    logged = [line["lr"] for line in log_lines(tmp_path / "cos" / "run") if "loss" in line]
    np.testing.assert_allclose(logged, [training.learning_rate_at(cosine, step) for step in range(6)])
    assert logged[0] == cosine.learning_rate > logged[-1] > 0
    train(run_config(tmp_path / "const", **kwargs), source=LatticeSource(n=4))
    assert {line["lr"] for line in log_lines(tmp_path / "const" / "run") if "loss" in line} == {1e-2}


@pytest.mark.parametrize("args,message", [
    (["--model", "resnet"], "unknown model"),
    (["--model", "msd", "--crop", "64"], "--crop 64"),
    (["--model", "msd", "--crop", "32", "--lr-schedule", "linear"], "--lr-schedule 'linear'"),
    (["--model", "msd", "--crop", "32", "--device", "meta"], "only cpu and cuda"),
    (["--model", "msd", "--crop", "32", "--device", "gpu0"], "is not a device"),
    (["--model", "msd", "--crop", "32", "--loader-workers", "-1"], "--loader-workers"),
    pytest.param(["--model", "msd", "--crop", "32", "--device", "cuda"], "no CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_cli_bad_input_exit_code_2(tmp_path, monkeypatch, args, message):
    monkeypatch.setattr(training, "_open_source", lambda path: LatticeSource(n=2))
    result = CliRunner().invoke(app, ["train", "data.zarr", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_cli_dataset_that_is_not_a_store(tmp_path):
    (tmp_path / "x.zarr").write_text("nope")
    for path in (tmp_path / "x.zarr", tmp_path / "missing.zarr"):
        result = CliRunner().invoke(app, ["train", str(path), "--model", "msd", "--out", str(tmp_path / "o")])
        assert result.exit_code == 2 and result.output.count("\n") <= 2, result.output


def test_init_from_starts_at_the_given_weights_and_checks_the_architecture(tmp_path):
    from hrtemnet.models import load_model

    source = LatticeSource(n=4)
    unet = {"depth": 2, "base_channels": 4}
    first = train(run_config(tmp_path / "a", steps=3, model="unet", model_kwargs=unet), source=source)
    # a vanishing learning rate: after one step the weights are still those of the file
    config = run_config(tmp_path / "b", steps=1, model="unet", model_kwargs={}, learning_rate=1e-12, seed=5)
    config.init_from = str(first.files["final"])
    second = train(config, source=source)
    start, continued = load_model(first.files["final"]), load_model(second.files["final"])
    assert continued.kwargs == unet  # the size comes from the file
    assert continued.card["initialised_from"]["steps"] == 3
    for a, b in zip(start.net.parameters(), continued.net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    fresh = train(run_config(tmp_path / "c", steps=1, model="unet", model_kwargs=unet, learning_rate=1e-12, seed=5),
                  source=source)
    assert not all(torch.equal(a, b) for a, b in zip(start.net.parameters(), load_model(fresh.files["final"]).net
                                                      .parameters(), strict=True))
    for model, kwargs, message in (("msd", {}, "not msd"), ("unet", {"depth": 3}, "drop --depth")):
        bad = run_config(tmp_path / f"bad_{model}", steps=1, model=model, model_kwargs=kwargs)
        bad.init_from = str(first.files["final"])
        with pytest.raises(training.UserError, match=message):
            train(bad, source=source)


class DefocusLatticeSource(LatticeSource):
    """LatticeSource with recorded defocus per series, as a store's read_params gives it."""

    def read_params(self, i):
        return {"sample_seed": i, "defocus_0_A": -40.0 + i, "defocus_1_A": 10.0 + i, "defocus_2_A": 60.0 + i}


def test_defocus_inputs_follow_the_images_and_leave_the_paired_draws_unchanged():
    source = DefocusLatticeSource(n=3)
    error = NominalDefocusError(offset_sigma_A=20.0, step_sigma_A=5.0)
    for crop in (32, None):
        plain = FocalSeriesDataset(source, crop_px=crop, seed=4)
        conditioned = FocalSeriesDataset(source, crop_px=crop, seed=4, defocus_error=error)
        nominal = []
        for item in range(3):
            (x, labels), (xc, labels_c) = plain[item], conditioned[item]
            assert xc.shape[0] == 6 and x.shape[0] == 3
            torch.testing.assert_close(xc[:3], x, rtol=0, atol=0)  # same crop, noise and flip as image-only
            assert torch.equal(labels_c, labels)
            planes = xc[3:].numpy()
            assert np.ptp(planes, axis=(1, 2)).max() == 0  # constant planes, whatever the flip
            nominal.append(planes[:, 0, 0] * 100.0)
        nominal = np.array(nominal)
        assert np.all(np.diff(nominal, axis=1) > 30)  # the 50 Å steps survive a 5 Å step error
        if crop is None:  # validation: series item, true defocus -40+i, 10+i, 60+i, off by < 4 sigma
            truth = np.array([[-40.0 + i, 10.0 + i, 60.0 + i] for i in range(3)])
            assert np.all(np.abs(nominal - truth) < 4 * (20 + 2 * 5)) and not np.allclose(nominal, truth)
        again = FocalSeriesDataset(source, crop_px=crop, seed=4, defocus_error=error)
        assert torch.equal(again[1][0], conditioned[1][0])  # reproducible from the seed


@pytest.mark.parametrize("name, kwargs", [("msd", {"depth": 6}), ("unet", {"depth": 2, "base_channels": 4})])
def test_an_image_only_model_with_defocus_inputs_added_computes_the_same(name, kwargs):
    from hrtemnet.models import add_defocus_inputs, build_model, network_input

    torch.manual_seed(0)
    plain, conditioned = build_model(name, **kwargs).eval(), build_model(name, **kwargs, in_channels=6).eval()
    conditioned.load_state_dict(add_defocus_inputs(plain.state_dict(), conditioned))
    series = np.random.default_rng(0).normal(size=(3, 40, 40))
    with torch.no_grad():
        expected = plain(torch.from_numpy(network_input(series))[None])
        got = conditioned(torch.from_numpy(network_input(series, [-40.0, 10.0, 60.0]))[None])
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        for parameter in conditioned.parameters():
            if parameter.dim() == 4 and parameter.shape[1] >= 6:
                parameter.data[:, 3:6] += 0.1  # once trained, the planes do reach the output
        moved = conditioned(torch.from_numpy(network_input(series, [-40.0, 10.0, 60.0]))[None])
    assert not torch.allclose(moved, expected)
    with pytest.raises(training.UserError, match="one per image"):
        network_input(series, [-40.0, 10.0])


def test_training_with_defocus_input_from_an_image_only_model(tmp_path):
    from hrtemnet.models import load_model, takes_defocus

    source = DefocusLatticeSource(n=4)
    unet = {"depth": 2, "base_channels": 4}
    first = train(run_config(tmp_path / "a", steps=2, model="unet", model_kwargs=unet), source=source)
    config = run_config(tmp_path / "b", steps=2, model="unet", model_kwargs={}, defocus_input=True,
                        init_from=str(first.files["final"]))
    second = load_model(train(config, source=source).files["final"])
    assert takes_defocus(second) and second.kwargs["in_channels"] == 6
    assert second.card["defocus_input"] == {"offset_sigma_A": 20.0, "step_sigma_A": 5.0, "scale_A": 100.0}
    assert load_model(first.files["final"]).card["defocus_input"] is None
    with pytest.raises(training.UserError, match="records each series' defocus"):
        train(run_config(tmp_path / "c", steps=1, defocus_input=True), source=LatticeSource(n=2))


def test_several_stores_are_drawn_from_by_their_share_of_the_series():
    from hrtemnet.dataset import ConcatenatedStores

    small, large, reads = LatticeSource(n=1, seed=1), LatticeSource(n=3, seed=2), []
    for name, store in (("small", small), ("large", large)):
        store.read_images = lambda i, name=name, read=store.read_images: (reads.append(name), read(i))[1]
    dataset = FocalSeriesDataset(ConcatenatedStores([small, large]), crop_px=32, seed=0)
    for n in range(200):
        dataset[n]
    assert 0.15 < reads.count("small") / len(reads) < 0.35  # 1 of 4 series


def test_cli_trains_on_several_stores_with_a_validation_store(tmp_path, monkeypatch):
    from hrtemnet.dataset import ConcatenatedStores
    from hrtemnet.models import load_model

    opened = []

    def fake_open(dataset):
        opened.append(training.dataset_paths(dataset))
        return ConcatenatedStores([LatticeSource(n=2, seed=k) for k in range(len(opened[-1]))])

    monkeypatch.setattr(training, "_open_source", fake_open)
    out = tmp_path / "run"
    args = ["train", "a.zarr", "b.zarr", "--model", "msd", "--depth", "4", "--crop", "32", "--steps", "2",
            "--val-images", "1", "--out", str(out)]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "--val" in refused.output and refused.output.count("\n") <= 2
    result = CliRunner().invoke(app, [*args, "--val", "v.zarr"])
    assert result.exit_code == 0, result.output
    assert opened[-2:] == [["a.zarr", "b.zarr"], ["v.zarr"]]
    card = load_model(out / "final.pt").card
    assert card["dataset"] == ["a.zarr", "b.zarr"] and card["training_series"] == 4
