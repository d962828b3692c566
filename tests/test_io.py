"""Reading focal series from each supported format, calibrations, and resampling."""

import numpy as np
import pytest
import tifffile

from hrtemnet.errors import UserError
from hrtemnet.io import read_focal_series, resample_series, resampled_shape


def random_series(shape=(3, 40, 50), seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def signal_dict(image, scale, units):
    """A rosettasciio signal dictionary (what its writers take and its readers return)."""
    axes = [{"name": name, "size": size, "scale": scale, "offset": 0.0, "units": units, "navigate": False}
            for name, size in zip(("y", "x"), image.shape[-2:], strict=True)]
    if image.ndim == 3:
        axes.insert(0, {"name": "defocus", "size": len(image), "scale": 1.0, "offset": 0.0, "units": "",
                        "navigate": True})
    metadata = {"General": {"title": "t"}, "Signal": {"signal_type": ""}}
    return {"data": image, "axes": axes, "metadata": metadata, "original_metadata": {}}


def test_npy_needs_sampling_and_npz_carries_it(tmp_path):
    series = random_series()
    np.save(tmp_path / "s.npy", series)
    with pytest.raises(UserError, match=r"s\.npy.*--sampling"):
        read_focal_series(tmp_path / "s.npy")
    read = read_focal_series(tmp_path / "s.npy", sampling_A=0.12)
    assert read.sampling_A == 0.12 and read.stem == "s" and read.file_sampling_A is None
    np.testing.assert_array_equal(read.images, series)
    np.savez(tmp_path / "z.npz", images=series, sampling_A=0.11)
    read = read_focal_series(str(tmp_path / "z.npz"))
    assert read.sampling_A == pytest.approx(0.11) and read.images.dtype == np.float32


@pytest.mark.parametrize("how", ["planar", "imagej_nm", "resolution_cm", "rosettasciio"])
def test_three_image_tiff_and_its_calibration(tmp_path, how):
    series, path = random_series(), tmp_path / f"{how}.tif"
    if how == "planar":  # tifffile's default for (3, H, W) so far: one planar "RGB" page, no calibration
        tifffile.imwrite(path, series, photometric="rgb", planarconfig="separate")
    elif how == "imagej_nm":  # ImageJ/Fiji stack, 0.015 nm/px
        tifffile.imwrite(path, series, imagej=True, resolution=(1 / 0.015, 1 / 0.015),
                         metadata={"unit": "nm"})
    elif how == "resolution_cm":  # plain TIFF resolution tags, pixels per cm
        tifffile.imwrite(path, series, photometric="minisblack", resolution=(1 / 1.5e-9, 1 / 1.5e-9),
                         resolutionunit="CENTIMETER")
    else:
        from rsciio.tiff import file_writer

        file_writer(str(path), signal_dict(series, 15.0, "pm"))
    if how == "planar":
        with pytest.raises(UserError, match="no pixel size"):
            read_focal_series(path)
        read = read_focal_series(path, sampling_A=0.15)
    else:
        read = read_focal_series(path)
    assert read.sampling_A == pytest.approx(0.15)
    np.testing.assert_allclose(read.images, series)


def test_explicit_sampling_overrides_file(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", random_series(), imagej=True, resolution=(1 / 0.015, 1 / 0.015),
                     metadata={"unit": "nm"})
    read = read_focal_series(tmp_path / "s.tif", sampling_A=0.2)
    assert read.sampling_A == 0.2 and read.file_sampling_A == pytest.approx(0.15) and read.sampling_overridden


def test_emd_files_joined_with_plus(tmp_path):
    pytest.importorskip("h5py")
    from rsciio.emd import file_writer

    series = random_series()
    paths = [tmp_path / f"focus_{i}.emd" for i in range(3)]
    for path, image in zip(paths, series, strict=True):
        file_writer(str(path), signal_dict(image, 0.0125, "nm"))
    read = read_focal_series("+".join(map(str, paths)))
    assert read.sampling_A == pytest.approx(0.125) and read.stem == "focus"
    np.testing.assert_allclose(read.images, series)


def test_folder_in_natural_name_order(tmp_path):
    from rsciio.tiff import file_writer

    series = random_series()
    for name, image in zip(("img2", "img10", "img1"), series[[1, 2, 0]], strict=True):
        file_writer(str(tmp_path / f"{name}.tif"), signal_dict(image, 0.15, "Å"))
    (tmp_path / "notes.txt").write_text("not an image, ignored")
    read = read_focal_series(tmp_path)
    np.testing.assert_allclose(read.images, series)  # img1, img2, img10
    assert read.sampling_A == pytest.approx(0.15) and read.stem == tmp_path.name


@pytest.mark.parametrize("suffix, plugin", [(".dm4", "digitalmicrograph"), (".ser", "tia")])
def test_microscope_reader_output_is_used_with_its_calibration(tmp_path, monkeypatch, suffix, plugin):
    """What rosettasciio's dm/ser readers return (µm, m units) is turned into images in Å.

    rosettasciio has no dm3/dm4/ser writer and no installed package ships such files, so the reader itself is
    replaced by one returning its documented output; real .emd and .ser files are covered by
    `test_real_microscope_files_with_their_calibration`.
    """
    import importlib

    series = random_series()
    scale, units = (1.5e-5, "µm") if suffix == ".dm4" else (1.5e-11, "m")
    monkeypatch.setattr(importlib.import_module(f"rsciio.{plugin}"), "file_reader",
                        lambda filename, **kw: [signal_dict(series[int(filename[-5])], scale, units)])
    paths = [tmp_path / f"s{i}{suffix}" for i in range(3)]
    for path in paths:
        path.write_bytes(b"placeholder")
    read = read_focal_series("+".join(map(str, paths)))
    assert read.sampling_A == pytest.approx(0.15)
    np.testing.assert_allclose(read.images, series)


def write_velox_emd(path, image, pixel_size_m):
    """One TEM image as Thermo Fisher Velox writes it (what `rsciio.emd` reads as the Velox variant).

    HDF5 with `Version` (JSON, format "Velox"), the image at `Data/Image/<uuid>/Data` as `(y, x, frames)` and
    its JSON metadata as a null-padded uint8 column at `Data/Image/<uuid>/Metadata`: pixel size in metres as
    strings under `BinaryResult.PixelSize`, the unit in `BinaryResult.PixelUnitX`.
    """
    import json

    import h5py

    metadata = {
        "BinaryResult": {"PixelSize": {"width": repr(pixel_size_m), "height": repr(pixel_size_m)},
                         "PixelUnitX": "m", "PixelUnitY": "m", "Offset": {"x": "0", "y": "0"},
                         "DetectorIndex": "0", "ImageSize": {"width": str(image.shape[1]),
                                                             "height": str(image.shape[0])}},
        "Detectors": {"Detector-0": {"DetectorName": "BM-Ceta", "DetectorType": "ImagingDetector"}},
        "Acquisition": {"AcquisitionStartDatetime": {"DateTime": "1700000000"}},
        "Optics": {"AccelerationVoltage": "80000"},
        "Instrument": {"InstrumentClass": "Titan"},
    }
    encoded = np.frombuffer(json.dumps(metadata).encode() + b"\0" * 64, dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f.create_dataset("Version", data=np.array([json.dumps({"format": "Velox", "version": "11"}).encode()]))
        group = f.create_group("Data/Image/0123456789abcdef0123456789abcdef")
        group.create_dataset("Data", data=image[:, :, None], chunks=(*image.shape, 1))
        group.create_dataset("Metadata", data=encoded[:, None])


def write_tia_ser(path, image, pixel_size_m):
    """One image as FEI TIA writes a `.ser` file (Boothroyd's description, as `rsciio.tia` reads it).

    Header (byte order 0x4949, series id 0x0197, version 0x0210 with 4-byte offsets, data type 0x4122 =
    2D image, tag type 0x4152 = time only, 1 element, 1 dimension of size 1), the offset arrays, then the
    element: x and y calibration (offset, delta in metres, element), data type 7 = float32, size x, size y
    and the pixels with x fastest, stored bottom row first.
    """
    import struct

    height, width = image.shape
    description, units = b"Number", b""
    dimension = struct.pack("<IddI", 1, 0.0, 1.0, 0) + struct.pack("<I", len(description)) + description
    dimension += struct.pack("<I", len(units)) + units
    header_size = 30 + len(dimension)
    offset_array = header_size
    data_offset = offset_array + 8  # one data offset, one tag offset, 4 bytes each
    element = struct.pack("<ddIddIHII", 0.0, pixel_size_m, 0, 0.0, pixel_size_m, 0, 7, width, height)
    element += np.ascontiguousarray(image[::-1], dtype="<f4").tobytes()
    tag_offset = data_offset + len(element)
    with open(path, "wb") as f:
        f.write(struct.pack("<HHHIIIIII", 0x4949, 0x0197, 0x0210, 0x4122, 0x4152, 1, 1, offset_array, 1))
        f.write(dimension)
        f.write(struct.pack("<II", data_offset, tag_offset))
        f.write(element)
        f.write(struct.pack("<HHI", 0x4152, 0, 1700000000))


@pytest.mark.parametrize("suffix", [".emd", ".ser"])
def test_real_microscope_files_with_their_calibration(tmp_path, suffix):
    """Files laid out as Velox (.emd) and TIA (.ser) write them, read through rosettasciio's real readers.

    The images are not square (48 rows, 56 columns) so a transposed or flipped read cannot pass, and the
    pixel size is stored in metres as the microscopes do (rosettasciio converts it to pm or nm). DigitalMicrograph
    .dm3/.dm4 are not covered by a real file: their tag tree has no writer in any installed package, and
    rosettasciio's test files are downloaded on demand; `test_microscope_reader_output_is_used_with_its_calibration`
    covers what its reader returns.
    """
    writer = write_velox_emd if suffix == ".emd" else write_tia_ser
    series = random_series((3, 48, 56), seed=4)
    series[:, 5, 40] = 10.0  # a landmark: row 5, column 40 in every image
    paths = [tmp_path / f"focus_{i}{suffix}" for i in range(3)]
    for path, image in zip(paths, series, strict=True):
        writer(path, image, 1.52e-11)  # 0.152 Å per pixel
    read = read_focal_series("+".join(map(str, paths)))
    assert read.sampling_A == pytest.approx(0.152, rel=1e-9) and read.file_sampling_A == read.sampling_A
    assert read.stem == "focus"
    np.testing.assert_array_equal(read.images, series)
    folder = read_focal_series(tmp_path)  # the same three files as a folder
    np.testing.assert_array_equal(folder.images, series)


@pytest.mark.parametrize("problem, match", [
    ("two_images", r"holds 2 image\(s\), a focal series needs 3"),
    ("nan", r"image 2: contains NaN"),
    ("constant", r"image 3: is constant"),
    ("text_as_tif", r"not a readable TIFF"),
    ("unsupported", r"unsupported file type '\.txt'"),
    ("missing", r"no such file"),
    ("rgb", r"colour"),
    ("non_square", r"not square"),
])
def test_bad_single_files(tmp_path, problem, match):
    series = random_series()
    path = tmp_path / "bad.npy"
    if problem == "two_images":
        np.save(path, series[:2])
    elif problem == "nan":
        series[1, 3, 4] = np.nan
        np.save(path, series)
    elif problem == "constant":
        series[2] = 7.0
        np.save(path, series)
    elif problem == "text_as_tif":
        path = tmp_path / "bad.tif"
        path.write_text("hello")
    elif problem == "unsupported":
        path = tmp_path / "bad.txt"
        path.write_text("hello")
    elif problem == "missing":
        path = tmp_path / "absent.npy"
    elif problem == "rgb":
        path = tmp_path / "bad.tif"
        tifffile.imwrite(path, (series[0, :, :, None] * 255).astype(np.uint8).repeat(3, axis=2))
    elif problem == "non_square":
        from rsciio.tiff import file_writer

        path = tmp_path / "bad.tif"
        signal = signal_dict(series, 0.015, "nm")
        signal["axes"][2]["scale"] = 0.02
        file_writer(str(path), signal)
    with pytest.raises(UserError, match=match) as error:
        read_focal_series(path, sampling_A=0.15)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_bad_joined_files(tmp_path):
    series = random_series()
    for i, shape in enumerate([(40, 50), (40, 50), (40, 52)]):
        np.save(tmp_path / f"{i}.npy", np.random.default_rng(i).random(shape))
    joined = "+".join(str(tmp_path / f"{i}.npy") for i in range(3))
    with pytest.raises(UserError, match="differ in size"):
        read_focal_series(joined, 0.15)
    with pytest.raises(UserError, match="give exactly 3"):
        read_focal_series("+".join(str(tmp_path / f"{i}.npy") for i in range(2)), 0.15)
    np.save(tmp_path / "stack.npy", series)
    with pytest.raises(UserError, match="must hold one image"):
        read_focal_series(f"{tmp_path / '0.npy'}+{tmp_path / '1.npy'}+{tmp_path / 'stack.npy'}", 0.15)
    (tmp_path / "folder").mkdir()
    np.save(tmp_path / "folder" / "a.npy", series[0])
    with pytest.raises(UserError, match="holds 1 image file"):
        read_focal_series(tmp_path / "folder", 0.15)


def gaussian_scene(sampling_A, size_A=20.0, sigma_A=0.5):
    """Analytic Gaussians rendered at pixel centres i * s: the same scene at any sampling."""
    coordinates = np.arange(int(np.floor(size_A / sampling_A + 1e-9)) + 1) * sampling_A
    y, x = np.meshgrid(coordinates, coordinates, indexing="ij")
    image = np.zeros_like(x)
    for cx, cy in [(3.0, 4.0), (10.3, 7.7), (16.1, 15.2), (6.6, 17.9)]:
        image += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma_A**2))
    return image


@pytest.mark.parametrize("from_A, to_A", [(0.10, 0.15), (0.20, 0.15), (0.15, 0.15)])
def test_resampling_keeps_positions_in_angstrom(from_A, to_A):
    resampled = resample_series(gaussian_scene(from_A)[None], from_A, to_A)[0]
    expected = gaussian_scene(to_A)
    assert resampled.shape == expected.shape == resampled_shape(gaussian_scene(from_A).shape, from_A, to_A)
    # measured < 0.002; skimage's `rescale` (pixel-edge alignment: a quarter-pixel shift) leaves 0.04-0.11
    assert np.abs(resampled - expected).max() < 0.01


def read_with_axes(tmp_path, monkeypatch, axes_by_image):
    """Three single-image .ser files whose (patched) rosettasciio reader returns the given axes per image."""
    import importlib

    series = random_series()
    images = iter(range(3))

    def reader(filename, **kwargs):
        index = next(images)
        return [{"data": series[index], "axes": axes_by_image[index], "metadata": {}, "original_metadata": {}}]

    monkeypatch.setattr(importlib.import_module("rsciio.tia"), "file_reader", reader)
    paths = [tmp_path / f"s{i}.ser" for i in range(3)]
    for path in paths:
        path.write_bytes(b"placeholder")
    return "+".join(map(str, paths))


def image_axes(scale_y, scale_x, units_y="nm", units_x="nm", navigation=None):
    axes = [{"name": "y", "size": 40, "scale": scale_y, "offset": 0.0, "units": units_y, "navigate": False},
            {"name": "x", "size": 50, "scale": scale_x, "offset": 0.0, "units": units_x, "navigate": False}]
    return ([navigation] if navigation else []) + axes


@pytest.mark.parametrize(
    "axes, expected",
    [
        (image_axes(0.015, 0.015), 0.15),
        (image_axes(0.01500, 0.01507), 0.15035),  # 0.5 % apart: square enough, the mean is used
        # a navigation axis before the image axes (a stack) does not count as an image axis
        (image_axes(0.015, 0.015, navigation={"name": "t", "size": 1, "scale": 7.0, "units": "nm", "navigate": True}),
         0.15),
        (image_axes(0.015, 0.015, units_y="px"), None),  # one axis uncalibrated: no calibration
        (image_axes(1.0, 1.0, "px", "px"), None),
        (image_axes(1.0, 1.0, "pixels", "pixels"), None),
        (image_axes(1.0, 1.0, "<undefined>", "<undefined>"), None),
        (image_axes(0.0, 0.0), None),  # a zero pixel size is no calibration
    ],
)
def test_calibration_from_the_image_axes(tmp_path, monkeypatch, axes, expected):
    spec = read_with_axes(tmp_path, monkeypatch, [axes] * 3)
    if expected is None:
        with pytest.raises(UserError, match="no pixel size"):
            read_focal_series(spec)
    else:
        assert read_focal_series(spec).sampling_A == pytest.approx(expected, rel=1e-9)


def test_calibrations_that_disagree(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="not square"):
        read_focal_series(read_with_axes(tmp_path, monkeypatch, [image_axes(0.015, 0.0154)] * 3))
    # frames 0.5 % apart are one magnification; 5 % apart are not
    close = [image_axes(s, s) for s in (0.015, 0.01507, 0.015)]
    assert read_focal_series(read_with_axes(tmp_path, monkeypatch, close)).sampling_A == pytest.approx(0.15)
    far = [image_axes(s, s) for s in (0.015, 0.0158, 0.015)]
    with pytest.raises(UserError, match="pixel sizes differ"):
        read_focal_series(read_with_axes(tmp_path, monkeypatch, far))
    # one frame without calibration: the message names that file, and only that one
    mixed = [image_axes(0.015, 0.015), image_axes(1.0, 1.0, "px", "px"), image_axes(0.015, 0.015)]
    with pytest.raises(UserError, match="no pixel size, while the other images have one") as error:
        read_focal_series(read_with_axes(tmp_path, monkeypatch, mixed))
    assert str(error.value).startswith(f"{tmp_path / 's1.ser'}:")


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan")])
def test_given_sampling_must_be_a_positive_number(tmp_path, bad):
    np.save(tmp_path / "s.npy", random_series())
    with pytest.raises(UserError, match="--sampling must be a positive pixel size"):
        read_focal_series(tmp_path / "s.npy", sampling_A=bad)


def test_joined_files_name_the_series_by_their_common_stem_and_problems_by_file(tmp_path):
    series = random_series()
    names = ["s1_-30.npy", "s1_20.npy", "s1_70.npy"]
    for name, image in zip(names, series, strict=True):
        np.save(tmp_path / name, image)
    assert read_focal_series("+".join(str(tmp_path / n) for n in names), 0.15).stem == "s1"
    for name, image in zip(["a.npy", "b.npy", "c.npy"], series, strict=True):
        np.save(tmp_path / name, image)
    assert read_focal_series("+".join(str(tmp_path / n) for n in ["b.npy", "a.npy", "c.npy"]), 0.15).stem == "b"
    np.save(tmp_path / "c.npy", series[2][:, :-2])
    joined = "+".join(str(tmp_path / n) for n in ["a.npy", "b.npy", "c.npy"])
    with pytest.raises(UserError) as error:
        read_focal_series(joined, 0.15)
    assert str(error.value).startswith(f"{tmp_path / 'a.npy'} + {tmp_path / 'b.npy'} + {tmp_path / 'c.npy'}:")
    assert "a.npy 40x50, b.npy 40x50, c.npy 40x48" in str(error.value)
    stack = series.copy()
    stack[1, 0, 0] = np.nan
    np.save(tmp_path / "stack.npy", stack)
    with pytest.raises(UserError, match=r"stack\.npy image 2: contains NaN"):
        read_focal_series(tmp_path / "stack.npy", 0.15)
    nan_frame = series[0].copy()
    nan_frame[0, 0] = np.nan
    np.save(tmp_path / "b.npy", nan_frame)
    np.save(tmp_path / "c.npy", series[2])
    with pytest.raises(UserError) as error:
        read_focal_series(joined, 0.15)
    assert str(error.value).startswith(f"{tmp_path / 'b.npy'}: contains NaN")  # no "image 1" for single files


def test_folder_with_the_wrong_number_of_images_lists_them(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"holds 0 image file\(s\) \(none\)"):
        read_focal_series(tmp_path / "empty", 0.15)
    (tmp_path / "two").mkdir()
    for name in ("a.npy", "b.tif"):
        (tmp_path / "two" / name).write_bytes(b"x")
    with pytest.raises(UserError, match=r"holds 2 image file\(s\) \(a\.npy, b\.tif\)"):
        read_focal_series(tmp_path / "two", 0.15)
