"""`hrtemnet evaluate`: models against a simulated validation set, with the paper's figures (drawn by
`hrtemnet.plotting`); also the choice of the peak threshold on validation data.

Every model sees the same noisy series: noise for image i is drawn from `simulation.noise_rng(seed, i)`, so
results do not depend on `--limit` or on which models are compared. The noise model is
`EvaluationConfig.noise` (by default the one training draws from) and is written to `summary.json`.
Outputs in `out_dir`:
`per_image.csv`, `f1_histograms.png` (per-image F1 by substrate, the seed's Figure 2),
`example_series.png` (predicted columns over one focal series, Figure 1), `confusion_matrices.png`,
`f1_vs_dose.png` (a separate sweep over fixed doses on images spread evenly over the set), `summary.json` and
`report.md` linking them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from hrtemnet.columns import CLASS_NAMES, Columns
from hrtemnet.errors import UserError
from hrtemnet.metrics import (
    BORDER_A,
    CONFUSION_LABELS,
    MATCH_RADIUS_A,
    ImageScore,
    match_image,
    mean_f1,
    score_image,
    total_score,
)
from hrtemnet.peaks import PeakConfig, extract_columns
from hrtemnet.simulation import NoiseConfig, add_imaging_noise, noise_rng

if TYPE_CHECKING:
    from hrtemnet.dataset import DatasetConfig

SUBSTRATES = ("bare", "graphene")


@dataclass
class EvaluationConfig:
    dose_e_per_A2: float | None = None  # fixed dose; None draws it per image from `noise` as in training
    limit: int | None = None  # first N images of the store
    seed: int = 0
    match_radius_A: float = MATCH_RADIUS_A
    border_A: float = BORDER_A
    # F1 against dose: every model on `dose_sweep_images` images spread evenly over the set, at each dose.
    dose_sweep_e_per_A2: tuple[float, ...] = (3e3, 1e4, 3e4, 1e5)
    dose_sweep_images: int = 20
    example_index: int = 0  # the series shown in the Figure 1-style plot
    noise: NoiseConfig = field(default_factory=NoiseConfig)  # the imaging noise every series gets
    progress: bool = True

    def __post_init__(self):
        doses = [d for d in (self.dose_e_per_A2, *self.dose_sweep_e_per_A2) if d is not None]
        if not all(d > 0 for d in doses):
            raise UserError("doses must be positive numbers of electrons per Å²")
        if (self.limit is not None and self.limit < 1) or self.dose_sweep_images < 0 or self.example_index < 0:
            raise UserError("--limit must be >= 1, --dose-sweep-images and --example >= 0")

    def dose_description(self) -> str:
        """The dose of the evaluated images in words, from the settings (not typed twice)."""
        if self.dose_e_per_A2 is not None:
            return f"{self.dose_e_per_A2:g} e/Å²"
        low, high = self.noise.dose_e_per_A2_range
        return f"drawn per image, log-uniform in [{low:g}, {high:g}] e/Å²"


@dataclass
class EvaluationResult:
    model_names: list[str]
    rows: list[dict[str, Any]]  # one per (image, model), as written to per_image.csv
    scores: dict[str, list[ImageScore]]  # per model, in image order
    substrates: list[str]  # per image
    dose_sweep: dict[str, dict[float, list[ImageScore]]]  # model -> dose -> per-image scores
    files: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> list[dict[str, Any]]:
        """One record per model: mean per-image F1 (overall and by substrate) and pooled scores."""
        records = []
        for name in self.model_names:
            scores = self.scores[name]
            f1 = np.array([s.f1 for s in scores])
            pooled = total_score(scores)
            record = {"model": name, "images": len(scores), "mean_f1": mean_f1(scores)}
            record["sem_f1"] = float(stats.sem(f1)) if len(f1) > 1 else float("nan")
            record["median_f1"] = float(np.median(f1)) if len(f1) else float("nan")
            for substrate in SUBSTRATES:
                record[f"mean_f1_{substrate}"] = mean_f1(
                    s for s, sub in zip(scores, self.substrates, strict=True) if sub == substrate
                )
            record["mean_position_f1"] = float(np.mean([s.position_f1 for s in scores])) if scores else np.nan
            record |= {f"pooled_f1_{c}": s.f1 for c, s in pooled.per_class.items()}
            record["rms_error_A"] = pooled.rms_error_A
            records.append(record)
        return records

    def comparisons(self) -> list[dict[str, Any]]:
        """Paired per-image comparison of each pair of models (Wilcoxon signed-rank test)."""
        return [
            {"a": a, "b": b} | paired_comparison([s.f1 for s in self.scores[a]], [s.f1 for s in self.scores[b]])
            for a, b in combinations(self.model_names, 2)
        ]


def paired_comparison(f1_a: Sequence[float], f1_b: Sequence[float]) -> dict[str, Any]:
    """Mean difference a - b of per-image F1 on the same images, win/tie counts and the Wilcoxon signed-rank p."""
    fa, fb = np.asarray(f1_a, dtype=float), np.asarray(f1_b, dtype=float)
    differs = fa != fb
    p_value = float(stats.wilcoxon(fa[differs], fb[differs]).pvalue) if differs.sum() >= 2 else np.nan
    return {
        "mean_difference": float(np.mean(fa - fb)) if len(fa) else np.nan,
        "a_better": int(np.sum(fa > fb)),
        "b_better": int(np.sum(fb > fa)),
        "ties": int(np.sum(~differs)),
        "wilcoxon_p": p_value,
    }


# ---- choosing the peak threshold on validation data ---------------------------------------------------

# Thresholds tried by `choose_peak_config`.
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.arange(0.1, 0.91, 0.05), 2))


def choose_peak_config(
    validation: Sequence[tuple[np.ndarray, Columns, tuple[float, float]]],
    sampling_A: float,
    base: PeakConfig | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    match_radius_A: float = MATCH_RADIUS_A,
    border_A: float = BORDER_A,
) -> PeakConfig:
    """`base` with the threshold that maximises mean F1 on validation data (ties: the lowest).

    `validation` holds (probabilities `(4, H, W)`, true columns, image size `(width_A, height_A)`).
    """
    if len(validation) == 0:
        raise ValueError("choose_peak_config needs at least one validation image")
    base = base or PeakConfig()
    # One extraction at the lowest threshold serves all: the threshold only drops lower peaks.
    lowest = replace(base, threshold=float(min(thresholds)))
    candidates = [
        (extract_columns(probabilities, sampling_A, lowest), truth, size)
        for probabilities, truth, size in validation
    ]

    def mean_f1_at(threshold: float) -> float:
        return mean_f1(
            score_image(truth, columns.subset(columns.score > threshold), size, match_radius_A, border_A)
            for columns, truth, size in candidates
        )

    curve = [mean_f1_at(threshold) for threshold in thresholds]
    return replace(base, threshold=float(thresholds[int(np.argmax(curve))]))


FLIP_AVERAGE_MODES = ("no", "yes", "both")  # `hrtemnet evaluate --flip-average`


def flip_variants(model_specs: Sequence[str | Path], flip_average: bool | str = False) -> list[tuple[Any, str, bool]]:
    """(spec, name in tables, flip-averaged?) for every model to score. `flip_average` True/"yes": each model
    predicts with the mean over the 8 flips/rotations (`hrtemnet.models.FlipAverage`), named with
    `hrtemnet.models.FLIP_AVERAGE_SUFFIX`; "both": each with and without, side by side (paired on the same series)."""
    from hrtemnet.models import flip_average_name

    if flip_average not in (False, True, *FLIP_AVERAGE_MODES):
        raise UserError(f"--flip-average must be one of {', '.join(FLIP_AVERAGE_MODES)} (got {flip_average!r})")
    modes = (False, True) if flip_average == "both" else (flip_average in (True, "yes"),)
    return [(spec, flip_average_name(name, flip), flip)
            for spec, name in zip(model_specs, model_display_names(model_specs), strict=True) for flip in modes]


def run(datasets: Sequence[str | Path], model_specs: Sequence[str], out_dir: str | Path,
        config: EvaluationConfig | None = None, flip_average: bool | str = False) -> EvaluationResult:
    """Evaluate models on validation stores and write every output: what `hrtemnet evaluate` does.

    Parameters
    ----------
    datasets : zarr stores from `hrtemnet simulate`, read as one (e.g. a bare and a graphene set).
    model_specs : shipped model names (`msd`, `unet`), model files or training folders.
    out_dir : folder for per_image.csv, the figures, summary.json and report.md (created).
    config : settings; the defaults draw the dose per image as in training.
    flip_average : True/"yes": every model predicts with the mean over the 8 flips/rotations of each series
        (8x the time); "both": with and without, paired (`flip_variants`).

    Returns
    -------
    EvaluationResult, with `files` naming what was written.
    """
    from hrtemnet.dataset import open_stores
    from hrtemnet.models import load_model

    for path in datasets:
        if not Path(path).exists():
            raise UserError(f"dataset {path} does not exist; create one with `hrtemnet simulate {path} --n N`")
    store = open_stores(list(datasets))
    variants = flip_variants(model_specs, flip_average)
    models = [load_model(spec, flip_average=flip) for spec, _, flip in variants]
    for (_, name, _), model in zip(variants, models, strict=True):
        model.name = name
    return evaluate_models(store, models, Path(out_dir), config or EvaluationConfig())


def display_name(spec: str | Path, folders: int = 1) -> str:
    """`msd`, `unet`, or a file's name; a training folder's `best.pt`/`final.pt` is named after the folder.
    `folders` > 1 keeps that many path components (`stage2/msd` for `runs/realism/stage2/msd/best.pt`)."""
    path = Path(spec)
    if path.suffix == ".pt":
        path = path.parent if path.stem in ("best", "final", "checkpoint") else path.with_suffix("")
    return "/".join(path.parts[-folders:])


def model_display_names(specs: Sequence[str | Path]) -> list[str]:
    """Names of the models in tables and figures: `display_name`, with the folder above added for a model file
    whose name another model has (`stage2/msd` next to the shipped `msd`), numbered if still the same."""
    names = [display_name(spec) for spec in specs]
    names = [display_name(spec, folders=2) if names.count(name) > 1 else name for spec, name in zip(specs, names,
                                                                                                     strict=True)]
    return _unique_names(names)


def evaluate_models(
    store, models: Sequence[Any], out_dir: Path, config: EvaluationConfig
) -> EvaluationResult:
    """Evaluate loaded models (see `hrtemnet.models.LoadedModel`) on a `SeriesStore`; write all outputs."""
    from hrtemnet.progress import progress_bar

    names = _unique_names([model.name for model in models])
    n_images = len(store) if config.limit is None else min(config.limit, len(store))
    if n_images == 0 or not models:
        raise UserError("nothing to evaluate: the dataset has no images or no model was given")
    if config.example_index >= n_images:
        raise UserError(f"--example {config.example_index} is not one of the {n_images} evaluated series "
                        f"(0 - {n_images - 1})")
    height, width = store.image_shape
    image_size_A = (width * store.sampling_A, height * store.sampling_A)
    n_sweep = min(config.dose_sweep_images, n_images) if config.dose_sweep_e_per_A2 else 0

    scores: dict[str, list[ImageScore]] = {name: [] for name in names}
    sweep: dict[str, dict[float, list[ImageScore]]] = {
        n: {d: [] for d in config.dose_sweep_e_per_A2} for n in names
    }
    rows, substrates, example = [], [], None
    with progress_bar("images", config.progress) as progress:
        task = progress.add_task("evaluating", total=n_images)
        # an empty sweep (--dose-sweep "" or the demo) gets no bar
        n_sweep_runs = n_sweep * len(config.dose_sweep_e_per_A2)
        sweep_task = progress.add_task("dose sweep", total=n_sweep_runs, visible=n_sweep_runs > 0)
        for index in range(n_images):
            clean, truth, params = (
                store.read_images(index),
                store.read_columns(index),
                store.read_params(index),
            )
            substrate = SUBSTRATES[int(params.get("substrate_graphene", 0) > 0.5)]
            substrates.append(substrate)
            series, dose = _noisy(clean, store.sampling_A, config.noise, config.dose_e_per_A2, config.seed, index)
            predictions = {}
            for name, model in zip(names, models, strict=True):
                predictions[name] = _predict_columns(model, series, store.sampling_A,
                                                     nominal_defocus_for(model, store, config.seed, index))
                match = match_image(
                    truth, predictions[name], image_size_A, config.match_radius_A, config.border_A
                )
                scores[name].append(match.score())
                rows.append(
                    {"image_index": index, "substrate": substrate, "dose_e_per_A2": dose, "model": name}
                    | scores[name][-1].as_row() | drawn_params(params)
                )
            if index == config.example_index or example is None:
                example = (index, series, truth, predictions, params)
            progress.advance(task)
        # spread over the whole set, so a bare + graphene pair of stores contributes both substrates
        for index in np.unique(np.linspace(0, n_images - 1, n_sweep).round().astype(int)) if n_sweep else ():
            index = int(index)
            clean, truth = store.read_images(index), store.read_columns(index)
            for dose in config.dose_sweep_e_per_A2:
                series, _ = _noisy(clean, store.sampling_A, config.noise, dose, config.seed, index)
                for name, model in zip(names, models, strict=True):
                    predicted = _predict_columns(model, series, store.sampling_A,
                                                 nominal_defocus_for(model, store, config.seed, index))
                    sweep[name][dose].append(
                        match_image(
                            truth, predicted, image_size_A, config.match_radius_A, config.border_A
                        ).score()
                    )
                progress.advance(sweep_task)

    result = EvaluationResult(names, rows, scores, substrates, sweep)
    write_outputs(result, example, models, store, image_size_A, out_dir, config)
    return result


def _unique_names(names: list[str]) -> list[str]:
    """Model names as given, numbered where two are the same."""
    return [f"{n} ({i + 1})" if names.count(n) > 1 else n for i, n in enumerate(names)]


def _noisy(clean: np.ndarray, sampling_A: float, noise: NoiseConfig, dose: float | None, seed: int, index: int):
    """Noisy series and its dose (`dose` fixes it); the noise of image `index` depends only on the seed and index."""
    fixed = replace(noise, dose_e_per_A2=dose if dose is not None else noise.dose_e_per_A2)
    return add_imaging_noise(clean, sampling_A, noise_rng(seed, index), fixed)


def _predict_columns(model, series: np.ndarray, sampling_A: float, defocus_A=None) -> Columns:
    """The same path as `hrtemnet predict`: resample, network, peaks with the model's stored settings."""
    from hrtemnet.io import FocalSeries
    from hrtemnet.prediction import predict_series

    return predict_series(model, FocalSeries(series, sampling_A, "validation series", "validation",
                                             defocus_A=defocus_A))


EVALUATION_DEFOCUS_STREAM = 4  # apart from the noise streams [seed, index] and training's streams


def nominal_defocus_for(model, store, seed: int, index: int) -> tuple[float, ...] | None:
    """The defocus values a user would give a model trained with `--defocus-input` for series `index` of a
    store: the true ones off by `models.NominalDefocusError()`'s offset and step errors, drawn from
    (seed, index). None for image-only models."""
    from hrtemnet.models import takes_defocus

    if not takes_defocus(model):
        return None
    from hrtemnet.models import NominalDefocusError, nominal_defocus_A, series_defocus_A

    rng = np.random.default_rng([seed, EVALUATION_DEFOCUS_STREAM, index])
    return tuple(nominal_defocus_A(series_defocus_A(store, index), NominalDefocusError(), rng))


# ---- outputs ------------------------------------------------------------------------------------


def write_outputs(result: EvaluationResult, example, models, store, image_size_A, out_dir: Path, config):
    """per_image.csv, the figures (drawn by `hrtemnet.plotting`), summary.json and report.md in `out_dir`."""
    from hrtemnet import plotting

    out_dir.mkdir(parents=True, exist_ok=True)
    files = result.files
    files["table"] = _write_table(out_dir / "per_image.csv", result.rows)
    f1 = {name: [s.f1 for s in result.scores[name]] for name in result.model_names}
    files["histograms"] = plotting.plot_f1_histograms(f1, result.substrates, SUBSTRATES, out_dir / "f1_histograms.png")
    index, series, truth, predictions, params = example
    matches = {name: match_image(truth, predictions[name], image_size_A, config.match_radius_A, config.border_A)
               for name in result.model_names}
    defocus = [params.get(f"defocus_{i}_A") for i in range(series.shape[0])]
    files["example"] = plotting.plot_example_series(
        series, store.sampling_A, matches, defocus, config.border_A,
        f"Validation series {index}: predicted columns, coloured by class", out_dir / "example_series.png")
    confusions = {name: total_score(result.scores[name]).confusion for name in result.model_names}
    files["confusion"] = plotting.plot_confusion_matrices(confusions, CONFUSION_LABELS,
                                                          out_dir / "confusion_matrices.png")
    if any(result.dose_sweep[name][dose] for name in result.model_names for dose in result.dose_sweep[name]):
        files["dose"] = plotting.plot_f1_vs_dose(result.dose_sweep, out_dir / "f1_vs_dose.png")
    summary = {
        "settings": {k: v for k, v in asdict(config).items() if k != "progress"},
        "models": [
            {"name": n, "sampling_A": m.sampling_A, "peak_params": m.peak_params}
            for n, m in zip(result.model_names, models, strict=True)
        ],
        "summary": result.summary(),
        "comparisons": result.comparisons(),
    }
    files["summary"] = out_dir / "summary.json"
    files["summary"].write_text(json.dumps(summary, indent=2, default=float, allow_nan=True) + "\n")
    files["report"] = write_report(result, summary, config.dose_description(), out_dir / "report.md")


def _write_table(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return path


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_report(result: EvaluationResult, summary: dict, dose_description: str, path: Path) -> Path:
    settings = summary["settings"]
    lines = [
        "# hrtemnet evaluation",
        "",
        f"{len(result.substrates)} validation series ({result.substrates.count('bare')} bare, "
        f"{result.substrates.count('graphene')} on graphene), dose "
        + dose_description
        + f", noise seed {settings['seed']}. "
        f"Columns are matched one-to-one within {settings['match_radius_A']} Å "
        f"(Hungarian); columns within {settings['border_A']} Å of the border are left out; "
        "F1 = 2TP / (2TP + FP + FN) with TP = matched and same class.",
        "",
        "## Summary",
        "",
    ]
    records = summary["summary"]
    keys = list(records[0])
    lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in keys) + " |" for r in records]
    lines += ["", "mean_f1 is the mean of per-image F1; pooled_f1_* pool the counts over all images.", ""]
    if summary["comparisons"]:
        lines += ["## Paired comparison (same images, same noise)", ""]
        keys = list(summary["comparisons"][0])
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_fmt(r[k]) for k in keys) + " |" for r in summary["comparisons"]]
        lines.append("")
    captions = {
        "histograms": "Per-image F1 by substrate (cf. the seed's Figure 2)",
        "example": "Predicted columns over one focal series (cf. Figure 1); triangles are false columns, "
        "crosses missed columns in their true class colour",
        "confusion": "Confusion matrices pooled over all images",
        "dose": "F1 against electron dose",
    }
    lines += ["## Figures", ""]
    for key, caption in captions.items():
        if key in result.files:
            lines += [f"### {caption}", "", f"![{caption}]({result.files[key].name})", ""]
    lines += [
        "## Data",
        "",
        f"- [per-image table]({result.files['table'].name})",
        f"- [summary (JSON)]({result.files['summary'].name})",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def summary_table(result: EvaluationResult):
    """The summary as a compact rich table for the terminal."""
    from rich.table import Table

    table = Table(title="mean per-image F1 (by substrate); per-class F1 pooled over images")
    columns = {
        "model": "model",
        "images": "n",
        "mean_f1": "F1",
        "sem_f1": "± sem",
        "mean_f1_bare": "bare",
        "mean_f1_graphene": "graphene",
        "mean_position_f1": "position F1",
    }
    columns |= {f"pooled_f1_{c}": c for c in CLASS_NAMES} | {"rms_error_A": "RMS Å"}
    for header in columns.values():
        table.add_column(header, justify="left" if header == "model" else "right")
    for record in result.summary():
        table.add_row(
            *(f"{record[k]:.3f}" if isinstance(record[k], float) else str(record[k]) for k in columns)
        )
    return table


# ---- the realism suite: named acquisition conditions ------------------------------------------------------
#
# A condition (one JSON file, e.g. experiments/realism/conditions/*.json; docs/realism.md) says how its series
# are drawn and recorded: dataset-config overrides on a base distribution, the imaging noise, drift between
# frames and whether `hrtemnet.predict` aligns them, how many series and from which seed. Its noise-free series
# are simulated once into a store in the output folder (resumable like `hrtemnet simulate`); drift and noise are
# drawn from `noise_rng(seed, index)`, so every model sees the same recorded series, in any run; each scored
# (model, series) is appended to the condition's scores.jsonl at once, so an interrupted run loses nothing.

CONDITION_FIELDS = ("label", "description", "base", "dataset", "noise", "drift_A_range", "align", "n", "seed")
# "seed_window": the shipped models' training window (`dataset.SEED_WINDOW`); "default": today's defaults (the
# realism training distribution, docs/training_distribution.md).
CONDITION_BASES = ("default", "seed_window")


@dataclass
class Condition:
    """One named acquisition condition of the realism suite (`load_condition` reads it from JSON)."""

    name: str  # the file's stem; names the output folder
    label: str  # a few words for the table and the figure
    dataset: DatasetConfig  # the series are drawn from
    noise: NoiseConfig  # dose, detector blur and camera of the recording
    drift_A_range: tuple[float, float] = (0.0, 0.0)  # frames 2..n each moved by a random vector this long
    align: bool = True  # `hrtemnet.predict(..., align=align)`
    n: int = 20  # series
    seed: int = 500  # dataset seed, and the noise/drift seed of `noise_rng(seed, index)`
    description: str = ""

    def record(self) -> dict:
        """What defines the condition's series and their scores (everything but `n`, `label`, `description`)."""
        return json.loads(json.dumps({"dataset": self.dataset.to_dict(), "noise": asdict(self.noise),
                                      "drift_A_range": list(self.drift_A_range), "align": self.align,
                                      "seed": self.seed}))


def load_condition(path: str | Path) -> Condition:
    """A condition from its JSON file; UserError (one line, naming the file) for anything wrong in it."""
    from hrtemnet.dataset import SEED_WINDOW, DatasetConfig
    from hrtemnet.validation import validate_config

    path = Path(path)
    where = f"condition file {path}"
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise UserError(f"{where} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{where} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise UserError(f"{where} must hold a JSON object with fields {', '.join(CONDITION_FIELDS)}")
    unknown = sorted(set(data) - set(CONDITION_FIELDS))
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(CONDITION_FIELDS)}")
    try:
        base = data.get("base", "default")
        if base not in CONDITION_BASES:
            raise UserError(f"base {base!r} is not one of {', '.join(CONDITION_BASES)}")
        overrides = data.get("dataset", {})
        if not isinstance(overrides, dict):
            raise UserError("dataset must be an object of config sections (structure, optics, simulation)")
        merged = json.loads(json.dumps(SEED_WINDOW if base == "seed_window" else {}))
        for section, values in overrides.items():
            merged[section] = {**merged.get(section, {}), **values} if isinstance(values, dict) else values
        dataset = DatasetConfig.from_dict(merged)
        condition = Condition(name=path.stem, label=data.get("label", path.stem), dataset=dataset,
                              noise=_noise_from_overrides(data.get("noise", {})),
                              drift_A_range=data.get("drift_A_range", (0.0, 0.0)),
                              align=data.get("align", True), n=data.get("n", 20), seed=data.get("seed", 500),
                              description=data.get("description", ""))
        validate_config(condition)
        low_A, high_A = (float(v) for v in condition.drift_A_range)
        condition.drift_A_range = (low_A, high_A)
        if condition.n < 1:
            raise UserError(f"n = {condition.n} must be at least 1")
    except (TypeError, ValueError) as error:  # UserError is a ValueError
        raise UserError(f"{where}: {' '.join(str(error).split())}") from None
    return condition


def _noise_from_overrides(overrides) -> NoiseConfig:
    """NoiseConfig's defaults with `overrides` (its field names; `camera`: null for none, or CameraConfig fields)."""
    from dataclasses import fields

    from hrtemnet.simulation import CameraConfig

    if not isinstance(overrides, dict):
        raise UserError("noise must be an object of NoiseConfig fields")
    known = [f.name for f in fields(NoiseConfig)]
    camera_known = [f.name for f in fields(CameraConfig)]
    unknown = sorted(set(overrides) - set(known))
    camera = overrides.get("camera", {})
    if isinstance(camera, dict):
        unknown += [f"camera.{name}" for name in sorted(set(camera) - set(camera_known))]
    elif camera is not None:
        raise UserError("noise.camera must be null (no camera) or an object of CameraConfig fields")
    if unknown:
        raise UserError(f"unknown noise field(s) {', '.join(unknown)}; known: {', '.join(known)}; "
                        f"camera: {', '.join(camera_known)}")
    noise = NoiseConfig.from_dict({**asdict(NoiseConfig()), **overrides,
                                   "camera": None if camera is None else {**asdict(CameraConfig()), **camera}})
    from hrtemnet.validation import validate_config

    return validate_config(noise)


def load_conditions(paths: Sequence[str | Path]) -> list[Condition]:
    """Conditions from JSON files and folders of them (all `*.json`, in name order); all checked first."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise UserError(f"condition folder {path} holds no .json files")
            files += found
        else:
            files.append(path)
    conditions = [load_condition(path) for path in files]
    names = [c.name for c in conditions]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UserError(f"condition name(s) {', '.join(twice)} given twice (a condition is named by its file's "
                        "stem, which names its output folder); rename one")
    return conditions


def shift_frames(images: np.ndarray, shifts_A: np.ndarray, sampling_A: float) -> np.ndarray:
    """Each frame's content moved by its (dx, dy) in Å (Fourier shift: exact for periodic simulations)."""
    from scipy import ndimage

    return np.stack([np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(image), (dy / sampling_A, dx / sampling_A))).real
                     for image, (dx, dy) in zip(images, np.asarray(shifts_A), strict=True)]).astype(np.float32)


def drift_shifts_A(rng: np.random.Generator, num_frames: int, drift_A_range: tuple[float, float]) -> np.ndarray:
    """(dx, dy) per frame in Å: frame 1 stays, each later one moved by a random direction and a length drawn
    uniformly from the range (draws nothing when the range is (0, 0))."""
    shifts_A = np.zeros((num_frames, 2))
    if drift_A_range[1] > 0:
        for frame in range(1, num_frames):
            length, angle = rng.uniform(*drift_A_range), rng.uniform(0, 2 * np.pi)
            shifts_A[frame] = np.array([np.cos(angle), np.sin(angle)]) * length
    return shifts_A


def record_condition_series(condition: Condition, clean: np.ndarray, sampling_A: float,
                            index: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Series `index` of a condition as recorded: drift (if any), then the imaging noise, all drawn from
    `noise_rng(condition.seed, index)`. Returns (series, applied (dx, dy) per frame in Å, dose)."""
    rng = noise_rng(condition.seed, index)
    shifts_A = drift_shifts_A(rng, len(clean), condition.drift_A_range)
    if np.any(shifts_A):
        clean = shift_frames(clean, shifts_A, sampling_A)
    series, dose = add_imaging_noise(clean, sampling_A, rng, condition.noise)
    return series, shifts_A, dose


def condition_store(folder: Path, condition: Condition, n: int, workers: int | None = None,
                    progress: bool = True):
    """The condition's noise-free series in `folder` (a `SeriesStore`): the smallest existing store with at least
    `n` series, completed if a run stopped, else a new one of `n` (sample i is the same whatever the store's n)."""
    from hrtemnet.dataset import open_store, simulate_dataset

    sizes = sorted(int(p.name[len("series_n"):-len(".zarr")]) for p in folder.glob("series_n*.zarr")
                   if p.name[len("series_n"):-len(".zarr")].isdigit())
    size = next((s for s in sizes if s >= n), n)
    path = folder / f"series_n{size}.zarr"
    simulate_dataset(path, size, condition.seed, condition.dataset, workers=workers, progress=progress)
    return open_store(path)


def _read_records(path: Path) -> list[dict]:
    """The records of a scores.jsonl; a line cut short by an interruption is dropped (and the file rewritten
    without it, so appending goes on cleanly)."""
    if not path.exists():
        return []
    text = path.read_text()
    records, damaged = [], False
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            damaged = True
    if damaged or (text and not text.endswith("\n")):
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def _check_condition_record(folder: Path, condition: Condition) -> None:
    """Write the condition's settings next to its results, or check they are those of the results there."""
    record_path = folder / "condition.json"
    record = condition.record()
    if record_path.exists():
        if json.loads(record_path.read_text()) != record:
            raise UserError(f"{folder} holds results of condition {condition.name!r} with other settings; give "
                            "another output folder (or delete that one)")
        return
    folder.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=1) + "\n")


@dataclass
class ConditionSuiteResult:
    conditions: list[Condition]
    model_names: list[str]
    scores: dict[tuple[str, str], list[ImageScore]]  # (condition name, model name) -> per series, in order
    rows: list[dict[str, Any]]  # one per (condition, series, model), as written to per_image.csv
    files: dict[str, Path] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        """One record per (condition, model): mean per-series F1 (± s.e.m.) and position F1, per-class F1 and
        the S-vacancy fraction S/(S+S2) pooled over the series, true and predicted, and its relative error."""
        records = []
        for condition in self.conditions:
            for model in self.model_names:
                scores = self.scores[condition.name, model]
                f1 = np.array([s.f1 for s in scores])
                pooled = total_score(scores)
                true_fraction, predicted_fraction = s_vacancy_fractions(pooled)
                records.append({
                    "condition": condition.name, "label": condition.label, "model": model, "n": len(scores),
                    "mean_f1": mean_f1(scores),
                    "sem_f1": float(stats.sem(f1)) if len(f1) > 1 else float("nan"),
                    "mean_position_f1": float(np.mean([s.position_f1 for s in scores])),
                    **{f"pooled_f1_{c}": s.f1 for c, s in pooled.per_class.items()},
                    "s_vacancy_fraction_true": true_fraction,
                    "s_vacancy_fraction_predicted": predicted_fraction,
                    "s_vacancy_fraction_relative_error": (predicted_fraction / true_fraction - 1
                                                          if true_fraction > 0 else float("nan")),
                })
        return records

    def comparisons(self) -> list[dict[str, Any]]:
        """Per condition, each pair of models on the same series: mean F1 difference a - b, wins, Wilcoxon p."""
        return [{"condition": condition.name, "a": a, "b": b}
                | paired_comparison([s.f1 for s in self.scores[condition.name, a]],
                                    [s.f1 for s in self.scores[condition.name, b]])
                for condition in self.conditions for a, b in combinations(self.model_names, 2)]


def s_vacancy_fractions(score: ImageScore) -> tuple[float, float]:
    """(true, predicted) S-vacancy fraction S/(S+S2) of the columns a score counted (inside the border)."""
    s, s2 = CLASS_NAMES.index("S"), CLASS_NAMES.index("S2")
    true, predicted = score.confusion.sum(axis=1), score.confusion.sum(axis=0)
    fraction = lambda counts: counts[s] / (counts[s] + counts[s2]) if counts[s] + counts[s2] else float("nan")  # noqa: E731
    return float(fraction(true)), float(fraction(predicted))


def run_conditions(conditions: Sequence[Condition], model_specs: Sequence[str], out_dir: str | Path,
                   n: int | None = None, workers: int | None = None, threads: int | None = None,
                   progress: bool = True, flip_average: bool | str = False,
                   defocus_search_A: float = 0.0) -> ConditionSuiteResult:
    """Run models over the realism suite's conditions and write every output: what `hrtemnet evaluate --condition`
    does.

    Parameters
    ----------
    conditions : from `load_conditions`.
    model_specs : shipped model names (`msd`, `unet`), model files or training folders.
    out_dir : folder for each condition's series store and scores (resumed when they are there),
        per_image.csv, conditions_table.csv/.md, comparisons.csv and f1_by_condition.png.
    n : series per condition (default: each condition's own `n`).
    workers : simulation worker processes (default all cores, 0 = in this process).
    threads : torch threads for the networks (default torch's: all cores). On cores shared with other busy
        processes 1 is much faster (MSD-net on a 256² series: 0.8 s against 22 s with 2 threads, measured
        next to a 2-process simulation).
    flip_average : True/"yes": every model predicts with the mean over the 8 flips/rotations of each series
        (8x the network time); "both": with and without, paired (`flip_variants`). Scored apart from the same
        model without it, so one folder holds both.
    defocus_search_A : > 0: models with the defocus input also try the nominal defocus shifted by up to this much
        (`hrtemnet.prediction.search_defocus_offset`); named and scored apart (" +search60"). Image-only models
        are run as they are.

    Returns
    -------
    ConditionSuiteResult, with `files` naming what was written.
    """
    import torch

    import hrtemnet
    from hrtemnet.models import flip_average_name, load_model, takes_defocus
    from hrtemnet.peaks import PEAK_EXTRACTION_VERSION
    from hrtemnet.prediction import check_defocus_search, model_sha256
    from hrtemnet.progress import progress_bar

    if not conditions or not model_specs:
        raise UserError("nothing to evaluate: give at least one condition and one --model")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise UserError(f"--n must be a whole number of at least 1 (got {n})")
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise UserError(f"--threads must be a whole number of at least 1 (got {threads})")
        torch.set_num_threads(threads)
    variants = flip_variants(model_specs, flip_average)
    models = [load_model(spec, flip_average=flip) for spec, _, flip in variants]  # all checked before simulating
    searches = [check_defocus_search(model, defocus_search_A, "--defocus-search") if takes_defocus(model) else 0.0
                for model in models]
    search_names = [f" +search{search:g}" if search > 0 else "" for search in searches]
    # the scores' key in a resumed folder: the model file, flips, the search, and the peak extraction that read
    # the network's output
    hashes = [f"{flip_average_name(model_sha256(spec), flip)}{suffix} peaks-v{PEAK_EXTRACTION_VERSION}"
              for (spec, _, flip), suffix in zip(variants, search_names, strict=True)]
    names = [name + suffix for (_, name, _), suffix in zip(variants, search_names, strict=True)]
    out_dir = Path(out_dir)
    scores: dict[tuple[str, str], list[ImageScore]] = {}
    rows: list[dict[str, Any]] = []
    for condition in conditions:
        count = n or condition.n
        folder = out_dir / condition.name
        _check_condition_record(folder, condition)
        store = condition_store(folder, condition, count, workers, progress)
        height, width = store.image_shape
        image_size_A = (width * store.sampling_A, height * store.sampling_A)
        log_path = folder / "scores.jsonl"
        done = {(r["model_sha256"], r["series"]): r for r in _read_records(log_path)}
        with progress_bar("pred", progress) as bar, open(log_path, "a") as log:
            todo = [(i, k) for i in range(count) for k in range(len(models)) if (hashes[k], i) not in done]
            task = bar.add_task(f"{condition.name}: predicting", total=count * len(models),
                                completed=count * len(models) - len(todo))
            for index in sorted({i for i, _ in todo}):
                series, shifts_A, dose = record_condition_series(condition, store.read_images(index),
                                                                 store.sampling_A, index)
                truth = store.read_columns(index)
                for k in (k for i, k in todo if i == index):
                    frame = hrtemnet.predict(series, sampling_A=store.sampling_A, model=models[k],
                                             align=condition.align,
                                             defocus_A=nominal_defocus_for(models[k], store, condition.seed, index),
                                             defocus_search_A=searches[k])
                    score = score_image(truth, Columns.from_table(frame), image_size_A)
                    record = {"model_sha256": hashes[k], "series": index, "dose_e_per_A2": dose,
                              "applied_shifts_A": shifts_A.tolist(), "aligned": bool(frame.attrs["aligned"]),
                              "measured_shifts_A": frame.attrs["shifts_A"],
                              "confusion": score.confusion.tolist(),
                              "squared_error_sum_A2": score.squared_error_sum_A2,
                              "warnings": len(frame.attrs["warnings"])}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    done[hashes[k], index] = record
                    bar.advance(task)
        for name, sha in zip(names, hashes, strict=True):
            scores[condition.name, name] = []
            for index in range(count):
                record = done[sha, index]
                score = ImageScore(np.array(record["confusion"], dtype=np.int64), record["squared_error_sum_A2"])
                scores[condition.name, name].append(score)
                rows.append(_condition_row(condition, name, record, score, store.read_params(index)))
    result = ConditionSuiteResult(list(conditions), names, scores, rows)
    write_condition_outputs(result, out_dir)
    return result


def _condition_row(condition: Condition, model: str, record: dict, score: ImageScore,
                   params: dict[str, float]) -> dict[str, Any]:
    """One line of the suite's per_image.csv: the series' draws, how far its frames drifted and how well
    `predict` measured it, and the scores."""
    applied, measured = np.array(record["applied_shifts_A"]), np.array(record["measured_shifts_A"])
    residual = np.linalg.norm(measured - applied, axis=1).max() if record["aligned"] else float("nan")
    true_fraction, predicted_fraction = s_vacancy_fractions(score)
    return ({"condition": condition.name, "series": record["series"], "model": model,
             "dose_e_per_A2": record["dose_e_per_A2"],
             "drift_max_A": float(np.linalg.norm(applied, axis=1).max()), "aligned": record["aligned"],
             "alignment_error_max_A": float(residual), "warnings": record["warnings"]}
            | score.as_row()
            | {"s_vacancy_fraction_true": true_fraction, "s_vacancy_fraction_predicted": predicted_fraction}
            | drawn_params(params))


def drawn_params(params: dict[str, float]) -> dict[str, float]:
    """What was drawn for a series (defocus values, astigmatism, carbon, tilt, ...), for per_image.csv: failures
    can be sliced by any of them."""
    return {name: value for name, value in params.items() if name != "sample_seed"}


def write_condition_outputs(result: ConditionSuiteResult, out_dir: Path) -> dict[str, Path]:
    """per_image.csv, conditions_table.csv and .md, comparisons.csv and f1_by_condition.png in `out_dir`."""
    from hrtemnet import plotting

    out_dir.mkdir(parents=True, exist_ok=True)
    files = result.files
    files["per_image"] = _write_table(out_dir / "per_image.csv", result.rows)
    table, comparisons = result.table(), result.comparisons()
    files["table"] = _write_table(out_dir / "conditions_table.csv", table)
    if comparisons:
        files["comparisons"] = _write_table(out_dir / "comparisons.csv", comparisons)
    f1 = {c.label: {m: [s.f1 for s in result.scores[c.name, m]] for m in result.model_names}
          for c in result.conditions}
    files["figure"] = plotting.plot_f1_by_condition(f1, out_dir / "f1_by_condition.png")
    files["report"] = out_dir / "conditions_table.md"
    files["report"].write_text(condition_report(result, table, comparisons))
    return files


def condition_report(result: ConditionSuiteResult, table: list[dict[str, Any]],
                     comparisons: list[dict[str, Any]]) -> str:
    """The suite's Markdown: F1 per condition and model, the details, and the paired tests."""
    names = result.model_names
    by_key = {(r["condition"], r["model"]): r for r in table}
    lines = ["# Realism suite: F1 per condition", "",
             "Mean species-aware F1 per focal series (± s.e.m.; n series per condition, the same recorded series "
             f"for every model). Columns matched one-to-one within {MATCH_RADIUS_A} Å, {BORDER_A} Å border left "
             "out (docs/conventions.md).", "",
             "| condition | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for condition in result.conditions:
        cells = [f"{by_key[condition.name, m]['mean_f1']:.3f} ± {by_key[condition.name, m]['sem_f1']:.3f}"
                 for m in names]
        lines.append(f"| {condition.label} | {by_key[condition.name, names[0]]['n']} | " + " | ".join(cells) + " |")
    lines += ["", "![F1 per condition](f1_by_condition.png)", "", "## Details", "",
              "Position F1 ignores the class; per-class F1 and the S-vacancy fraction S/(S+S2) are pooled over the "
              "condition's series; the relative error is predicted / true - 1.", "",
              "| condition | model | F1 | position F1 | F1 Mo | F1 S2 | F1 S | S/(S+S2) true | predicted | "
              "relative error |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['label']} | {r['model']} | {r['mean_f1']:.3f} | {r['mean_position_f1']:.3f} | "
                     + " | ".join(f"{r[f'pooled_f1_{c}']:.3f}" for c in CLASS_NAMES)
                     + f" | {_or_dash(r['s_vacancy_fraction_true'], '.3f')} | "
                     f"{_or_dash(r['s_vacancy_fraction_predicted'], '.3f')} | "
                     f"{_or_dash(r['s_vacancy_fraction_relative_error'], '+.0%')} |")
    if comparisons:
        lines += ["", "## Paired comparison per condition (same series; Wilcoxon signed-rank test)", "",
                  "| condition | a | b | mean F1 difference a - b | a better | b better | ties | Wilcoxon p |",
                  "|---|---|---|---|---|---|---|---|"]
        labels = {c.name: c.label for c in result.conditions}
        lines += [f"| {labels[c['condition']]} | {c['a']} | {c['b']} | {c['mean_difference']:+.3f} | "
                  f"{c['a_better']} | {c['b_better']} | {c['ties']} | {_or_dash(c['wilcoxon_p'], '.2g')} |"
                  for c in comparisons]
    lines += ["", "Data: [per-series table](per_image.csv), [this table](conditions_table.csv), "
              "[comparisons](comparisons.csv); each condition's settings in `<condition>/condition.json`.", ""]
    return "\n".join(lines)


def _or_dash(value: float, spec: str) -> str:
    """`value` formatted, or a dash where it is undefined (nan: no S columns, fewer than two differing series)."""
    return "–" if np.isnan(value) else format(value, spec)


def condition_summary_table(result: ConditionSuiteResult):
    """Mean F1 per condition and model as a rich table for the terminal."""
    from rich.table import Table

    table = Table(title="mean per-series F1 (± s.e.m.) per condition")
    table.add_column("condition")
    table.add_column("n", justify="right")
    for name in result.model_names:
        table.add_column(name, justify="right")
    by_key = {(r["condition"], r["model"]): r for r in result.table()}
    for condition in result.conditions:
        records = [by_key[condition.name, name] for name in result.model_names]
        table.add_row(condition.label, str(records[0]["n"]),
                      *(f"{r['mean_f1']:.3f} ± {r['sem_f1']:.3f}" for r in records))
    return table
