"""Copy a realism stage's best weights into the repository (experiments/realism/checkpoints/stageN_{msd,unet}.pt):
`python experiments/realism/keep_weights.py 2` (or `4_defocus` for runs/realism/stage4_defocus: whichever
networks the run folder holds; `4 unet` keeps only the U-net of stage 4). Weights are stored as the shipped
ones (models.COMMITTED_WEIGHTS_DTYPE); the committed files are the ones evaluated."""

import sys
from pathlib import Path

from hrtemnet.models import COMMITTED_WEIGHTS_DTYPE, load_model, save_model_bundle

HERE = Path(__file__).parent
stage, only = sys.argv[1], sys.argv[2:]
run = HERE.parent.parent / "runs" / "realism" / f"stage{stage}"
for name, dtype in COMMITTED_WEIGHTS_DTYPE.items():
    if not (run / name / "best.pt").exists() or (only and name not in only):
        continue
    model = load_model(run / name / "best.pt")
    path = HERE / "checkpoints" / f"stage{stage}_{name}.pt"
    save_model_bundle(path, model.net, name, model.kwargs, model.sampling_A, model.peak_params, model.card,
                      weights_dtype=dtype)  # the card records the stored precision
    print(f"{path}: step {model.card.get('steps')}, selection F1 {model.card.get('val_f1'):.3f}")
