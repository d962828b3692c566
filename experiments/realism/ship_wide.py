"""Ship a realism U-net as `unet-wide` (issue 11), with its model card (JSON inside the file and next to it, and
Markdown for people), built from the result files that measured it:

    R=experiments/plain_abtem/results
    python experiments/realism/ship_wide.py experiments/realism/checkpoints/stage10_astig_unet_final.pt \
        --validation experiments/realism/results/seed_validation_stage10_astig_unet_final_peaks2 \
        --suite experiments/realism/results/suite_n20_peaks2 experiments/realism/results/suite_n20_stage14 \
        --outside $R/seed_window_n20_realism_vote.csv $R/carbon_n20_stage10.csv $R/carbon_n20_seed778_stage10_unet.csv \
        $R/{defocus_low_edge,defocus_high_edge,low_dose}_n20_stage10_vote.csv \
        $R/{drift_1_3A_aligned,sampling_0.10,sampling_0.20,large_field_77A,tilt_1_2deg,energy_80keV}_n20_vote.csv \
        $R/{seed_window,carbon,carbon_seed778,defocus_low_edge,defocus_high_edge}_n20_vote_search60.csv \
        $R/{low_dose,drift_1_3A_aligned,sampling_0.10,sampling_0.20}_n20_vote_search60.csv \
        $R/{large_field_77A,tilt_1_2deg,energy_80keV}_n20_vote_search60.csv

`--validation`: a `seed_validation.py` folder scoring this model (its rows are matched by the file's stem);
`--suite`: `hrtemnet evaluate --condition` folders scoring this model and its `_sublattice` copy with flips (and
that copy with `--defocus-search 60`);
`--outside`: `plain_abtem/check.py` CSVs (the model's column; files named `*_vote*` were run with the vote,
`*_search60*` with `--defocus-search 60`).
The training data (stores and the configs they were simulated with) is read from the stores the card names.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import numpy as np

from hrtemnet.dataset import open_store
from hrtemnet.models import COMMITTED_WEIGHTS_DTYPE, SHIPPED_MODELS_DIR, load_model, save_model_bundle, takes_defocus

NAME = "unet-wide"
ROOT = Path(__file__).resolve().parents[2]
# The recipe that made the stage-10 weights: train.sh's stages 2-10, from the shipped (seed-experiment) U-net.
TRAINING_COMMAND = ("STAGE=10 STEPS=12000 SEED=11 DEFOCUS_INPUT=1 STORES=\"train carbon_heavy carbon_heavy seed_focus "
                    "seed_focus astig_high astig_high_defocus\" MODELS=unet INIT_FROM=$PWD/checkpoints/"
                    "stage9_hard_unet_final.pt bash experiments/realism/train.sh")
LINEAGE = ("the seed experiment's shipped U-net, then stages 2-10 of experiments/realism/train.sh (the commands are "
           "listed there; the defocus input from stage 4 on): about 80,000 steps of batch 4 on 128² crops")
SIMULATE_SEEDS = {"train": 11, "carbon_heavy": 21, "seed_focus": 22, "astig_high": 23, "astig_high_defocus": 24}


def relative(path: str | Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def training_set(card: dict) -> list[dict]:
    """Each store once, with its share of the draws (a store listed twice is drawn twice as often)."""
    paths = [Path(p).resolve() for p in card["dataset"]]
    sizes = {p: len(open_store(p)) for p in set(paths)}
    total = sum(sizes[p] for p in paths)
    stores = []
    for path in dict.fromkeys(paths):
        store = open_store(path)
        name = path.name.removesuffix(".zarr")
        stores.append({"store": path.name, "series": len(store), "seed": store.seed, "config": store.config,
                       "share_of_draws": round(paths.count(path) * sizes[path] / total, 3),
                       "simulate_command": f"hrtemnet simulate {path.name} --n {len(store)} --seed {store.seed} "
                                           f"--config experiments/realism/{name}.json --phonons 4"})
    return stores


def validation_records(folder: Path, stem: str) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    records = {r["model"]: r for r in summary["summary"]}
    found = {"plain": records.get(stem), "flips": records.get(f"{stem} +flips")}
    if found["plain"] is None:
        raise SystemExit(f"{folder}: no rows for {stem}")
    return {key: dict(record) | {"model": NAME + (" +flips" if key == "flips" else "")}
            for key, record in found.items() if record is not None}


def suite_rows(folders: list[Path], stem: str) -> list[dict]:
    """The model's rows (with flips; with the vote; with the vote and the defocus search) from the suite folders,
    the first folder holding a variant giving all of its rows."""
    wanted = {f"{stem} +flips": "flips", f"{stem}_sublattice +flips": "flips + sublattice vote",
              f"{stem}_sublattice +flips +search60": "flips + sublattice vote + defocus search 60 Å"}
    rows, found = [], set()
    for folder in folders:
        with open(folder / "conditions_table.csv") as f:
            table = [row for row in csv.DictReader(f) if row["model"] in wanted and row["model"] not in found]
        found |= {row["model"] for row in table}
        for row in table:
            rows.append({"condition": row["condition"], "label": row["label"], "options": wanted[row["model"]],
                         "n": int(row["n"]), "mean_f1": round(float(row["mean_f1"]), 4),
                         "sem_f1": round(float(row["sem_f1"]), 4),
                         "mean_position_f1": round(float(row["mean_position_f1"]), 4),
                         "s_vacancy_fraction_relative_error": round(float(row["s_vacancy_fraction_relative_error"]), 3),
                         "folder": relative(folder)})
    if not rows:
        raise SystemExit(f"{', '.join(map(str, folders))}: no rows for {stem}")
    return sorted(rows, key=lambda row: (row["condition"], list(wanted.values()).index(row["options"])))


def outside_rows(files: list[Path], model_file: Path) -> list[dict]:
    rows = []
    for path in files:
        with open(path) as f:
            table = list(csv.DictReader(f))
        columns = [c for c in table[0] if c.startswith("f1_") and not c.startswith("f1_S_")]
        for column in columns:
            spec = Path(column.removeprefix("f1_"))
            if spec.stem.removesuffix("_sublattice") != model_file.stem:
                continue
            vote = spec.stem.endswith("_sublattice") or "_vote" in path.stem
            search = re.search(r"_search(\d+)", path.stem)
            options = "flips" + (" + sublattice vote" if vote else "") + \
                (f" + defocus search {search.group(1)} Å" if search else "")
            f1 = np.array([float(r[column]) for r in table])
            rows.append({"file": relative(path), "options": options,
                         "n": len(f1), "mean_f1": round(float(f1.mean()), 4),
                         "sem_f1": round(float(f1.std(ddof=1) / np.sqrt(len(f1))), 4)})
    return rows


def markdown(card: dict) -> str:
    validation = card["validation"]
    lines = [f"# Model card: shipped `{NAME}`", "",
             "The U-net for what microscopes deliver (issue 11): amorphous carbon on the sample, focal series taken "
             "anywhere in -150..+100 Å, low dose, camera, drift left by alignment, tilt, 0.10-0.20 Å/px, 80 keV. "
             "It takes the nominal defocus of each frame as input: `hrtemnet predict --model unet-wide --defocus "
             "D1,D2,D3` (Å, positive = underfocus). Recommended: `--flip-average`, `--defocus-search 60` when the "
             "absolute defocus is known only to tens of Å, and `--sublattice-vote` on single-phase 2H samples "
             "(docs/realism.md says what each does and assumes).", "",
             f"- Architecture: U-net {card['model_kwargs']} with {len(card['input_planes'])} input planes "
             f"({', '.join(card['input_planes'])}), {card['parameters']:,} parameters, weights stored as "
             f"{card['weights_dtype']}.",
             f"- Trained by: {card['lineage']}; the last stage: `{card['training_command']}` "
             f"({card['steps']:,} steps, cosine learning rate from {card['learning_rate']:g}).",
             "- Training data: " + "; ".join(
                 f"{s['store']} ({s['series']:,} simulated series, seed {s['seed']}, {100 * s['share_of_draws']:.0f} % "
                 f"of the draws)" for s in card["training_set"]) + "; 256x256 px at 0.15 Å/px, 4 frozen phonons. "
             "Noise, camera, misregistration (≤ 0.3 Å) and pixel-size jitter (±10 %) drawn on the fly; nominal "
             f"defocus drawn off the truth by a shared offset (σ {card['defocus_input']['offset_sigma_A']:g} Å) and a "
             f"step error (σ {card['defocus_input']['step_sigma_A']:g} Å).",
             f"- Peak extraction: {card['peak_params']}.",
             f"- Validation protocol (the seed experiment's validation series, {validation['images']} series, dose "
             f"1e4-1e5 e/Å²): mean per-image F1 {validation['mean_f1']:.4f} (bare {validation['mean_f1_bare']:.4f}, "
             f"graphene {validation['mean_f1_graphene']:.4f}); pooled per-class F1 Mo "
             f"{validation['pooled_f1_Mo']:.4f}, "
             f"S2 {validation['pooled_f1_S2']:.4f}, S {validation['pooled_f1_S']:.4f}."
             + (f" With --flip-average: {card['validation_flips']['mean_f1']:.4f}." if card.get("validation_flips")
                else ""), "",
             "## The realism suite (our simulator; 20 series per condition; `hrtemnet evaluate --condition "
             "experiments/realism/conditions`)", "",
             "| condition | options | mean F1 ± s.e.m. | S-vacancy fraction error |", "|---|---|---|---|"]
    for row in card["realism_suite"]:
        lines.append(f"| {row['label']} | {row['options']} | {row['mean_f1']:.3f} ± {row['sem_f1']:.3f} | "
                     f"{100 * row['s_vacancy_fraction_relative_error']:+.0f} % |")
    lines += ["", "## Outside our simulator (plain abTEM calls: `experiments/plain_abtem/check.py`)", "",
              "| series | options | n | mean F1 ± s.e.m. |", "|---|---|---|---|"]
    for row in card["outside_simulator"]:
        lines.append(f"| {Path(row['file']).stem} | {row['options']} | {row['n']} | {row['mean_f1']:.3f} ± "
                     f"{row['sem_f1']:.3f} |")
    lines += ["", "- Limits: simulated MoS2 only (monolayer 2H, on graphene or bare); the sublattice vote assumes one "
              "2H phase per patch; unaligned drift of 1-3 Å is not tolerated (let `predict` align the frames); the "
              "nominal defocus must be right to a few tens of Å: the one failed series outside our simulator (0.20 "
              "Å/px, F1 0.03) had it 54 Å off at 48 Å astigmatism (0.988 with the true values; `--defocus-search "
              "60` finds them: 1.0); without alignment of drifted frames the defocus search makes things worse "
              "(0.714 -> 0.665).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_file", type=Path)
    parser.add_argument("--validation", type=Path, required=True)
    parser.add_argument("--suite", type=Path, nargs="+", required=True)
    parser.add_argument("--outside", type=Path, nargs="+", required=True)
    args = parser.parse_args()
    model = load_model(args.model_file)
    if model.name != "unet" or not takes_defocus(model):
        raise SystemExit(f"{args.model_file}: not a U-net with the defocus input")
    stem = args.model_file.stem
    records = validation_records(args.validation, stem)
    card = dict(model.card)
    card.update({
        "model": model.name, "shipped_name": NAME, "model_kwargs": model.kwargs, "sampling_A": model.sampling_A,
        "peak_params": model.peak_params, "input_planes": ["image 1", "image 2", "image 3", "defocus 1", "defocus 2",
                                                           "defocus 3"],
        "training_command": TRAINING_COMMAND, "lineage": LINEAGE, "shipped_from": relative(args.model_file),
        "training_set": training_set(card),
        "dataset": [Path(p).name for p in card["dataset"]], "val_dataset": Path(card["val_dataset"]).name,
        "validation": records["plain"], "validation_flips": records.get("flips"),
        "validation_report": relative(args.validation / "report.md"),
        "realism_suite": suite_rows(args.suite, stem),
        "outside_simulator": outside_rows(args.outside, args.model_file),
    })
    start = dict(card["initialised_from"])
    start["file"] = relative(start["file"])
    start["dataset"] = [Path(p).name for p in start["dataset"]]
    card["initialised_from"] = start
    card = json.loads(json.dumps(card, default=float))  # the card inside the file equals the JSON next to it
    path = SHIPPED_MODELS_DIR / f"{NAME}.pt"
    save_model_bundle(path, model.net, model.name, model.kwargs, model.sampling_A, model.peak_params, card,
                      weights_dtype=COMMITTED_WEIGHTS_DTYPE["unet"])
    card = load_model(path).card  # as stored (weights_dtype added)
    (SHIPPED_MODELS_DIR / f"{NAME}.json").write_text(json.dumps(card, indent=2, default=float) + "\n")
    (SHIPPED_MODELS_DIR / f"{NAME}.md").write_text(markdown(card))
    print(f"shipped {path} ({path.stat().st_size / 1e6:.2f} MB): validation protocol "
          f"{card['validation']['mean_f1']:.4f}, {len(card['realism_suite'])} suite rows, "
          f"{len(card['outside_simulator'])} outside rows")


if __name__ == "__main__":
    main()
