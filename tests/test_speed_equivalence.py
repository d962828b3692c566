"""The fast paths equal the reference forms: MSD-net inference in strips vs the whole-image forward."""

import pytest
import torch

from hrtemnet import models
from hrtemnet.models import MSDNet, load_model


def randomised(net, std=0.3):
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, std)
    return net


def whole_image(net, x):
    """The training forward (`_MSDLayers` over the whole image), the form the strips must reproduce."""
    with torch.no_grad():
        return net._final(models._MSDLayers.apply(x, net.biases, net.group_size, net.width, *net.weights))


@pytest.mark.parametrize("width,group_size,strip_rows", [(1, 10, 16), (1, 10, 1), (2, 3, 7), (1, 4, 500)])
def test_strips_equal_whole_image_and_naive_float64(width, group_size, strip_rows):
    """300x200 (no multiple of anything): reflect borders, strips crossing them, the last short strip."""
    torch.manual_seed(2)
    net = randomised(MSDNet(depth=23, width=width, group_size=group_size).double())
    x = torch.randn(2, 3, 300, 200, dtype=torch.float64)
    strips = net.forward_strips(x, strip_rows)
    torch.testing.assert_close(strips, whole_image(net, x), rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(strips, net.forward_naive(x), rtol=1e-12, atol=1e-12)


def test_strips_reproduce_reflect_borders_of_small_images():
    """Images barely larger than the largest dilation (10): every strip is a border strip."""
    torch.manual_seed(3)
    net = randomised(MSDNet(depth=12).double())
    for shape in [(11, 13), (12, 40), (37, 11)]:
        x = torch.randn(1, 3, *shape, dtype=torch.float64)
        torch.testing.assert_close(net.forward_strips(x, 4), whole_image(net, x), rtol=1e-12, atol=1e-12)


def test_shipped_msd_strips_equal_whole_image_float32():
    """The shipped network on a normalised 300x200 series: equal to float32 rounding."""
    net = load_model("msd").net
    x = torch.randn(1, 3, 300, 200)
    reference = whole_image(net, x)
    strips = net.forward_strips(x)
    scale = reference.abs().max()
    assert float((strips - reference).abs().max()) <= 1e-5 * float(scale)
    assert torch.equal(strips.argmax(1), reference.argmax(1)) or float(
        (strips.argmax(1) != reference.argmax(1)).float().mean()) < 1e-4


def test_forward_uses_strips_only_without_gradients(monkeypatch):
    net = MSDNet(depth=3)
    calls = []
    monkeypatch.setattr(models, "MSD_STRIPS_MIN_PIXELS", 0)
    monkeypatch.setattr(models, "_msd_forward_strips", lambda *args: calls.append(1) or torch.zeros(1))
    x = torch.randn(1, 3, 16, 16)
    with torch.inference_mode():
        net(x)
    assert calls == [1]
    net(x).sum().backward()  # training: autograd path, gradients reach the weights
    assert calls == [1] and net.final.weight.grad is not None
