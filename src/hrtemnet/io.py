"""Reading focal series from microscope files, and resampling them to the networks' pixel size.

A focal series is three images `(3, H, W)` in acquisition order (increasing defocus) with a pixel
size in Å. `read_focal_series` accepts one of:

- a `.npy` / `.npz` array `(3, H, W)` (an `.npz` may also hold a scalar `sampling_A`);
- a TIFF holding three images (pages, or a planar stack as tifffile writes `(3, H, W)` by default);
- three single-image files joined by `+`: `a.dm4+b.dm4+c.dm4` (dm3, dm4, ser/emi, emd, tif, npy);
- a folder holding exactly three such image files, taken in natural name order (`img2` before `img10`).

Microscope formats are read with rosettasciio; TIFF data with tifffile (rosettasciio cannot read
tifffile's default planar stacks), TIFF calibration with rosettasciio first (it knows the vendors'
tags), then ImageJ metadata and centimetre resolution tags. Every problem a user can fix raises a
`UserError` naming the file and the fix.

Resampling keeps the convention (docs/conventions.md) that pixel `i` has its centre at `i * s`: a position in Å
means the same place before and after, so columns found at one sampling need no conversion.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from scipy import ndimage

from hrtemnet.errors import UserError

NUM_IMAGES = 3
# Smallest image side the networks are run on, after resampling to their sampling (4.8 Å at 0.15 Å/px).
MIN_SIZE_PX = 32
# Pixel sizes of the x and y axes may differ by this fraction before the file is refused.
SQUARE_PIXEL_TOLERANCE = 0.01
# Pixel sizes (Å/px) an HRTEM image of MoS2 can have: coarser than 0.9 Å cannot resolve columns 1.83 Å apart
# (Nyquist); finer than 0.01 Å is far beyond any microscope's information limit (a mistyped unit).
PLAUSIBLE_SAMPLING_A = (0.01, 0.9)
# Largest image (pixels) after resampling to a network's pixel size: ~40 bytes a pixel are held during
# prediction (series, probabilities, intermediate copies), so 8192² px is about 3 GB.
MAX_RESAMPLED_PIXELS = 8192**2

ROSETTASCIIO_SUFFIXES = {".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph", ".ser": "tia",
                         ".emi": "tia", ".emd": "emd"}
TIFF_SUFFIXES = {".tif", ".tiff"}
NUMPY_SUFFIXES = {".npy", ".npz"}
IMAGE_SUFFIXES = set(ROSETTASCIIO_SUFFIXES) | TIFF_SUFFIXES | NUMPY_SUFFIXES
# In a folder, TIA's .emi files are only the metadata companions of the .ser files holding the images.
FOLDER_SUFFIXES = IMAGE_SUFFIXES - {".emi"}

ANGSTROM_PER_UNIT = {"å": 1.0, "a": 1.0, "angstrom": 1.0, "nm": 10.0, "µm": 1e4, "μm": 1e4, "um": 1e4,
                     "micron": 1e4, "pm": 0.01, "mm": 1e7, "m": 1e10}
SUPPORTED = "give a .npy/.npz (3, H, W) array, a 3-image TIFF, a folder of 3 images or a+b+c " \
            "with single-image .dm3/.dm4/.ser/.emi/.emd/.tif/.npy files"


@dataclass
class FocalSeries:
    """Images in acquisition (defocus) order and their pixel size: one focal series `(3, H, W)`, or a
    stack of them `(3k, H, W)` as `read_image_stack` reads it."""

    images: np.ndarray  # float32 (3, H, W), or (3k, H, W) for a stack
    sampling_A: float  # pixel size in Å/px used for prediction
    source: str  # what the user gave, for messages
    stem: str  # name for output files
    file_sampling_A: float | None = None  # the calibration found in the file(s), if any
    calibration_note: str = ""  # why the file(s) give no usable calibration (e.g. "its sampling_A -1 ...")
    # Nominal defocus of each frame of a focal series (Å, positive = underfocus), for models that take it
    # (`hrtemnet train --defocus-input`); a stack's focal series all share it.
    defocus_A: tuple[float, ...] | None = None
    # How far (Å) the absolute defocus may be off: when the columns at the values given score low, prediction
    # also tries them shifted by up to this much either way (`hrtemnet.prediction.search_defocus_offset`).
    defocus_search_A: float = 0.0

    @property
    def sampling_overridden(self) -> bool:
        return self.file_sampling_A is not None and not np.isclose(self.file_sampling_A, self.sampling_A)


@dataclass
class _Read:
    """Images of one file with its calibration (None where the file has none)."""

    images: list[np.ndarray]
    sampling_A: float | None
    calibration_note: str = ""  # why there is no calibration, e.g. an unknown unit


def check_sampling(sampling_A, what: str = "--sampling") -> float:
    """`sampling_A` as a float if it is a plausible pixel size in Å/px (`PLAUSIBLE_SAMPLING_A`), else a
    `UserError` naming `what` (the option or file it came from)."""
    low, high = PLAUSIBLE_SAMPLING_A
    try:
        value = float(sampling_A)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise UserError(f"{what} must be a positive pixel size in Å/px (got {sampling_A})")
    if not low <= value <= high:
        raise UserError(f"{what} {value:g} Å/px is outside {low:g} - {high:g} Å/px, the pixel sizes at which "
                        f"MoS2's columns are resolved; check the value and its unit (Å, not nm or pm)")
    return value


PLAUSIBLE_DEFOCUS_A = 5000.0  # HRTEM focal series of MoS2 stay within a few hundred Å of Scherzer


def check_defocus(defocus_A, what: str = "--defocus") -> tuple[float, ...]:
    """Nominal defocus of the frames of a focal series (Å, positive = underfocus, increasing as the frames are
    ordered) from a sequence or a comma-separated string; else a `UserError` naming `what`."""
    try:
        values = [float(v) for v in (defocus_A.split(",") if isinstance(defocus_A, str) else defocus_A)]
    except (TypeError, ValueError):
        raise UserError(f"{what} must be {NUM_IMAGES} numbers in Å separated by commas, e.g. -40,10,60 "
                        f"(got {defocus_A!r})") from None
    if len(values) != NUM_IMAGES:
        raise UserError(f"{what} needs one defocus per frame: {NUM_IMAGES} values, got {len(values)}")
    if not all(np.isfinite(v) and abs(v) <= PLAUSIBLE_DEFOCUS_A for v in values):
        raise UserError(f"{what} values must be finite and within ±{PLAUSIBLE_DEFOCUS_A:g} Å (got {defocus_A}); "
                        "check the unit (Å, not nm)")
    if not all(b > a for a, b in zip(values, values[1:], strict=False)):
        raise UserError(f"{what} must increase from frame to frame, as the frames are ordered (got {defocus_A}); "
                        "give the frames and their defocus in increasing defocus")
    return tuple(values)


def read_focal_series(spec: str | Path, sampling_A: float | None = None) -> FocalSeries:
    """Read one focal series (see the module docstring for the accepted `spec`s).

    `sampling_A` (Å/px) is needed when the file has no calibration and overrides it when it has.
    """
    series = read_image_stack(spec, sampling_A)
    if len(series.images) != NUM_IMAGES:
        raise UserError(f"{spec}: holds {len(series.images)} image(s), a focal series needs "
                        f"{NUM_IMAGES}; give a (3, H, W) stack, a folder or a+b+c of single images")
    return series


def read_image_stack(spec: str | Path, sampling_A: float | None = None,
                     require_sampling: bool = True) -> FocalSeries:
    """Read a stack of frames: one focal series, or a time series of them (3k frames in one file).

    Like `read_focal_series` but a single file may hold any number of frames (at least one); a folder
    or a+b+c still names one image per file. With `require_sampling=False` a stack without calibration
    (and no `sampling_A`) is returned with `sampling_A = nan`, for the caller to measure it (e.g.
    `hrtemnet.calibration`).
    """
    if sampling_A is not None:
        check_sampling(sampling_A, "--sampling")
    spec = str(spec)
    path = Path(spec)
    if path.is_dir():
        files = _folder_images(path)
        reads = [_read_single_image(f) for f in files]
        stem = path.resolve().name
    elif "+" in spec and not path.exists():
        files = [Path(part) for part in spec.split("+")]
        if len(files) != NUM_IMAGES or any(not part for part in spec.split("+")):
            raise UserError(f"{spec}: joined with '+' are {len(files)} file names; give exactly "
                            f"{NUM_IMAGES}, one image each, in defocus order")
        reads = [_read_single_image(f) for f in files]
        stem = _common_stem([f.stem for f in files])
    else:
        files = [path]
        reads = [_read_file(path)]
        stem = path.stem
    images = [image for read in reads for image in read.images]
    _check_images(images, [f for f, read in zip(files, reads, strict=True) for _ in read.images])
    file_sampling_A = _agreed_sampling(reads, files)
    notes = "; ".join(sorted({r.calibration_note for r in reads if r.calibration_note}))
    if sampling_A is None and file_sampling_A is None and require_sampling:
        raise UserError(f"{spec}: no pixel size in the file{' (' + notes + ')' if notes else ''}; "
                        f"give it with --sampling S (Å/px)")
    sampling = sampling_A or file_sampling_A
    return FocalSeries(np.stack(images).astype(np.float32), float("nan") if sampling is None else float(sampling),
                       spec, stem, file_sampling_A, notes if file_sampling_A is None else "")


def series_from_array(data, sampling_A: float | None = None, source: str = "array") -> FocalSeries:
    """A stack `(n, H, W)` given as an array (one focal series: n = 3; a time series: n = 3k).

    `sampling_A` in Å/px; None leaves it NaN (to be measured from the lattice). Refuses 2-D arrays,
    NaN/infinite pixels and constant frames with the same one-line messages as files.
    """
    if sampling_A is not None:
        check_sampling(sampling_A, "sampling_A")
    data = np.asarray(data)
    if data.ndim == 2:
        raise UserError(f"{source}: a 2-D array {data.shape} is one image; a focal series is 3 images "
                        f"(3, H, W) in defocus order (a time series: (3k, H, W))")
    if data.ndim != 3:
        raise UserError(f"{source}: a focal series is a (3, H, W) array; got shape {data.shape}")
    images = _split_images(data, Path(source))
    _check_images(images, [Path(source)] * len(images))
    return FocalSeries(np.stack(images).astype(np.float32), float("nan") if sampling_A is None else float(sampling_A),
                       source, "array", None)


def series_from_signal(signal, sampling_A: float | None = None) -> tuple[FocalSeries, np.ndarray]:
    """A HyperSpy `Signal2D` stack (or anything with `.data` and `.axes_manager.signal_axes[i].scale /
    .offset / .units`) as a series, and the (x, y) offset in Å of its pixel (0, 0).

    The signal axes give the pixel size (converted to Å; `sampling_A` overrides it) and the offset;
    axis 0 is x (columns), axis 1 is y (rows), as in HyperSpy.
    """
    name = str(getattr(getattr(getattr(signal, "metadata", None), "General", None), "title", "") or "signal")
    try:
        axes = list(signal.axes_manager.signal_axes)
    except AttributeError:
        raise UserError(f"{name}: not a HyperSpy signal (no axes_manager.signal_axes)") from None
    if len(axes) != 2:
        raise UserError(f"{name}: has {len(axes)} signal axes; a Signal2D (images) stack is needed")
    converted = [_to_angstrom(getattr(axis, "scale", 1.0), getattr(axis, "units", None)) for axis in axes]
    offsets = []
    for axis, (scale_A, _) in zip(axes, converted, strict=True):
        factor = scale_A / float(axis.scale) if scale_A is not None else None
        offsets.append(float(getattr(axis, "offset", 0.0) or 0.0) * (factor if factor is not None else 0.0))
    file_sampling_A = None
    (sx, note), (sy, _) = converted
    if sx is not None and sy is not None:
        if not np.isclose(sx, sy, rtol=SQUARE_PIXEL_TOLERANCE):
            raise UserError(f"{name}: pixels are not square ({sx:.4g} x {sy:.4g} Å); resample them first")
        file_sampling_A = 0.5 * (sx + sy)
    series = series_from_array(np.asarray(signal.data), sampling_A or file_sampling_A, name)
    series.file_sampling_A = file_sampling_A
    series.stem = name
    if file_sampling_A is None and any(offsets):
        offsets = [0.0, 0.0]  # offsets in pixels or unknown units cannot be placed in Å
    return series, np.array(offsets)


def resample_series(images: np.ndarray, from_sampling_A: float, to_sampling_A: float) -> np.ndarray:
    """Images `(..., H, W)` at `from_sampling_A` resampled to `to_sampling_A` (Å/px), float32.

    Output pixel `j` has its centre at `j * to_sampling_A`, the same place in Å as input coordinate
    `j * to / from`; the output covers the pixel centres that fall inside the input's field, so
    `(n - 1) * from >= (n_out - 1) * to`. Cubic-spline interpolation; when downsampling, a Gaussian
    of σ = (factor - 1) / 2 input pixels first suppresses aliasing (skimage's `rescale` default, whose
    pixel-edge alignment would shift positions, hence scipy here).
    """
    images = np.asarray(images, dtype=np.float32)
    factor = to_sampling_A / from_sampling_A
    if _same_sampling(factor):
        return images.copy()
    height, width = images.shape[-2:]
    out_shape = resampled_shape((height, width), from_sampling_A, to_sampling_A)
    if out_shape[0] * out_shape[1] > MAX_RESAMPLED_PIXELS:
        raise UserError(f"{width}x{height} px at {from_sampling_A:g} Å/px would be {out_shape[1]}x{out_shape[0]} "
                        f"px at {to_sampling_A:g} Å/px, more than the {MAX_RESAMPLED_PIXELS:,} px (~3 GB) handled "
                        "at once; check the pixel size (--sampling) or crop the images")
    flat = images.reshape(-1, height, width)
    out = np.empty((len(flat), *out_shape), dtype=np.float32)
    for index, image in enumerate(flat):
        image = image.astype(np.float64)
        if factor > 1.0:
            image = ndimage.gaussian_filter(image, (factor - 1.0) / 2.0, mode="reflect")
        out[index] = ndimage.affine_transform(image, [factor, factor], output_shape=out_shape, order=3,
                                              mode="reflect")
    return out.reshape(*images.shape[:-2], *out_shape)


def resampled_shape(shape: tuple[int, int], from_sampling_A: float, to_sampling_A: float) -> tuple[int, int]:
    """The `(H, W)` that `resample_series` gives, without resampling."""
    factor = to_sampling_A / from_sampling_A
    if _same_sampling(factor):
        return shape[0], shape[1]
    # the last output centre must not pass the last input centre (1e-9: float round-off of exact ratios)
    height, width = (int(np.floor((n - 1) / factor + 1e-9)) + 1 for n in shape)
    return height, width


def _same_sampling(factor: float) -> bool:
    return bool(np.isclose(factor, 1.0, rtol=0.0, atol=1e-9))


# ---- files -----------------------------------------------------------------------------------------------


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _folder_images(folder: Path) -> list[Path]:
    files = sorted((f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                    and f.suffix.lower() in FOLDER_SUFFIXES), key=_natural_key)
    if len(files) != NUM_IMAGES:
        listed = ", ".join(f.name for f in files) or "none"
        raise UserError(f"{folder}: holds {len(files)} image file(s) ({listed}); a focal-series folder "
                        f"must hold exactly {NUM_IMAGES}, named in defocus order")
    return files


def _common_stem(stems: list[str]) -> str:
    """`s1_-30`, `s1_20`, `s1_70` -> `s1`; the first stem when they share nothing."""
    prefix = stems[0]
    for stem in stems[1:]:
        while not stem.startswith(prefix):
            prefix = prefix[:-1]
    return prefix.rstrip("_-. +") or stems[0]


def _read_single_image(path: Path) -> _Read:
    read = _read_file(path)
    if len(read.images) != 1:
        raise UserError(f"{path}: holds {len(read.images)} images; each file joined with '+' or in a "
                        f"folder must hold one image")
    return read


def _read_file(path: Path) -> _Read:
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    try:
        regular = stat.S_ISREG(path.stat().st_mode)
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror or error})") from None
    if not regular:  # a FIFO or device would block or never end
        raise UserError(f"{path}: not a regular file (a pipe, device or socket); give an image file")
    suffix = path.suffix.lower()
    if suffix in NUMPY_SUFFIXES:
        return _read_numpy(path)
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(path)
    if suffix in ROSETTASCIIO_SUFFIXES:
        return _read_rosettasciio(path, ROSETTASCIIO_SUFFIXES[suffix])
    raise UserError(f"{path}: unsupported file type {suffix or '(no suffix)'!r}; {SUPPORTED}")


def _read_numpy(path: Path) -> _Read:
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # .npy
            return _Read(_split_images(loaded, path), None)
        with loaded:  # .npz
            arrays = {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, EOFError) as error:
        raise UserError(f"{path}: not a readable NumPy file ({_first_line(error)})") from None
    sampling = arrays.pop("sampling_A", None)
    images = [v for v in arrays.values() if v.ndim >= 2]
    if len(images) != 1:
        raise UserError(f"{path}: holds arrays {', '.join(arrays) or 'none'}; expected one (3, H, W) image "
                        f"array (and optionally a scalar sampling_A)")
    note = ""
    sampling_A = None
    if sampling is not None and np.ndim(sampling) == 0 and np.issubdtype(np.asarray(sampling).dtype, np.number):
        try:
            sampling_A = check_sampling(sampling, "its sampling_A")
        except UserError as error:  # treated as no calibration: --sampling then gives it
            note = str(error).split(";")[0]
    return _Read(_split_images(images[0], path), sampling_A, note)


def _read_tiff(path: Path) -> _Read:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            data = tif.asarray()
            page = cast(tifffile.TiffPage, tif.pages[0])  # the first page is always a full page, never a frame
            imagej = tif.imagej_metadata or {}
            photometric = page.photometric
            x_resolution = page.tags.get("XResolution")
            resolution_unit = page.tags.get("ResolutionUnit")
    except Exception as error:  # tifffile raises several types for broken or non-TIFF files
        raise UserError(f"{path}: not a readable TIFF file ({_first_line(error)})") from None
    # interleaved RGB(A) is a colour picture; planar "RGB" is how tifffile stores a (3, H, W) float stack
    if photometric == tifffile.PHOTOMETRIC.RGB and data.ndim == 3 and data.shape[-1] in (3, 4):
        raise UserError(f"{path}: is a colour (RGB) picture; give the raw grey-scale images")
    sampling_A, note = _sampling_from_rosettasciio_tiff(path)
    if sampling_A is None and x_resolution is not None:
        pixels_per_unit = _rational(x_resolution.value)
        if imagej.get("unit") and pixels_per_unit > 0:
            sampling_A, note = _to_angstrom(1.0 / pixels_per_unit, imagej["unit"])
        elif resolution_unit is not None and resolution_unit.value == tifffile.RESUNIT.CENTIMETER \
                and pixels_per_unit > 0:
            sampling_A = 1e8 / pixels_per_unit
        # inch resolutions are print settings (72 dpi), never a microscope calibration
    return _Read(_split_images(np.squeeze(data), path), sampling_A, note)


def _sampling_from_rosettasciio_tiff(path: Path) -> tuple[float | None, str]:
    """The calibration rosettasciio finds (FEI, Zeiss, JEOL, DM-exported, its own TIFFs), or None."""
    from rsciio.tiff import file_reader

    try:
        signals = file_reader(str(path), lazy=True)
    except Exception:  # e.g. planar stacks it reads as RGB: the data comes from tifffile anyway
        return None, ""
    return _signal_sampling_A(signals[0], path) if signals else (None, "")


def _read_rosettasciio(path: Path, plugin: str) -> _Read:
    import importlib

    try:
        reader = importlib.import_module(f"rsciio.{plugin}").file_reader
    except ImportError as error:
        raise UserError(f"{path}: reading {path.suffix} files needs the Python package "
                        f"{error.name or 'h5py'} (pip install {error.name or 'h5py'})") from None
    try:
        signals = reader(str(path))
    except Exception as error:  # readers raise many types for corrupt or foreign files
        raise UserError(f"{path}: not a readable {path.suffix} file ({_first_line(error)})") from None
    images, samplings, notes = [], [], []
    for signal in signals:
        signal_axes = [axis for axis in signal["axes"] if not axis.get("navigate", False)]
        if len(signal_axes) != 2:
            continue  # spectra and other non-image signals in the same file
        images += _split_images(np.asarray(signal["data"]), path)
        sampling_A, note = _signal_sampling_A(signal, path)
        samplings.append(sampling_A)
        notes.append(note)
    if not images:
        raise UserError(f"{path}: holds no 2D image (only spectra or other data)")
    if len({s for s in samplings}) > 1:
        raise UserError(f"{path}: its images have different pixel sizes; give one series per file")
    return _Read(images, samplings[0], notes[0])


def _signal_sampling_A(signal: dict, path: Path) -> tuple[float | None, str]:
    """Pixel size in Å from a rosettasciio signal's two signal (image) axes."""
    axes = [axis for axis in signal["axes"] if not axis.get("navigate", False)][-2:]
    if len(axes) != 2:
        return None, ""
    converted = [_to_angstrom(axis.get("scale", 1.0), axis.get("units")) for axis in axes]
    (sy, note), (sx, _) = converted
    if sy is None or sx is None:
        return None, note
    if not np.isclose(sx, sy, rtol=SQUARE_PIXEL_TOLERANCE):
        raise UserError(f"{path}: pixels are not square ({sx:.4g} x {sy:.4g} Å); resample them to square "
                        f"pixels first")
    return 0.5 * (sx + sy), ""


def _to_angstrom(scale, unit) -> tuple[float | None, str]:
    """(scale in Å, "") or (None, why) for a scale in `unit`."""
    unit = (unit or "").strip()
    if not unit or unit.lower() in ("<undefined>", "px", "pixel", "pixels"):
        return None, ""
    factor = ANGSTROM_PER_UNIT.get(unit.lower())
    if factor is None:
        return None, f"its pixel size is in {unit!r}, not a length"
    scale = float(scale)
    if not (np.isfinite(scale) and scale > 0):
        return None, f"its pixel size {scale} {unit} is not positive"
    try:
        return check_sampling(scale * factor, f"its pixel size {scale:g} {unit} ="), ""
    except UserError as error:
        return None, str(error).split(";")[0]


def _rational(value) -> float:
    return value[0] / value[1] if isinstance(value, tuple) else float(value)


def _split_images(data: np.ndarray, path: Path) -> list[np.ndarray]:
    """A 2D image or a stack (..., H, W) as a list of 2D images; refuses colour and complex data."""
    if data.dtype.names is not None or np.iscomplexobj(data):
        kind = "colour (RGB)" if data.dtype.names is not None else "complex"
        raise UserError(f"{path}: holds {kind} data; give the real grey-scale images")
    if not np.issubdtype(data.dtype, np.number) or data.dtype == bool:
        raise UserError(f"{path}: holds {data.dtype} data, not image intensities")
    if data.ndim < 2:
        raise UserError(f"{path}: holds a {data.ndim}D array, not an image")
    return list(np.asarray(data).reshape(-1, *data.shape[-2:]))


def _check_images(images: list[np.ndarray], files: list[Path]) -> None:
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        sizes = ", ".join(f"{f.name} {i.shape[0]}x{i.shape[1]}" for f, i in zip(files, images, strict=True))
        where = files[0] if len(set(files)) == 1 else " + ".join(map(str, files))
        raise UserError(f"{where}: images differ in size ({sizes}); crop or resample them to one size")
    for index, (image, path) in enumerate(zip(images, files, strict=True)):
        which = f"{path}" + (f" image {index + 1}" if len(set(files)) == 1 else "")
        if not np.all(np.isfinite(image)):
            raise UserError(f"{which}: contains NaN or infinite pixels; replace them (e.g. by the mean)")
        if np.ptp(image) == 0:
            raise UserError(f"{which}: is constant (no contrast); check it is the right image")


def _agreed_sampling(reads: list[_Read], files: list[Path]) -> float | None:
    samplings = [r.sampling_A for r in reads if r.sampling_A is not None]
    if samplings and len(samplings) < len(reads):
        missing = [str(f) for f, r in zip(files, reads, strict=True) if r.sampling_A is None]
        raise UserError(f"{', '.join(missing)}: no pixel size, while the other images have one; "
                        f"give --sampling S (Å/px) to set it for all")
    if samplings and not np.allclose(samplings, samplings[0], rtol=SQUARE_PIXEL_TOLERANCE):
        raise UserError(f"{' + '.join(map(str, files))}: pixel sizes differ "
                        f"({', '.join(f'{s:.4g}' for s in samplings)} Å); a series is taken at one "
                        f"magnification")
    return samplings[0] if samplings else None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
