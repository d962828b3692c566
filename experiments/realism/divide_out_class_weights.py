"""Write a copy of a model file whose class decision divides out its training loss's class weights
(`PeakConfig.loss_class_weights`, peaks module doc). Models trained since then record them themselves; this is
for the earlier ones, so both decisions can be scored on the same weights:

    python experiments/realism/divide_out_class_weights.py experiments/realism/checkpoints/stage7_defocus_unet.pt \\
        experiments/realism/checkpoints/stage7_defocus_unet_cw.pt
"""

import sys

import torch

from hrtemnet.models import load_model, save_model_bundle

source, target = sys.argv[1:3]
model = load_model(source)
weights = model.card["class_weights"][1:]  # background is not a column class
dtype = getattr(torch, model.card.get("weights_dtype", "float32"))
save_model_bundle(target, model.net, model.name, model.kwargs, model.sampling_A,
                  model.peak_params | {"loss_class_weights": tuple(weights)},
                  model.card | {"derived_from": f"{source} with its loss class weights {weights} divided out"},
                  weights_dtype=dtype)
print(f"{target}: {model.name}, loss class weights {weights} divided out of the class decision")
