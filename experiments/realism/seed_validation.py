"""Issue 11's in-distribution target: the shipped models' own validation protocol (the seed experiment's
val_bare/val_graphene stores, dose log-uniform in [1e4, 1e5] e/Å², ideal counting, noise seed 0) for any models.

    hrtemnet simulate work_data/seedval/val_bare.zarr --n 200 --seed 2 --phonons 4 \
        --config experiments/realism/seed_val_bare.json
    hrtemnet simulate work_data/seedval/val_graphene.zarr --n 200 --seed 3 --phonons 4 \
        --config experiments/realism/seed_val_graphene.json
    python experiments/realism/seed_validation.py --model msd --model unet --model runs/realism/stage2/msd/best.pt \
        --out experiments/realism/results/seed_validation

With the same seeds the stores are the first N series of the seed experiment's validation sets (500 + 500).
"""

from __future__ import annotations

import argparse

import torch

from hrtemnet.evaluation import EvaluationConfig, run
from hrtemnet.simulation import NoiseConfig

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--data", nargs="+", default=["work_data/seedval/val_bare.zarr",
                                                  "work_data/seedval/val_graphene.zarr"])
parser.add_argument("--model", action="append", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--flip-average", action="store_true",
                    help="each model also averaged over the 8 flips/rotations (named '<model> +flips')")
args = parser.parse_args()
torch.set_num_threads(1)
seed_noise = NoiseConfig(dose_e_per_A2_range=(1e4, 1e5), camera=None)  # the shipped cards' validation noise
config = EvaluationConfig(noise=seed_noise, dose_sweep_e_per_A2=())
result = run(args.data, args.model, args.out, config, flip_average="both" if args.flip_average else False)
print(f"report: {result.files['report']}")
