"""Paired per-image comparison of models from two `hrtemnet evaluate` runs on the same validation sets.

    python experiments/seed_experiment/compare_results.py results/full_stage2 msd results/full_stage1 stage1_msd

Both runs must have scored the same images under the same noise (same sets, same --seed): checked through the
per-image dose. Prints a Markdown row: mean F1 of each, mean difference a - b, wins, ties, Wilcoxon p.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from hrtemnet.evaluation import paired_comparison


def per_image_f1(results_dir: Path, model: str) -> dict[int, tuple[float, float]]:
    with open(results_dir / "per_image.csv") as f:
        rows = [row for row in csv.DictReader(f) if row["model"] == model]
    if not rows:
        sys.exit(f"no model named {model!r} in {results_dir / 'per_image.csv'}")
    return {int(row["image_index"]): (float(row["f1"]), float(row["dose_e_per_A2"])) for row in rows}


def main(dir_a: str, model_a: str, dir_b: str, model_b: str) -> None:
    a, b = per_image_f1(Path(dir_a), model_a), per_image_f1(Path(dir_b), model_b)
    if a.keys() != b.keys() or any(abs(a[i][1] - b[i][1]) > 0.1 for i in a):
        sys.exit("the two runs did not score the same images at the same doses; evaluate both on the same sets")
    images = sorted(a)
    f1_a, f1_b = [a[i][0] for i in images], [b[i][0] for i in images]
    result = paired_comparison(f1_a, f1_b)
    print("| a | b | images | mean F1 a | mean F1 b | a - b | a better | b better | ties | Wilcoxon p |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {dir_a}:{model_a} | {dir_b}:{model_b} | {len(images)} | {sum(f1_a) / len(images):.4f} | "
          f"{sum(f1_b) / len(images):.4f} | {result['mean_difference']:+.4f} | {result['a_better']} | "
          f"{result['b_better']} | {result['ties']} | {result['wilcoxon_p']:.2g} |")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
