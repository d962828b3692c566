import numpy as np
import pytest
import torch

from hrtemnet import models
from hrtemnet.errors import UserError
from hrtemnet.models import MSDNet, UNet, build_model, load_model, msd_dilation, normalize_series, save_model_bundle


def randomised(net, std=0.3):
    """Pelt's init has a zero final layer; random weights everywhere make every path visible."""
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, std)
    return net


def test_dilation_schedule_and_parameter_count():
    assert [msd_dilation(u) for u in range(23)] == [*range(1, 11), *range(1, 11), 1, 2, 3]
    net = MSDNet()
    assert [w.shape[1] for w in net.weights] == [3 + i for i in range(100)]
    assert sum(p.numel() for p in net.parameters()) == 47766
    assert torch.count_nonzero(net.final.weight) == 0  # Pelt: zero final layer
    assert float(net.weights[50].detach().std()) == pytest.approx(np.sqrt(2 / (9 * (3 + 99) + 4)), rel=0.1)


@pytest.mark.parametrize("layer", [0, 3, 9, 10, 12])
def test_each_layer_uses_its_dilation(layer):
    """An impulse through one corner tap of layer `layer` lands exactly `dilation` pixels away."""
    net = MSDNet(depth=13)
    with torch.no_grad():
        for w in net.weights:
            w.zero_()
        net.weights[layer][0, 0, 0, 0] = 1.0  # tap (row -1, col -1) on input channel 0
    x = torch.zeros(1, 3, 31, 31)
    x[0, 0, 15, 15] = 1.0
    maps = models._MSDLayers.apply(x, net.biases, net.group_size, net.width, *net.weights)
    out = maps[3 + layer, 0]
    d = msd_dilation(layer)
    assert out[15 + d, 15 + d] == 1.0 and out.sum() == 1.0


def test_layer_k_reads_exactly_the_input_and_earlier_layers():
    depth = 12
    torch.manual_seed(0)
    net = randomised(MSDNet(depth=depth, group_size=5), std=0.02)
    with torch.no_grad():
        # Small weights and large positive biases keep every ReLU open, so a zero gradient can only mean
        # "not connected"; with larger random weights a whole layer can be switched off and look disconnected.
        for b in net.biases:
            b.fill_(5.0)
    x = torch.randn(1, 3, 24, 24)
    for k in range(depth):
        maps = models._MSDLayers.apply(x, net.biases, net.group_size, net.width, *net.weights)
        grads = torch.autograd.grad(maps[3 + k].sum(), list(net.weights), allow_unused=True)
        own = grads[k]
        # every earlier map (and input channel) contributes to layer k ...
        assert own.shape[1] == 3 + k and (own.abs().sum(dim=(0, 2, 3)) > 0).all()
        # ... and no later layer does
        assert all(g is None or torch.count_nonzero(g) == 0 for g in grads[k + 1 :])


@pytest.mark.parametrize("width,group_size,shape", [(1, 10, (23, 17)), (2, 3, (16, 21)), (1, 1, (12, 12))])
def test_fast_msd_equals_naive_outputs_and_gradients(width, group_size, shape):
    torch.manual_seed(1)
    net = randomised(MSDNet(depth=14, width=width, group_size=group_size).double())
    x = torch.randn(2, 3, *shape, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 4, *shape, dtype=torch.float64)
    results = []
    for forward in (net.forward, net.forward_naive):
        net.zero_grad()
        x.grad = None
        y = forward(x)
        (y * weights).sum().backward()
        results.append((y.detach(), x.grad.clone(), [p.grad.clone() for p in net.parameters()]))
    (y_fast, gx_fast, gp_fast), (y_naive, gx_naive, gp_naive) = results
    torch.testing.assert_close(y_fast, y_naive, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx_fast, gx_naive, rtol=1e-11, atol=1e-11)
    for a, b in zip(gp_fast, gp_naive, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("depth,shape", [(4, (37, 50)), (3, (13, 21)), (2, (64, 64))])
def test_unet_handles_sizes_that_are_not_multiples_of_the_pooling(depth, shape):
    net = UNet(depth=depth, base_channels=4).eval()
    x = torch.randn(2, 3, *shape)
    assert net(x).shape == (2, 4, *shape)


@pytest.mark.parametrize("depth,shape", [(4, (37, 50)), (3, (13, 21)), (2, (9, 6)), (4, (32, 37)), (4, (37, 32))])
def test_unet_pads_at_the_bottom_and_right_so_pixels_keep_their_place(depth, shape):
    """Output pixel (row, col) belongs to input pixel (row, col): the network sees the input reflect-padded
    after its last row and column, so its output is the top-left crop of the output on that padded input.
    Padding on the other side (or cropping the wrong corner) moves every column by up to 2**depth - 1 px."""
    torch.manual_seed(3)
    net = UNet(depth=depth, base_channels=4).double().eval()
    x = torch.randn(1, 3, *shape, dtype=torch.float64)
    multiple = 2**depth
    pad_rows, pad_cols = -shape[0] % multiple, -shape[1] % multiple
    padded = torch.nn.functional.pad(x, (0, pad_cols, 0, pad_rows), mode="reflect")
    with torch.no_grad():
        out, out_padded = net(x), net(padded)
    torch.testing.assert_close(out, out_padded[..., : shape[0], : shape[1]], rtol=1e-10, atol=1e-12)
    # the check can fail: the bottom-right crop (what padding at the top-left would give) is another image
    wrong_corner = out_padded[..., -shape[0] :, -shape[1] :]
    assert (out - wrong_corner).abs().max() > 1e-3 * out.std()


def test_build_model_rejects_unknown_names_and_settings():
    assert isinstance(build_model("unet", base_channels=4), UNet)
    with pytest.raises(UserError, match="unknown model"):
        build_model("resnet")
    with pytest.raises(UserError, match="bad settings"):
        build_model("msd", base_channels=16)


def test_build_model_checks_sizes():
    assert build_model("msd", depth=1).depth == 1 and len(build_model("msd", depth=5).weights) == 5
    assert build_model("unet", base_channels=1, depth=1).depth == 1
    for bad in ({"depth": 0}, {"depth": 2.5}, {"depth": True}):
        with pytest.raises(UserError, match="bad settings"):
            build_model("msd", **bad)


def test_normalize_series_low_contrast_and_constant_images():
    """Per-image zero mean and unit std even for a contrast far below 1; a constant image becomes zeros."""
    rng = np.random.default_rng(1)
    series = np.stack([100 + 1e-3 * rng.normal(size=(16, 16)), np.full((16, 16), 7.0), rng.normal(size=(16, 16))])
    out = normalize_series(series)
    assert out[0].std() == pytest.approx(1, abs=1e-4) and abs(out[0].mean()) < 1e-4
    assert np.all(out[1] == 0)


def test_normalize_series_per_image():
    series = np.random.default_rng(0).normal(5, 3, (3, 20, 30)) * np.array([1, 2, 10])[:, None, None]
    out = normalize_series(series)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1, atol=1e-5)


def test_model_bundle_round_trip_and_bad_files(tmp_path, monkeypatch):
    net = randomised(MSDNet(depth=5), std=0.1)
    path = save_model_bundle(tmp_path / "m.pt", net, "msd", {"depth": 5}, 0.15, {"threshold": 0.4}, {"steps": 3})
    loaded = load_model(path)
    assert (loaded.name, loaded.kwargs, loaded.sampling_A, loaded.peak_params, loaded.card) == (
        "msd", {"depth": 5}, 0.15, {"threshold": 0.4}, {"steps": 3, "weights_dtype": "float32"})
    assert not loaded.net.training
    x = torch.randn(1, 3, 20, 20)
    torch.testing.assert_close(loaded.net(x), net(x))
    (tmp_path / "m.pt").rename(tmp_path / "best.pt")
    assert load_model(tmp_path).name == "msd"  # a training folder means its best.pt
    (tmp_path / "junk.pt").write_text("not a model")
    for spec in (tmp_path / "junk.pt", tmp_path / "missing.pt", tmp_path / "m.pt"):
        with pytest.raises(UserError):
            load_model(spec)
    monkeypatch.setattr(models, "SHIPPED_MODELS_DIR", tmp_path / "none")
    with pytest.raises(UserError, match="hrtemnet train"):
        load_model("unet")


# ---- flips and rotations (test-time augmentation) --------------------------------------------------------


@pytest.mark.parametrize("transform", range(models.NUM_DIHEDRAL))
def test_dihedral_is_the_same_for_numpy_and_torch_and_inverse_undoes_it(transform):
    array = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)  # not square: rotations swap the sides
    turned = models.dihedral(array, transform)
    np.testing.assert_array_equal(models.dihedral(torch.from_numpy(array), transform).numpy(), turned)
    np.testing.assert_array_equal(models.dihedral(turned, transform, inverse=True), array)
    np.testing.assert_array_equal(
        models.dihedral(models.dihedral(torch.from_numpy(array), transform), transform, inverse=True).numpy(), array)


def test_the_eight_views_are_all_different():
    views = {models.dihedral(np.arange(9).reshape(3, 3), t).tobytes() for t in range(models.NUM_DIHEDRAL)}
    assert len(views) == models.NUM_DIHEDRAL


def test_flip_average_is_exactly_equivariant_and_mean_of_the_views():
    """A network with no symmetry of its own (random 3x3 kernels) becomes exactly equivariant to the 8 flips/
    rotations when averaged; its output is the mean of the 8 views, each turned back onto the input's pixels."""
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    averaged = models.FlipAverage(net).eval()
    x = torch.randn(1, 3, 12, 16)
    with torch.no_grad():
        out = averaged(x)
        assert out.shape == (1, 4, 12, 16)
        assert not torch.allclose(out, net(x), atol=1e-3)  # the average is not the plain network ...
        views = [models.dihedral(net(models.dihedral(x, t)), t, inverse=True) for t in range(8)]
        torch.testing.assert_close(out, torch.stack(views).mean(0))  # ... but the mean of its 8 views
        for t in range(models.NUM_DIHEDRAL):
            torch.testing.assert_close(averaged(models.dihedral(x, t)), models.dihedral(out, t), atol=1e-5, rtol=0)


def test_flip_averaged_models_load_and_keep_their_settings(tmp_path):
    torch.manual_seed(0)
    path = save_model_bundle(tmp_path / "m.pt", build_model("msd", depth=3, in_channels=6), "msd",
                             {"depth": 3, "in_channels": 6}, 0.15, {"threshold": 0.4}, {"steps": 7})
    plain, averaged = load_model(path), load_model(path, flip_average=True)
    assert not plain.flip_average and averaged.flip_average and isinstance(averaged.net, models.FlipAverage)
    assert averaged.kwargs == plain.kwargs and averaged.card == plain.card and models.takes_defocus(averaged)
    assert models.with_flip_average(averaged) is averaged  # never averaged twice
    x = torch.from_numpy(models.network_input(np.random.default_rng(0).random((3, 32, 32)), [-40, 10, 60]))
    with torch.no_grad():  # the defocus planes are constant: each view of them is the same
        expected = torch.stack([models.dihedral(plain.net(models.dihedral(x[None], t)), t, inverse=True)
                                for t in range(8)]).mean(0)
        torch.testing.assert_close(averaged.net(x[None]), expected)


def test_the_card_records_the_stored_precision(tmp_path):
    net = build_model("unet", depth=2, base_channels=4)
    path = save_model_bundle(tmp_path / "u.pt", net, "unet", {"depth": 2, "base_channels": 4}, 0.15, {}, {},
                             weights_dtype=torch.float16)
    bundle = torch.load(path, weights_only=True)
    assert bundle["card"]["weights_dtype"] == "float16" and bundle["state_dict"]["head.weight"].dtype == torch.float16
    assert load_model(path).card["weights_dtype"] == "float16"
