"""MSD-net inference: the strip form (`MSDNet.forward`, no gradients) vs the previous whole-image form, and U-net.

One process, the three alternating within every repeat on the same random series (the time does not depend
on the values), median of `--repeats` after a warm-up, for each size and thread count (`torch.set_num_threads`):
  msd strips : `net(x)` under inference_mode (strips of rows at every size; with N threads,
               groups of layers on N threads as a wavefront, `hrtemnet.models._msd_forward_strips`)
  msd whole  : the whole-image form, `_MSDLayers` over the whole image (as in training)
  unet       : the shipped U-net, same input
The load average before and after is printed: on shared cores, compare only columns of the same run.

    python benchmarks/inference.py                     # shipped models, 256² and 1024², 1 and 2 threads
    python benchmarks/inference.py --sizes 1024 --threads 2 --repeats 5
    python benchmarks/inference.py --sizes 1024 --threads 1 2 --repeats 7 --no-whole   # strips vs U-net only
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 1024])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-whole", action="store_true",
                        help="leave out the slow whole-image column (quick repeated strips vs U-net runs)")
    args = parser.parse_args()

    from hrtemnet.models import _MSDLayers, load_model

    torch.set_flush_denormal(True)
    msd, unet = load_model("msd").net, load_model("unet").net

    def whole(x):
        return msd._final(_MSDLayers.apply(x, msd.biases, msd.group_size, msd.width, *msd.weights))

    cases = {"msd strips": msd, "msd whole": whole, "unet": unet}
    if args.no_whole:
        del cases["msd whole"]
    print("load average (1, 5, 15 min):", " ".join(f"{value:.2f}" for value in os.getloadavg()))
    print(f"{'size':>6} {'threads':>7} " + " ".join(f"{name:>11}" for name in cases)
          + "  strips/whole  strips/unet  (s per series, median)")
    for size in args.sizes:
        x = torch.randn(1, 3, size, size)
        for threads in args.threads:
            torch.set_num_threads(threads)
            times = {name: [] for name in cases}
            with torch.inference_mode():
                for forward in cases.values():
                    forward(x)  # warm-up
                for _ in range(args.repeats):
                    for name, forward in cases.items():
                        start = time.perf_counter()
                        forward(x)
                        times[name].append(time.perf_counter() - start)
            median = {name: statistics.median(t) for name, t in times.items()}
            print(f"{size:>5}² {threads:>7} " + " ".join(f"{median[name]:>11.3f}" for name in cases)
                  + f"  {median['msd strips'] / median.get('msd whole', math.nan):>12.2f} "
                  f"{median['msd strips'] / median['unet']:>12.2f}", flush=True)
    print("load average (1, 5, 15 min):", " ".join(f"{value:.2f}" for value in os.getloadavg()))


if __name__ == "__main__":
    main()
