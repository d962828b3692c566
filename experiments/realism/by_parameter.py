"""Mean F1 per model in bins of one drawn parameter (astigmatism, carbon thickness, defocus, ...): where do the
failures lie? Reads `per_image.csv` of `hrtemnet evaluate` (datasets or --condition). Tables written before
per_image.csv carried the drawn parameters get them from the stores with `--data` (by image_index).

    python experiments/realism/by_parameter.py experiments/realism/results/seed_validation_stage5_flips/per_image.csv \
        --by astigmatism_A --bins 0,10,20,30,40,50 \
        --data work_data/seedval/val_bare.zarr work_data/seedval/val_graphene.zarr
    python experiments/realism/by_parameter.py experiments/realism/results/suite_n20_flips/per_image.csv \
        --by astigmatism_A --bins 0,10,20,30,40,50 --condition 01_in_distribution
"""

from __future__ import annotations

import argparse

import pandas as pd

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("table", nargs="+", help="per_image.csv file(s); their rows are stacked")
parser.add_argument("--by", required=True, help="a drawn parameter (a column of per_image.csv or a store's params)")
parser.add_argument("--bins", required=True, help="bin edges, e.g. 0,10,20,30,40,50 (lowest edge included)")
parser.add_argument("--data", nargs="*", default=[], help="stores the table's image_index refers to")
parser.add_argument("--condition", action="append", help="only these suite conditions")
args = parser.parse_args()

rows = pd.concat([pd.read_csv(path) for path in args.table], ignore_index=True)
# a model scored in two of the tables counts once per series
rows = rows.drop_duplicates([key for key in ("condition", "series", "image_index", "model") if key in rows])
if args.condition:
    rows = rows[rows.condition.isin(args.condition)]
missing = rows[args.by].isna() if args.by in rows.columns else pd.Series(True, index=rows.index)
if missing.any():  # tables written before per_image.csv carried the drawn parameters
    if not args.data:
        raise SystemExit(f"{args.by} is missing from (some of) the tables: give the stores with --data")
    from hrtemnet.dataset import open_stores

    store = open_stores(args.data)
    rows.loc[missing, args.by] = [store.read_params(int(i))[args.by] for i in rows.image_index[missing]]
edges = [float(edge) for edge in args.bins.split(",")]
rows["bin"] = pd.cut(rows[args.by], edges, include_lowest=True)
table = rows.pivot_table(index="bin", columns="model", values="f1", aggfunc="mean", observed=False)
counts = rows.pivot_table(index="bin", columns="model", values="f1", aggfunc="count", observed=False)
table.insert(0, "series", counts.max(axis=1))  # per model; the models of one table share their series
print(f"mean F1 by {args.by}\n")
print(table.round(3).to_markdown())
