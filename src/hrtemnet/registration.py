"""Frame alignment of a focal series: shifts of frames 2..n relative to frame 1, sub-pixel, robust to
contrast reversal between defoci and to the lattice-vector ambiguity of a crystal.

Why not plain cross-correlation: in the weak-phase picture a frame's Fourier transform is
`F_i(k) = T_i(k) Φ(k) exp(-2πi k·d_i)` with a real transfer `T_i = 2 sin χ_i(k)` whose sign changes
with defocus, ring by ring. The cross power `conj(F_1) F_i` is therefore real up to the shift ramp but
with a sign that flips between rings, so a plain correlation peak is weakened or inverted and can lock
onto another lattice site. Its square `(conj(F_1) F_i)²` has a positive factor whatever the signs, and its
(half-whitened, band-passed) correlation surface peaks at `2 d_i`.

On a crystal most of the power sits in the Bragg reflections, which contribute equally at `2 d + t` for
every lattice vector `t` (a shift ambiguous by half a lattice vector, which is *not* harmless). The
candidates are the local maxima of the whole squared surface (2 d + every lattice vector), and they are
ranked by the correlation of the non-periodic content alone (Bragg reflections masked: pixels far above
their ring's median, dilated), which peaks at `2 d` only: vacancies, edges, a substrate with another
lattice, contamination. Its height over the surface's standard deviation says how much to trust it; below
`MIN_PEAK_SNR` the alignment is reported as unreliable. The winner is refined on the whole squared surface
with a matrix-multiply upsampled DFT (Guizar-Sicairos et al., Opt. Lett. 33, 156 (2008), as in
`skimage.registration`), to 1/40 px in `d`. (A sign-coherence test of the reflections, which assumes an
isotropic CTF, was tried for the perfect-lattice case and chose wrong shifts more often than right ones
on astigmatic series: left out.)

Conventions: a shift `(dx, dy)` in Å means the content of frame i lies at `r + d` where frame 1 has it at
`r`; `apply_shifts` moves each frame back by `-d` so every frame is in the frame of image 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

# Band used for the correlation (Å): longer periods are illumination and window, shorter ones noise
# beyond the information limit of the microscopes we target.
LONGEST_PERIOD_A = 12.0
SHORTEST_PERIOD_A = 1.0
# Frames may be displaced by up to this much (Å) relative to frame 1 (or a quarter of the field).
MAX_SHIFT_A = 10.0
# Rings of constant |k| over which the median power is taken to find the reflections, Å⁻¹ (at least
# 2.5 FFT pixels wide).
RING_WIDTH_PER_A = 0.01
# Cross-power pixels this far above their ring's median are lattice reflections (masked, dilated 1 px).
BRAGG_FACTOR = 100.0
UPSAMPLE = 20  # sub-pixel refinement of 2d to 1/20 px, i.e. d to 1/40 px
# Candidate peaks of the squared correlation at least this fraction of the highest are ranked by the
# non-periodic correlation.
CANDIDATE_FRACTION = 0.3
# Peak height of the non-periodic correlation over its standard deviation below which an alignment is
# reported unreliable (measured, benchmarks/RESULTS.md: 48 in-range pairs at 0.15 Å/px 7.3-40, all right,
# but 4.3 and 5.9 at 0.12 Å/px, also right; a frame of another area 2.6-18, 9 of 23 below 4.5), and the
# runner-up's share of it above which it is ambiguous (a lattice vector away; in-range pairs at most 0.51).
MIN_PEAK_SNR = 4.0
AMBIGUOUS_RUNNER_UP = 0.8


@dataclass
class Registration:
    """Shifts of every frame relative to frame 1 and how far to trust them."""

    shifts_A: np.ndarray  # (n, 2): (dx, dy) in Å of frame i's content relative to frame 1; row 0 is (0, 0)
    peak_snr: np.ndarray  # (n,): height of the non-periodic correlation peak / its surface's std (frame 1: inf)
    runner_up_snr: np.ndarray  # (n,): the same at the best other candidate (frame 1: 0)
    sampling_A: float
    warnings: list[str] = field(default_factory=list)  # the alignment of these frames is not to be trusted
    notes: list[str] = field(default_factory=list)  # e.g. lattice-vector ambiguity on a perfect lattice

    @property
    def reliable(self) -> bool:
        return not self.warnings

    @property
    def shifts_px(self) -> np.ndarray:
        """(n, 2) (row, col) pixel shifts, the order `scipy.ndimage.shift` takes."""
        return self.shifts_A[:, ::-1] / self.sampling_A

    def line(self) -> str:
        """`frame 2 (+1.23, -0.40) Å, frame 3 (...)`: for summaries and CSV metadata."""
        return ", ".join(f"frame {i + 1} ({dx:+.2f}, {dy:+.2f}) Å"
                         for i, (dx, dy) in enumerate(self.shifts_A) if i > 0)


def _prepared_spectrum(image: np.ndarray) -> np.ndarray:
    """FFT of the mean-free image under a Hann window (no edge discontinuity in the spectrum)."""
    image = np.asarray(image, dtype=np.float64)
    window = np.outer(np.hanning(image.shape[0]), np.hanning(image.shape[1]))
    return np.fft.fft2((image - image.mean()) * window)


def _frequencies(shape: tuple[int, int], sampling_A: float) -> tuple[np.ndarray, np.ndarray]:
    """Spatial frequency components (k_row, k_col) in Å⁻¹ on the FFT grid."""
    return (np.fft.fftfreq(shape[0], sampling_A)[:, None], np.fft.fftfreq(shape[1], sampling_A)[None, :])


def _band(shape: tuple[int, int], sampling_A: float) -> np.ndarray:
    """Smooth band-pass weight: 1 between LONGEST and SHORTEST period, Gaussian roll-off outside."""
    k_row, k_col = _frequencies(shape, sampling_A)
    k = np.hypot(k_row, k_col)
    k_low, k_high = 1.0 / LONGEST_PERIOD_A, min(1.0 / SHORTEST_PERIOD_A, 0.45 / sampling_A)
    weight = np.ones_like(k)
    weight *= np.where(k < k_low, np.exp(-0.5 * ((k - k_low) / (0.5 * k_low)) ** 2), 1.0)
    weight *= np.where(k > k_high, np.exp(-0.5 * ((k - k_high) / (0.1 * k_high)) ** 2), 1.0)
    return weight


def _upsampled_surface(product: np.ndarray, centre_px: np.ndarray, upsample: int, size: int) -> np.ndarray:
    """Inverse DFT of `product` on a `size`² grid of step 1/`upsample` px centred on `centre_px` (row, col)."""
    rows, cols = product.shape
    offsets = (np.arange(size) - size // 2) / upsample
    row_kernel = np.exp(2j * np.pi * np.outer(centre_px[0] + offsets, np.fft.fftfreq(rows)))
    col_kernel = np.exp(2j * np.pi * np.outer(np.fft.fftfreq(cols), centre_px[1] + offsets))
    return (row_kernel @ product @ col_kernel).real


@dataclass
class PairRegistration:
    shift_px: np.ndarray  # (d_row, d_col) of the moving frame's content relative to the reference
    peak_snr: float  # non-periodic correlation at the chosen shift over its surface's std
    runner_up_snr: float  # the same at the next-best candidate (another lattice site)


def register_pair(reference: np.ndarray, moving: np.ndarray, sampling_A: float,
                  max_shift_A: float = MAX_SHIFT_A) -> PairRegistration:
    """Displacement of `moving`'s content relative to `reference` (see the module docstring)."""
    f_ref, f_mov = _prepared_spectrum(reference), _prepared_spectrum(moving)
    shape = f_ref.shape
    weight = _band(shape, sampling_A)
    cross = np.conj(f_ref) * f_mov
    magnitude = np.abs(cross)
    # (cross / |cross|)² |cross|^½: sign-free, half-whitened (sharp peak, noise-only frequencies damped)
    squared = np.where(magnitude > 0, cross**2 / np.maximum(magnitude, 1e-300) ** 1.5, 0.0) * weight
    k = np.hypot(*_frequencies(shape, sampling_A))
    ring_width = max(RING_WIDTH_PER_A, 2.5 / (min(shape) * sampling_A))  # >= 2.5 FFT pixels
    ring_index = (k / ring_width).astype(np.int64).ravel()
    n_rings = int(ring_index.max()) + 1
    centre = np.array(shape) // 2
    offsets = np.stack(np.meshgrid(*(np.arange(n) - c for n, c in zip(shape, centre, strict=True)), indexing="ij"))
    allowed = np.hypot(*offsets) <= 2 * min(max_shift_A / sampling_A, min(shape) / 4.0)
    # candidates 2 d: local maxima of the whole squared surface (2 d + every lattice vector)
    full = np.fft.fftshift(np.fft.ifft2(squared).real)
    maxima = allowed & (full == ndimage.maximum_filter(full, size=3, mode="wrap"))
    maxima &= full >= CANDIDATE_FRACTION * full[allowed].max()
    candidates = np.argwhere(maxima)
    # the non-periodic content alone peaks at 2 d only: it ranks the candidates
    bragg = _bragg_mask(magnitude * weight, ring_index, n_rings)
    diffuse = np.fft.fftshift(np.fft.ifft2(squared * ~bragg).real)
    background = max(float(diffuse[allowed].std()), 1e-300)
    ranked = candidates[np.argsort(diffuse[tuple(candidates.T)])[::-1]]
    peak = ranked[0]
    # sub-pixel: the whole (Bragg and diffuse) squared surface, upsampled around that peak
    size = int(3 * UPSAMPLE)
    fine = _upsampled_surface(squared, (peak - centre).astype(np.float64), UPSAMPLE, size)
    refinement = np.array(np.unravel_index(np.argmax(fine), fine.shape)) - size // 2
    runner_up = float(diffuse[tuple(ranked[1])]) / background if len(ranked) > 1 else 0.0
    return PairRegistration((peak - centre + refinement / UPSAMPLE) / 2.0, float(diffuse[tuple(peak)]) / background,
                            runner_up)


def _bragg_mask(power: np.ndarray, ring_index: np.ndarray, n_rings: int) -> np.ndarray:
    """Pixels of the (cross) power spectrum far above their ring's median: lattice reflections, dilated."""
    from hrtemnet.calibration import ring_medians

    flat = power.ravel()
    medians = ring_medians(flat, ring_index)
    peaks = (flat > BRAGG_FACTOR * np.maximum(medians[ring_index], 1e-300)).reshape(power.shape)
    return ndimage.binary_dilation(peaks, iterations=1, border_value=0)


def register_frames(images: np.ndarray, sampling_A: float, reference: np.ndarray | None = None,
                    max_shift_A: float = MAX_SHIFT_A) -> Registration:
    """Shifts of every frame of `images` `(n, H, W)` relative to `reference` (default: frame 1).

    Parameters
    ----------
    images : (n, H, W) array, frames indexed [row, col].
    sampling_A : pixel size in Å/px.
    reference : optional (H, W) image to register every frame to (then frame 1 is registered too).
    max_shift_A : largest shift searched, Å (also at most a quarter of the field).

    Returns
    -------
    Registration with shifts `(dx, dy)` in Å; frames whose peak is weak are named in `warnings`.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3:
        raise ValueError(f"images must be (n, H, W), got shape {images.shape}")
    first = images[0] if reference is None else np.asarray(reference, dtype=np.float64)
    n = len(images)
    shifts_px, snr, runner_up = np.zeros((n, 2)), np.full(n, np.inf), np.zeros(n)
    warnings, notes = [], []
    for index in range(n):
        if reference is None and index == 0:
            continue
        pair = register_pair(first, images[index], sampling_A, max_shift_A)
        shifts_px[index], snr[index], runner_up[index] = pair.shift_px, pair.peak_snr, pair.runner_up_snr
        if snr[index] < MIN_PEAK_SNR:
            warnings.append(f"frame {index + 1}: alignment unreliable (correlation peak {snr[index]:.1f} x its "
                            f"background, < {MIN_PEAK_SNR:g}): is it the same area, in defocus order?")
        elif runner_up[index] > AMBIGUOUS_RUNNER_UP * snr[index]:
            notes.append(f"frame {index + 1}: another shift, probably a lattice vector away, correlates almost as "
                         f"well ({runner_up[index]:.1f} against {snr[index]:.1f}); harmless on a perfect lattice")
    return Registration(shifts_px[:, ::-1] * sampling_A, snr, runner_up, sampling_A, warnings, notes)


def apply_shifts(images: np.ndarray, shifts_A: np.ndarray, sampling_A: float) -> np.ndarray:
    """Each frame moved back by its shift (cubic spline; edges continue the nearest pixel), float32."""
    images = np.asarray(images, dtype=np.float32)
    out = images.copy()
    for index, (dx, dy) in enumerate(np.asarray(shifts_A, dtype=np.float64)):
        if dx or dy:
            out[index] = ndimage.shift(images[index].astype(np.float64), (-dy / sampling_A, -dx / sampling_A),
                                       order=3, mode="nearest")
    return out


def common_field_A(shape: tuple[int, int], sampling_A: float,
                   shifts_A: np.ndarray) -> tuple[float, float, float, float]:
    """`(x0, y0, x1, y1)` in Å of frame 1 that every aligned frame covers (pixel centres 0 .. (n-1) s)."""
    shifts_A = np.asarray(shifts_A, dtype=np.float64).reshape(-1, 2)
    height, width = shape
    x0, y0 = np.maximum(0.0, -shifts_A.min(axis=0))
    x1 = (width - 1) * sampling_A - max(0.0, shifts_A[:, 0].max())
    y1 = (height - 1) * sampling_A - max(0.0, shifts_A[:, 1].max())
    return float(x0), float(y0), float(x1), float(y1)
