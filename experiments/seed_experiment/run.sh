#!/usr/bin/env bash
# The seed experiment, end to end: datasets, MSD-net and U-net on the same data and schedule, evaluation.
# Every step resumes: rerun this script after an interruption and it continues where it stopped.
# Scale is set by environment variables; the full experiment of issue 7 is
#   N_TRAIN=10000 N_VAL=500 STEPS=... bash experiments/seed_experiment/run.sh
# and RESULTS.md in this folder records the scale that was actually run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${DATA_DIR:-$here/../../work_data/seed_experiment}"
out="${OUT_DIR:-$here/runs}"
N_TRAIN="${N_TRAIN:-10000}"
N_VAL="${N_VAL:-500}"
PHONONS="${PHONONS:-4}"
WORKERS="${WORKERS:-2}"
STEPS="${STEPS:-20000}"
CROP="${CROP:-128}"
BATCH="${BATCH:-4}"
MSD_DEPTH="${MSD_DEPTH:-100}"
UNET_BASE="${UNET_BASE:-16}"
mkdir -p "$data" "$out"

hrtemnet simulate "$data/train.zarr" --n "$N_TRAIN" --seed 1 --config "$here/train.json" --phonons "$PHONONS" --workers "$WORKERS"
hrtemnet simulate "$data/val_bare.zarr" --n "$N_VAL" --seed 2 --config "$here/val_bare.json" --phonons "$PHONONS" --workers "$WORKERS"
hrtemnet simulate "$data/val_graphene.zarr" --n "$N_VAL" --seed 3 --config "$here/val_graphene.json" --phonons "$PHONONS" --workers "$WORKERS"

# Both networks: same data, crops, batch, steps, seed. One single-threaded process each, side by side
# (DESIGN.md: two 1-thread processes beat one 2-thread process on 2 cores).
common=(--steps "$STEPS" --crop "$CROP" --batch "$BATCH" --seed 1 --threads 1 --val "$data/val_bare.zarr" --resume)
hrtemnet train "$data/train.zarr" --model msd --depth "$MSD_DEPTH" --out "$out/msd" "${common[@]}" &
hrtemnet train "$data/train.zarr" --model unet --base-channels "$UNET_BASE" --out "$out/unet" "${common[@]}" &
wait

hrtemnet evaluate "$data/val_bare.zarr" "$data/val_graphene.zarr" --model "$out/msd/best.pt" \
  --model "$out/unet/best.pt" --out-dir "$here/results"
