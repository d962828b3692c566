#!/usr/bin/env bash
# Realism fine-tuning (issue 11). Both networks train on the realism set with identical data, crops, batch, seed,
# learning-rate schedule and step budget; on-the-fly noise/camera, misregistration and pixel-size jitter from
# TrainConfig's defaults. Resumable (--resume). One thread each: MSD-net with 2 threads next to other work ran
# 0.12 steps/s (threads waiting on each other), with 1 thread 0.8-1.8.
#   stage 1 (an earlier session): constant lr 3e-4 on the first 2,725 series, stopped at different step counts.
#   stage 2: `bash train.sh` - from the shipped weights, the full 10,000 series, cosine 3e-4 -> 0 over 3,000 steps.
#   stage 3: `STAGE=3 STEPS=2500 SEED=4 bash train.sh` - from the committed stage-2 weights, 2,500 more steps.
#   stage 4: `STAGE=4 STEPS=8000 SEED=5 bash train.sh` - from the committed stage-3 weights, 8,000 more steps.
#   defocus conditioning: `STAGE=4 STEPS=8000 SEED=5 MODELS=unet DEFOCUS_INPUT=1 bash train.sh` - stage 4's U-net
#     run with the nominal defocus as extra input (same draws; starts from stage 3 with zero weights for it),
#     written to runs/realism/stage4_defocus/.
#   stage 5 (U-nets only): `STAGE=5 STEPS=4000 SEED=6 MODELS=unet bash train.sh` and the same with DEFOCUS_INPUT=1,
#     each from its own stage-4 weights.
#   stage 6 (defocus-input U-net): `STAGE=6 STEPS=14000 SEED=7 MODELS=unet DEFOCUS_INPUT=1 bash train.sh`, and the
#     same with `CROP=256 BATCH=1` (whole 256² images, the same pixels per step: does context matter?), written to
#     runs/realism/stage6_defocus_crop256/; both from the stage-5 defocus-input weights (the 256² run was stopped
#     at step 3,400: its selection F1 had fallen from 0.856 to 0.71, the 128² run's risen to 0.87; RESULTS.md).
#   the same for U-net, for an identical schedule: `STAGE=5 STEPS=6000 SEED=6 MODELS=unet DEFOCUS_INPUT=1
#     INIT_FROM=experiments/realism/checkpoints/stage4_unet.pt OUT_DIR=runs/realism/stage5_defocus_from_stage4
#     bash train.sh` (from the image-only stage-4 U-net, as the MSD-net run).
#   stage 6 of that identical pair (started at 16:47 on 2026-11-29, to be resumed: rerun the same commands):
#     `STAGE=6 STEPS=14000 SEED=7 MODELS=msd DEFOCUS_INPUT=1 bash train.sh` (from stage5_defocus_msd.pt) and
#     `STAGE=6 STEPS=14000 SEED=7 MODELS=unet DEFOCUS_INPUT=1 INIT_FROM=experiments/realism/checkpoints/stage5_defocus_from_stage4_unet.pt
#      OUT_DIR=runs/realism/stage6_defocus_from_stage4 bash train.sh`.
#   stage 7 (defocus-input U-net): `STAGE=7 STEPS=8000 SEED=8 MODELS=unet DEFOCUS_INPUT=1 bash train.sh`, from stage 6.
#   MSD-net with the defocus input: `STAGE=5 STEPS=6000 SEED=6 MODELS=msd DEFOCUS_INPUT=1 bash train.sh`, from the
#     stage-4 MSD-net with zero weights for the defocus planes (stage 5's seed, as the U-nets').
#   stage 8 (both defocus-input networks, identical data and schedule, on the realism set plus the hard-case stores
#     of generate.sh: 15,000 series, two thirds the default distribution), each from its best defocus-input weights:
#     `STAGE=8 STEPS=9000 SEED=9 DEFOCUS_INPUT=1 STORES="train carbon_heavy seed_focus" MODELS=unet bash train.sh`
#     (from stage 7) and the same with `MODELS=msd INIT_FROM=experiments/realism/checkpoints/stage5_defocus_msd.pt`.
#     Both kept as final.pt (annealed): checkpoints/stage8_defocus_{unet,msd}_final.pt (RESULTS.md says why).
#   stage 9 (U-net, hard cases weighted up: each hard-case store listed twice, so half the draws are hard cases):
#     `STAGE=9 STEPS=6000 SEED=10 DEFOCUS_INPUT=1 STORES="train carbon_heavy carbon_heavy seed_focus seed_focus"
#     MODELS=unet INIT_FROM=$PWD/checkpoints/stage8_defocus_unet_final.pt OUT_DIR=$PWD/../../runs/realism/stage9_defocus_hard
#     bash train.sh`, from the stage-8 final weights. The MSD-net on the identical recipe: the same with `MODELS=msd
#     INIT_FROM=$PWD/checkpoints/stage8_defocus_msd_final.pt`.
#   stage 10 (U-net, plus the high-astigmatism stores of generate.sh: 58 % of the draws hard cases), 12,000 steps
#     from the stage-9 final weights: `STAGE=10 STEPS=12000 SEED=11 DEFOCUS_INPUT=1 STORES="train carbon_heavy
#     carbon_heavy seed_focus seed_focus astig_high astig_high_defocus" MODELS=unet
#     INIT_FROM=$PWD/checkpoints/stage9_hard_unet_final.pt OUT_DIR=$PWD/../../runs/realism/stage10_defocus_astig
#     bash train.sh`. The MSD-net on the same stores, 5,000 steps (what the session had time for) from its stage 9:
#     `STAGE=10 STEPS=5000 ... MODELS=msd INIT_FROM=$PWD/checkpoints/stage9_hard_msd_final.pt` (same OUT_DIR).
#   stage 11 (U-net, carbon weighted up: carbon_heavy listed three times), 10,000 steps from the stage-10 final
#     weights: `STAGE=11 STEPS=10000 SEED=12 DEFOCUS_INPUT=1 STORES="train carbon_heavy carbon_heavy carbon_heavy
#     seed_focus seed_focus astig_high astig_high_defocus" MODELS=unet
#     INIT_FROM=$PWD/checkpoints/stage10_astig_unet_final.pt OUT_DIR=$PWD/../../runs/realism/stage11_defocus_carbon
#     bash train.sh`.
#   stage 12 (U-net, new carbon-heavy series: carbon_heavy2, listed twice), 3,000 steps (what the session had left)
#     from the stage-10 final weights: `STAGE=12 STEPS=3000 SEED=13 DEFOCUS_INPUT=1 STORES="train carbon_heavy
#     carbon_heavy2 carbon_heavy2 seed_focus seed_focus astig_high astig_high_defocus" MODELS=unet
#     INIT_FROM=$PWD/checkpoints/stage10_astig_unet_final.pt OUT_DIR=$PWD/../../runs/realism/stage12_defocus_carbon2
#     bash train.sh`.
#   stage 13 (U-net, 6,000 more new carbon-heavy series: carbon_heavy3 of generate.sh; 36 % of the series listed are
#     carbon-heavy, each of the 10,500 drawn about twice), 15,000 steps from the stage-10 final weights, the first run
#     selected with the disk-neighbourhood peak extraction: `STAGE=13 STEPS=15000 SEED=14 DEFOCUS_INPUT=1 STORES="train
#     carbon_heavy carbon_heavy2 carbon_heavy3 seed_focus seed_focus astig_high astig_high_defocus" MODELS=unet
#     INIT_FROM=$PWD/checkpoints/stage10_astig_unet_final.pt OUT_DIR=$PWD/../../runs/realism/stage13_defocus_carbon3
#     bash train.sh`.
#   stage 14 (both networks, identical data and schedule, on one GPU machine): `device_stage.sh` (its header says
#     how; 1,438 new series simulated there, 1,800 steps of batch 16 from the stage-10 weights).
#   stage 15 (MSD-net, carbon weighted up: the three carbon-heavy stores, carbon_heavy3 listed twice, 50 % of the
#     draws), 7,000 steps from the stage-14 weights: `STAGE=15 STEPS=7000 SEED=16 DEFOCUS_INPUT=1 STORES="train
#     carbon_heavy carbon_heavy2 carbon_heavy3 carbon_heavy3 seed_focus astig_high astig_high_defocus" MODELS=msd
#     INIT_FROM=$PWD/checkpoints/stage14_device_msd_final.pt OUT_DIR=$PWD/../../runs/realism/stage15_msd_carbon
#     bash train.sh`; to end within the session it was stopped at step 1,968 and resumed with `STEPS=4500` (the
#     cosine schedule then decays to 0 at 4,500: lr 2.5e-4 -> 1.8e-4 at the resume).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${DATA_DIR:-$here/../../work_data/realism}"
STAGE="${STAGE:-2}"
STEPS="${STEPS:-3000}"
SEED="${SEED:-3}"
MODELS="${MODELS:-msd unet}"
DEFOCUS_INPUT="${DEFOCUS_INPUT:-0}"
CROP="${CROP:-128}"
BATCH="${BATCH:-4}"
STORES="${STORES:-train}"  # stores in $data read as one training set
suffix=""; extra=()
if [ "$DEFOCUS_INPUT" = 1 ]; then suffix="_defocus"; extra=(--defocus-input); fi
variant="$suffix"  # the weights' lineage: a crop-size variant starts from its network variant's previous stage
if [ "$CROP" != 128 ]; then suffix="${suffix}_crop$CROP"; fi
out="${OUT_DIR:-$here/../../runs/realism/stage$STAGE$suffix}"
init() {  # stage 2 starts from the shipped model, later stages from the previous stage's committed weights
  # (of the same variant where there is one: stage 4's defocus run started from the image-only stage 3)
  local previous="$here/checkpoints/stage$((STAGE - 1))"
  if [ -n "${INIT_FROM:-}" ]; then echo "$INIT_FROM"  # one model only: MODELS=msd or MODELS=unet
  elif [ "$STAGE" -le 2 ]; then echo "$1"
  elif [ -e "$previous${suffix}_$1.pt" ]; then echo "$previous${suffix}_$1.pt"
  elif [ -e "$previous${variant}_$1.pt" ]; then echo "$previous${variant}_$1.pt"
  else echo "${previous}_$1.pt"; fi
}
mkdir -p "$out"
stores=(); for store in $STORES; do stores+=("$data/$store.zarr"); done
common=(--crop "$CROP" --batch "$BATCH" --seed "$SEED" --lr 3e-4 --lr-schedule cosine --steps "$STEPS" --threads 1
        --val "$data/select.zarr" --val-images 24 --val-every 500 --checkpoint-minutes 2 --resume "${extra[@]}")
for model in $MODELS; do
  hrtemnet train "${stores[@]}" --model "$model" --init-from "$(init "$model")" --out "$out/$model" \
    "${common[@]}" > "$out.$model.log" 2>&1 &
done
wait
