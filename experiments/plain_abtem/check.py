"""Does the shipped model work on focal series that our simulator did not make?

Images are simulated here with plain, documented abTEM calls (default slicing, `Potential(sampling=0.05)`,
abTEM's own `FrozenPhonons` with one isotropic sigma per element, lazy `.compute()` per defocus) on our
random MoS2 structures (which give the true columns), in the shipped models' window (no carbon or tilt, first
defocus -50..-10 Å, steps 45-55 Å, the rest of the optics from DESIGN.md's ranges), with dose noise at a dose
drawn log-uniform in [1e4, 1e5] e/Å². Each model then predicts and is scored.

    python experiments/plain_abtem/check.py --n 20 --model msd --model unet [--out results.csv]

`--carbon`: the realism suite's carbon condition outside our simulator: 5-10 Å of amorphous carbon on top,
below or both in every series (our structures, simulated here by plain abTEM), the shipped models' focal window
(first defocus -50..-10 Å, steps 45-55 Å), no tilt. Models trained with `--defocus-input` get the true defocus
off by `NominalDefocusError()` draws, as in the suite; `--flip-average` and `--sublattice-vote` as in `predict`.

    python experiments/plain_abtem/check.py --carbon --n 20 --flip-average --sublattice-vote \
        --model experiments/realism/checkpoints/stage10_astig_unet_final.pt

`--first-defocus-A LO HI`, `--defocus-step-A LO HI`, `--dose LO HI`: the suite's other conditions outside our
simulator, e.g. the high-defocus edge `--first-defocus-A 40 100 --defocus-step-A 80 120` or low dose `--dose 1e3 3e3`.
`--drift-A LO HI` (frames 2 and 3 moved by that much, `predict` aligns them), `--sampling-A`, `--field-A`,
`--tilt-deg LO HI` and `--energy-keV` are the suite's remaining conditions. Every series is recorded through the
camera model (NoiseConfig's default: pixel MTF, gain, offset, read noise), as in the suite.
`--cache DIR` keeps each simulated series (noise-free, with its structure's columns and drawn optics) so that other
models are scored on the same series without simulating again.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def plain_abtem_series(atoms, optics, seed: int, sampling_A: float = 0.15) -> np.ndarray:
    import abtem

    frozen = abtem.FrozenPhonons(atoms, num_configs=4, sigmas={"Mo": 0.07, "S": 0.09, "C": 0.05}, seed=seed)
    potential = abtem.Potential(frozen, sampling=0.05)
    waves = abtem.PlaneWave(energy=optics.energy_eV).multislice(potential)
    images = []
    for defocus in optics.defocus_A:
        ctf = abtem.CTF(defocus=defocus, Cs=optics.cs_A, astigmatism=optics.astigmatism_A,
                        astigmatism_angle=optics.astigmatism_angle_rad, focal_spread=optics.focal_spread_A,
                        energy=optics.energy_eV)
        image = waves.apply_ctf(ctf).intensity().mean(0).interpolate(sampling=sampling_A).compute()
        images.append(image.array.T)  # abTEM [x, y] -> [row, col]
    return np.stack(images).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--carbon", action="store_true", help="5-10 Å amorphous carbon in every series")
    parser.add_argument("--flip-average", action="store_true")
    parser.add_argument("--sublattice-vote", action="store_true")
    parser.add_argument("--first-defocus-A", type=float, nargs=2, default=(-50.0, -10.0), metavar=("LO", "HI"))
    parser.add_argument("--defocus-step-A", type=float, nargs=2, default=(45.0, 55.0), metavar=("LO", "HI"))
    parser.add_argument("--dose", type=float, nargs=2, default=(1e4, 1e5), metavar=("LO", "HI"),
                        help="dose range in e/Å², drawn log-uniform")
    parser.add_argument("--drift-A", type=float, nargs=2, default=(0.0, 0.0), metavar=("LO", "HI"))
    parser.add_argument("--sampling-A", type=float, default=0.15, help="pixel size of the recorded images")
    parser.add_argument("--field-A", type=float, default=38.4, help="side of the square field of view")
    parser.add_argument("--tilt-deg", type=float, nargs=2, default=(0.0, 0.0), metavar=("LO", "HI"))
    parser.add_argument("--energy-keV", type=float, default=50.0)
    parser.add_argument("--defocus-search", type=float, default=0.0, help="as `predict --defocus-search`")
    parser.add_argument("--cache", default=None, help="folder keeping the simulated series (reused when present)")
    args = parser.parse_args()

    import hrtemnet
    from hrtemnet.columns import Columns
    from hrtemnet.evaluation import drift_shifts_A, shift_frames
    from hrtemnet.metrics import score_image
    from hrtemnet.models import NominalDefocusError, load_model, nominal_defocus_A, takes_defocus
    from hrtemnet.simulation import NoiseConfig, OpticsRanges, add_imaging_noise
    from hrtemnet.structures import StructureConfig, random_structure

    cache = None
    if args.cache:  # one folder per setting that changes the noise-free series
        key = f"seed{args.seed}_carbon{int(args.carbon)}_df{args.first_defocus_A[0]:g}_{args.first_defocus_A[1]:g}" \
              f"_step{args.defocus_step_A[0]:g}_{args.defocus_step_A[1]:g}"
        if (args.sampling_A, args.field_A, tuple(args.tilt_deg), args.energy_keV) != (0.15, 38.4, (0.0, 0.0), 50.0):
            key += f"_px{args.sampling_A:g}_fov{args.field_A:g}_tilt{args.tilt_deg[0]:g}_{args.tilt_deg[1]:g}" \
                   f"_{args.energy_keV:g}keV"
        cache = Path(args.cache) / key
        cache.mkdir(parents=True, exist_ok=True)
    models = {spec: load_model(spec, flip_average=args.flip_average) for spec in (args.model or ["msd"])}
    rows = []
    for index in range(args.n):
        rng = np.random.default_rng([args.seed, index])
        # The shipped models' window (no carbon, no tilt, first defocus -50..-10 Å, steps 45-55 Å: dataset.SEED_WINDOW);
        # --carbon adds the suite's 5-10 Å of carbon to every series.
        carbon = {"carbon_probability": 1.0, "carbon_thickness_A_range": (5.0, 10.0)} if args.carbon else \
            {"carbon_probability": 0.0}
        config = StructureConfig(graphene_probability=float(index % 2), field_of_view_A=(args.field_A, args.field_A),
                                 tilt_rad_range=tuple(np.radians(args.tilt_deg)), **carbon)
        optics = OpticsRanges(first_defocus_A_range=tuple(args.first_defocus_A),
                              defocus_step_A_range=tuple(args.defocus_step_A), energy_eV=args.energy_keV * 1e3)
        sample = random_structure(rng, config)
        drawn = optics.draw(rng)
        cached = cache / f"{index:04d}.npz" if cache else None
        if cached is not None and cached.exists():
            clean = np.load(cached)["clean"]
        else:
            clean = plain_abtem_series(sample.atoms, drawn, seed=index, sampling_A=args.sampling_A)
            if cached is not None:
                np.savez(cached.with_suffix(".tmp.npz"), clean=clean)
                cached.with_suffix(".tmp.npz").replace(cached)
        shifts_A = drift_shifts_A(rng, len(clean), tuple(args.drift_A))
        if np.any(shifts_A):
            clean = shift_frames(clean, shifts_A, args.sampling_A)
        images, dose = add_imaging_noise(clean, args.sampling_A, rng,
                                         NoiseConfig(dose_e_per_A2_range=tuple(args.dose)))
        height, width = images.shape[-2:]
        nominal = tuple(nominal_defocus_A(drawn.defocus_A, NominalDefocusError(), rng))
        row = {"index": index, "substrate": "graphene" if index % 2 else "bare", "dose_e_per_A2": round(dose)}
        for spec, model in models.items():
            frame = hrtemnet.predict(images, sampling_A=args.sampling_A, model=model, align=bool(np.any(shifts_A)),
                                     defocus_A=nominal if takes_defocus(model) else None,
                                     sublattice_vote=True if args.sublattice_vote else None,
                                     defocus_search_A=args.defocus_search if takes_defocus(model) else 0.0)
            score = score_image(sample.columns, Columns.from_table(frame),
                                (width * args.sampling_A, height * args.sampling_A))
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
