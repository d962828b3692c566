"""Copy a realism stage's weights into the repository (experiments/realism/checkpoints/stageN_{msd,unet}.pt):
`python experiments/realism/keep_weights.py 2` (or `4_defocus` for runs/realism/stage4_defocus: whichever
networks the run folder holds; `4 unet` keeps only the U-net of stage 4). The best-by-selection weights (best.pt)
by default; `--final` keeps the last, annealed ones (final.pt) as stageN_<model>_final.pt, and `--to FILE` names
the copy (one model). Weights are stored as the shipped ones (models.COMMITTED_WEIGHTS_DTYPE); the committed files
are the ones evaluated. Stage 8 and 9 were kept with
    python experiments/realism/keep_weights.py 8_defocus --final
    python experiments/realism/keep_weights.py 9_defocus_hard unet --final \\
        --to experiments/realism/checkpoints/stage9_hard_unet_final.pt
and stage 10's U-net and stage 9's MSD-net with `10_defocus_astig unet --final --to .../stage10_astig_unet_final.pt`
and `9_defocus_hard msd --final --to .../stage9_hard_msd_final.pt`.
"""

import argparse
from pathlib import Path

from hrtemnet.models import COMMITTED_WEIGHTS_DTYPE, load_model, save_model_bundle

HERE = Path(__file__).parent
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("stage", help="the run folder's suffix: runs/realism/stage<STAGE>")
parser.add_argument("models", nargs="*", help="msd and/or unet (default: whichever the run holds)")
parser.add_argument("--final", action="store_true", help="keep final.pt (annealed) instead of best.pt")
parser.add_argument("--to", type=Path, help="the copy's path (one model only)")
args = parser.parse_intermixed_args()
run = HERE.parent.parent / "runs" / "realism" / f"stage{args.stage}"
source = "final.pt" if args.final else "best.pt"
for name, dtype in COMMITTED_WEIGHTS_DTYPE.items():
    if not (run / name / source).exists() or (args.models and name not in args.models):
        continue
    model = load_model(run / name / source)
    path = args.to or HERE / "checkpoints" / f"stage{args.stage}_{name}{'_final' if args.final else ''}.pt"
    save_model_bundle(path, model.net, name, model.kwargs, model.sampling_A, model.peak_params, model.card,
                      weights_dtype=dtype)  # the card records the stored precision
    print(f"{path}: step {model.card.get('steps')}, selection F1 {model.card.get('val_f1'):.3f}")
