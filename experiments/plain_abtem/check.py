"""Does the shipped model work on focal series that our simulator did not make?

Images are simulated here with plain, documented abTEM calls (default slicing, `Potential(sampling=0.05)`,
abTEM's own `FrozenPhonons` with one isotropic sigma per element, lazy `.compute()` per defocus) on our
random MoS2 structures (which give the true columns), with optics drawn from DESIGN.md's ranges and
dose noise at a dose drawn log-uniform in [1e4, 1e5] e/Å². Each model then predicts and is scored.

    python experiments/plain_abtem/check.py --n 20 --model msd --model unet [--out results.csv]
"""

from __future__ import annotations

import argparse
import csv

import numpy as np


def plain_abtem_series(atoms, optics, seed: int) -> np.ndarray:
    import abtem

    frozen = abtem.FrozenPhonons(atoms, num_configs=4, sigmas={"Mo": 0.07, "S": 0.09, "C": 0.05}, seed=seed)
    potential = abtem.Potential(frozen, sampling=0.05)
    waves = abtem.PlaneWave(energy=optics.energy_eV).multislice(potential)
    images = []
    for defocus in optics.defocus_A:
        ctf = abtem.CTF(defocus=defocus, Cs=optics.cs_A, astigmatism=optics.astigmatism_A,
                        astigmatism_angle=optics.astigmatism_angle_rad, focal_spread=optics.focal_spread_A,
                        energy=optics.energy_eV)
        image = waves.apply_ctf(ctf).intensity().mean(0).interpolate(sampling=0.15).compute()
        images.append(image.array.T)  # abTEM [x, y] -> [row, col]
    return np.stack(images).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from hrtemnet.io import FocalSeries
    from hrtemnet.metrics import score_image
    from hrtemnet.models import load_model
    from hrtemnet.prediction import predict_series
    from hrtemnet.simulation import NoiseConfig, OpticsRanges, add_imaging_noise
    from hrtemnet.structures import StructureConfig, random_structure

    models = {spec: load_model(spec) for spec in (args.model or ["msd"])}
    rows = []
    for index in range(args.n):
        rng = np.random.default_rng([args.seed, index])
        config = StructureConfig(graphene_probability=float(index % 2))
        sample = random_structure(rng, config)
        optics = OpticsRanges().draw(rng)
        clean = plain_abtem_series(sample.atoms, optics, seed=index)
        images, dose = add_imaging_noise(clean, 0.15, rng, NoiseConfig())
        height, width = images.shape[-2:]
        series = FocalSeries(images, 0.15, f"plain-abtem-{index}", f"plain_{index}")
        row = {"index": index, "substrate": "graphene" if index % 2 else "bare", "dose_e_per_A2": round(dose)}
        for spec, model in models.items():
            score = score_image(sample.columns, predict_series(model, series), (width * 0.15, height * 0.15))
            row[f"f1_{spec}"] = round(score.f1, 4)
            row[f"f1_S_{spec}"] = round(score.per_class["S"].f1, 4)
        rows.append(row)
        print(row, flush=True)
    print(f"{args.n} series simulated with plain abTEM calls")
    for spec in models:
        f1 = np.array([r[f"f1_{spec}"] for r in rows])
        bare = f1[[r["substrate"] == "bare" for r in rows]]
        graphene = f1[[r["substrate"] == "graphene" for r in rows]]
        print(f"{spec}: mean F1 {f1.mean():.4f} (bare {bare.mean():.4f}, graphene {graphene.mean():.4f})")
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
