"""Per-condition check of models on freshly simulated series (issue 11's realism conditions, small n).

Each condition is a DatasetConfig override plus noise/drift settings; series are simulated here (2 frozen
phonons), noised with the project's noise model (`noise_rng(seed, i)`: the same noise for every model), drifted
when asked (each of frames 2..n shifted by a random vector of length in the range, Fourier shift of the periodic
cell), predicted through `hrtemnet.predict` (the real predict path, alignment on) and scored with
`hrtemnet.metrics.score_image`. Writes per_image.csv and a Markdown table with a paired Wilcoxon test per
condition.

    python experiments/realism/conditions.py --model msd --model runs/realism/msd/best.pt --n 8 --out DIR
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import hrtemnet

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from drifted_series import shift_frames  # noqa: E402  (the project's one frame-shift helper)

from hrtemnet.columns import CLASS_NAMES, Columns
from hrtemnet.dataset import SEED_WINDOW, DatasetConfig, columns_from_table, simulate_sample
from hrtemnet.evaluation import paired_comparison
from hrtemnet.metrics import score_image
from hrtemnet.simulation import NoiseConfig, add_imaging_noise, noise_rng
from hrtemnet.vibrations import vibration_table_for

CONDITIONS = {
    "in_distribution": (SEED_WINDOW, {"dose_e_per_A2_range": [1e4, 1e5]}, (0, 0)),
    "contamination_5_10A": ({**SEED_WINDOW, "structure": {**SEED_WINDOW["structure"], "carbon_probability": 1.0,
                                                          "carbon_thickness_A_range": [5.0, 10.0]}},
                            {"dose_e_per_A2_range": [1e4, 1e5]}, (0, 0)),
    "defocus_high_40_80": ({**SEED_WINDOW, "optics": {"first_defocus_A_range": [40.0, 80.0],
                                                      "defocus_step_A_range": [80.0, 100.0]}},
                           {"dose_e_per_A2_range": [1e4, 1e5]}, (0, 0)),
    "low_dose_1e3_3e3": (SEED_WINDOW, {"dose_e_per_A2_range": [1e3, 3e3]}, (0, 0)),
    "drift_1_3A_aligned": (SEED_WINDOW, {"dose_e_per_A2_range": [1e4, 1e5]}, (1.0, 3.0)),
    "sampling_0.10": ({**SEED_WINDOW, "simulation": {"sampling_A": 0.10}}, {"dose_e_per_A2_range": [1e4, 1e5]},
                      (0, 0)),
    "sampling_0.20": ({**SEED_WINDOW, "simulation": {"sampling_A": 0.20}}, {"dose_e_per_A2_range": [1e4, 1e5]},
                      (0, 0)),
    "tilt_1_2deg": ({**SEED_WINDOW, "structure": {**SEED_WINDOW["structure"], "tilt_rad_range": [0.0175, 0.0349]}},
                    {"dose_e_per_A2_range": [1e4, 1e5]}, (0, 0)),
    "energy_80keV": ({**SEED_WINDOW, "optics": {**SEED_WINDOW["optics"], "energy_eV": 80e3}},
                     {"dose_e_per_A2_range": [1e4, 1e5]}, (0, 0)),
    "full_realism_default": ({}, {}, (0, 0)),
}
# Every condition is recorded through the project's camera model (NoiseConfig's default: pixel MTF, gain,
# offset, read noise), so "in_distribution" is also the camera condition.


def condition_series(name: str, n: int, seed: int):
    overrides, noise_overrides, drift = CONDITIONS[name]
    data = copy.deepcopy(overrides)
    data.setdefault("simulation", {})["num_phonons"] = 2
    config = DatasetConfig.from_dict(data)
    noise = NoiseConfig.from_dict(noise_overrides)
    table = vibration_table_for(2)
    for index in range(n):
        clean, truth, _ = simulate_sample(config, seed, index, table)
        rng = noise_rng(seed, index)
        if drift[1] > 0:
            shifts_A = np.zeros((len(clean), 2))  # (dx, dy) per frame; frame 1 stays
            for frame in range(1, len(clean)):
                length, angle = rng.uniform(*drift), rng.uniform(0, 2 * np.pi)
                shifts_A[frame] = np.array([np.cos(angle), np.sin(angle)]) * length
            clean = shift_frames(clean, shifts_A, config.simulation.sampling_A)
        noisy, _ = add_imaging_noise(clean, config.simulation.sampling_A, rng, noise)
        yield index, noisy, columns_from_table(truth), config.simulation.sampling_A


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--seed", type=int, default=500)
    parser.add_argument("--condition", action="append", default=None, choices=sorted(CONDITIONS))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.condition or list(CONDITIONS):
        for index, series, truth, sampling in condition_series(name, args.n, args.seed):
            size = (series.shape[-1] * sampling, series.shape[-2] * sampling)
            for model in args.model:
                frame = hrtemnet.predict(series, sampling_A=sampling, model=model, align=True)
                pred = Columns(frame[["x_A", "y_A"]].to_numpy(),
                               np.array([CLASS_NAMES.index(c) for c in frame["class"]], dtype=np.int64))
                score = score_image(truth, pred, size)
                rows.append({"condition": name, "model": model, "index": index, "f1": score.f1,
                             "position_f1": score.position_f1,
                             **{f"f1_{k}": v.f1 for k, v in score.per_class.items()}})
            print(name, index, [round(r["f1"], 3) for r in rows[-len(args.model):]], flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "per_image.csv", index=False)
    lines = ["| condition | " + " | ".join(args.model) + " | mean difference (first - second) | Wilcoxon p |",
             "|---|" + "---|" * (len(args.model) + 2)]
    for name, group in table.groupby("condition", sort=False):
        means = [group[group.model == m].f1.mean() for m in args.model]
        comparison = paired_comparison(group[group.model == args.model[0]].f1.to_numpy(),
                                       group[group.model == args.model[-1]].f1.to_numpy())
        lines.append(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means)
                     + f" | {comparison['mean_difference']:+.3f} | {comparison['wilcoxon_p']:.3g} |")
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    (args.out / "settings.json").write_text(json.dumps(vars(args), default=str, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
