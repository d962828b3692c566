"""Training curves (loss and validation F1 against step) from the runs' log.jsonl files; also writes thinned logs.

    python experiments/seed_experiment/plot_training.py runs/msd runs/unet runs/unet_static --out results/training
    python experiments/seed_experiment/plot_training.py runs/full/stage2/msd runs/full/stage2/unet \
        --previous results/training --out results/full_training  # a later stage after the earlier one's curves
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7")  # Okabe-Ito


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--previous", type=Path, help="folder of the previous stage's thinned logs (<run name>.jsonl); "
                        "they are drawn first and this stage's steps are counted on from their last step")
    parser.add_argument("--selection-series", type=int, default=48, help="series in the model-selection set")
    parser.add_argument("--f1-min", type=float, default=0.85, help="lower end of the F1 axis")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 4))
    for colour, run in zip(COLOURS, args.runs, strict=False):
        records = read_log(run / "log.jsonl")
        offset = 0
        if args.previous and (args.previous / f"{run.name}.jsonl").exists():
            earlier = read_log(args.previous / f"{run.name}.jsonl")  # every 50th step: smooth over 10 points
            offset = max(r["step"] for r in earlier)
            plot_curves(ax_loss, ax_f1, earlier, 0, 10, colour, alpha=0.5, label=None)
            for ax in (ax_loss, ax_f1):
                ax.axvline(offset, color="grey", linestyle=":", linewidth=1)
                ax.text(offset, 0.02, " next stage", transform=ax.get_xaxis_transform(), color="grey")
        plot_curves(ax_loss, ax_f1, records, offset, 50, colour, alpha=1.0, label=run.name)
        thinned = [r for r in records if "val_f1" in r or r["step"] % 50 == 0]
        (args.out / f"{run.name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in thinned))
    ax_loss.set(xlabel="training step (batch of 4 crops, 128² px)", ylabel="weighted cross-entropy (50-step mean)",
                yscale="log", title="training loss")
    ax_f1.set(xlabel="training step", ylabel="mean species-aware F1",
              title=f"model-selection set ({args.selection_series} series)", ylim=(args.f1_min, 1.0))
    for ax in (ax_loss, ax_f1):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "training_curves.png", dpi=110)
    print(f"wrote {args.out / 'training_curves.png'}")


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(ax_loss, ax_f1, records: list[dict], offset: int, window: int, colour: str, alpha: float,
                label: str | None) -> None:
    steps = [r for r in records if "loss" in r]
    vals = [r for r in records if "val_f1" in r]
    step = np.array([r["step"] for r in steps]) + offset
    loss = np.array([r["loss"] for r in steps])
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    ax_loss.plot(step[window - 1:], smooth, color=colour, alpha=alpha, label=label)
    ax_f1.plot([r["step"] + offset for r in vals], [r["val_f1"] for r in vals], "o-", color=colour, alpha=alpha,
               label=label)


if __name__ == "__main__":
    main()
