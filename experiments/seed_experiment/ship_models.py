"""Copy trained models into the package as the shipped `msd` / `unet`, with model cards.

    python experiments/seed_experiment/ship_models.py ship [RUNS STEPS] # RUNS/*/best.pt -> src/hrtemnet/data/models
    python experiments/seed_experiment/ship_models.py card RESULTS_DIR # add evaluation figures to the cards

The card (JSON inside the model file, and data/models/<name>.json + <name>.md) states the training command,
dataset (size, seed, config, vibration table), sampling, peak thresholds and validation F1 per substrate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hrtemnet.dataset import open_store
from hrtemnet.models import COMMITTED_WEIGHTS_DTYPE as WEIGHTS_DTYPE
from hrtemnet.models import SHIPPED_MODELS_DIR, load_model, save_model_bundle

HERE = Path(__file__).parent
RUNS = HERE / "runs"


def training_command(name: str, card: dict, runs: Path, steps: int) -> str:
    """The `hrtemnet train` call that made this model (paths relative to the data and experiment folders)."""
    size = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in card["model_kwargs"].items())
    start = card.get("initialised_from")
    init = f" --init-from {Path(start['file']).relative_to(HERE)}" if start else ""
    out = runs.relative_to(HERE) if runs.is_relative_to(HERE) else runs
    # stage 1 ran in two legs (--steps 5000, then --resume --steps 7000), which resumes to the same result
    return (f"hrtemnet train train.zarr --model {name} {size}{init} --out {out}/{name} --steps {steps} "
            f"--crop {card['crop_px']} --batch {card['batch_size']} --seed {card['seed']} "
            f"--lr {card['learning_rate']:g} --threads 1 --val val_select.zarr --val-images 48 --val-every 500")


def ship(runs: Path, steps: int) -> None:
    for name in ("msd", "unet"):
        model = load_model(runs / name / "best.pt")
        store = open_store(model.card["dataset"])
        card = dict(model.card)
        card.update({"model": name, "model_kwargs": model.kwargs})
        card.update({
            "sampling_A": model.sampling_A, "peak_params": model.peak_params,
            "training_command": training_command(name, card, runs, steps),
            "training_set": {"series": len(store), "seed": store.seed, "config": store.config,
                             "vibration_table": dict(store.group.attrs.get("vibration_table") or {}),
                             "simulate_command": f"hrtemnet simulate train.zarr --n {len(store)} --seed {store.seed} "
                                                 "--config experiments/seed_experiment/train.json --phonons 4"},
            "dataset": Path(card["dataset"]).name, "val_dataset": Path(card["val_dataset"]).name,
        })
        if card.get("initialised_from"):  # earlier stages: where the starting weights came from
            start = dict(card["initialised_from"])
            start["file"] = str(Path(start["file"]).relative_to(HERE.parent.parent))
            card["initialised_from"] = start
        path = SHIPPED_MODELS_DIR / f"{name}.pt"
        save_model_bundle(path, model.net, name, model.kwargs, model.sampling_A, model.peak_params, card,
                          weights_dtype=WEIGHTS_DTYPE[name])
        print(f"shipped {path} ({path.stat().st_size / 1e6:.2f} MB), best step {card['steps']}, "
              f"selection F1 {card['val_f1']:.4f}")


def add_results(results_dir: Path) -> None:
    summary = json.loads((results_dir / "summary.json").read_text())
    by_model = {record["model"]: record for record in summary["summary"]}
    for name in ("msd", "unet"):
        path = SHIPPED_MODELS_DIR / f"{name}.pt"
        model = load_model(path)
        record = next(r for key, r in by_model.items() if key.startswith(name))
        card = dict(model.card) | {"validation": record, "validation_report": str(results_dir / "report.md")}
        save_model_bundle(path, model.net, name, model.kwargs, model.sampling_A, model.peak_params, card,
                          weights_dtype=WEIGHTS_DTYPE[name])
        (SHIPPED_MODELS_DIR / f"{name}.json").write_text(json.dumps(card, indent=2, default=float) + "\n")
        lines = [f"# Model card: shipped `{name}`", "",
                 f"- Architecture: {name} {model.kwargs}, {card['parameters']:,} parameters, weights stored as "
                 f"{card['weights_dtype']}.",
                 f"- Trained by: `{card['training_command']}` (best validation step {card['steps']}).",
                 *([f"- Started from `{card['initialised_from']['file']}` "
                    f"({card['initialised_from']['steps']} steps of "
                    f"`{card['initialised_from']['training_command']}`; fresh Adam)."]
                   if card.get("initialised_from") else []),
                 f"- Training data: {card['training_set']['series']} simulated focal series, seed "
                 f"{card['training_set']['seed']}, 256x256 px at {model.sampling_A} Å/px, half on graphene, "
                 f"4 frozen phonons from the vibration table recorded in {name}.json; "
                 f"`{card['training_set']['simulate_command']}`.",
                 f"- Input: 3 images (increasing defocus) at {model.sampling_A} Å/px, each normalised to zero mean "
                 "and unit std; output: background / Mo / S2 / S per pixel.",
                 f"- Peak extraction: {model.peak_params} (threshold chosen on the selection set).",
                 f"- Validation ({record['images']} series, dose drawn log-uniform 1e4-1e5 e/Å²): mean per-image "
                 f"F1 {record['mean_f1']:.4f} (bare {record['mean_f1_bare']:.4f}, graphene "
                 f"{record['mean_f1_graphene']:.4f}); pooled per-class F1 Mo {record['pooled_f1_Mo']:.4f}, "
                 f"S2 {record['pooled_f1_S2']:.4f}, S {record['pooled_f1_S']:.4f}.",
                 "- Limits: trained on simulated MoS2 only (50 keV; Cs 5-25 µm; first defocus -50 to -10 Å, then "
                 "steps of 45-55 Å; astigmatism up to 50 Å; focal spread 20-40 Å); other materials, energies or "
                 "samplings far from 0.15 Å/px are out of range.", ""]
        (SHIPPED_MODELS_DIR / f"{name}.md").write_text("\n".join(lines))
        print(f"card of {name}: mean F1 {record['mean_f1']:.4f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["ship"] and len(sys.argv) in (2, 4):
        runs, steps = (Path(sys.argv[2]).resolve(), int(sys.argv[3])) if len(sys.argv) == 4 else (RUNS, 7000)
        ship(runs, steps)
    elif sys.argv[1:2] == ["card"] and len(sys.argv) == 3:
        add_results(Path(sys.argv[2]))
    else:
        sys.exit(__doc__)
