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
from hrtemnet.validation import lists_as_tuples, validate_config
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
        data = lists_as_tuples(data)
        camera_fields = data.pop("camera", None)
        camera = None if camera_fields is None else CameraConfig(**lists_as_tuples(camera_fields))
        return cls(**data, camera=camera)


_abtem_configured = False  # abTEM's config is global to the process: set it once


def import_abtem():
    """`import abtem`, with the numba ufuncs abTEM compiles when imported kept in numba's cache.

    `abtem.core.complex` compiles two numba ufuncs eagerly on import, ~0.4 s CPU of every fresh process (worker,
    CLI command) more than loading them compiled. Numba caches a ufunc only when its decorator asks, so during
    this one import `numba.vectorize` asks (`cache=True`) and is restored afterwards; nothing of abTEM is
    changed. The cache is numba's own next to abTEM's sources (its `__pycache__`, where Python keeps abTEM's
    bytecode; numba keys it on the source file and its own version, so an upgrade compiles again), or
    $NUMBA_CACHE_DIR if set. Numba's cache files are pickles, so never in our cache folder, which is read without
    running anything (see `_fft_plans`). A plain import when abTEM is imported already or that folder is not
    writable (numba would then fall back to a per-user folder)."""
    import importlib.util
    import sys

    if "abtem" in sys.modules:
        return sys.modules["abtem"]
    import numba
    from numba.core import config as numba_config

    spec = importlib.util.find_spec("abtem")
    folder = numba_config.CACHE_DIR or (
        os.path.join(spec.submodule_search_locations[0], "core", "__pycache__") if spec and spec.origin else "")
    try:
        os.makedirs(folder, exist_ok=True)
        writable = os.access(folder, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        import abtem

        return abtem
    vectorize = numba.vectorize

    def caching_vectorize(*args, **kwargs):
        return vectorize(*args, **{"cache": True, **kwargs})

    numba.vectorize = caching_vectorize
    try:
        import abtem
    finally:
        numba.vectorize = vectorize
    return abtem


def configure_abtem() -> None:
    """Eager arrays and single-threaded FFTW (tasks are parallel, not transforms); once per process.

    FFTW_MEASURE planning costs ~0.4 s once per process and shape, then halves every transform
    (benchmarks/simulation.py: 0.6 vs 1.2 s per 8-phonon series with FFTW_ESTIMATE).
    """
    global _abtem_configured
    if _abtem_configured:
        return
    abtem = import_abtem()

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
        abtem = import_abtem()

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


def _fft_plans(name: str, shape: tuple[int, ...], real: bool = False) -> tuple:
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
    plans: tuple  # (data, spectrum, forward, backward) for real transforms, (data, forward, backward) otherwise
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
        # propagators are kept per slice thickness, which differs between structures: bounded by memory (a
        # 512² propagator is 2 MB), not by count
        if len(_FOURIER_ARRAYS) > 512 or sum(a.nbytes for a in list(_FOURIER_ARRAYS.values())) > 256 * 2**20:
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

    abtem = import_abtem()
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


def _antialias_aperture(gpts: tuple[int, int], sampling: tuple[float, float]) -> np.ndarray:
    """abTEM's antialias aperture (1 inside 2/3 of the Nyquist frequency, a narrow taper, 0 outside), float32."""
    from abtem.antialias import antialias_aperture

    return _fourier_array(("aperture", gpts, sampling),
                          lambda: antialias_aperture(gpts, sampling, np).astype(np.float32))


def _ctf_kernel(ctf, gpts: tuple[int, int], extent: tuple[float, float], sampling: tuple[float, float],
                energy_eV: float) -> np.ndarray:
    """abTEM's CTF array (aberrations and focal-spread envelope) on our grid, one per defocus, (n, nx, ny)
    complex64. Evaluated only on the smallest even grid of the same frequency spacing that holds every frequency
    the antialias aperture passes (about 45 % of the points, same values) and zero elsewhere: the wave it
    multiplies is zero there, and abTEM's evaluation costs about as much as a slice."""
    abtem = import_abtem()

    aperture = _antialias_aperture(gpts, sampling)
    box = []
    for axis, n in enumerate(gpts):
        passed = np.flatnonzero(aperture.any(axis=1 - axis))  # fft order: index i is frequency i or i - n
        box.append(2 * int(np.max(np.minimum(passed, n - passed))) + 2)  # frequencies -box/2 .. box/2 - 1
    if box[0] >= gpts[0] or box[1] >= gpts[1]:
        box = list(gpts)
    small = abtem.Waves(np.zeros(box, dtype=np.complex64), energy=energy_eV, extent=extent)
    values = np.asarray(ctf._evaluate_kernel(small)).reshape(-1, *box)
    if tuple(box) == tuple(gpts):
        return values.astype(np.complex64, copy=False)
    kernel = _fourier_array(("ctf", len(values), gpts, tuple(box)),  # zero outside the box, written inside
                            lambda: np.zeros((len(values), *gpts), dtype=np.complex64))
    (bx, by), (nx, ny) = (b // 2 for b in box), gpts
    for rows, small_rows in ((slice(0, bx), slice(0, bx)), (slice(nx - bx, nx), slice(bx, None))):
        for cols, small_cols in ((slice(0, by), slice(0, by)), (slice(ny - by, ny), slice(by, None))):
            kernel[:, rows, cols] = values[:, small_rows, small_cols]
    return kernel


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
    abtem = import_abtem()
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


def _slice_potential(atoms_in_slice: dict, kernels: dict, gpts: tuple[int, int], sampling: tuple[float, float],
                     slot: int) -> np.ndarray:
    """Projected potential V of one slice of one configuration, (nx, ny) float32 in the slot's "potential" FFT
    buffer: per element, the deltas of its atoms by a real-to-complex transform times the element's kernel; the
    elements' spectra summed, then one complex-to-real transform."""
    symbols = sorted(atoms_in_slice)
    potential, spectrum, forward, backward = _fft_plans(f"potential {slot}", gpts, True)
    spectrum_sum = _scratch(f"spectrum sum {slot}", spectrum.shape, np.complex64) if len(symbols) > 1 else None
    for position, symbol in enumerate(symbols):
        _set_deltas(potential, (atoms_in_slice[symbol] / np.asarray(sampling)).astype(np.float32))
        forward.execute()
        if spectrum_sum is None:
            spectrum *= kernels[symbol]
        elif position == 0:
            np.multiply(spectrum, kernels[symbol], out=spectrum_sum)
        else:
            spectrum *= kernels[symbol]
            if position < len(symbols) - 1:
                spectrum_sum += spectrum
            else:
                spectrum += spectrum_sum  # the last element's spectrum stays in the buffer the inverse reads
    backward.execute()
    return potential


@dataclass
class _SliceArrays:
    """What every configuration of one focal series shares: abTEM's Fourier-space arrays on its grid."""

    gpts: tuple[int, int]
    sampling: tuple[float, float]
    sigma: np.float32  # interaction parameter σ: the transmission is exp(iσV)
    kernels: dict  # element -> potential kernel (half spectrum)
    band_limit: np.ndarray  # antialias aperture / size² (the transmission's two unnormalised transforms)
    propagators: list  # per slice: Fresnel propagator times the antialias aperture
    first_propagators: dict  # slice index -> aperture times propagator, for a first slice with atoms
    ctf: np.ndarray  # (n, nx, ny) CTF kernels


_add_intensity_kernel = None


def _add_intensity(wave: np.ndarray, out: np.ndarray) -> None:
    """out += |wave|² (complex64 (nx, ny) -> float64), re² and im² in float32, their sum in float64, then added
    to `out`: one pass (numpy's square, float64 sum and += took 5x as long). Numba-compiled on first use and
    cached next to this file like `hrtemnet.msd_kernel`."""
    global _add_intensity_kernel
    if _add_intensity_kernel is None:
        from numba import njit

        @njit(cache=True, nogil=True)
        def add_intensity(wave, out):
            for i in range(wave.shape[0]):
                for j in range(wave.shape[1]):
                    value = wave[i, j]
                    out[i, j] += np.float64(value.real * value.real) + np.float64(value.imag * value.imag)

        _add_intensity_kernel = add_intensity
    _add_intensity_kernel(wave, out)


def _configuration_intensities(slices: list[dict], arrays: _SliceArrays, slot: int, out: np.ndarray) -> np.ndarray:
    """Adds |exit wave (*) CTF|² of one configuration for each CTF, in float64, to `out` (n, nx, ny), on the FFT
    buffers and plans of `slot` (one per thread). The wave is kept in Fourier space between slices (unnormalised:
    its real-space form is the physical wave), so the intensities are size² times the physical ones."""
    wave, wave_forward, wave_backward = _fft_plans(f"wave {slot}", arrays.gpts)
    transmission, transmission_forward, transmission_backward = _fft_plans(f"transmission {slot}", arrays.gpts)
    cosines = _scratch(f"cosines {slot}", arrays.gpts, np.float32)
    plane_wave = True  # the wave is still the incident plane wave, 1 everywhere in real space
    for index, atoms_in_slice in enumerate(slices):
        if not atoms_in_slice:  # vacuum: propagate (a plane wave passes unchanged: the propagator is 1 at k = 0)
            if not plane_wave:
                wave *= arrays.propagators[index]
            continue
        potential = _slice_potential(atoms_in_slice, arrays.kernels, arrays.gpts, arrays.sampling, slot)
        potential *= arrays.sigma
        # exp(iσV): numpy's cos/sin write contiguous arrays twice as fast as the strided halves of a complex
        np.cos(potential, out=cosines)
        np.sin(potential, out=potential)
        transmission.real = cosines
        transmission.imag = potential
        transmission_forward.execute()
        if plane_wave:  # ψ = 1, so ψ·t's spectrum is the band-limited transmission's: aperture · FFT(t)
            np.multiply(transmission, arrays.first_propagators[index], out=wave)
            plane_wave = False
            continue
        transmission *= arrays.band_limit
        transmission_backward.execute()  # the band-limited transmission, times 1/size
        wave_backward.execute()
        wave *= transmission
        wave_forward.execute()
        wave *= arrays.propagators[index]
    if plane_wave:  # no atoms at all: the plane wave's spectrum, the grid size at frequency 0
        wave[:] = 0
        wave[0, 0] = wave.size
    for kernel, intensity in zip(arrays.ctf, out, strict=True):
        np.multiply(wave, kernel, out=transmission)
        transmission_backward.execute()
        _add_intensity(transmission, intensity)
    return out


def _multislice_intensities(configurations: list[list[dict]], gpts: tuple[int, int],
                            sampling: tuple[float, float], thicknesses: tuple[float, ...], energy_eV: float,
                            parametrization: str, ctf_kernel: np.ndarray, threads: int = 1) -> np.ndarray:
    """Mean over configurations of |exit wave (*) CTF|² for each CTF of `ctf_kernel` (n, nx, ny) -> (n, nx, ny)
    float64.

    The steps of abTEM's `PlaneWave.multislice` (infinite projection) + `apply_ctf` + `intensity`, with abTEM's
    own kernels: potential = deltas (*) projected scattering factor / sinc, transmission exp(iσV) band-limited
    by the antialias aperture, then the antialiased Fresnel propagator, the CTF in Fourier space. Faster by
    running one configuration at a time on 2-D plans made once (its arrays stay in cache), real transforms for
    the potential, a slice without atoms only propagating, the first slice with atoms taken in Fourier space
    (ψ = 1, so the wave's spectrum after it is the band-limited transmission's: two transforms fewer), the wave
    left in Fourier space after the last slice for the CTFs. All transforms are unnormalised: the 1/size
    factors ride along in the band limit and the final division.

    `threads` > 1 runs configurations on that many threads (FFTW and numpy release the GIL), each on buffers and
    plans of its own; the configurations' intensities are added in their order whatever the thread count, so
    the images are the same for any `threads`.
    """
    from abtem.core.energy import energy2sigma
    from abtem.multislice import _fresnel_propagator_array

    size = gpts[0] * gpts[1]
    aperture = _antialias_aperture(gpts, sampling)

    def propagator(thickness):
        return _fourier_array(("propagator", thickness, gpts, sampling, energy_eV), lambda: (
            _fresnel_propagator_array(thickness, gpts, sampling, energy_eV, "cpu") * aperture).astype(np.complex64))

    first = {next((index for index, atoms_in_slice in enumerate(slices) if atoms_in_slice), 0)
             for slices in configurations}
    symbols = sorted({s for slices in configurations for atoms_in_slice in slices for s in atoms_in_slice})
    arrays = _SliceArrays(
        gpts=gpts, sampling=sampling, sigma=np.float32(energy2sigma(energy_eV)),
        kernels={symbol: _potential_kernel(symbol, gpts, sampling, parametrization) for symbol in symbols},
        band_limit=_fourier_array(("band limit", gpts, sampling), lambda: aperture / np.float32(size) ** 2),
        propagators=[propagator(thickness) for thickness in thicknesses],
        first_propagators={index: _fourier_array(("first propagator", thicknesses[index], gpts, sampling, energy_eV),
                                                 lambda i=index: aperture * propagator(thicknesses[i]))
                           for index in first},
        ctf=ctf_kernel)
    images = np.zeros((len(ctf_kernel), *gpts), dtype=np.float64)
    threads = max(1, min(threads, len(configurations)))
    if threads == 1:  # each configuration's intensities added as they come: as if added to zeros, then here
        for slices in configurations:
            _configuration_intensities(slices, arrays, 0, images)
    else:
        _threaded_intensities(configurations, arrays, threads, images)
    images *= 1 / (len(configurations) * float(size) ** 2)  # the mean, and the unnormalised inverse transform
    return images


def _threaded_intensities(configurations: list[list[dict]], arrays: _SliceArrays, threads: int,
                          images: np.ndarray) -> None:
    """`images` += each configuration's intensities, in the order of the configurations, computed on `threads`
    threads with buffers and plans of their own; at most `threads` + 1 configurations' intensities held."""
    import queue
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    free_slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(threads):  # buffers and plans made here: FFTW's planner is not thread-safe
        _fft_plans(f"wave {slot}", arrays.gpts), _fft_plans(f"transmission {slot}", arrays.gpts)
        spectrum = _fft_plans(f"potential {slot}", arrays.gpts, True)[1]
        _scratch(f"spectrum sum {slot}", spectrum.shape, np.complex64)
        _scratch(f"cosines {slot}", arrays.gpts, np.float32)
        free_slots.put(slot)

    def run(slices):
        slot = free_slots.get()
        try:
            return _configuration_intensities(slices, arrays, slot, np.zeros_like(images))
        finally:
            free_slots.put(slot)

    with ThreadPoolExecutor(threads) as pool:
        pending: deque = deque()
        for slices in configurations:
            pending.append(pool.submit(run, slices))
            if len(pending) > threads:
                images += pending.popleft().result()  # in the order of the configurations
        while pending:
            images += pending.popleft().result()


def simulate_focal_series(atoms: Atoms, optics: OpticsParams, config: SimulationConfig | None = None,
                          seed: int = 0, vibration_table=None, threads: int = 1) -> np.ndarray:
    """Noise-free focal series (n_defocus, H, W) float32, indexed [row, col], vacuum intensity ≈ 1.

    One multislice exit wave per frozen-phonon configuration; all defocus values are applied to
    it as CTFs. `vibration_table=None` with `num_phonons > 0` uses the shipped default table.
    `threads` > 1 simulates that many configurations at once; the images are the same for any value.
    """
    abtem = import_abtem()

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
    ctf_kernel = _ctf_kernel(ctf, gpts, extent, sampling, optics.energy_eV)
    intensities = _multislice_intensities(configurations, gpts, sampling, thicknesses, optics.energy_eV,
                                          config.parametrization, ctf_kernel, threads)
    images = _fourier_interpolate(intensities, (width, height))  # abTEM's Images.interpolate, [x, y]
    return np.ascontiguousarray(images.swapaxes(-1, -2), dtype=np.float32)  # abTEM [x, y] -> [row, col]


def _fourier_interpolate(intensities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """abTEM's `fft_interpolate` of real (n, nx, ny) intensities to (n, *shape) (what `Images.interpolate` runs),
    on plans of our own: the spectrum cropped to the frequencies abTEM's masks keep, the real part of its
    inverse, scaled as abTEM scales it. abTEM's form costs twice as much (boolean masks over the whole stack)."""
    from abtem.core.fft import _fft_interpolation_masks_1d

    spectrum, forward, _ = _fft_plans("interpolate", intensities.shape)
    result, _, backward = _fft_plans("interpolated", (len(intensities), *shape))
    spectrum[:] = intensities
    forward.execute()
    (rows, new_rows), (cols, new_cols) = (  # kept and target indices per axis (abTEM's masks, in order)
        _fourier_array(("crop", n, m), lambda n=n, m=m: np.stack([np.flatnonzero(mask) for mask in
                                                                  _fft_interpolation_masks_1d(n, m)]))
        for n, m in zip(intensities.shape[1:], shape, strict=True))
    result[:] = 0
    result[:, new_rows[:, None], new_cols] = spectrum[:, rows[:, None], cols]
    backward.execute()
    # abTEM: a normalised inverse (1 / new size), then times new size / old size
    return result.real * (1 / (intensities.shape[1] * intensities.shape[2]))


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
