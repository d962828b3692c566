"""How much a model with defocus inputs depends on how well the user knows the defocus: the realism suite's
series of some conditions predicted with nominal defocus values off by a shared offset ~ N(0, sigma) (and the
5 Å step error of training), for several sigma, next to the image-only model of the same training.

    python experiments/realism/defocus_error_sweep.py \
        --model experiments/realism/checkpoints/stage4_defocus_unet.pt \
        --reference experiments/realism/checkpoints/stage4_unet.pt \
        --condition experiments/realism/conditions/04_defocus_high_edge.json \
        --condition experiments/realism/conditions/14_full_realism.json \
        --suite experiments/realism/results/suite_n20 --out experiments/realism/results/defocus_error_sweep

Uses the suite's stored noise-free series (run the suite first); writes sweep.csv (one row per condition, model,
sigma and series) and sweep.md (mean F1 per condition and sigma).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import hrtemnet
from hrtemnet.columns import Columns
from hrtemnet.evaluation import condition_store, display_name, load_conditions, record_condition_series
from hrtemnet.metrics import score_image
from hrtemnet.models import NominalDefocusError, load_model, nominal_defocus_A, series_defocus_A

SWEEP_STREAM = 5  # nominal-defocus draws of this sweep, apart from the suite's and training's streams

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", required=True, help="a model trained with --defocus-input")
parser.add_argument("--reference", required=True, help="the image-only model it is compared with")
parser.add_argument("--condition", action="append", required=True)
parser.add_argument("--sigma", type=float, nargs="+", default=[0.0, 20.0, 50.0, 100.0],
                    help="standard deviations (Å) of the shared defocus offset")
parser.add_argument("--suite", type=Path, required=True, help="the realism suite's output folder (its series)")
parser.add_argument("--n", type=int, default=20)
parser.add_argument("--out", type=Path, required=True)
args = parser.parse_args()
torch.set_num_threads(1)

conditioned, reference = load_model(args.model), load_model(args.reference)
rows = []
for condition in load_conditions(args.condition):
    store = condition_store(args.suite / condition.name, condition, args.n, workers=1, progress=False)
    height, width = store.image_shape
    size_A = (width * store.sampling_A, height * store.sampling_A)
    for index in range(args.n):
        series, _, _ = record_condition_series(condition, store.read_images(index), store.sampling_A, index)
        truth = store.read_columns(index)
        frame = hrtemnet.predict(series, sampling_A=store.sampling_A, model=reference, align=condition.align)
        rows.append({"condition": condition.name, "model": display_name(args.reference), "sigma_A": np.nan,
                     "series": index, "f1": score_image(truth, Columns.from_table(frame), size_A).f1})
        for sigma in args.sigma:
            error = NominalDefocusError(offset_sigma_A=sigma)
            rng = np.random.default_rng([condition.seed, SWEEP_STREAM, index, int(sigma * 1000)])
            defocus = nominal_defocus_A(series_defocus_A(store, index), error, rng)
            frame = hrtemnet.predict(series, sampling_A=store.sampling_A, model=conditioned, align=condition.align,
                                     defocus_A=defocus)
            rows.append({"condition": condition.name, "model": display_name(args.model), "sigma_A": sigma,
                         "series": index, "f1": score_image(truth, Columns.from_table(frame), size_A).f1})
        print(f"{condition.name} series {index}: done", flush=True)

table = pd.DataFrame(rows)
args.out.mkdir(parents=True, exist_ok=True)
table.to_csv(args.out / "sweep.csv", index=False, float_format="%.4f")
summary = (table.assign(setting=[m if np.isnan(s) else f"{m}, offset σ {s:g} Å" for m, s in
                                 zip(table.model, table.sigma_A, strict=True)])
           .groupby(["condition", "setting"], sort=False)["f1"].agg(["mean", "sem", "count"]).round(3))
(args.out / "sweep.md").write_text("Mean F1 (± s.e.m.) per condition with nominal defocus off by a shared offset "
                                   "~ N(0, σ) and a 5 Å step error\n\n"
                                   + summary.reset_index().to_markdown(index=False) + "\n")
print(summary.to_string())
