#!/usr/bin/env bash
# The seed experiment at full scale (issue 7): 10,000 training series (half on graphene), 2 x 500 validation
# series, MSD-net and U-net on the same data and schedule. Every step resumes: rerun after an interruption
# (datasets fill in missing samples, training continues from OUT/checkpoint.pt).
#
# Training runs in stages, one per 3-hour session on 2 CPU cores. Stage 1 is run.sh (7,000 steps on 1,600
# series, lr 1e-3). Each stage's best weights are committed as checkpoints/stageN_{msd,unet}.pt (stage 2:
# 5,000 steps on the 10,000 series, lr 3e-4, the shipped models; next: STAGE=3 bash run_full.sh). Each later stage starts
# both networks from the previous stage's best weights (`--init-from`, fresh Adam) and trains them on the full
# set with identical settings. A new machine has no datasets: the first lines regenerate them (same seeds).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${DATA_DIR:-$here/../../work_data/full}"
out="${OUT_DIR:-$here/runs/full}"
STAGE="${STAGE:-2}"
STEPS="${STEPS:-5000}"
LR="${LR:-3e-4}"
WORKERS="${WORKERS:-2}"
mkdir -p "$data" "$out"

simulate() { hrtemnet simulate "$data/$1.zarr" --n "$2" --seed "$3" --config "$here/$4" --phonons 4 --workers "$WORKERS"; }
simulate val_bare 500 2 val_bare.json
simulate val_graphene 500 3 val_graphene.json
simulate val_select 48 4 train.json
simulate train 10000 1 train.json

previous=$((STAGE - 1))
init() {  # the previous stage's best.pt from this machine, else its committed copy (checkpoints/stageN_*.pt)
  local run="$out/stage$previous/$1/best.pt"
  if [ -e "$run" ]; then echo "$run"; else echo "$here/checkpoints/stage${previous}_$1.pt"; fi
}
# Same data, crops, batch, steps, seed and learning rate for both; one single-threaded process each, side by side.
common=(--crop 128 --batch 4 --seed "$STAGE" --lr "$LR" --threads 1 --val "$data/val_select.zarr" --val-images 48
        --val-every 500 --checkpoint-minutes 2 --resume)
train() { hrtemnet train "$data/train.zarr" --model "$1" --init-from "$(init "$1")" --out "$out/stage$STAGE/$1" \
            --steps "$STEPS" "${common[@]}"; }
evaluate() { hrtemnet evaluate "$data/val_bare.zarr" "$data/val_graphene.zarr" --model "$1" --model "$2" \
               --out-dir "$here/results/$3" "${@:4}"; }
train msd &
train unet
# the starting models on the same validation sets (what the previous stage reached), on the core U-net freed
[ "$previous" != 1 ] || [ -e "$here/results/full_stage1/summary.json" ] ||
  OMP_NUM_THREADS=1 evaluate "$(init msd)" "$(init unet)" full_stage1 --dose-sweep ""
wait
evaluate "$out/stage$STAGE/msd/best.pt" "$out/stage$STAGE/unet/best.pt" "full_stage$STAGE"
