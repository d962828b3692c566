"""Write a copy of a model file whose class decision votes Mo against S2/S per patch of the 2H lattice
(`PeakConfig.sublattice_vote`, `hrtemnet.peaks.sublattice_vote`), so both decisions can be scored on the same
weights (a model file's sha256 keys its suite scores):

    python experiments/realism/with_sublattice_vote.py experiments/realism/checkpoints/stage10_astig_unet_final.pt \\
        experiments/realism/checkpoints/stage10_astig_unet_final_sublattice.pt
"""

import sys

import torch

from hrtemnet.models import load_model, save_model_bundle

source, target = sys.argv[1:3]
model = load_model(source)
dtype = getattr(torch, model.card.get("weights_dtype", "float32"))
save_model_bundle(target, model.net, model.name, model.kwargs, model.sampling_A,
                  model.peak_params | {"sublattice_vote": True},
                  model.card | {"derived_from": f"{source} with the sublattice vote in its class decision"},
                  weights_dtype=dtype)
print(f"{target}: {model.name}, class decision with the sublattice vote")
