#!/usr/bin/env bash
# Realism fine-tuning (issue 11), stage 1: both networks start from the shipped (seed-distribution) weights and
# train on the realism set with identical data, crops, batch, seed and learning rate; on-the-fly noise/camera,
# misregistration and pixel-size jitter from TrainConfig's defaults. Resumable (--resume); raise STEPS to continue.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${DATA_DIR:-$here/../../work_data/realism}"
out="${OUT_DIR:-$here/../../runs/realism}"
common=(--crop 128 --batch 4 --seed 3 --lr 3e-4 --threads 1 --val "$data/select.zarr" --val-images 24
        --val-every 250 --checkpoint-minutes 2 --resume)
hrtemnet train "$data/train.zarr" --model msd --init-from msd --out "$out/msd" --steps "${STEPS_MSD:-1500}" "${common[@]}" &
hrtemnet train "$data/train.zarr" --model unet --init-from unet --out "$out/unet" --steps "${STEPS_UNET:-4000}" "${common[@]}"
wait
