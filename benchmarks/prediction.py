"""Inference time per focal series (`hrtemnet.prediction.predict_probabilities`): 256², 1024²; 1, 2 threads.

Times the network pass (normalisation, forward, softmax; tiled above 1024 px) on a random series, median of
`--repeats` after one warm-up; the shipped models by default, or any model files. Models that do not load
(not shipped yet) are skipped with a message; `--untrained` times the default architectures instead (the time
does not depend on the weights).

    python benchmarks/prediction.py                      # shipped msd and unet
    python benchmarks/prediction.py --untrained          # default MSD-net / U-net, fresh weights
    python benchmarks/prediction.py --models runs/msd/best.pt --sizes 256
    python benchmarks/prediction.py --flip-average --sizes 256   # each model plain and flip-averaged, same run

With `--flip-average` every case is timed plain and with `--flip-average` (the 8 flips/rotations,
`models.FlipAverage`) alternately in the same run, and the ratio printed. Models with a defocus input get
nominal defocus values (-40, 10, 60 Å; the time does not depend on them).
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


def time_series(models: list, size: int, repeats: int) -> list[float]:
    """Median seconds per series for each model, the models alternating within every repeat."""
    from hrtemnet.models import takes_defocus
    from hrtemnet.prediction import predict_probabilities

    series = np.random.default_rng(0).random((3, size, size)).astype(np.float32)

    def run(model):
        predict_probabilities(model, series, defocus_A=(-40.0, 10.0, 60.0) if takes_defocus(model) else None)

    for model in models:
        run(model)  # warm-up: allocations, kernel choice
    times = [[] for _ in models]
    for _ in range(repeats):
        for model, spent in zip(models, times, strict=True):
            start = time.perf_counter()
            run(model)
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--models", nargs="+", default=["msd", "unet"], help="msd, unet or model files")
    parser.add_argument("--untrained", action="store_true", help="time fresh default msd/unet")
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 1024], help="series side in pixels")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="torch thread counts")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median reported)")
    parser.add_argument("--flip-average", action="store_true", help="also time each model flip-averaged")
    args = parser.parse_args()

    from hrtemnet.models import with_flip_average

    torch.set_flush_denormal(True)
    header = f"{'model':<28} {'size':>6} {'threads':>7} {'s/series':>9}"
    print(header + (f" {'+flips':>9} {'ratio':>6}" if args.flip_average else ""))
    for spec in args.models:
        model = load(spec, args.untrained)
        if model is None:
            continue
        variants = [model, with_flip_average(model)] if args.flip_average else [model]
        for size in args.sizes:
            for threads in args.threads:
                torch.set_num_threads(threads)
                seconds = time_series(variants, size, args.repeats)
                ratio = f" {seconds[1]:>9.3f} {seconds[1] / seconds[0]:>6.2f}" if len(seconds) == 2 else ""
                print(f"{spec[-28:]:<28} {size:>5}² {threads:>7} {seconds[0]:>9.3f}{ratio}", flush=True)


if __name__ == "__main__":
    main()
