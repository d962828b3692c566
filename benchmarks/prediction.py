"""Inference time per focal series (`hrtemnet.prediction.predict_probabilities`): 256², 1024²; 1, 2 threads.

Times the network pass (normalisation, forward, softmax; tiled above 1024 px) on a random series, median of
`--repeats` after one warm-up; the shipped models by default, or any model files. Models that do not load
(not shipped yet) are skipped with a message; `--untrained` times the default architectures instead (the time
does not depend on the weights).

    python benchmarks/prediction.py                      # shipped msd and unet
    python benchmarks/prediction.py --untrained          # default MSD-net / U-net, fresh weights
    python benchmarks/prediction.py --models runs/msd/best.pt --sizes 256
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def load(spec: str, untrained: bool):
    from hrtemnet.errors import UserError
    from hrtemnet.models import LoadedModel, build_model, load_model

    if untrained:
        return LoadedModel(build_model(spec).eval(), f"{spec} (untrained)", {}, 0.15)
    try:
        return load_model(spec)
    except UserError as error:
        print(f"skipped {spec}: {error}")
        return None


def time_series(model, size: int, repeats: int) -> float:
    from hrtemnet.prediction import predict_probabilities

    series = np.random.default_rng(0).random((3, size, size)).astype(np.float32)
    predict_probabilities(model, series)  # warm-up: allocations, kernel choice
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_probabilities(model, series)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--models", nargs="+", default=["msd", "unet"], help="msd, unet or model files")
    parser.add_argument("--untrained", action="store_true", help="time fresh default msd/unet")
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 1024], help="series side in pixels")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="torch thread counts")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median reported)")
    args = parser.parse_args()

    torch.set_flush_denormal(True)
    print(f"{'model':<22} {'size':>6} {'threads':>7} {'s/series':>9}")
    for spec in args.models:
        model = load(spec, args.untrained)
        if model is None:
            continue
        for size in args.sizes:
            for threads in args.threads:
                torch.set_num_threads(threads)
                seconds = time_series(model, size, args.repeats)
                print(f"{model.name:<22} {size:>5}² {threads:>7} {seconds:>9.3f}", flush=True)


if __name__ == "__main__":
    main()
