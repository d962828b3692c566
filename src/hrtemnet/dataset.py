"""Simulated datasets in a zarr store: one dask task per sample, resumable, same data for any worker count.

Store layout (`format = hrtemnet-series-v1`):
  images  (N, D, H, W) float32  noise-free focal series, [row, col], vacuum intensity ≈ 1
  columns (N, M, 3)    float32  ground truth x_A, y_A, class index (NaN rows = padding)
  params  (N, P)       float64  every drawn parameter (names in attrs["param_names"]);
                                written last: a non-NaN first entry (sample_seed) marks a finished sample.
The same seed gives the same labels and parameters for any worker count, and the same images to float32
rounding (FFTW's measured plans can differ between processes in the last bit).
Each sample owns one chunk of each array, so parallel tasks never write the same chunk and an
interrupted run loses nothing already written.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np

from hrtemnet.columns import Columns
from hrtemnet.errors import UserError
from hrtemnet.progress import progress_bar
from hrtemnet.simulation import OpticsRanges, SimulationConfig, simulate_focal_series
from hrtemnet.structures import StructureConfig, random_structure
from hrtemnet.validation import lists_as_tuples, validate_config, writable_folder

STORE_FORMAT = "hrtemnet-series-v1"
STRUCTURE_PARAM_NAMES = ("structure_kind", "rotation_rad", "flake_radius_A", "single_s_vacancy_rate",
                         "mo_vacancy_rate", "substrate_graphene", "graphene_rotation_rad", "num_atoms",
                         "carbon_top_A", "carbon_bottom_A", "carbon_density_g_cm3", "tilt_rad", "tilt_axis_rad")
OPTICS_PARAM_NAMES = ("cs_A", "astigmatism_A", "astigmatism_angle_rad", "focal_spread_A", "energy_eV")
COLUMN_AREA_A2 = 4.3  # area per column in MoS2 (2 columns per 8.65 Å² cell), to size the column table
# Largest simulation grid side (image side times oversampling): one 8192² complex128 wave is 1 GB, and abTEM
# holds several (potential slices, propagator, the three defocus images).
MAX_GRID_PX = 8192
ARRAY_NAMES = ("images", "columns", "params")


@dataclass
class DatasetConfig:
    """Everything that defines a dataset besides its size and seed."""

    structure: StructureConfig = field(default_factory=StructureConfig)
    optics: OpticsRanges = field(default_factory=OpticsRanges)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    vibrations_file: str | None = None  # None: the table shipped with the package
    image_dtype: str = "float32"

    @classmethod
    def from_dict(cls, data: dict) -> DatasetConfig:
        sections = {"structure": StructureConfig, "optics": OpticsRanges, "simulation": SimulationConfig}
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UserError(f"unknown config section(s) {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(sorted(known))}")
        kwargs = {}
        for name, value in data.items():
            if name in sections:
                if not isinstance(value, dict):
                    raise UserError(f"config section {name!r} must be an object of fields, not {value!r}")
                section_fields = {f.name for f in fields(sections[name])}
                bad = set(value) - section_fields
                if bad:
                    raise UserError(f"unknown field(s) {', '.join(sorted(bad))} in config section {name!r}; "
                                    f"known: {', '.join(sorted(section_fields))}")
                kwargs[name] = sections[name](**lists_as_tuples(value))
            else:
                kwargs[name] = value
        return cls(**kwargs).validate()

    def validate(self) -> DatasetConfig:
        """Check every field (`hrtemnet.validation` conventions) and the image size, before anything is
        written; returns the config."""
        validate_config(self)
        self.simulation.validate()
        if self.image_dtype not in ("float32", "float16"):
            raise UserError("image_dtype must be float32 or float16")
        height, width = self.image_shape()
        grid = max(height, width) * self.simulation.oversampling
        if min(height, width) < 1 or grid > MAX_GRID_PX:
            raise UserError(f"field_of_view_A {self.structure.field_of_view_A} at sampling_A "
                            f"{self.simulation.sampling_A} and oversampling {self.simulation.oversampling} "
                            f"needs a {grid} px simulation grid; at most {MAX_GRID_PX} px fit in memory: "
                            "give a smaller field or a larger sampling")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def param_names(self) -> tuple[str, ...]:
        defocus = tuple(f"defocus_{i}_A" for i in range(self.optics.num_defocus))
        return ("sample_seed",) + STRUCTURE_PARAM_NAMES + defocus + OPTICS_PARAM_NAMES + ("num_columns",)

    def image_shape(self) -> tuple[int, int]:
        width, height = self.structure.field_of_view_A
        return int(round(height / self.simulation.sampling_A)), int(round(width / self.simulation.sampling_A))

    def max_columns(self) -> int:
        width, height = self.structure.field_of_view_A
        return int(width * height / COLUMN_AREA_A2 * 1.3) + 16


# Fields added with the realism distribution, and the value that means "not drawn": a config recorded before
# they existed (an older store or model card) describes data without them.
ABSENT_MEANS_OFF = {"structure": {"carbon_probability": 0.0, "tilt_rad_range": (0.0, 0.0)}}


# The narrow window the first (still shipped) models were trained on, as overrides of today's defaults:
# no contamination or tilt, first defocus -50..-10 Å, steps 50 ± 5 Å (docs/training_distribution.md).
SEED_WINDOW = {"structure": {"carbon_probability": 0.0, "tilt_rad_range": (0.0, 0.0)},
               "optics": {"first_defocus_A_range": (-50.0, -10.0), "defocus_step_A_range": (45.0, 55.0)}}


def recorded_config(data: dict) -> DatasetConfig:
    """The DatasetConfig a store or model card recorded; realism fields it lacks are off (see ABSENT_MEANS_OFF)."""
    data = json.loads(json.dumps(data))
    for section, defaults in ABSENT_MEANS_OFF.items():
        for name, value in defaults.items():
            data.setdefault(section, {}).setdefault(name, value)
    return DatasetConfig.from_dict(data)


def load_config(path: str | Path | None) -> DatasetConfig:
    if path is None:
        return DatasetConfig()
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"config file {path} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a JSON object with sections structure/optics/simulation")
    try:
        return DatasetConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise UserError(f"config file {path}: {error}") from None


def columns_from_table(table: np.ndarray) -> Columns:
    """Columns from the stored (n, 3) x_A, y_A, class table (NaN rows are padding)."""
    table = table[~np.isnan(table[:, 0])]
    return Columns(table[:, :2], table[:, 2].astype(np.int64))


def sample_seed(seed: int, index: int) -> int:
    """Independent seed of sample `index`: the same for any worker count or order of execution."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint32)[0])


def simulate_sample(config: DatasetConfig, seed: int, index: int, vibration_table=None, threads: int = 1):
    """One sample: (images (D, H, W), columns (n, 3) x/y/class, params vector in config.param_names order).
    `threads`: for its frozen-phonon configurations (the same images for any number)."""
    this_seed = sample_seed(seed, index)
    rng = np.random.default_rng(this_seed)
    structure = random_structure(rng, config.structure)
    optics = config.optics.draw(rng)
    images = simulate_focal_series(structure.atoms, optics, config.simulation, seed=int(rng.integers(2**31)),
                                   vibration_table=vibration_table, threads=threads)
    columns = structure.columns
    values = {"sample_seed": this_seed, **structure.params, "num_columns": len(columns)}
    values.update({f"defocus_{i}_A": d for i, d in enumerate(optics.defocus_A)})
    values.update({name: getattr(optics, name) for name in OPTICS_PARAM_NAMES})
    params = np.array([values[name] for name in config.param_names], dtype=np.float64)
    table = np.concatenate([columns.xy_A, columns.class_index[:, None]], axis=1).astype(np.float32)
    return images, table, params


def create_store(path: str | Path, config: DatasetConfig, n: int, seed: int):
    """Create an empty store (or open a matching one to resume). Returns the zarr group.

    Creation is atomic: the store is built in a hidden folder next to `path` and renamed to `path`, so no
    process ever sees a half-created store, and of two processes creating one store at once one wins and
    the other opens the winner's (and checks it matches)."""
    import shutil

    import zarr

    path = Path(path)
    height, width = config.image_shape()
    attrs = {"format": STORE_FORMAT, "n": n, "seed": seed, "sampling_A": config.simulation.sampling_A,
             "image_shape": [height, width], "config": json.loads(json.dumps(config.to_dict())),
             "param_names": list(config.param_names), "vibration_table": _vibration_table_record(config)}
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a dataset store; give a new path for the dataset")
    if not path.exists() or not any(path.iterdir()):  # an empty folder is replaced by the new store
        writable_folder(path.parent, f"dataset {path}: folder")
        building = path.parent / f".{path.name}.creating-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        group = zarr.open_group(str(building), mode="w")
        group.attrs.update(attrs)
        depth = config.optics.num_defocus
        group.create_array("images", shape=(n, depth, height, width), chunks=(1, depth, height, width),
                           dtype=config.image_dtype, fill_value=0)
        group.create_array("columns", shape=(n, config.max_columns(), 3), chunks=(1, config.max_columns(), 3),
                           dtype="float32", fill_value=np.nan)
        group.create_array("params", shape=(n, len(config.param_names)), chunks=(1, len(config.param_names)),
                           dtype="float64", fill_value=np.nan)
        try:
            os.rename(building, path)
        except OSError:  # another process created it first: use (and check) that one
            shutil.rmtree(building, ignore_errors=True)
    group = open_group(path, mode="r+")
    old = dict(group.attrs)
    for key in ("n", "seed", "config", "vibration_table"):
        if old.get(key) != attrs[key]:
            raise UserError(f"{path} already holds a dataset with a different {key} "
                            f"({old.get(key) if key != 'config' else 'config'}); "
                            "choose another output path or the same settings to resume")
    return group


@contextmanager
def store_lock(path: str | Path):
    """Hold an exclusive lock on the store for one `simulate` run; a second run refuses instead of writing
    the same samples at the same time. The operating system releases the lock when the process ends."""
    import fcntl

    path = Path(path)
    with open(path / "zarr.json", "rb") as handle:  # zarr ignores locks on its metadata file
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"{path} is being written by another `hrtemnet simulate` process; wait for it to "
                            "finish (run the command again afterwards to fill in anything missing)") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _vibration_table_record(config: DatasetConfig) -> dict | None:
    """The table a dataset was simulated with, stored with it: the shipped default may change later."""
    from hrtemnet.vibrations import vibration_table_for

    table = vibration_table_for(config.simulation.num_phonons, config.vibrations_file)
    if table is None:
        return None
    return {"temperature_K": table.temperature_K, "potential": table.potential,
            "sigmas": [{"element": e, "coordination": c, "sigma_xy_A": xy, "sigma_z_A": z}
                       for (e, c), (xy, z) in sorted(table.entries.items())]}


def open_group(path: str | Path, mode: Literal["r", "r+"] = "r"):
    """The zarr group of a dataset store, checked to hold all its arrays (UserError otherwise)."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; create a dataset with `hrtemnet simulate {path} --n N`")
    try:
        group = zarr.open_group(str(path), mode=mode)
        if group.attrs.get("format") != STORE_FORMAT:
            raise ValueError
    except Exception:
        raise UserError(f"{path} is not an hrtemnet dataset (a zarr store written by `hrtemnet simulate`)") from None
    for name in ARRAY_NAMES:
        try:
            array = group[name]
            if not isinstance(array, zarr.Array):
                raise ValueError
            # float arrays only: no object dtype whose chunks a codec would unpickle
            if array.shape[0] != group.attrs.get("n") or np.dtype(array.dtype).kind != "f":
                raise ValueError
        except Exception:
            raise UserError(f"{path} is an incomplete dataset store (its {name} array is missing or damaged): "
                            "delete it and run `hrtemnet simulate` again") from None
    return group


def write_sample(path: str | Path, index: int, images: np.ndarray, table: np.ndarray, params: np.ndarray) -> None:
    _write_arrays(_store_arrays(path), index, images, table, params)


def _store_arrays(path: str | Path) -> dict:
    """The store's arrays opened for writing (once per run in this process, once per task on a dask worker)."""
    group = open_group(path, mode="r+")
    return {name: group[name] for name in ARRAY_NAMES}


def _write_arrays(arrays: dict, index: int, images: np.ndarray, table: np.ndarray, params: np.ndarray) -> None:
    max_columns = arrays["columns"].shape[1]
    if len(table) > max_columns:
        raise RuntimeError(f"sample {index} has {len(table)} columns, more than the store's {max_columns}")
    padded = np.full((max_columns, 3), np.nan, dtype=np.float32)
    padded[: len(table)] = table
    arrays["images"][index] = images.astype(arrays["images"].dtype)
    arrays["columns"][index] = padded
    arrays["params"][index] = params  # last: marks the sample as complete


def _simulate_and_write(path: str, config_dict: dict, seed: int, index: int) -> int:
    """The dask task: simulate sample `index` and write it into its own chunks."""
    config = DatasetConfig.from_dict(config_dict)
    from hrtemnet.vibrations import vibration_table_for

    table = vibration_table_for(config.simulation.num_phonons, config.vibrations_file)
    images, columns, params = simulate_sample(config, seed, index, table)
    write_sample(path, index, images, columns, params)
    return index


def _simulate_in_process(path: str | Path, config: DatasetConfig, seed: int, todo: list[int], advance) -> None:
    """The samples `todo` one after the other in this process, with the store and vibration table opened once,
    each sample's frozen-phonon configurations on a thread per core this process may use (the only job: no
    worker processes); each sample equal to the one the dask task `_simulate_and_write` makes on one thread."""
    import gc

    from hrtemnet.simulation import configure_abtem
    from hrtemnet.vibrations import vibration_table_for

    arrays = _store_arrays(path)
    table = vibration_table_for(config.simulation.num_phonons, config.vibrations_file)
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    configure_abtem()  # imports abTEM (and IPython, pandas, dask, ...: ~300k objects)
    gc.freeze()  # that heap is not scanned again by each full collection of the run (~0.4 s of GC per command)
    try:
        for index in todo:
            _write_arrays(arrays, index, *simulate_sample(config, seed, index, table, threads))
            advance()
    finally:
        gc.unfreeze()


def missing_indices(path: str | Path) -> np.ndarray:
    """Samples not yet simulated (their params row is still NaN)."""
    group = open_group(path)
    try:
        return np.flatnonzero(np.isnan(group["params"][:, 0]))
    except Exception as error:  # a damaged params chunk: tell which one
        for index in range(group["params"].shape[0]):
            try:
                group["params"][index]
            except Exception:
                raise UserError(f"{path}: the parameters of sample {index} are damaged ({type(error).__name__}); "
                                "delete the store and simulate it again") from None
        raise


def damaged_samples(path: str | Path, indices, progress: bool = True) -> list[int]:
    """Of the finished samples `indices`, those whose images or columns cannot be read back (a damaged or
    truncated chunk)."""
    group = open_group(path)
    damaged = []
    with progress_bar("series", progress and len(indices) > 0) as bar:
        task = bar.add_task("checking", total=len(indices))
        for index in indices:
            try:
                group["images"][int(index)]
                group["columns"][int(index)]
            except Exception:
                damaged.append(int(index))
            bar.advance(task)
    return damaged


def simulate_dataset(path: str | Path, n: int, seed: int, config: DatasetConfig | None = None,
                     workers: int | None = None, scheduler: str | None = None, progress: bool = True) -> dict:
    """Simulate `n` samples into the store at `path`, filling in only what is missing.

    workers=0 or 1 runs in this process (no dask: a cluster of one worker would only add its start-up and a
    second import of everything), each sample on a thread per core; otherwise a LocalCluster of `workers`
    single-threaded processes (default: one per core), or the cluster at `scheduler` (tcp://host:port).
    Returns a summary with throughput.
    """
    config = (config or DatasetConfig()).validate()
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise UserError(f"--n must be a whole number of at least 1 (got {n})")
    if config.vibrations_file is not None and not Path(config.vibrations_file).is_file():
        raise UserError(f"vibration table {config.vibrations_file} does not exist")
    create_store(path, config, n, seed)
    with store_lock(path):
        return _fill_store(path, n, seed, config, workers, scheduler, progress)


def _fill_store(path, n: int, seed: int, config: DatasetConfig, workers, scheduler, progress: bool) -> dict:
    """Simulate the missing samples of a store this process holds the lock of (see `simulate_dataset`)."""
    missing = missing_indices(path)
    finished = np.setdiff1d(np.arange(n), missing)
    damaged = damaged_samples(path, finished, progress) if len(finished) else []
    if damaged:
        group = open_group(path, mode="r+")
        for index in damaged:
            group["params"][index] = np.nan  # no longer finished: simulated again below
    todo = sorted({*(int(i) for i in missing), *damaged})
    summary = {"path": str(path), "n": n, "already_done": n - len(todo), "simulated": 0, "seconds": 0.0,
               "damaged": damaged}
    if not todo:
        return summary
    config_dict = config.to_dict()
    start = time.perf_counter()
    with progress_bar("series", progress) as bar:
        task = bar.add_task("simulating", total=n, completed=n - len(todo))
        if scheduler is None and workers is None:
            workers = os.cpu_count() or 1
        if scheduler is None and workers <= 1:
            _simulate_in_process(path, DatasetConfig.from_dict(config_dict), seed, todo, lambda: bar.advance(task))
        else:
            from dask.distributed import Client, LocalCluster, as_completed

            if scheduler:
                cluster, client = None, Client(scheduler)
            else:
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
                client = Client(cluster)
            try:
                futures = client.map(_simulate_and_write, [str(path)] * len(todo), [config_dict] * len(todo),
                                     [seed] * len(todo), todo, pure=False)
                for future in as_completed(futures):
                    future.result()  # re-raises a failed task here
                    bar.advance(task)
            finally:
                client.close()
                if cluster is not None:
                    cluster.close()
    summary["simulated"] = len(todo)
    summary["seconds"] = time.perf_counter() - start
    return summary


class SeriesStore:
    """Read access by index to a dataset written by `simulate_dataset`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.group = open_group(self.path)
        self.sampling_A = float(self.group.attrs["sampling_A"])
        self.image_shape = tuple(self.group.attrs["image_shape"])
        self.param_names = list(self.group.attrs["param_names"])
        self.config = dict(self.group.attrs["config"])
        self.seed = int(self.group.attrs["seed"])

    def __len__(self) -> int:
        return self.group["images"].shape[0]

    def _check(self, index: int) -> int:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} is outside 0..{len(self) - 1}")
        return index

    def _read(self, name: str, index: int) -> np.ndarray:
        index = self._check(index)
        try:
            return self.group[name][index]
        except Exception as error:  # zarr/numcodecs raise many types for a damaged chunk
            raise UserError(f"{self.path}: sample {index} is damaged ({name}: {type(error).__name__}); run "
                            f"`hrtemnet simulate {self.path} --n {len(self)} ...` with its settings again to "
                            "simulate it anew") from None

    def read_images(self, index: int) -> np.ndarray:
        return np.asarray(self._read("images", index), dtype=np.float32)

    def read_columns(self, index: int) -> Columns:
        return columns_from_table(self._read("columns", index))

    def read_params(self, index: int) -> dict[str, float]:
        return dict(zip(self.param_names, self._read("params", index).tolist(), strict=True))

    def completed(self) -> np.ndarray:
        return np.isin(np.arange(len(self)), missing_indices(self.path), invert=True)


def open_store(path: str | Path) -> SeriesStore:
    return SeriesStore(path)


class InMemorySeries:
    """Samples held in memory with the read interface of `SeriesStore` (used by the demo)."""

    def __init__(self, samples: list[tuple[np.ndarray, Columns, dict]], sampling_A: float):
        if not samples:
            raise UserError("no samples to hold")
        self.samples = samples
        self.sampling_A = float(sampling_A)
        self.image_shape = tuple(samples[0][0].shape[-2:])

    def __len__(self) -> int:
        return len(self.samples)

    def read_images(self, index: int) -> np.ndarray:
        return self.samples[index][0]

    def read_columns(self, index: int) -> Columns:
        return self.samples[index][1]

    def read_params(self, index: int) -> dict[str, float]:
        return self.samples[index][2]

    def completed(self) -> np.ndarray:
        return np.ones(len(self), dtype=bool)


class ConcatenatedStores:
    """Several stores of the same sampling and image shape read as one (e.g. bare + graphene validation)."""

    def __init__(self, stores: list):
        if not stores:
            raise UserError("no datasets given")
        first = stores[0]
        for store in stores[1:]:
            if store.sampling_A != first.sampling_A or store.image_shape != first.image_shape:
                raise UserError(f"{getattr(store, 'path', 'a dataset')} has sampling {store.sampling_A} Å and "
                                f"images {store.image_shape}, unlike the first ({first.sampling_A} Å, "
                                f"{first.image_shape}); evaluate them separately")
        self.stores = stores
        self.sampling_A = first.sampling_A
        self.image_shape = first.image_shape
        self.offsets = np.cumsum([0] + [len(s) for s in stores])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} is outside 0..{len(self) - 1}")
        which = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.stores[which], index - int(self.offsets[which])

    def read_images(self, index: int) -> np.ndarray:
        store, local = self._locate(index)
        return store.read_images(local)

    def read_columns(self, index: int) -> Columns:
        store, local = self._locate(index)
        return store.read_columns(local)

    def read_params(self, index: int) -> dict[str, float]:
        store, local = self._locate(index)
        return store.read_params(local)

    def completed(self) -> np.ndarray:
        return np.concatenate([completed_mask(store) for store in self.stores])


def completed_mask(source) -> np.ndarray:
    """Which samples were simulated (a store being written may have gaps; a source without `completed` has none)."""
    completed = getattr(source, "completed", None)
    return completed() if completed is not None else np.ones(len(source), dtype=bool)


def open_stores(paths: Sequence[str | Path]):
    """One store, or several read as one."""
    stores = [open_store(p) for p in paths]
    return stores[0] if len(stores) == 1 else ConcatenatedStores(stores)
