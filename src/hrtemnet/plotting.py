"""Every figure hrtemnet draws: the palette, column overlays, F1 histograms, confusion matrices, curves.

The library computes (`evaluation`, `metrics`, `prediction`); this module only draws what it is given.
One style throughout: a `matplotlib.figure.Figure` made here and saved with `savefig`, never pyplot,
so drawing touches no global backend state (safe in worker processes, notebooks and tests).
Images are drawn in Å with pixel (row, col) centred at (x, y) = (col * s, row * s) (docs/conventions.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from hrtemnet.columns import CLASS_NAMES

if TYPE_CHECKING:
    from hrtemnet.columns import Columns
    from hrtemnet.io import FocalSeries
    from hrtemnet.metrics import ImageMatch, ImageScore

# Okabe & Ito (2008) colour-blind-safe palette: one colour per model in the comparison figures.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
CLASS_COLOURS = {"Mo": "#56B4E9", "S2": "#E69F00", "S": "#CC79A7"}  # bright enough on grey images
CLASS_MARKERS = {"Mo": "o", "S2": "s", "S": "^"}  # shape too, for print and colour-blind readers


def image_extent(shape: tuple[int, ...], sampling_A: float) -> tuple[float, float, float, float]:
    """`imshow` extent (left, right, bottom, top) in Å of an image `(..., H, W)`: pixel centres at i * s."""
    height, width = shape[-2:]
    s = sampling_A
    return (-s / 2, (width - 0.5) * s, (height - 0.5) * s, -s / 2)


def _save(fig: Figure, path: Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


# ---- prediction ---------------------------------------------------------------------------------


def plot_prediction(series: FocalSeries, columns: Columns, path: Path, title: str = "") -> Path:
    """The images of a series side by side with the columns marked by class (colour and shape), axes in Å."""
    s = series.sampling_A
    height, width = series.images.shape[-2:]
    extent = image_extent(series.images.shape, s)
    panel_in = 4.2
    fig = Figure(figsize=(panel_in * len(series.images), panel_in * height / width + 0.9), layout="constrained")
    axes = fig.subplots(1, len(series.images), squeeze=False)[0]
    # markers ~1 Å across, so neighbouring columns (1.8 Å apart) stay apart at any field of view
    marker_pt = float(np.clip(0.8 * panel_in * 72 / (width * s), 1.5, 9.0))
    for index, (ax, image) in enumerate(zip(axes, series.images, strict=True)):
        low, high = np.percentile(image, [0.5, 99.5])
        ax.imshow(image, cmap="gray", extent=extent, vmin=low, vmax=high, interpolation="nearest")
        for class_index, name in enumerate(CLASS_NAMES):
            xy = columns.xy_A[columns.class_index == class_index]
            ax.scatter(xy[:, 0], xy[:, 1], s=marker_pt**2, marker=CLASS_MARKERS[name], facecolors="none",
                       edgecolors=CLASS_COLOURS[name], linewidths=1.0, label=f"{name} ({len(xy)})")
        ax.set_title(f"image {index + 1}")
        ax.set_xlabel("x (Å)")
        ax.set_ylabel("y (Å)" if index == 0 else "")
    axes[-1].legend(loc="upper right", fontsize=8, framealpha=0.85)
    fig.suptitle(title or series.stem)
    return _save(fig, path, dpi=120)


# ---- evaluation ---------------------------------------------------------------------------------


def plot_f1_histograms(f1: Mapping[str, Sequence[float]], substrates: Sequence[str],
                       substrate_names: Sequence[str], path: Path) -> Path:
    """Per-image F1 of each model (`f1[model]`, in image order), one panel per substrate (the seed's Figure 2)."""
    from matplotlib.ticker import MaxNLocator

    all_f1 = np.concatenate([np.asarray(values, dtype=float) for values in f1.values()])
    low = min(0.9, np.floor(np.nanmin(all_f1) * 20) / 20)  # 0.05 steps, at least [0.9, 1]
    bins = np.linspace(low, 1.0, 26)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, len(substrate_names), sharey=True, squeeze=False)[0]
    for ax, substrate in zip(axes, substrate_names, strict=True):
        on_substrate = np.array(substrates) == substrate
        for colour, (name, values) in zip(OKABE_ITO, f1.items(), strict=False):
            chosen = np.asarray(values, dtype=float)[on_substrate]
            if len(chosen) == 0:
                continue
            label = f"{name}: mean {np.mean(chosen):.3f} (n={len(chosen)})"
            ax.hist(chosen, bins=bins, color=colour, alpha=0.3)
            ax.hist(chosen, bins=bins, color=colour, histtype="step", linewidth=1.8, label=label)
        ax.set_title(f"MoS$_2$ {'on graphene' if substrate == 'graphene' else 'bare'}")
        ax.set_xlabel("per-image F1 (species-aware)")
        if not on_substrate.any():
            ax.text(0.5, 0.5, "no images", transform=ax.transAxes, ha="center", va="center")
        else:
            ax.legend(loc="upper left", fontsize=8, frameon=False)
    axes[0].set_ylabel("number of images")
    axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path, dpi=130)


def plot_example_series(series: np.ndarray, sampling_A: float, matches: Mapping[str, ImageMatch],
                        defocus_A: Sequence[float | None], border_A: float, title: str, path: Path) -> Path:
    """Predicted columns of every model (`matches[model]`) over the images of one series (Figure 1).

    Correct columns are dots, false columns triangles and missed true columns crosses, all in their class
    colour; the dashed box is the scored area inside the `border_A` band.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    n_images = series.shape[0]
    extent = image_extent(series.shape, sampling_A)
    width_A, height_A = series.shape[2] * sampling_A, series.shape[1] * sampling_A
    fig = Figure(figsize=(3.3 * n_images, 3.3 * len(matches) + 0.7), layout="constrained")
    axes = fig.subplots(len(matches), n_images, squeeze=False)
    for row, (name, match) in enumerate(matches.items()):
        correct, found = match.correct_pred(), match.found_truth()
        score = match.score()
        for col in range(n_images):
            ax = axes[row, col]
            ax.imshow(series[col], cmap="gray", extent=extent)
            for c, class_name in enumerate(CLASS_NAMES):
                colour = CLASS_COLOURS[class_name]
                ok = match.pred.subset(correct & (match.pred.class_index == c)).xy_A
                false = match.pred.subset(~correct & (match.pred.class_index == c)).xy_A
                missed = match.truth.subset(~found & (match.truth.class_index == c)).xy_A
                ax.scatter(*ok.T, s=9, color=colour, edgecolors="none")
                ax.scatter(*false.T, s=30, marker="^", color=colour, edgecolors="black", linewidths=0.6)
                ax.scatter(*missed.T, s=34, marker="X", color=colour, edgecolors="black", linewidths=0.6)
            ax.add_patch(Rectangle((border_A, border_A), width_A - 2 * border_A, height_A - 2 * border_A,
                                   fill=False, linestyle="--", linewidth=0.8, edgecolor="white"))
            defocus = defocus_A[col]
            ax.set_title(f"image {col + 1}" + (f", defocus {defocus:.0f} Å" if defocus is not None else ""),
                         fontsize=9)
            ax.set_xlabel("x (Å)")
            if col == 0:
                ax.set_ylabel(f"{name}\nF1 {score.f1:.3f}, {score.fp} false, {score.fn} missed\ny (Å)")
    handles = [Line2D([], [], linestyle="", marker="o", color=CLASS_COLOURS[c], label=c) for c in CLASS_NAMES]
    handles += [
        Line2D([], [], linestyle="", marker="o", color="grey", label="correct"),
        Line2D([], [], linestyle="", marker="^", color="grey", markeredgecolor="black", label="false column"),
        Line2D([], [], linestyle="", marker="X", color="grey", markeredgecolor="black", label="missed (true class)"),
        Line2D([], [], linestyle="--", color="black", label=f"scored area ({border_A:g} Å border)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title)
    return _save(fig, path, dpi=110)


def plot_confusion_matrices(confusions: Mapping[str, np.ndarray], labels: Sequence[str], path: Path) -> Path:
    """Pooled confusion counts of each model (rows true, columns predicted; the last label is "none")."""
    fig = Figure(figsize=(4.2 * len(confusions), 4.0), layout="constrained")
    axes = fig.subplots(1, len(confusions), squeeze=False)[0]
    images = []
    for ax, (name, counts) in zip(axes, confusions.items(), strict=True):
        row_sums = counts.sum(axis=1, keepdims=True)
        fraction = np.divide(counts, row_sums, out=np.zeros(counts.shape), where=row_sums > 0)
        images.append(ax.imshow(fraction, cmap="cividis", vmin=0, vmax=1))
        for (i, j), count in np.ndenumerate(counts):
            if i == j == len(labels) - 1:
                continue  # "none" against "none" has no meaning
            ax.text(j, i, f"{count}", ha="center", va="center", fontsize=8,
                    color="black" if fraction[i, j] > 0.6 else "white")
        ticks = np.arange(len(labels))
        ax.set_xticks(ticks, labels)
        ax.set_yticks(ticks, labels)
        ax.set_xlabel("predicted class (none = missed)")
        ax.set_ylabel("true class (none = false column)")
        ax.set_title(name)
    fig.colorbar(images[-1], ax=list(axes), label="fraction of the true row", shrink=0.8)
    return _save(fig, path, dpi=130)


def plot_f1_vs_dose(sweep: Mapping[str, Mapping[float, Sequence[ImageScore]]], path: Path) -> Path:
    """Mean species-aware and position-only F1 (± s.e.m.) of each model (`sweep[model][dose]`) against dose."""
    from scipy import stats

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for colour, (name, by_dose) in zip(OKABE_ITO, sweep.items(), strict=False):
        doses = sorted(by_dose)
        for attribute, style, label in (("f1", "-o", "species-aware"), ("position_f1", "--s", "position only")):
            values = [[getattr(s, attribute) for s in by_dose[d]] for d in doses]
            means = [np.mean(v) for v in values]
            errors = [stats.sem(v) if len(v) > 1 else 0.0 for v in values]
            ax.errorbar(doses, means, yerr=errors, fmt=style, color=colour, capsize=3, label=f"{name}, {label}",
                        markerfacecolor="white" if attribute == "position_f1" else colour)
    n_images = len(next(iter(next(iter(sweep.values())).values())))
    ax.set_xscale("log")
    ax.set_xlabel("electron dose (e$^-$/Å$^2$)")
    ax.set_ylabel(f"mean per-image F1 (± s.e.m., {n_images} images)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, path, dpi=130)


def plot_time_series(table, path: Path, title: str = "") -> Path:
    """S-vacancy fraction and column counts per class of each focal series of a time series (a
    `hrtemnet.prediction.write_time_series_summary` table), against cumulative dose when it has one."""
    if "cumulative_dose_e_per_A2" in table:
        x, xlabel = table["cumulative_dose_e_per_A2"], "cumulative dose (e$^-$/Å$^2$)"
    else:
        x, xlabel = table["series"], "focal series"
    fig = Figure(figsize=(6.5, 5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(x, table["s_vacancy_fraction"], "-o", color=OKABE_ITO[0])
    top.set_ylabel("S-vacancy fraction S/(S+S2)")
    top.grid(alpha=0.3)
    for name in CLASS_NAMES:
        bottom.plot(x, table[f"n_{name}"], f"-{CLASS_MARKERS[name]}", color=CLASS_COLOURS[name], label=name)
    bottom.set_ylabel("columns (interior)")
    bottom.set_xlabel(xlabel)
    bottom.grid(alpha=0.3)
    bottom.legend(fontsize=8, frameon=False)
    fig.suptitle(title)
    return _save(fig, path, dpi=130)


def plot_f1_by_condition(f1: Mapping[str, Mapping[str, Sequence[float]]], path: Path) -> Path:
    """Mean per-series F1 of each model in each acquisition condition (`f1[condition][model]`, series in the
    same order for every model): horizontal bars side by side, ± s.e.m., with every series as a dot."""
    from scipy import stats

    conditions = list(f1)
    models = list(next(iter(f1.values()))) if f1 else []
    bar_height = 0.8 / max(len(models), 1)
    fig = Figure(figsize=(10, 1.6 + 0.16 * len(conditions) * max(len(models), 2) + 0.25 * len(conditions)),
                 layout="constrained")
    ax = fig.subplots()
    jitter = np.random.default_rng(0)  # fixed: the same figure for the same numbers
    counts = set()
    for k, (colour, model) in enumerate(zip(OKABE_ITO * 8, models, strict=False)):
        # first model on top of each group
        y = np.arange(len(conditions)) - 0.4 + bar_height * (k + 0.5)
        values = [np.asarray(f1[c][model], dtype=float) for c in conditions]
        counts |= {len(v) for v in values}
        means = [float(np.mean(v)) if len(v) else np.nan for v in values]
        errors = [float(stats.sem(v)) if len(v) > 1 else 0.0 for v in values]
        ax.barh(y, means, height=bar_height * 0.9, xerr=errors, color=colour, alpha=0.75,
                error_kw={"ecolor": "black", "capsize": 2, "linewidth": 0.8}, label=model)
        for row, v in zip(y, values, strict=True):
            ax.scatter(v, row + jitter.uniform(-0.3, 0.3, len(v)) * bar_height, s=7, color="black", alpha=0.6,
                       linewidths=0, zorder=3)
        for row, mean in zip(y, means, strict=True):
            if np.isfinite(mean):
                ax.text(1.01, row, f"{mean:.3f}", va="center", fontsize=7, color=colour,
                        transform=ax.get_yaxis_transform())
    ax.set_yticks(np.arange(len(conditions)), conditions)
    ax.invert_yaxis()  # conditions top to bottom in the suite's order
    ax.set_xlim(0, 1.02)  # dots at 1.0 stay visible
    ax.set_xticks(np.linspace(0, 1, 11))
    ax.set_xlabel("species-aware F1 per focal series (1 = every column found and classified correctly)")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncol=min(len(models), 4), fontsize=9, frameon=False)
    n_text = "-".join(str(n) for n in sorted({min(counts), max(counts)})) if counts else "no"
    fig.suptitle(f"F1 per acquisition condition ({n_text} series each): bars mean ± s.e.m., dots single series",
                 fontsize=11)
    return _save(fig, path, dpi=130)
