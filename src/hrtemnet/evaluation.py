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
from typing import Any

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


def run(datasets: Sequence[str | Path], model_specs: Sequence[str], out_dir: str | Path,
        config: EvaluationConfig | None = None) -> EvaluationResult:
    """Evaluate models on validation stores and write every output: what `hrtemnet evaluate` does.

    Parameters
    ----------
    datasets : zarr stores from `hrtemnet simulate`, read as one (e.g. a bare and a graphene set).
    model_specs : shipped model names (`msd`, `unet`), model files or training folders.
    out_dir : folder for per_image.csv, the figures, summary.json and report.md (created).
    config : settings; the defaults draw the dose per image as in training.

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
    models = [load_model(spec) for spec in model_specs]
    for spec, model in zip(model_specs, models, strict=True):
        model.name = display_name(spec)
    return evaluate_models(store, models, Path(out_dir), config or EvaluationConfig())


def display_name(spec: str | Path) -> str:
    """`msd`, `unet`, or a file's name; a training folder's `best.pt`/`final.pt` is named after the folder."""
    path = Path(spec)
    if path.suffix != ".pt":
        return path.name
    return path.parent.name if path.stem in ("best", "final", "checkpoint") else path.stem


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
                predictions[name] = _predict_columns(model, series, store.sampling_A)
                match = match_image(
                    truth, predictions[name], image_size_A, config.match_radius_A, config.border_A
                )
                scores[name].append(match.score())
                rows.append(
                    {"image_index": index, "substrate": substrate, "dose_e_per_A2": dose, "model": name}
                    | scores[name][-1].as_row()
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
                    predicted = _predict_columns(model, series, store.sampling_A)
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


def _predict_columns(model, series: np.ndarray, sampling_A: float) -> Columns:
    """The same path as `hrtemnet predict`: resample, network, peaks with the model's stored settings."""
    from hrtemnet.io import FocalSeries
    from hrtemnet.prediction import predict_series

    return predict_series(model, FocalSeries(series, sampling_A, "validation series", "validation"))


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
