#!/usr/bin/env bash
# Realism training data (issue 11): the default distribution (contamination, wide defocus, low dose, tilt),
# 4 frozen phonons. Resumable: rerun fills in missing samples.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${DATA_DIR:-$here/../../work_data/realism}"
mkdir -p "$data"
hrtemnet simulate "$data/select.zarr" --n 64 --seed 12 --config "$here/train.json" --phonons 4 --workers "${WORKERS:-2}"
hrtemnet simulate "$data/train.zarr" --n "${N_TRAIN:-10000}" --seed 11 --config "$here/train.json" --phonons 4 --workers "${WORKERS:-2}"
