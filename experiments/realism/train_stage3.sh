#!/usr/bin/env bash
# Realism stage 3 (issue 11): both networks continue from their stage-2 weights (checkpoints/stage2_*.pt, fresh
# Adam) with the stage-2 settings: identical data, crops, batch, seed and a cosine schedule 3e-4 -> 0 over STEPS.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${DATA_DIR:-$here/../../work_data/realism}"
out="${OUT_DIR:-$here/../../runs/realism/stage3}"
STEPS="${STEPS:-2500}"
mkdir -p "$out"
common=(--crop 128 --batch 4 --seed 4 --lr 3e-4 --lr-schedule cosine --steps "$STEPS" --val "$data/select.zarr"
        --val-images 24 --val-every 500 --checkpoint-minutes 2 --resume --threads 1)
hrtemnet train "$data/train.zarr" --model msd --init-from "$here/checkpoints/stage2_msd.pt" --out "$out/msd" \
  "${common[@]}" > "$out.msd.log" 2>&1 &
hrtemnet train "$data/train.zarr" --model unet --init-from "$here/checkpoints/stage2_unet.pt" --out "$out/unet" \
  "${common[@]}" > "$out.unet.log" 2>&1
wait
