import numpy as np
import pytest
from ase import Atoms
from ase.io import write
from typer.testing import CliRunner

from hrtemnet.cli import app
from hrtemnet.structures import StructureConfig, random_structure

runner = CliRunner()


def one_line_error(result):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert "Traceback" not in result.output
    return lines


@pytest.fixture
def structure_file(tmp_path):
    path = tmp_path / "mos2.extxyz"
    write(path, random_structure(np.random.default_rng(0), StructureConfig(carbon_probability=0.0)).atoms)
    return path


def test_simulate_series_agrees_with_plain_abtem(structure_file, tmp_path):
    import abtem
    from ase.io import read

    out = tmp_path / "series.npy"
    result = runner.invoke(app, ["simulate-series", str(structure_file), "-o", str(out), "--no-noise"])
    assert result.exit_code == 0, result.output
    series = np.load(out)
    assert series.shape == (3, 256, 256) and series.dtype == np.float32
    # the plain documented abTEM usage: default slicing, sampling 0.05 Å, lazy compute per defocus
    atoms = read(structure_file)
    potential = abtem.Potential(atoms, sampling=0.05)
    for index, defocus in enumerate((-30.0, 20.0, 70.0)):
        ctf = abtem.CTF(defocus=defocus, Cs=14.29e4, astigmatism=34.27, astigmatism_angle=0.0, focal_spread=30,
                        energy=50e3)
        wave = abtem.PlaneWave(energy=50e3).multislice(potential).apply_ctf(ctf)
        image = wave.intensity().interpolate(sampling=0.15).compute().array.T
        h, w = min(image.shape[0], 256), min(image.shape[1], 256)
        r = np.corrcoef(image[:h, :w].ravel(), series[index, :h, :w].ravel())[0, 1]
        assert r >= 0.99, (defocus, r)


def test_simulate_series_with_dose_adds_noise_of_the_poisson_variance(tmp_path):
    """`--dose D` adds counting noise of variance I / (D s²) per pixel (I: noise-free intensity, s: pixel size).

    The command then blurs with a detector point spread of random width (0.3-0.8 px), which lowers the pixel
    variance by an unknown factor but passes the lowest spatial frequencies unchanged (transfer 1 at k = 0),
    so the noise power is measured there: the mean |FFT|² / N over 0 < |k| <= 0.04 cycles/px, where the
    widest blur still passes > 96 % of the power. A lone atom keeps the image nearly flat, so the noise-free
    image has almost no power at those frequencies to get mixed in.
    """
    structure = tmp_path / "atom.extxyz"
    write(structure, Atoms("Mo", positions=[(19.0, 19.0, 2.0)], cell=[38.4, 38.4, 4.0], pbc=True))
    dose, sampling = 2e4, 0.2
    args = ["simulate-series", str(structure), "--defocus=-20,30,80", "--sampling", str(sampling), "--seed", "5"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "noisy.npy"), "--dose", f"{dose:g}"])
    assert result.exit_code == 0, result.output
    assert f"dose {dose:g}" in result.output
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "clean.npy"), "--no-noise"])
    assert result.exit_code == 0, result.output
    noisy, clean = np.load(tmp_path / "noisy.npy"), np.load(tmp_path / "clean.npy")
    assert noisy.shape == clean.shape == (3, 192, 192)
    assert noisy.mean() == pytest.approx(clean.mean(), abs=2e-3)  # Poisson noise has zero mean
    noise = (noisy - clean).astype(np.float64)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(192), np.fft.fftfreq(192), indexing="ij"))
    low = (k > 0) & (k <= 0.04)
    power = np.abs(np.fft.fft2(noise)) ** 2 / noise[0].size
    expected = clean.mean() / (dose * sampling**2)  # white-noise power = pixel variance
    measured = power[:, low].mean()
    # measured over seeds 0-11: 0.96-1.24 (mean 1.08); a dose off by 2x, s for s² or no noise fall far outside
    assert 0.8 < measured / expected < 1.4, (measured, expected)


def test_structure_without_cell_is_a_clear_error(tmp_path):
    path = tmp_path / "nocell.xyz"
    write(path, Atoms("MoS2", positions=[(0, 0, 0), (1, 1, 1), (1, 1, -1)]))
    lines = one_line_error(runner.invoke(app, ["simulate-series", str(path), "-o", str(tmp_path / "o.npy")]))
    assert "no cell" in lines[-1]


def test_empty_structure_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.extxyz"
    write(path, Atoms(cell=[10, 10, 10], pbc=True))
    lines = one_line_error(runner.invoke(app, ["simulate-series", str(path), "-o", str(tmp_path / "o.npy")]))
    assert "no atoms" in lines[-1]


def test_negative_dose_and_missing_file_and_unknown_option(structure_file, tmp_path):
    lines = one_line_error(runner.invoke(app, ["simulate-series", str(structure_file), "-o",
                                               str(tmp_path / "o.npy"), "--dose", "-5"]))
    assert "--dose" in lines[-1]
    lines = one_line_error(runner.invoke(app, ["simulate-series", str(tmp_path / "nope.cif"), "-o",
                                               str(tmp_path / "o.npy")]))
    assert "does not exist" in lines[-1]
    result = runner.invoke(app, ["simulate-series", str(structure_file), "--bogus"])
    assert result.exit_code == 2 and "No such option" in result.output


def test_simulate_writes_a_store_and_resumes(tmp_path):
    out = tmp_path / "d.zarr"
    config = tmp_path / "c.json"
    config.write_text('{"structure": {"field_of_view_A": [12.0, 12.0]}}')
    args = ["simulate", str(out), "--n", "2", "--seed", "4", "--workers", "0", "--phonons", "0",
            "--config", str(config)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "simulated 2 series" in result.output
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "nothing to do" in result.output
    lines = one_line_error(runner.invoke(app, ["simulate", str(out), "--n", "0"]))
    assert "--n" in lines[-1]
