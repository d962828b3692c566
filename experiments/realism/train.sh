#!/usr/bin/env bash
# Realism fine-tuning (issue 11). Both networks start from the shipped (seed-distribution) weights and train on
# the realism set with identical data, crops, batch, seed, learning-rate schedule and step budget; on-the-fly
# noise/camera, misregistration and pixel-size jitter from TrainConfig's defaults. Resumable (--resume).
#   stage 1 (previous session): constant lr 3e-4 on the first 2,725 series, stopped at different step counts.
#   stage 2: the full 10,000 series, cosine schedule from 3e-4 to 0 over STEPS steps (a fixed budget that ends
#            annealed). One thread each: MSD-net with 2 threads next to other work ran 0.12 steps/s
#            (threads waiting on each other), with 1 thread ~0.8-1.8.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${DATA_DIR:-$here/../../work_data/realism}"
STAGE="${STAGE:-2}"
out="${OUT_DIR:-$here/../../runs/realism/stage$STAGE}"
STEPS="${STEPS:-3000}"
common=(--crop 128 --batch 4 --seed 3 --lr 3e-4 --lr-schedule cosine --steps "$STEPS" --val "$data/select.zarr"
        --val-images 24 --val-every 500 --checkpoint-minutes 2 --resume)
hrtemnet train "$data/train.zarr" --model msd --init-from msd --out "$out/msd" --threads "${THREADS_MSD:-1}" \
  "${common[@]}" > "$out.msd.log" 2>&1 &
hrtemnet train "$data/train.zarr" --model unet --init-from unet --out "$out/unet" --threads 1 "${common[@]}" \
  > "$out.unet.log" 2>&1
wait
