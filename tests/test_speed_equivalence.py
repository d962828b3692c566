"""The fast paths equal the reference forms: MSD-net inference in strips vs the whole-image forward."""

import numpy as np
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


@pytest.mark.parametrize("width,group_size,strip_rows,threads",
                         [(1, 10, 16, 1), (1, 10, 1, 1), (2, 3, 7, 1), (1, 4, 500, 1), (1, 10, 16, 2), (2, 3, 5, 3)])
def test_strips_equal_whole_image_and_naive_float64(width, group_size, strip_rows, threads):
    """300x200 (no multiple of anything): reflect borders, strips crossing them, the last short strip; groups
    spread over 2 and 3 threads (each waiting for the rows of the previous group), the last on a helper thread."""
    torch.manual_seed(2)
    net = randomised(MSDNet(depth=23, width=width, group_size=group_size).double())
    x = torch.randn(2, 3, 300, 200, dtype=torch.float64)
    strips = models._msd_forward_strips(net, x, strip_rows, threads)
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
    monkeypatch.setattr(models, "_msd_forward_strips", lambda *args, **kwargs: calls.append(1) or torch.zeros(1))
    x = torch.randn(1, 3, 16, 16)
    with torch.inference_mode():
        net(x)
    assert calls == [1]
    net(x).sum().backward()  # training: autograd path, gradients reach the weights
    assert calls == [1] and net.final.weight.grad is not None


def abtem_pipeline_focal_series(atoms, optics, config, seed):
    """The previous body of `simulate_focal_series`: abTEM's Potential/FrozenPhonons, multislice, CTF ensemble,
    intensity, interpolate, as documented. The fast loop must give the same numbers (float32 rounding)."""
    import abtem

    from hrtemnet.simulation import configure_abtem, output_shape, phonon_sigmas, simulation_gpts, slice_thicknesses
    from hrtemnet.vibrations import load_vibration_table

    configure_abtem()
    height, width = output_shape(atoms, config.sampling_A)
    gpts = (simulation_gpts(width, config.oversampling), simulation_gpts(height, config.oversampling))
    structure = atoms
    if config.num_phonons:
        structure = abtem.FrozenPhonons(atoms, num_configs=config.num_phonons,
                                        sigmas=phonon_sigmas(atoms, load_vibration_table()), seed=seed)
    potential = abtem.Potential(structure, gpts=gpts, slice_thickness=slice_thicknesses(atoms),
                                projection="infinite", parametrization=config.parametrization)
    ctf = abtem.CTF(defocus=abtem.distributions.from_values(np.asarray(optics.defocus_A)), Cs=optics.cs_A,
                    astigmatism=optics.astigmatism_A, astigmatism_angle=optics.astigmatism_angle_rad,
                    focal_spread=optics.focal_spread_A, energy=optics.energy_eV)
    waves = abtem.PlaneWave(energy=optics.energy_eV).multislice(potential)
    array = np.asarray(waves.apply_ctf(ctf).intensity().interpolate(gpts=(width, height)).array)
    if config.num_phonons:
        array = array.mean(axis=1)
    return array.swapaxes(-1, -2)


@pytest.mark.parametrize("phonons,structure_seed", [(0, 103), (2, 101)])
def test_fast_multislice_equals_abtem_pipeline(phonons, structure_seed):
    """Same frozen-phonon configurations, slices, kernels: equal to float32 rounding."""
    from hrtemnet.simulation import OpticsParams, SimulationConfig, simulate_focal_series
    from hrtemnet.structures import random_structure

    optics = OpticsParams(defocus_A=(-40.0, 10.0, 60.0), cs_A=15e4, astigmatism_A=30.0,
                          astigmatism_angle_rad=0.7, focal_spread_A=30.0)
    config = SimulationConfig(num_phonons=phonons)
    atoms = random_structure(np.random.default_rng(structure_seed)).atoms
    fast = simulate_focal_series(atoms, optics, config, seed=5)
    reference = abtem_pipeline_focal_series(atoms, optics, config, seed=5)
    assert fast.shape == reference.shape and fast.dtype == np.float32
    np.testing.assert_allclose(fast, reference, atol=2e-5, rtol=0)


def test_strips_use_the_torch_thread_setting_and_leave_it():
    """`forward` under inference mode with 2 torch threads: groups on 2 threads (the last group and the output
    on the helper thread, which must run in the caller's inference mode), same outputs, setting unchanged."""
    net = randomised(MSDNet(depth=23, group_size=3).double())
    x = torch.randn(1, 3, 40, 30, dtype=torch.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            strips = net.forward_strips(x)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(strips, whole_image(net, x), rtol=1e-12, atol=1e-12)


def test_an_error_on_a_helper_thread_is_raised_not_waited_for(monkeypatch):
    from hrtemnet import msd_kernel

    step = msd_kernel.group_step

    def failing_in_group_1(maps, block, *args):
        if args[-3] == 3 + 3:  # `before` = 6: group 1, on the helper thread; the caller waits for its rows
            raise RuntimeError("helper failed")
        return step(maps, block, *args)

    monkeypatch.setattr(msd_kernel, "group_step", failing_in_group_1)
    net = MSDNet(depth=12, group_size=3)
    with pytest.raises(RuntimeError, match="helper failed"):
        models._msd_forward_strips(net, torch.randn(1, 3, 30, 30), 8, 2)
