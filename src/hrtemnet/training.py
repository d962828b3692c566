"""Training: targets, an on-the-fly noisy dataset, and `train` (checkpoints, resume, log, DDP).

Targets: a label map with disks of `LABEL_RADIUS_A` = 0.45 Å (3 px at 0.15 Å/px) around each true
column, value 1 + class index; background 0. The nearest columns in MoS2 (Mo-S2) are 1.83 Å apart, so
disks never touch and every peak of the predicted foreground is one column.

Loss: cross-entropy with class weights `DEFAULT_CLASS_WEIGHTS`. Background is ~80 % of the pixels and S
(vacancy) columns a few % of the columns, so background is down-weighted and S up-weighted.

Data: every sample is drawn afresh, reproducibly from (seed, draw number): which series, a random crop,
Poisson dose noise and detector blur on the stored noise-free intensities (as Madsen 2018 drew CTF, MTF and
noise afresh), and one of the 8 flips/90-degree rotations, applied identically to the 3 images and the
target (a rotated or mirrored image is a valid view of another sheet). Validation uses whole images with
the noise of image i fixed by (seed, i), as `hrtemnet evaluate` does.

Multi-process: under `torchrun` (WORLD_SIZE > 1) the same command trains with DistributedDataParallel
(gloo); each process draws its own samples, rank 0 validates, logs and writes files:
`torchrun --nproc-per-node 2 --no-python hrtemnet train DATA.zarr --model msd --out DIR --threads 1`
(`--no-python` because the `hrtemnet` entry point may be a shell shim).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import TextColumn
from torch.utils.data import DataLoader, Dataset, Sampler

from hrtemnet.columns import Columns
from hrtemnet.errors import UserError
from hrtemnet.models import (
    BEST_MODEL_FILE,
    DEFOCUS_INPUT_CHANNELS,
    DEFOCUS_INPUT_SCALE_A,
    NominalDefocusError,
    add_defocus_inputs,
    build_model,
    dihedral,
    load_model,
    network_input,
    nominal_defocus_A,
    save_model_bundle,
    series_defocus_A,
    takes_defocus,
)
from hrtemnet.progress import progress_bar
from hrtemnet.simulation import NoiseConfig

LABEL_RADIUS_A = 0.45
# background, Mo, S2, S: see the module docstring.
DEFAULT_CLASS_WEIGHTS: tuple[float, float, float, float] = (0.5, 1.0, 1.0, 3.0)
CHECKPOINT_NAME, LOG_NAME, FINAL_MODEL_FILE = "checkpoint.pt", "log.jsonl", "final.pt"
TRAINING_STREAM = 1  # keeps training draws apart from the validation noise streams [seed, index]
# Nominal-defocus errors come from their own streams, so a conditioned run draws the same crops, noise and
# flips as an image-only run with the same seed (a paired comparison).
TRAINING_DEFOCUS_STREAM, VALIDATION_DEFOCUS_STREAM = 2, 3


def render_label_map(columns: Columns, shape: tuple[int, int], sampling_A: float,
                     radius_A: float = LABEL_RADIUS_A) -> np.ndarray:
    """Label map `(H, W)` int64: pixels whose centre (x = col*s, y = row*s) is within `radius_A` of a column
    get 1 + its class index; all others 0. Columns outside the map still mark the pixels they reach."""
    height, width = shape
    labels = np.zeros((height, width), dtype=np.int64)
    reach = int(np.ceil(radius_A / sampling_A))
    offsets = np.arange(-reach, reach + 1)
    for (x, y), class_index in zip(columns.xy_A, columns.class_index, strict=True):
        rows = np.round(y / sampling_A).astype(int) + offsets
        cols = np.round(x / sampling_A).astype(int) + offsets
        rows, cols = rows[(rows >= 0) & (rows < height)], cols[(cols >= 0) & (cols < width)]
        if len(rows) == 0 or len(cols) == 0:
            continue
        distance2 = (rows[:, None] * sampling_A - y) ** 2 + (cols[None, :] * sampling_A - x) ** 2
        inside = distance2 <= radius_A**2 * (1 + 1e-9)  # centres on the circle count despite rounding
        window = labels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        window[inside] = 1 + class_index
    return labels


def usable_indices(source) -> np.ndarray:
    """Indices of samples that were simulated (a store being written may have gaps)."""
    from hrtemnet.dataset import completed_mask  # lazily: dataset imports abTEM

    return np.flatnonzero(completed_mask(source))


@dataclass
class AugmentationConfig:
    """Acquisition errors drawn afresh for every training crop (not in validation).

    What frame alignment leaves: frames 2..n are displaced against frame 1 (the labels' frame) by a vector
    uniform in a disc of radius `misregistration_A_max`. A wrong calibration: the crop's true pixel size is the
    nominal one times 1 + u, u uniform in ±`sampling_jitter_fraction` (the lattice then looks up to 10 %
    larger or smaller to the network; the labels follow the atoms)."""

    misregistration_A_max: float = 0.3
    sampling_jitter_fraction: float = 0.10


def periodic_columns_in_window(columns: Columns, cell_A: np.ndarray, origin_A: np.ndarray,
                               size_A: np.ndarray, margin_A: float = 1.0) -> Columns:
    """Columns of a periodic cell (and its periodic images) that fall in the window [origin, origin + size),
    in the window's coordinates."""
    xy, classes = [], []
    reach = np.ceil((size_A + margin_A) / cell_A).astype(int) + 1
    for i in range(-1, reach[0] + 1):
        for j in range(-1, reach[1] + 1):
            shifted = columns.xy_A + np.array([i, j]) * cell_A - origin_A
            inside = np.all((shifted >= -margin_A) & (shifted < size_A + margin_A), axis=1)
            xy.append(shifted[inside])
            classes.append(columns.class_index[inside])
    return Columns(np.concatenate(xy), np.concatenate(classes))


def draw_training_crop(images: np.ndarray, columns: Columns, sampling_A: float, crop_px: int,
                       augmentation: AugmentationConfig, rng: np.random.Generator) -> tuple[np.ndarray, Columns, float]:
    """A crop `(D, crop, crop)` of a periodic noise-free series with misregistration and pixel-size jitter.

    Returns (crop, its columns in nominal-sampling Å, the crop's true pixel size in Å). Output pixel (r, c) of
    frame k samples the series at input pixel (row0 + scale r + dy_k, col0 + scale c + dx_k) by cubic spline on
    the periodic cell (the simulation is periodic, so any origin is valid)."""
    from scipy.ndimage import affine_transform

    height, width = images.shape[-2:]
    scale = 1 + rng.uniform(-augmentation.sampling_jitter_fraction, augmentation.sampling_jitter_fraction)
    origin = np.array([rng.uniform(0, height), rng.uniform(0, width)])  # (row, col) in input px
    radius = augmentation.misregistration_A_max * np.sqrt(rng.uniform(0, 1, len(images) - 1))
    angle = rng.uniform(0, 2 * np.pi, len(images) - 1)
    shifts_px = np.concatenate([[[0.0, 0.0]], np.c_[radius * np.sin(angle), radius * np.cos(angle)] / sampling_A])
    crop = np.stack([affine_transform(frame, [scale, scale], offset=origin + shift, output_shape=(crop_px, crop_px),
                                      order=3, mode="grid-wrap")
                     for frame, shift in zip(images, shifts_px, strict=True)])
    cell = np.array([width, height]) * sampling_A
    window_A = np.full(2, crop_px * scale * sampling_A)
    window = periodic_columns_in_window(columns, cell, origin[::-1] * sampling_A, window_A)
    crop_columns = Columns(window.xy_A / scale, window.class_index)
    return crop.astype(np.float32), crop_columns, scale * sampling_A


class FocalSeriesDataset(Dataset):
    """Noisy, normalised focal series `(3, h, w)` float32 and label maps `(h, w)` int64 from a series source.

    A series source has `__len__`, `read_images(i)`, `read_columns(i)` and `sampling_A` (e.g. a
    `hrtemnet.dataset.SeriesStore`). In training mode (`crop_px` given) item `n` is the n-th random draw:
    series, crop, misregistration, pixel-size jitter, noise and flip/rotation all come from (seed, n). In
    validation mode (`crop_px` None) item `n` is the whole n-th series of `indices` with noise from
    `noise_rng(seed, index)`, no augmentation. With `defocus_error` the series is followed by planes of its
    nominal defocus (`models.network_input`), drawn from streams of their own.
    """

    def __init__(self, source, indices=None, crop_px: int | None = None, seed: int = 0, noise=None,
                 label_radius_A: float = LABEL_RADIUS_A, augmentation: AugmentationConfig | None = None,
                 defocus_error: NominalDefocusError | None = None):
        self.source, self.crop_px, self.seed, self.noise = source, crop_px, seed, noise
        self.defocus_error = defocus_error
        self.indices = usable_indices(source) if indices is None else np.asarray(indices)
        self.label_radius_A = label_radius_A
        self.augmentation = augmentation or AugmentationConfig()
        if len(self.indices) == 0:
            raise UserError("the dataset holds no simulated series")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        from hrtemnet.simulation import add_imaging_noise, noise_rng

        sampling = self.source.sampling_A
        if self.crop_px is not None:
            rng = np.random.default_rng([self.seed, TRAINING_STREAM, int(item)])
            index = int(self.indices[rng.integers(len(self.indices))])
            clean, columns, true_sampling = draw_training_crop(
                self.source.read_images(index), self.source.read_columns(index), sampling, self.crop_px,
                self.augmentation, rng)
            images, _ = add_imaging_noise(clean, true_sampling, rng, self.noise)
        else:
            index = int(self.indices[item])
            images, _ = add_imaging_noise(self.source.read_images(index), sampling, noise_rng(self.seed, index),
                                          self.noise)
            columns = self.source.read_columns(index)
        labels = render_label_map(columns, images.shape[-2:], sampling, self.label_radius_A)
        defocus_A = None
        if self.defocus_error is not None:
            stream = [self.seed, TRAINING_DEFOCUS_STREAM, int(item)] if self.crop_px is not None \
                else [self.seed, VALIDATION_DEFOCUS_STREAM, index]
            defocus_A = nominal_defocus_A(series_defocus_A(self.source, index), self.defocus_error,
                                          np.random.default_rng(stream))
        series = network_input(images, defocus_A)  # the defocus planes are constant: flips leave them
        if self.crop_px is not None:
            transform = int(rng.integers(8))
            series, labels = dihedral(series, transform), dihedral(labels, transform)
        return torch.from_numpy(np.ascontiguousarray(series)), torch.from_numpy(np.ascontiguousarray(labels))


class DrawSampler(Sampler):
    """Draw numbers for steps [start_step, steps): process `rank` of `world_size` takes its own block of
    each step's `world_size * batch_size` draws, so a resumed run sees exactly the samples it would have."""

    def __init__(self, start_step: int, steps: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start_step, self.steps, self.batch_size = start_step, steps, batch_size
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step) * self.batch_size

    def __iter__(self):
        for step in range(self.start_step, self.steps):
            first = (step * self.world_size + self.rank) * self.batch_size
            yield from range(first, first + self.batch_size)


@dataclass
class TrainConfig:
    # One store, or several read as one: each step draws series uniformly from all of them, so a store's share of
    # the draws is its share of the series (a small store of hard cases weighs in by its size).
    dataset: str | list[str]
    out_dir: str
    model: str = "msd"
    model_kwargs: dict = field(default_factory=dict)
    steps: int = 1000
    crop_px: int = 96
    batch_size: int = 4  # per process
    learning_rate: float = 1e-3  # Adam, as Pelt's msdnet
    lr_schedule: str = "constant"  # or "cosine": decays to 0 at `steps` (a fixed budget ends annealed)
    seed: int = 0
    val_dataset: str | None = None  # default: the last 10 % of the training series are held out
    val_images: int = 16
    val_every_steps: int = 200
    checkpoint_minutes: float = 5.0
    label_radius_A: float = LABEL_RADIUS_A
    class_weights: tuple[float, ...] = DEFAULT_CLASS_WEIGHTS
    threads: int | None = None  # torch threads per process (default: torch's choice)
    device: str = "cpu"  # "cpu", "cuda", "cuda:N" or "auto" (cuda when there is one)
    # Processes drawing crops (0: in the training process). Every draw is seeded by its number, so the samples
    # and hence the run do not depend on it; a GPU needs several to be kept busy.
    loader_workers: int = 0
    resume: bool = False
    init_from: str | None = None  # a trained model file whose weights start this run (fine-tuning, continuation)
    # Nominal defocus of each frame as extra input planes (issue 11's conditioning experiment); an image-only
    # --init-from model gets zero weights for them, so it starts out unchanged.
    defocus_input: bool = False
    defocus_error: NominalDefocusError = field(default_factory=NominalDefocusError)
    noise: NoiseConfig = field(default_factory=NoiseConfig)  # drawn on the fly; recorded in the model card
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    progress: bool = True


@dataclass
class TrainResult:
    steps: int
    last_loss: float
    best_val_f1: float
    best_step: int | None
    files: dict[str, Path]


LR_SCHEDULES = ("constant", "cosine")


def learning_rate_at(config: TrainConfig, step: int) -> float:
    """Learning rate for the optimiser step that follows `step` completed steps. A function of the step alone,
    so a resumed run continues on the same curve (resuming with a larger --steps stretches a cosine)."""
    if config.lr_schedule == "cosine":
        return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(step, config.steps) / config.steps))
    return config.learning_rate


def split_validation(source, val_source, val_images: int):
    """(train indices, validation source, validation indices); without a validation set the last 10 % of
    the training series (at least 1) are held out, the same ones for every model."""
    indices = usable_indices(source)
    if val_source is not None:
        return indices, val_source, usable_indices(val_source)[:val_images]
    if len(indices) < 2:
        raise UserError("need at least 2 series to hold one out for validation, or pass --val DATASET")
    held_out = max(1, len(indices) // 10)
    return indices[:-held_out], source, indices[-held_out:][:val_images]


def training_device(requested: str) -> torch.device:
    """The torch device of `TrainConfig.device`, with a clear error where it is not there."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise UserError(f"--device {requested!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {requested}: torch sees no CUDA GPU here; use --device cpu (or auto)")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {requested}: only cpu and cuda are supported")
    return device


def _single_threaded_worker(_: int) -> None:
    torch.set_num_threads(1)  # crop-drawing processes: one core each


@torch.no_grad()
def validate(net: torch.nn.Module, dataset: FocalSeriesDataset, class_weights: torch.Tensor) -> dict:
    """Loss and mean species-aware F1 on whole validation images, at the peak threshold that is best on them."""
    from hrtemnet.evaluation import choose_peak_config
    from hrtemnet.metrics import score_image
    from hrtemnet.peaks import PeakConfig, extract_columns

    was_training = net.training
    net.eval()
    device = class_weights.device
    sampling, losses, validation = dataset.source.sampling_A, [], []
    for n in range(len(dataset)):
        series, labels = dataset[n]
        logits = net(series[None].to(device))
        losses.append(float(F.cross_entropy(logits, labels[None].to(device), weight=class_weights)))
        logits = logits.cpu()
        truth = dataset.source.read_columns(int(dataset.indices[n]))
        size_A = (labels.shape[1] * sampling, labels.shape[0] * sampling)
        validation.append((torch.softmax(logits, 1)[0].double().numpy(), truth, size_A))
    net.train(was_training)
    # the class decision divides out the loss's class weights (peaks module doc); recorded with the model
    peak_config = choose_peak_config(validation, sampling,
                                     PeakConfig(loss_class_weights=tuple(class_weights[1:].tolist())))
    scores = [score_image(truth, extract_columns(p, sampling, peak_config), size) for p, truth, size in validation]
    return {"val_loss": float(np.mean(losses)), "val_f1": float(np.mean([s.f1 for s in scores])),
            "val_position_f1": float(np.mean([s.position_f1 for s in scores])),
            "peak_params": asdict(peak_config)}


def _distributed() -> tuple[int, int]:
    """(rank, world size); starts the gloo process group under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    return int(os.environ.get("RANK", "0")), world_size


def _rng_states() -> dict:
    """The RNG states as tensors and plain types, so a checkpoint loads with `torch.load(weights_only=True)`."""
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "python": {"version": int(version), "state": list(internal),
                                                       "gauss": gauss}}


def _restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    python = states["python"]
    if isinstance(python, dict):
        random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    else:  # checkpoints written before the states were stored as plain types
        random.setstate(tuple(python))


def _check_config(config: TrainConfig, source) -> None:
    height, width = source.image_shape if hasattr(source, "image_shape") else source.read_images(0).shape[-2:]
    if not 16 <= config.crop_px <= min(height, width):
        raise UserError(f"--crop {config.crop_px} must be between 16 and the image size {height}x{width} px")
    if config.steps < 1 or config.batch_size < 1 or config.val_every_steps < 1 or config.val_images < 1:
        raise UserError("--steps, --batch, --val-every and the number of validation images must be >= 1")
    if not config.learning_rate > 0 or not config.checkpoint_minutes > 0:
        raise UserError("--lr and --checkpoint-minutes must be positive")
    if config.lr_schedule not in LR_SCHEDULES:
        raise UserError(f"--lr-schedule {config.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
    from hrtemnet.validation import validate_config

    validate_config(config.noise, "noise")  # the on-the-fly noise and augmentation, by field-name convention
    validate_config(config.augmentation, "augmentation")
    validate_config(config.defocus_error, "defocus_error")
    if len(dataset_paths(config.dataset)) > 1 and config.val_dataset is None:
        raise UserError("training on several datasets needs --val DATASET (held-out series would all come from "
                        "the last one)")
    if config.defocus_input and not hasattr(source, "read_params"):
        raise UserError("--defocus-input needs a dataset that records each series' defocus (an hrtemnet store)")
    out_dir = Path(config.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder for the training run")


def dataset_paths(dataset: str | list[str]) -> list[str]:
    """The training store(s) of `TrainConfig.dataset`: one path, or several read as one."""
    return [str(dataset)] if isinstance(dataset, str | Path) else [str(p) for p in dataset]


def _open_source(dataset: str | list[str]):
    from hrtemnet.dataset import open_stores

    return open_stores(dataset_paths(dataset))


def train(config: TrainConfig, source=None, val_source=None) -> TrainResult:
    """Train `config.model` on the series in `config.dataset` (or the given source objects); see module doc."""
    rank, world_size = _distributed()
    is_main = rank == 0
    torch.set_flush_denormal(True)  # denormals in late training slow CPU kernels by orders of magnitude
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.loader_workers < 0:
        raise UserError("--loader-workers must be >= 0")
    device = training_device(config.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matrix multiplies (Ampere and later)
        torch.backends.cudnn.allow_tf32 = True
    source = source if source is not None else _open_source(config.dataset)
    if val_source is None and config.val_dataset is not None:
        val_source = _open_source(config.val_dataset)
    _check_config(config, source)
    train_indices, val_source, val_indices = split_validation(source, val_source, config.val_images)

    initial = _initial_model(config) if config.init_from else None
    if initial is not None:
        config = replace(config, model_kwargs=initial.kwargs,
                         defocus_input=config.defocus_input or takes_defocus(initial))
    if config.defocus_input:
        config = replace(config, model_kwargs=config.model_kwargs | {"in_channels": DEFOCUS_INPUT_CHANNELS})
    torch.manual_seed(config.seed)  # the same initial weights in every process
    net = build_model(config.model, **config.model_kwargs)
    if initial is not None:
        state = {k: v.float() for k, v in initial.net.state_dict().items()}
        if config.defocus_input and not takes_defocus(initial):
            state = add_defocus_inputs(state, net)
        net.load_state_dict(state)
    net.to(device)
    defocus_error = config.defocus_error if config.defocus_input else None
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    out_dir = Path(config.out_dir)
    checkpoint_path, log_path = out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME
    best: dict[str, Any] = {"val_f1": -1.0, "step": None}  # no best step before the first validation
    start_step = 0
    if config.resume and checkpoint_path.exists():
        start_step, best = _load_checkpoint(checkpoint_path, config, net, optimizer)
        if is_main:
            print(f"resuming from {checkpoint_path} at step {start_step} of {config.steps}", flush=True)
            _truncate_log(log_path, start_step)
    elif config.resume:  # a script that always passes --resume starts the run the first time
        if is_main:
            print(f"--resume: no checkpoint in {out_dir} yet; starting at step 0", flush=True)
            log_path.unlink(missing_ok=True)
    elif checkpoint_path.exists():
        raise UserError(f"{out_dir} already holds a training run; pass --resume to continue it or use another --out")
    if is_main:
        from hrtemnet.validation import writable_folder

        writable_folder(out_dir, "--out")
    model = torch.nn.parallel.DistributedDataParallel(net) if world_size > 1 else net

    dataset = FocalSeriesDataset(source, train_indices, config.crop_px, config.seed, config.noise,
                                 config.label_radius_A, config.augmentation, defocus_error)
    val_set = FocalSeriesDataset(val_source, val_indices, None, config.seed, config.noise, config.label_radius_A,
                                 defocus_error=defocus_error)
    sampler = DrawSampler(start_step, config.steps, config.batch_size, rank, world_size)
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.loader_workers,
                        pin_memory=device.type == "cuda", worker_init_fn=_single_threaded_worker,
                        prefetch_factor=4 if config.loader_workers else None)
    class_weights = torch.tensor(config.class_weights, dtype=torch.float32, device=device)
    card = {"dataset": config.dataset, "training_series": len(train_indices),
            "val_dataset": str(config.val_dataset or config.dataset),
            "val_images": len(val_indices), "crop_px": config.crop_px, "batch_size": config.batch_size,
            "world_size": world_size, "seed": config.seed, "learning_rate": config.learning_rate,
            "lr_schedule": config.lr_schedule,
            "label_radius_A": config.label_radius_A, "class_weights": list(config.class_weights),
            "noise": asdict(config.noise), "augmentation": asdict(config.augmentation),
            "parameters": sum(p.numel() for p in net.parameters()), "device": str(device),
            "defocus_input": None if defocus_error is None else asdict(defocus_error) | {
                "scale_A": DEFOCUS_INPUT_SCALE_A}}
    if initial is not None:
        card["initialised_from"] = {"file": str(config.init_from), "steps": initial.card.get("steps"),
                                    "dataset": initial.card.get("dataset"),
                                    "training_command": initial.card.get("training_command")}

    def write_checkpoint(step: int) -> None:
        state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "best": best,
                 "rng": _rng_states(), "config": asdict(config)}
        torch.save(state, checkpoint_path.with_suffix(".tmp"))
        checkpoint_path.with_suffix(".tmp").replace(checkpoint_path)

    def bundle(name: str, step: int, metrics: dict) -> Path:
        info = card | {"steps": step, "val_f1": metrics.get("val_f1"), "saved": time.strftime("%Y-%m-%d %H:%M")}
        return save_model_bundle(out_dir / name, net, config.model, config.model_kwargs, source.sampling_A,
                                 metrics.get("peak_params", {}), info)

    step, loss_value, metrics, last_checkpoint = start_step, float("nan"), {}, time.monotonic()
    stats = TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.1f} samples/s")
    with open(log_path if is_main else os.devnull, "a") as log, \
            progress_bar("steps", config.progress and is_main, stats) as progress:
        task = progress.add_task("training", total=config.steps, completed=start_step, loss=float("nan"), rate=0.0)
        model.train()
        tic = time.perf_counter()
        for series, labels in loader:
            learning_rate = learning_rate_at(config, step)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            series, labels = series.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            loss = F.cross_entropy(model(series), labels, weight=class_weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step, loss_value = step + 1, loss.item()
            toc = time.perf_counter()
            rate = config.batch_size * world_size / (toc - tic)
            tic = toc
            if not is_main:
                continue
            log.write(json.dumps({"step": step, "loss": loss_value, "lr": learning_rate, "samples_per_s": rate})
                      + "\n")
            progress.update(task, completed=step, loss=loss_value, rate=rate)
            if step % config.val_every_steps == 0 or step == config.steps:
                metrics = validate(net, val_set, class_weights)
                log.write(json.dumps({"step": step} | {k: v for k, v in metrics.items() if k != "peak_params"})
                          + "\n")
                if metrics["val_f1"] > best["val_f1"]:
                    best = {"val_f1": metrics["val_f1"], "step": step}
                    bundle(BEST_MODEL_FILE, step, metrics)
                tic = time.perf_counter()  # validation time is not training speed
            log.flush()
            if time.monotonic() - last_checkpoint > config.checkpoint_minutes * 60:
                write_checkpoint(step)
                last_checkpoint = time.monotonic()
    files = {}
    if is_main:
        write_checkpoint(step)
        files = {"checkpoint": checkpoint_path, "log": log_path, "final": bundle(FINAL_MODEL_FILE, step, metrics)}
        if (out_dir / BEST_MODEL_FILE).exists():
            files["best"] = out_dir / BEST_MODEL_FILE
    return TrainResult(step, loss_value, best["val_f1"], best["step"], files)


def _initial_model(config: TrainConfig):
    """The model file of `--init-from`, checked against the requested network (its size is taken from the file)."""
    assert config.init_from is not None  # called only with --init-from
    initial = load_model(config.init_from)
    if initial.name != config.model:
        raise UserError(f"--init-from {config.init_from} holds a {initial.name} model, not {config.model}")
    if config.model_kwargs and config.model_kwargs != initial.kwargs:
        raise UserError(f"--init-from {config.init_from} is a {initial.name} {initial.kwargs}, not "
                        f"{config.model_kwargs}; drop --depth/--base-channels or give matching ones")
    return initial


def _load_checkpoint(path: Path, config: TrainConfig, net, optimizer) -> tuple[int, dict]:
    """Restore a checkpoint written by `train`. It is loaded with `weights_only=True`: a crafted pickle in the
    run folder is refused before any of its code can run."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"{path}: not a readable checkpoint ({type(error).__name__}); delete it to start "
                        "the run afresh, or use another --out") from None
    try:
        saved = state["config"]
        if (saved["model"], saved["model_kwargs"]) != (config.model, config.model_kwargs):
            raise UserError(f"{path} trains {saved['model']} {saved['model_kwargs']}, not {config.model} "
                            f"{config.model_kwargs}; give the same --model/--depth/--base-channels to resume")
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _restore_rng_states(state["rng"])
        return int(state["step"]), dict(state["best"])
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"{path}: not a checkpoint of `hrtemnet train` ({type(error).__name__}: {error}); "
                        "delete it to start the run afresh, or use another --out") from None


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines after the checkpoint's step: they are trained again, so a plot shows each step once.
    A line that is not a JSON record with a step (a torn last line from a killed run) is dropped and reported."""
    if not path.is_file():
        return
    kept, torn = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record_step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            torn += 1
            continue
        if record_step <= step:
            kept.append(line)
    if torn:
        print(f"{path}: skipped {torn} unreadable line(s) (a run killed while writing)", flush=True)
    path.write_text("".join(line + "\n" for line in kept))
