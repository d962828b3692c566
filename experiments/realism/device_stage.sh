#!/usr/bin/env bash
# Stage 14 (issue 11): fresh data and both networks trained on one GPU machine (16 cores, one H200), in one call.
#   MODE=probe: the speeds the full run is sized from (series/s of 4 simulating processes, steps/s of both
#     networks training at once) and the GPU tests of tests/test_training.py.
#   MODE=full: GEN_SECONDS of simulation (4 stores, each a config of generate.sh with its own seed, one process of
#     4 cores each; a store keeps every series finished before the stop), then the MSD-net and the U-net from their
#     stage-10 weights, at the same time, on identical data, draws and schedule (cosine), each drawing its
#     crops in its own LOADER_WORKERS processes. The step budget is what the slower network does in the time left
#     before TOTAL_SECONDS (measured over 40 steps of both at once, unless STEPS is given), so the run ends annealed
#     inside the device call's limit. Work goes to $WORK; the model files and logs are copied to $OUT
#     (the device tool brings that folder back).
# Run from the repository root with the realism selection store at work_data/realism/select.zarr (the validation
# store of every stage). Not resumable across machines: the trained weights are committed instead.
set -uo pipefail
MODE="${MODE:-probe}"
OUT="${OUT:-runs/realism/stage14_device}"
WORK="${WORK:-/tmp/stage14}"
DATA="$WORK/data"
GEN_SECONDS="${GEN_SECONDS:-150}"
STEPS="${STEPS:-}"
TOTAL_SECONDS="${TOTAL_SECONDS:-540}"
BATCH="${BATCH:-16}"
LR="${LR:-5e-4}"
LOADER_WORKERS="${LOADER_WORKERS:-7}"
DEVICE="${DEVICE:-cuda}"
PROBE_STEPS="${PROBE_STEPS:-60}"
here=experiments/realism
val=work_data/realism/select.zarr
mkdir -p "$OUT" "$DATA"
pin() {  # pin CORES command...: 4 cores per simulating process where there are 16
  if [ "$(nproc)" -ge 16 ] && command -v taskset > /dev/null; then taskset -c "$@"; else shift; "$@"; fi
}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
hrtemnet() { python3 -m hrtemnet "$@"; }
nvidia-smi -L; python3 -c "import torch, numpy, abtem, zarr; from hrtemnet.simulation import configure_abtem; configure_abtem(); print('torch', torch.__version__, 'numpy', numpy.__version__, 'abtem', abtem.__version__, 'zarr', zarr.__version__, 'cores', len(__import__('os').sched_getaffinity(0)))" || exit 3

simulate() {  # n per store, seconds
  local start=$SECONDS core=0 n=$1 seconds=$2
  for spec in "train 41" "carbon_heavy 42" "astig_high 43" "seed_focus 44"; do
    set -- $spec
    pin $core-$((core + 3)) timeout "$seconds" python3 -m hrtemnet simulate "$DATA/$1.zarr" --n "$n" --seed "$2" \
      --config "$here/$1.json" --phonons 4 --workers 1 > "$WORK/simulate_$1.log" 2>&1 &
    core=$((core + 4))
  done
  wait
  echo "simulation: $((SECONDS - start)) s"
  python3 - "$DATA" <<'PY'
import sys, pathlib
from hrtemnet.dataset import open_store
from hrtemnet.training import usable_indices
total = 0
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.zarr")):
    done = len(usable_indices(open_store(path)))
    total += done
    print(f"{path.name}: {done} series")
print(f"series: {total}")
PY
}

samples_per_s() {  # median over the last half of a training log
  python3 -c "import json, sys, statistics; r = [json.loads(l) for l in open(sys.argv[1]) if 'samples_per_s' in l]; print(statistics.median(x['samples_per_s'] for x in r[len(r) // 2:]))" "$1"
}

train_both() {  # steps, val_every, folder prefix
  for model in msd unet; do
    hrtemnet train "$DATA"/*.zarr --val "$val" --model "$model" \
      --init-from "$here/checkpoints/stage10_astig_${model}_final.pt" --out "$WORK/${3:-}$model" --steps "$1" --crop 128 \
      --batch "$BATCH" --lr "$LR" --lr-schedule cosine --seed 15 --val-every "$2" --val-images 16 \
      --checkpoint-minutes 60 --device "$DEVICE" --loader-workers "$LOADER_WORKERS" --threads 1 > "$WORK/${3:-}train_$model.log" 2>&1 &
  done
  wait
}

if [ "$MODE" = probe ]; then
  # the first series of a process includes its imports and abTEM's compilations: 10 per store
  start=$SECONDS
  core=0
  for spec in "train 41" "carbon_heavy 42" "astig_high 43" "seed_focus 44"; do
    set -- $spec
    pin $core-$((core + 3)) python3 -m hrtemnet simulate "$DATA/$1.zarr" --n 10 --seed "$2" \
      --config "$here/$1.json" --phonons 4 --workers 1 > "$WORK/simulate_$1.log" 2>&1 &
    core=$((core + 4))
  done
  wait
  echo "probe simulation: 40 series in $((SECONDS - start)) s"; tail -n 2 "$WORK"/simulate_*.log
  start=$SECONDS
  train_both "$PROBE_STEPS" "$PROBE_STEPS"
  echo "probe training: $((SECONDS - start)) s"
  for model in msd unet; do
    tail -n 3 "$WORK/train_$model.log"
    python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if 'samples_per_s' in l]; import statistics as s; print(sys.argv[1], 'samples/s, median over the last two thirds:', s.median(x['samples_per_s'] for x in r[len(r) // 3:]))" "$WORK/$model/log.jsonl"
  done
  python3 -m pytest -q -p no:cacheprovider tests/test_training.py -k "gpu or workers" 2>&1 | tail -n 5
else
  simulate 3000 "$GEN_SECONDS"
  if [ -z "$STEPS" ]; then
    start=$SECONDS
    train_both 40 1000 calibrate_
    rate=$(python3 -c "print(min($(samples_per_s "$WORK/calibrate_msd/log.jsonl"), $(samples_per_s "$WORK/calibrate_unet/log.jsonl")))")
    left=$((TOTAL_SECONDS - SECONDS - 45))  # start-up, 4 validations and the copies
    STEPS=$(python3 -c "print(int($rate / $BATCH * $left * 0.9) // 100 * 100)")
    echo "calibration ($((SECONDS - start)) s): $rate samples/s for the slower network, $left s left: $STEPS steps"
    tail -n 3 "$WORK"/calibrate_train_*.log
  fi
  STEPS="${STEPS:-2000}"
  train_both "$STEPS" $((STEPS / 4))
  for model in msd unet; do  # what comes back: the model files and logs (checkpoints stay there)
    tail -n 2 "$WORK/train_$model.log"
    cp "$WORK/$model/final.pt" "$OUT/${model}_final.pt"; cp "$WORK/$model/best.pt" "$OUT/${model}_best.pt"
    cp "$WORK/$model/log.jsonl" "$OUT/${model}_log.jsonl"
  done
fi
