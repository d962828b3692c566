"""Where a model goes wrong on one series of a realism-suite folder: the three frames with the true columns it
missed (red x), the columns it invented (cyan +) and the ones it found with the wrong class (yellow o), plus the
foreground probability with the missed columns (the picture that showed the square-neighbourhood bug: a clear
blob and no column on it).

    python experiments/realism/miss_map.py experiments/realism/results/suite_n20_peaks2 02_contamination_5_10A \\
        experiments/realism/checkpoints/stage10_astig_unet_final.pt 15 --flip-average --out miss_map.png

Prints the counts and the series' drawn parameters.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import hrtemnet  # noqa: E402
from hrtemnet.columns import CLASS_NAMES, Columns  # noqa: E402
from hrtemnet.evaluation import (  # noqa: E402
    condition_store,
    load_condition,
    nominal_defocus_for,
    record_condition_series,
)
from hrtemnet.metrics import match_image  # noqa: E402
from hrtemnet.models import load_model  # noqa: E402
from hrtemnet.peaks import foreground_probability  # noqa: E402
from hrtemnet.prediction import predict_probabilities  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("suite", type=Path, help="a folder of `hrtemnet evaluate --condition` (series already there)")
parser.add_argument("condition", help="condition name, e.g. 02_contamination_5_10A")
parser.add_argument("model")
parser.add_argument("series", type=int)
parser.add_argument("--flip-average", action="store_true")
parser.add_argument("--out", type=Path, default=Path("miss_map.png"))
args = parser.parse_args()
torch.set_num_threads(1)

folder = args.suite / args.condition
condition = load_condition(folder / "condition.json")
store = condition_store(folder, condition, args.series + 1, 0, False)
model = load_model(args.model, flip_average=args.flip_average)
height, width = store.image_shape
sampling = store.sampling_A
series, _, _ = record_condition_series(condition, store.read_images(args.series), sampling, args.series)
defocus = nominal_defocus_for(model, store, condition.seed, args.series)
frame = hrtemnet.predict(series, sampling_A=sampling, model=model, align=condition.align, defocus_A=defocus)
match = match_image(store.read_columns(args.series), Columns.from_table(frame), (width * sampling, height * sampling))
missed = np.setdiff1d(np.arange(len(match.truth)), match.truth_index)
invented = np.setdiff1d(np.arange(len(match.pred)), match.pred_index)
swapped = match.truth.class_index[match.truth_index] != match.pred.class_index[match.pred_index]

panels = [*series, foreground_probability(predict_probabilities(model, series.astype(np.float32), defocus_A=defocus))]
fig, axes = plt.subplots(1, 4, figsize=(22, 6))
for k, (ax, image) in enumerate(zip(axes, panels, strict=True)):
    ax.imshow(image, cmap="magma" if k == 3 else "gray")
    for xy, marker, colour in ((match.truth.xy_A[missed], "x", "red"), (match.pred.xy_A[invented], "+", "cyan"),
                               (match.truth.xy_A[match.truth_index[swapped]], "o", "yellow")):
        ax.scatter(*(xy / sampling).T, marker=marker, s=36, linewidths=1.2,
                   **({"facecolors": "none", "edgecolors": colour} if marker == "o" else {"c": colour}))
    ax.set_title(f"frame {k + 1}" if k < 3 else "foreground probability")
    ax.set_axis_off()
fig.suptitle(f"{args.condition} series {args.series}, {Path(args.model).name}: {len(missed)} missed (x), "
             f"{len(invented)} invented (+), {swapped.sum()} wrong class (o)")
fig.savefig(args.out, dpi=70, bbox_inches="tight")
true_swapped = match.truth.class_index[match.truth_index[swapped]]
print(f"missed {len(missed)}, invented {len(invented)}, wrong class {swapped.sum()} (true classes: "
      + ", ".join(f"{name} {np.sum(true_swapped == i)}" for i, name in enumerate(CLASS_NAMES)) + ")")
print({key: round(value, 3) for key, value in store.read_params(args.series).items()})
print(f"figure: {args.out}")
