"""hrtemnet: find and classify atomic columns in HRTEM focal series of 2D materials.

The Python API (everything else lives in the submodules, imported only when used, so `import hrtemnet`
stays cheap):

- `hrtemnet.predict(series, sampling_A=None, model="msd", align=True, border_A=2.0, threshold=None,
  defocus_A=None)` -> pandas DataFrame
- `hrtemnet.load_model(spec)` -> a model ready for inference (`hrtemnet.models.LoadedModel`)
- `hrtemnet.simulate_series(atoms, defocus_A=..., ...)` -> a simulated focal series `(3, H, W)`
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "predict", "simulate_series"]

_MODELS: dict = {}  # loaded models by (spec, file modification time): predicting in a loop loads once


def load_model(spec="msd", flip_average: bool = False):
    """Load a model: `"msd"` or `"unet"` (shipped), a model file (.pt) or a training folder (its best.pt).
    `flip_average`: predict with the mean over the 8 flips/90° rotations of each series (8x the time).

    Returns a `hrtemnet.models.LoadedModel` (network in eval mode, the sampling in Å/px it was trained
    at, its peak-extraction settings and provenance card). Raises `ValueError` (`hrtemnet.errors.UserError`)
    when there is no such model.
    """
    from hrtemnet.models import load_model as _load

    return _load(spec, flip_average=flip_average)


def _cached_model(spec, flip_average: bool = False):
    from hrtemnet.models import LoadedModel, _resolve_model_path, flip_average_name, with_flip_average

    if isinstance(spec, LoadedModel):
        model = with_flip_average(spec) if flip_average else spec
        return model, flip_average_name(spec.name, model.flip_average), ""
    from hrtemnet.prediction import model_sha256

    path = _resolve_model_path(spec)
    key = (str(path.resolve()), path.stat().st_mtime_ns, flip_average)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = (load_model(spec, flip_average), model_sha256(spec))
    model, sha256 = _MODELS[key]
    return model, flip_average_name(str(spec), flip_average), sha256


def predict(series, sampling_A=None, model="msd", align: bool = True, border_A: float = 2.0,
            threshold: float | None = None, defocus_A=None, flip_average: bool = False,
            sublattice_vote: bool | None = None, defocus_search_A: float = 0.0):
    """Find and classify the atomic columns of a focal series: a table of columns.

    Parameters
    ----------
    series : one of
        - an array `(3, H, W)`: three images in increasing defocus, indexed [row, col]; `(3k, H, W)` is a
          time series of k focal series (each aligned to the first; a `series` column says which);
        - a path (str or Path) of anything `hrtemnet predict` reads (.npy/.npz, TIFF, dm3/dm4, ser, emd,
          a folder of three images, or `a+b+c`);
        - a HyperSpy `Signal2D` stack `(3, H, W)` (or any object with `.data` and
          `.axes_manager.signal_axes[i].scale/.offset/.units`): the axes' scale is the pixel size and their
          offset moves `x_A`, `y_A` (the offset of pixel (0, 0)).
    sampling_A : pixel size in Å/px. None: the file's or signal's calibration, or for a bare array the
        pixel size measured from the MoS2 lattice (`"auto"` always measures it). Every pixel size is
        checked against the lattice; a difference over 3 % is a warning in `df.attrs["warnings"]`.
    model : `"msd"`, `"unet"`, `"unet-wide"` (needs `defocus_A`), a model file / training folder, or a model from
        `hrtemnet.load_model`.
    align : register frames 2..n to frame 1 first (sub-pixel; `hrtemnet.registration`).
    border_A : the summary in `df.attrs` counts only columns at least this far (Å) inside the field that
        every frame covers (column `interior`).
    threshold : column probability threshold in [0, 1) (default: the model's).
    defocus_A : nominal defocus of each frame in Å (positive = underfocus), for a model trained with
        `--defocus-input` (it needs them); other models do not use them (a warning says so).
    flip_average : predict with the mean over the 8 flips/90° rotations of the series (test-time augmentation,
        `hrtemnet.models.FlipAverage`): 8x the network time; `df.attrs["model"]` ends in " +flips".
    sublattice_vote : decide Mo against S2/S per patch of the 2H lattice rather than per column
        (`hrtemnet.peaks.sublattice_vote`: fixes patches the network swapped under amorphous carbon; only for
        single-phase 2H samples). None: the model's setting.
    defocus_search_A : for a model with the defocus input: when the columns at `defocus_A` score low, also try
        the values shifted by multiples of 20 Å up to this far either way (Å) and keep the shift whose columns
        score clearly higher (the absolute defocus is often known poorly); `df.attrs["defocus_A"]` and
        `["defocus_offset_A"]` say what was used.

    Returns
    -------
    pandas.DataFrame with one row per column: `x_A, y_A` (Å, in the frame of the first image, plus any
    signal offset), `class` (Mo, S2, S), `score` (p(column) x winning class share, 0..1), `p_Mo, p_S2,
    p_S` (class shares), `row_px, col_px` (pixels of the first image), `p_column`, `interior`.
    `df.attrs` holds `sampling_A`, `sampling_source`, `measured_sampling_A`, `shifts_A` (per frame,
    (dx, dy) Å), `counts`, `s_vacancy_fraction` (interior: S/(S+S2)), `warnings`, `model`,
    `model_sha256`.

    Raises
    ------
    ValueError (`hrtemnet.errors.UserError`) with a one-line message for bad input (2-D array, NaN
    pixels, constant frames, wrong number of frames, no pixel size and no lattice to measure it, ...).
    """
    from dataclasses import replace
    from pathlib import Path

    import numpy as np

    from hrtemnet import io
    from hrtemnet.errors import UserError
    from hrtemnet.prediction import (
        check_defocus_search,
        model_peak_config,
        predict_focal_series,
        series_drifts,
        split_stack,
    )

    auto = isinstance(sampling_A, str)
    if auto and sampling_A != "auto":
        raise UserError(f"sampling_A must be a pixel size in Å/px, None or 'auto' (got {sampling_A!r})")
    given = None if auto else sampling_A
    offset_A = np.zeros(2)
    if isinstance(series, (str, Path)):
        stack = io.read_image_stack(series, given, require_sampling=False)
    elif hasattr(series, "axes_manager") and hasattr(series, "data"):
        stack, offset_A = io.series_from_signal(series, given)
    else:
        stack = io.series_from_array(series, given)
    if auto:
        stack = replace(stack, sampling_A=float("nan"))
    if defocus_A is not None:
        stack = replace(stack, defocus_A=io.check_defocus(defocus_A, "defocus_A"))
    if threshold is not None and not 0 <= threshold < 1:
        raise UserError(f"threshold must lie in [0, 1) (got {threshold})")
    source = "lattice" if auto or not np.isfinite(stack.sampling_A) else \
        "given" if given is not None else "file"
    loaded, model_name, sha256 = _cached_model(model, flip_average)
    stack = replace(stack, defocus_search_A=check_defocus_search(loaded, defocus_search_A, "defocus_search_A"))
    peak_config = model_peak_config(loaded, threshold, sublattice_vote)
    parts = split_stack(stack)
    drifts = np.zeros((len(parts), 2))
    drift_warnings: list[list[str]] = [[] for _ in parts]
    frames = []
    for index, part in enumerate(parts):
        prediction = predict_focal_series(loaded, part, peak_config, align, border_A, source)
        if index == 0 and len(parts) > 1 and align:
            drifts, drift_warnings = series_drifts(parts, prediction.sampling_A)
        prediction.warnings += drift_warnings[index]
        if index > 0:
            prediction.drift_A = drifts[index]
            prediction.columns = type(prediction.columns)(prediction.columns.xy_A - drifts[index],
                                                          prediction.columns.class_index, prediction.columns.score)
        prediction.offset_A = offset_A
        frame = prediction.to_dataframe()
        frame.attrs.update(model=model_name, model_sha256=sha256)
        if len(parts) > 1:
            frame.insert(0, "series", index)
        frames.append(frame)
    if len(frames) == 1:
        return frames[0]
    import pandas as pd

    combined = pd.concat(frames, ignore_index=True)
    combined.attrs = {"series": [f.attrs for f in frames], "model": model_name, "model_sha256": sha256,
                      "warnings": [f"series {i}: {w}" for i, f in enumerate(frames) for w in f.attrs["warnings"]]}
    return combined


def simulate_series(atoms, defocus_A=(-30.0, 20.0, 70.0), sampling_A: float = 0.15, cs_A: float = 14.29e4,
                    astigmatism_A: float = 0.0, focal_spread_A: float = 30.0, energy_eV: float = 50e3,
                    dose_e_per_A2: float | None = None, num_phonons: int = 0, seed: int = 0):
    """Simulate an HRTEM focal series of a structure (abTEM multislice), as a float32 array `(n, H, W)`.

    Parameters
    ----------
    atoms : ASE `Atoms` with a cell (the field of view), e.g. `hrtemnet.structures.read_structure(path)`.
    defocus_A : defocus values in Å, increasing; positive = underfocus (abTEM: defocus = -C10).
    sampling_A : output pixel size, Å/px.
    cs_A : spherical aberration Cs in Å (14.29e4 Å = 14.29 µm).
    astigmatism_A, focal_spread_A : two-fold astigmatism and focal spread (1/e width), Å.
    energy_eV : beam energy, eV.
    dose_e_per_A2 : electrons per Å² for Poisson noise and detector blur; None = noise-free.
    num_phonons : frozen-phonon configurations (0 = static lattice; the shipped vibration table otherwise).
    seed : seed of phonons and noise.

    Returns
    -------
    float32 array `(n, H, W)` indexed [row, col], vacuum intensity ≈ 1, ready for `hrtemnet.predict`.
    """
    import numpy as np

    from hrtemnet.simulation import (
        NoiseConfig,
        OpticsParams,
        SimulationConfig,
        add_imaging_noise,
        simulate_focal_series,
    )

    optics = OpticsParams(defocus_A=tuple(float(d) for d in defocus_A), cs_A=cs_A, astigmatism_A=astigmatism_A,
                          focal_spread_A=focal_spread_A, energy_eV=energy_eV)
    images = simulate_focal_series(atoms, optics, SimulationConfig(sampling_A=sampling_A, num_phonons=num_phonons),
                                   seed=seed)
    if dose_e_per_A2 is not None:
        images, _ = add_imaging_noise(images, sampling_A, np.random.default_rng(seed),
                                      NoiseConfig(dose_e_per_A2=dose_e_per_A2))
    return images
