"""HRTEM focal-series simulation with abTEM, and the imaging noise applied on the fly in training.

Speed comes from three choices measured on these machines (benchmarks/simulation.py):
one exit wave per frozen-phonon configuration serves all defocus values (the three CTFs are an
ensemble axis of one abTEM CTF), the grid is a fast FFT size at twice the output sampling, and
there is one slice per atomic plane. Outputs are Fourier-cropped to the output sampling, so the
pixel (row, col) centre stays at (x, y) = (col * s, row * s).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from scipy import fft as sp_fft
from scipy.ndimage import gaussian_filter

from hrtemnet.errors import UserError
from hrtemnet.validation import validate_config
from hrtemnet.vibrations import VibrationTable, per_atom_sigmas, vibration_table_for

DEFAULT_ENERGY_EV = 50e3
MAX_SLICE_THICKNESS_A = 4.0  # slices are split beyond this: vacuum needs no more, dense material gets thin slices


@dataclass
class OpticsParams:
    """Microscope settings of one focal series (abTEM's convention: positive defocus = underfocus)."""

    defocus_A: tuple[float, ...] = (-30.0, 20.0, 70.0)
    cs_A: float = 14.29e4
    astigmatism_A: float = 0.0
    astigmatism_angle_rad: float = 0.0
    focal_spread_A: float = 30.0  # 1/e width, as abTEM and Kirkland define it
    energy_eV: float = DEFAULT_ENERGY_EV

    def validate(self) -> OpticsParams:
        validate_config(self)  # every field finite, lengths >= 0 (hrtemnet.validation)
        defocus = np.asarray(self.defocus_A, dtype=float)
        if len(defocus) == 0 or not np.all(np.isfinite(defocus)):
            raise UserError("defocus must be one or more finite values in Å, e.g. -30,20,70")
        if np.any(np.diff(defocus) <= 0):
            raise UserError("defocus values must be strictly increasing (the order of acquisition)")
        if not 1e3 <= self.energy_eV <= 3e6:
            raise UserError(f"energy {self.energy_eV} eV is outside 1 keV - 3 MeV; give it in eV, e.g. 50000")
        if not 0 <= self.cs_A <= 1e8:
            raise UserError(f"Cs {self.cs_A / 1e4:g} µm is outside 0 - 10 mm")
        if self.astigmatism_A < 0 or self.focal_spread_A < 0:
            raise UserError("astigmatism and focal spread must not be negative")
        return self


@dataclass
class OpticsRanges:
    """Ranges the optics of a training sample are drawn from (docs/training_distribution.md), uniform unless stated."""

    # Focal series as people take them: the absolute defocus is known poorly, the step roughly.
    first_defocus_A_range: tuple[float, float] = (-150.0, 100.0)
    defocus_step_A_range: tuple[float, float] = (20.0, 120.0)
    num_defocus: int = 3
    cs_A_range: tuple[float, float] = (5e4, 25e4)
    astigmatism_A_range: tuple[float, float] = (0.0, 50.0)
    focal_spread_A_range: tuple[float, float] = (20.0, 40.0)
    energy_eV: float = DEFAULT_ENERGY_EV

    def draw(self, rng: np.random.Generator) -> OpticsParams:
        first = rng.uniform(*self.first_defocus_A_range)
        steps = rng.uniform(*self.defocus_step_A_range, size=self.num_defocus - 1)
        return OpticsParams(
            defocus_A=tuple(float(v) for v in np.concatenate([[first], first + np.cumsum(steps)])),
            cs_A=float(rng.uniform(*self.cs_A_range)),
            astigmatism_A=float(rng.uniform(*self.astigmatism_A_range)),
            astigmatism_angle_rad=float(rng.uniform(0, np.pi)),
            focal_spread_A=float(rng.uniform(*self.focal_spread_A_range)),
            energy_eV=self.energy_eV,
        )


@dataclass
class SimulationConfig:
    """Numerical settings of the multislice simulation."""

    sampling_A: float = 0.15  # output pixel size
    oversampling: int = 2  # simulation grid is this much finer than the output
    num_phonons: int = 4  # frozen-phonon configurations averaged; 0 = static lattice
    parametrization: str = "lobato"

    def validate(self) -> SimulationConfig:
        validate_config(self)
        if not 0.01 <= self.sampling_A <= 2.0:
            raise UserError(f"sampling {self.sampling_A} Å/px is outside 0.01 - 2 Å/px")
        if self.oversampling < 1 or self.num_phonons < 0:
            raise UserError("oversampling must be >= 1 and the number of phonon configurations >= 0")
        return self


@dataclass
class CameraConfig:
    """A camera after its gain reference: what is left of it in the recorded image, drawn per series.

    Electrons are counted with a gain (counts per electron) and a residual per-pixel gain non-uniformity,
    read noise is added, counts are offset and rounded to integers; the image is then calibrated back
    (offset subtracted, divided by the gain and the electrons per pixel), so its mean stays the noise-free
    mean. Gain matters through integer rounding (quantisation) at low gain; read noise at low dose.
    """

    gain_counts_per_e_range: tuple[float, float] = (0.5, 10.0)
    offset_counts_range: tuple[float, float] = (0.0, 100.0)
    read_noise_e_range: tuple[float, float] = (0.0, 2.0)  # rms, in electrons per pixel
    gain_nonuniformity_range: tuple[float, float] = (0.0, 0.02)  # rms relative per-pixel gain error
    pixel_mtf: bool = True  # the pixel's square aperture: sinc(f_x s) sinc(f_y s) on the intensity


@dataclass
class NoiseConfig:
    """Imaging noise applied to noise-free intensities (vacuum intensity = 1), drawn per series in this order:
    pixel aperture MTF, Poisson counting at the dose, detector point spread (a Gaussian), camera.

    The one noise model of the project: training draws from it on the fly, `evaluate` and the demo use it with
    the seed rule of `noise_rng`, and model cards record it."""

    dose_e_per_A2_range: tuple[float, float] = (1e3, 1e5)  # drawn log-uniform
    dose_e_per_A2: float | None = None  # fixed dose instead of the range
    blur_sigma_px_range: tuple[float, float] = (0.3, 0.8)  # detector MTF as a Gaussian, in output px
    camera: CameraConfig | None = field(default_factory=CameraConfig)  # None: ideal counting, no camera

    @classmethod
    def from_dict(cls, data: dict | None) -> NoiseConfig:
        """From `asdict` output (model cards, run configs); lists become tuples."""
        if data is None:
            return cls()
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        camera = data.pop("camera", None)
        camera = None if camera is None else CameraConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in camera.items()})
        return cls(**data, camera=camera)


_abtem_configured = False  # abTEM's config is global to the process: set it once


def configure_abtem() -> None:
    """Eager arrays and single-threaded FFTW (tasks are parallel, not transforms); once per process.

    FFTW_MEASURE planning costs ~0.4 s once per process and shape, then halves every transform
    (benchmarks/simulation.py: 0.6 vs 1.2 s per 8-phonon series with FFTW_ESTIMATE).
    """
    global _abtem_configured
    if _abtem_configured:
        return
    import abtem

    abtem.config.set({"dask.lazy": False, "fftw.planning_effort": "FFTW_MEASURE", "fftw.threads": 1,
                      "diagnostics.progress_bar": False})
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # for thread pools started after this (not numpy's)
    _abtem_configured = True


def output_shape(atoms: Atoms, sampling_A: float) -> tuple[int, int]:
    """(H, W) in output pixels of the cell's xy extent."""
    return int(round(atoms.cell[1, 1] / sampling_A)), int(round(atoms.cell[0, 0] / sampling_A))


def simulation_gpts(n_output: int, oversampling: int) -> int:
    """Smallest fast FFT size at least `oversampling` times the output size."""
    return int(sp_fft.next_fast_len(n_output * oversampling, real=False))


def slice_thicknesses(atoms: Atoms) -> tuple[float, ...]:
    """One slice per atomic plane (boundaries half-way between planes); thick gaps are subdivided."""
    from hrtemnet.structures import atomic_plane_boundaries

    thicknesses = []
    for thickness in atomic_plane_boundaries(atoms):
        pieces = max(1, int(np.ceil(thickness / MAX_SLICE_THICKNESS_A)))
        thicknesses += [thickness / pieces] * pieces
    return tuple(thicknesses)


def validate_atoms(atoms: Atoms) -> Atoms:
    if len(atoms) == 0:
        raise UserError("the structure has no atoms")
    cell = np.asarray(atoms.cell)
    if np.any(np.abs(np.diag(cell)) < 1e-6):
        raise UserError("the structure has no cell (or a zero-length cell vector); give a file with a cell, "
                        "e.g. extxyz with Lattice=..., cif, or traj")
    off_diagonal = cell - np.diag(np.diag(cell))
    if np.any(np.abs(off_diagonal) > 1e-6):
        import abtem

        try:
            atoms = abtem.orthogonalize_cell(atoms)
        except Exception as error:  # abTEM explains what failed; we only say what to do
            raise UserError(f"could not make the cell orthogonal for multislice ({error}); "
                            "give a structure with an orthogonal (rectangular) cell") from None
    if not np.all(np.isfinite(atoms.positions)):
        raise UserError("the structure has non-finite atomic positions")
    return atoms


def phonon_sigmas(atoms: Atoms, vibration_table: VibrationTable) -> np.ndarray:
    """Per-atom (σx, σy, σz) in Å from the (element, coordination) table."""
    sigma_xy, sigma_z = per_atom_sigmas(atoms, vibration_table)
    return np.stack([sigma_xy, sigma_xy, sigma_z], axis=1)


# ---- the multislice loop (abTEM's physics and arrays, our loop over all configurations at once) -------------

_FFT_PLANS: dict = {}  # (buffer name, shape) -> pyfftw plans on aligned buffers, kept for the process
_FOURIER_ARRAYS: dict = {}  # scattering factors, apertures, propagators per grid: computed once per process
_wisdom_loaded = False


def _cache_folder() -> str:
    """~/.cache/hrtemnet (or $XDG_CACHE_HOME/hrtemnet): what a fresh worker process would otherwise recompute."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "hrtemnet")


def _fftw_wisdom_path() -> str:
    return os.path.join(_cache_folder(), "fftw_wisdom.json")


def _fft_plans(name: str, shape: tuple[int, int, int], real: bool = False) -> tuple:
    """Unnormalised single-threaded FFTW plans over the last two axes on buffers of their own, made once per
    process, name and shape. FFTW_MEASURE planning costs seconds per shape, so its wisdom is kept in a cache
    file (~/.cache/hrtemnet) that fresh worker processes load instead of measuring again. The file is JSON
    (base64 text of FFTW's wisdom strings), never a pickle: whoever can write to the cache must not be able
    to run code in this process.
    Complex: (buffer, forward, backward), in place. Real: (real buffer, half spectrum, r2c, c2r)."""
    global _wisdom_loaded
    import base64
    import json

    import pyfftw

    key = (name, shape, real)
    if key in _FFT_PLANS:
        return _FFT_PLANS[key]
    path = _fftw_wisdom_path()
    if not _wisdom_loaded:
        _wisdom_loaded = True
        try:
            with open(path) as file:
                pyfftw.import_wisdom(tuple(base64.b64decode(text) for text in json.load(file)["wisdom"]))
        except Exception:  # no cache yet or an unreadable one: measure
            pass
    wisdom = pyfftw.export_wisdom()
    flags, axes = ("FFTW_MEASURE", "FFTW_DESTROY_INPUT"), (-2, -1)
    if real:
        data = pyfftw.empty_aligned(shape, dtype="float32")
        spectrum = pyfftw.empty_aligned((*shape[:-1], shape[-1] // 2 + 1), dtype="complex64")
        plans = (data, spectrum, pyfftw.FFTW(data, spectrum, axes=axes, direction="FFTW_FORWARD", flags=flags),
                 pyfftw.FFTW(spectrum, data, axes=axes, direction="FFTW_BACKWARD", flags=flags))
    else:
        data = pyfftw.empty_aligned(shape, dtype="complex64")
        plans = (data, pyfftw.FFTW(data, data, axes=axes, direction="FFTW_FORWARD", flags=flags),
                 pyfftw.FFTW(data, data, axes=axes, direction="FFTW_BACKWARD", flags=flags))
    _FFT_PLANS[key] = plans
    if pyfftw.export_wisdom() != wisdom:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as file:
                json.dump({"wisdom": [base64.b64encode(w).decode() for w in pyfftw.export_wisdom()]}, file)
            os.replace(tmp, path)
        except OSError:  # read-only home: measure again next time
            pass
    return plans


def _fourier_array(key: tuple, make) -> np.ndarray:
    if key not in _FOURIER_ARRAYS:
        if len(_FOURIER_ARRAYS) > 512:
            _FOURIER_ARRAYS.clear()
        _FOURIER_ARRAYS[key] = make()
    return _FOURIER_ARRAYS[key]


def _potential_kernel(symbol: str, gpts: tuple[int, int], sampling: tuple[float, float],
                      parametrization: str) -> np.ndarray:
    """abTEM's infinite-projection kernel of one element (projected scattering factor / pixel sinc), as the
    half spectrum of a real-to-complex transform, divided by the grid size (our transforms are unnormalised).

    Kept in memory for the process and in the cache folder for the next one: abTEM evaluates the scattering
    factor with a numba function compiled on its first call, which costs a fresh process about a second."""
    def compute():
        from abtem.integrals import ScatteringFactorProjectionIntegrals, sinc

        factor = ScatteringFactorProjectionIntegrals(parametrization).get_scattering_factor(
            symbol, gpts, sampling, "cpu") / sinc(gpts, sampling, "cpu")
        return (factor[:, : gpts[1] // 2 + 1] / (gpts[0] * gpts[1])).astype(np.complex64)

    key = ("potential", symbol, gpts, sampling, parametrization)
    return _fourier_array(key, lambda: _disk_cached(key, (gpts[0], gpts[1] // 2 + 1), np.complex64, compute))


def _disk_cached(key: tuple, shape: tuple[int, ...], dtype, compute) -> np.ndarray:
    """`compute()`, saved as .npy in the cache folder under a hash of `key` and the abTEM version, and loaded
    from there by later processes. Loaded without pickle support (a crafted file cannot run code); a file of
    another shape or type, or an unreadable one, is computed and written again."""
    import hashlib

    import abtem

    name = hashlib.sha256(repr((key, abtem.__version__)).encode()).hexdigest()[:32]
    path = os.path.join(_cache_folder(), f"{key[0]}-{name}.npy")
    try:
        array = np.load(path, allow_pickle=False)
        if array.shape == shape and array.dtype == dtype:
            return array
    except Exception:  # no cache yet, or a damaged one: compute
        pass
    array = np.ascontiguousarray(compute(), dtype=dtype)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npy"
        np.save(tmp, array, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:  # read-only home: compute again next time
        pass
    return array


def _set_deltas(real: np.ndarray, positions_px: np.ndarray) -> None:
    """`real` = abTEM's `superpose_deltas` of the positions on a zero grid (bilinear weights, periodic), by one
    bincount instead of np.add.at."""
    nx, ny = real.shape
    floor = np.floor(positions_px).astype(np.int64)
    x, y = positions_px[:, 0] - floor[:, 0], positions_px[:, 1] - floor[:, 1]
    xy = x * y
    rows = np.concatenate([floor[:, 0] % nx, (floor[:, 0] + 1) % nx] * 2)
    cols = np.concatenate([floor[:, 1] % ny] * 2 + [(floor[:, 1] + 1) % ny] * 2)
    weights = np.concatenate([1 + xy - y - x, x - xy, y - xy, xy])
    real[:] = np.bincount(rows * ny + cols, weights, minlength=nx * ny).reshape(nx, ny)


def _sliced_configurations(structure, gpts, thicknesses, parametrization: str) -> list[list[dict]]:
    """Per configuration, per slice: {symbol: (n, 2) xy positions in Å}, sliced and wrapped by abTEM itself."""
    import abtem
    from ase.data import chemical_symbols

    configurations = list(structure) if isinstance(structure, abtem.FrozenPhonons) else [structure]
    sliced = []
    for atoms in configurations:
        potential = abtem.Potential(atoms, gpts=gpts, slice_thickness=thicknesses, projection="infinite",
                                    parametrization=parametrization)
        slices = potential.get_sliced_atoms()
        per_slice = []
        for index in range(len(thicknesses)):
            in_slice = slices.get_atoms_in_slices(index)
            numbers = in_slice.numbers  # (ASE's chemical symbols are made one atom at a time)
            per_slice.append({chemical_symbols[z]: in_slice.positions[numbers == z, :2] for z in np.unique(numbers)})
        sliced.append(per_slice)
    return sliced


def _scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A work array kept for the process (one per name and shape), like the FFT buffers."""
    return _fourier_array(("scratch", name, shape, np.dtype(dtype).str), lambda: np.empty(shape, dtype=dtype))


def _slice_potentials(slices: list[dict], index: int, symbols: list[str], gpts: tuple[int, int],
                      sampling: tuple[float, float], parametrization: str) -> np.ndarray:
    """Projected potential V of slice `index` of every configuration, (n, nx, ny) float32 in the "potential"
    FFT buffer: per element, the deltas of its atoms by a real-to-complex transform times the element's
    kernel; the elements' spectra summed, then one complex-to-real transform."""
    shape = (len(slices), *gpts)
    potential, spectrum, forward, backward = _fft_plans("potential", shape, True)
    spectrum_sum = _scratch("potential spectrum sum", spectrum.shape, np.complex64) if len(symbols) > 1 else None
    for position, symbol in enumerate(symbols):
        for config, config_slices in enumerate(slices):
            positions = config_slices[index].get(symbol)
            if positions is None:
                potential[config] = 0
            else:
                _set_deltas(potential[config], (positions / np.asarray(sampling)).astype(np.float32))
        forward.execute()
        kernel = _potential_kernel(symbol, gpts, sampling, parametrization)
        if spectrum_sum is None:
            spectrum *= kernel
        elif position == 0:
            np.multiply(spectrum, kernel, out=spectrum_sum)
        else:
            spectrum *= kernel
            if position < len(symbols) - 1:
                spectrum_sum += spectrum
            else:
                spectrum += spectrum_sum  # the last element's spectrum stays in the buffer the inverse reads
    backward.execute()
    return potential


def _multislice_intensities(configurations: list[list[dict]], gpts: tuple[int, int],
                            sampling: tuple[float, float], thicknesses: tuple[float, ...], energy_eV: float,
                            parametrization: str, ctf_kernel: np.ndarray) -> np.ndarray:
    """Mean over configurations of |exit wave (*) CTF|² for each CTF of `ctf_kernel` (n, nx, ny) -> (n, nx, ny).

    The steps of abTEM's `PlaneWave.multislice` (infinite projection) + `apply_ctf` + `intensity`, with abTEM's
    own kernels: potential = deltas (*) projected scattering factor / sinc, transmission exp(iσV) band-limited
    by the antialias aperture, then the antialiased Fresnel propagator, the CTF in Fourier space. Faster by
    doing all configurations in one batch on plans made once, real transforms for the potential, a slice
    without atoms only propagating, the band-limited transmission of the first slice taken as the wave (the
    plane wave is 1), the wave left in Fourier space after the last slice for the CTFs, |ψ|² summed in place.
    All transforms are unnormalised: the 1/size factors ride along in the band limit and the CTF. Keep every
    arithmetic step and its order when changing this loop: on the same FFTW plans its images then stay equal
    to the bit to those of earlier versions, and a dataset resumed with a newer version equals an
    uninterrupted one (checked for each speed change, benchmarks/RESULTS.md).
    """
    from abtem.antialias import antialias_aperture
    from abtem.core.energy import energy2sigma
    from abtem.multislice import _fresnel_propagator_array

    n_configs, (nx, ny), size = len(configurations), gpts, gpts[0] * gpts[1]
    shape = (n_configs, nx, ny)
    # two complex buffers with their plans: the wave and the transmission; the first slice with atoms turns the
    # transmission's buffer into the wave's
    wave, wave_forward, wave_backward = _fft_plans("wave", shape)
    transmission, transmission_forward, transmission_backward = _fft_plans("transmission", shape)
    cosines = _scratch("cosines", shape, np.float32)
    aperture = _fourier_array(("aperture", gpts, sampling),
                              lambda: antialias_aperture(gpts, sampling, np).astype(np.float32))
    # band limit of the transmission: 1/size for each of its two unnormalised transforms
    band_limit = _fourier_array(("band limit", gpts, sampling), lambda: aperture / np.float32(size) ** 2)
    sigma = np.float32(energy2sigma(energy_eV))
    plane_wave = True  # the wave is still the incident plane wave, 1 everywhere in real space
    for index, thickness in enumerate(thicknesses):
        propagator = _fourier_array(("propagator", thickness, gpts, sampling, energy_eV), lambda t=thickness: (
            _fresnel_propagator_array(t, gpts, sampling, energy_eV, "cpu") * aperture).astype(np.complex64))
        symbols = sorted({s for slices in configurations for s in slices[index]})
        if symbols:
            potential = _slice_potentials(configurations, index, symbols, gpts, sampling, parametrization)
            potential *= sigma
            # exp(iσV): numpy's cos/sin write contiguous arrays twice as fast as the strided halves of a complex
            np.cos(potential, out=cosines)
            np.sin(potential, out=potential)
            transmission.real = cosines
            transmission.imag = potential
            transmission_forward.execute()
            transmission *= band_limit
            transmission_backward.execute()  # the band-limited transmission, times 1/size
            if plane_wave:  # ψ = 1, so ψ·t is t: swap the buffers instead of multiplying
                transmission *= np.float32(size)
                wave, transmission = transmission, wave
                wave_forward, transmission_forward = transmission_forward, wave_forward
                wave_backward, transmission_backward = transmission_backward, wave_backward
            else:
                wave_backward.execute()
                wave *= transmission
            wave_forward.execute()
            plane_wave = False
        elif plane_wave:
            wave[:] = 1.0
            wave_forward.execute()
            plane_wave = False
        wave *= propagator
    images = np.zeros((len(ctf_kernel), nx, ny), dtype=np.float64)
    intensity = _scratch("intensity", (nx, ny), np.float64)
    for index, kernel in enumerate(ctf_kernel):
        np.multiply(wave, kernel / np.complex64(size), out=transmission)
        transmission_backward.execute()
        squares = transmission.view(np.float32)  # |ψ|² = re² + im², in place: no temporaries
        np.square(squares, out=squares)
        parts = squares.reshape(n_configs, nx, ny, 2)
        for config in range(n_configs):  # in float64, re² + im² first, then configurations in order
            np.add(parts[config, :, :, 0], parts[config, :, :, 1], out=intensity, dtype=np.float64)
            images[index] += intensity
    return images / n_configs


def simulate_focal_series(atoms: Atoms, optics: OpticsParams, config: SimulationConfig | None = None,
                          seed: int = 0, vibration_table=None) -> np.ndarray:
    """Noise-free focal series (n_defocus, H, W) float32, indexed [row, col], vacuum intensity ≈ 1.

    One multislice exit wave per frozen-phonon configuration; all defocus values are applied to
    it as CTFs. `vibration_table=None` with `num_phonons > 0` uses the shipped default table.
    """
    import abtem

    config = (config or SimulationConfig()).validate()
    optics.validate()
    atoms = validate_atoms(atoms)
    configure_abtem()
    height, width = output_shape(atoms, config.sampling_A)
    if min(height, width) < 8:
        raise UserError(f"the cell ({atoms.cell[0, 0]:.1f} x {atoms.cell[1, 1]:.1f} Å) is smaller than 8 "
                        f"pixels at {config.sampling_A} Å/px")
    gpts = (simulation_gpts(width, config.oversampling), simulation_gpts(height, config.oversampling))

    if config.num_phonons > 0:
        vibration_table = vibration_table or vibration_table_for(config.num_phonons)
        structure = abtem.FrozenPhonons(atoms, num_configs=config.num_phonons,
                                        sigmas=phonon_sigmas(atoms, vibration_table), seed=seed)
    else:
        structure = atoms
    thicknesses = slice_thicknesses(atoms)
    configurations = _sliced_configurations(structure, gpts, thicknesses, config.parametrization)
    extent = (float(atoms.cell[0, 0]), float(atoms.cell[1, 1]))
    sampling = (extent[0] / gpts[0], extent[1] / gpts[1])
    ctf = abtem.CTF(
        defocus=abtem.distributions.from_values(np.asarray(optics.defocus_A, dtype=float)),
        Cs=optics.cs_A,
        astigmatism=optics.astigmatism_A,
        astigmatism_angle=optics.astigmatism_angle_rad,
        focal_spread=optics.focal_spread_A,
        energy=optics.energy_eV,
    )
    # abTEM's CTF array (aberrations and focal-spread envelope) on our grid, one per defocus
    grid = abtem.Waves(np.zeros(gpts, dtype=np.complex64), energy=optics.energy_eV, extent=extent)
    ctf_kernel = np.asarray(ctf._evaluate_kernel(grid)).reshape(-1, *gpts)
    intensities = _multislice_intensities(configurations, gpts, sampling, thicknesses, optics.energy_eV,
                                          config.parametrization, ctf_kernel)
    from abtem.core.fft import fft_interpolate

    images = np.real(fft_interpolate(intensities, (width, height)))  # abTEM's Images.interpolate, [x, y]
    return np.ascontiguousarray(images.swapaxes(-1, -2), dtype=np.float32)  # abTEM [x, y] -> [row, col]


def apply_detector_blur(images: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian point spread of the detector, per image (not across the focal series)."""
    if sigma_px <= 0:
        return images
    return gaussian_filter(images, sigma=(0,) * (images.ndim - 2) + (sigma_px, sigma_px), mode="wrap")


def apply_dose_noise(images: np.ndarray, dose_e_per_A2: float, sampling_A: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Poisson counting noise; returns intensities in the same units (vacuum ≈ 1)."""
    if not (np.isfinite(dose_e_per_A2) and dose_e_per_A2 > 0):
        raise UserError(f"dose must be a positive number of electrons per Å² (got {dose_e_per_A2})")
    electrons_per_pixel = dose_e_per_A2 * sampling_A**2
    counts = rng.poisson(np.clip(images, 0, None) * electrons_per_pixel)
    return (counts / electrons_per_pixel).astype(np.float32)


def apply_pixel_mtf(images: np.ndarray) -> np.ndarray:
    """Multiply each image's spectrum by the pixel aperture's MTF, sinc(f_row) sinc(f_col) in cycles/pixel."""
    rows = np.sinc(np.fft.fftfreq(images.shape[-2]))
    cols = np.sinc(np.fft.rfftfreq(images.shape[-1]))
    spectrum = np.fft.rfft2(images) * (rows[:, None] * cols[None, :])
    return np.fft.irfft2(spectrum, s=images.shape[-2:]).astype(np.float32)


def apply_camera(intensities: np.ndarray, electrons_per_pixel: float, camera: CameraConfig,
                 rng: np.random.Generator) -> np.ndarray:
    """Record counted intensities (vacuum ≈ 1) with a camera drawn from `camera`, then calibrate back."""
    gain = rng.uniform(*camera.gain_counts_per_e_range)
    offset = rng.uniform(*camera.offset_counts_range)
    read_noise = rng.uniform(*camera.read_noise_e_range)
    nonuniformity = rng.uniform(*camera.gain_nonuniformity_range)
    electrons = intensities * electrons_per_pixel
    pixel_gain = gain * (1 + nonuniformity * rng.standard_normal(intensities.shape[-2:]))
    counts = np.round(pixel_gain * (electrons + read_noise * rng.standard_normal(electrons.shape)) + offset)
    return ((counts - offset) / (gain * electrons_per_pixel)).astype(np.float32)


def draw_dose(noise: NoiseConfig, rng: np.random.Generator) -> float:
    """The fixed dose, or one drawn log-uniform from the range (e/Å²)."""
    if noise.dose_e_per_A2 is not None:
        return float(noise.dose_e_per_A2)
    low, high = np.log(noise.dose_e_per_A2_range[0]), np.log(noise.dose_e_per_A2_range[1])
    return float(np.exp(rng.uniform(low, high)))


def add_imaging_noise(images: np.ndarray, sampling_A: float, rng: np.random.Generator,
                      noise: NoiseConfig | None = None) -> tuple[np.ndarray, float]:
    """Pixel MTF, dose noise, detector blur and camera, drawn from `noise` (a fixed dose if it sets one).

    Returns (images in units of the vacuum intensity, dose in e/Å²)."""
    noise = noise or NoiseConfig()
    dose = draw_dose(noise, rng)
    if noise.camera is not None and noise.camera.pixel_mtf:
        images = apply_pixel_mtf(images)
    noisy = apply_dose_noise(images, dose, sampling_A, rng)
    sigma_px = float(rng.uniform(*noise.blur_sigma_px_range))
    noisy = apply_detector_blur(noisy, sigma_px)
    if noise.camera is not None:
        noisy = apply_camera(noisy, dose * sampling_A**2, noise.camera, rng)
    return noisy.astype(np.float32), dose


def noise_rng(seed: int, index: int) -> np.random.Generator:
    """The noise of evaluation image `index`: the same for every model and run (`evaluate`, training validation)."""
    return np.random.default_rng([seed, index])
