"""Seconds per training step, inference time per series and peak memory: MSD-net (naive vs ours), U-net.

A training step is forward + backward + Adam on a batch of 3-channel crops with cross-entropy over 4 labels;
inference is one whole series (batch 1, no gradients). Each case runs in its own process so that the peak
resident memory (ru_maxrss) belongs to that case alone; the table shows it and its growth over the RSS
before the first step.

    python benchmarks/training.py                # full set (~4 min on 2 idle cores)
    python benchmarks/training.py --quick        # 64 px, 1 thread: a smoke test in seconds

The naive MSD-net takes ~70 s per step at 256 px, so by default it is measured at 128 px (1 warm-up +
1 timed step); ours is measured at 128 px too for the same-size ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CASES = {  # name: (model, kwargs, forward)
    "msd-naive": ("msd", {}, "naive"),
    "msd-ours": ("msd", {}, "fast"),
    "unet-16": ("unet", {"base_channels": 16}, "fast"),
    "unet-32": ("unet", {"base_channels": 32}, "fast"),
}


def run_case(case: str, size: int, batch: int, steps: int, threads: int) -> dict:
    """Time one case in this process and return its figures."""
    import torch
    import torch.nn.functional as F

    from hrtemnet.models import build_model

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    name, kwargs, form = CASES[case]
    net = build_model(name, **kwargs)
    forward = net.forward_naive if form == "naive" else net.forward
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, target = torch.randn(batch, 3, size, size), torch.randint(0, 4, (batch, size, size))
    rss_before_MB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def step():
        loss = F.cross_entropy(forward(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocator, first Adam state, and non-zero final layer (Pelt's init has it zero)
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    step_s = (time.perf_counter() - tic) / steps
    net.eval()
    with torch.no_grad():
        forward(x[:1])
        tic = time.perf_counter()
        forward(x[:1])
        inference_s = time.perf_counter() - tic
    peak_MB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": case, "size": size, "batch": batch, "threads": threads, "timed_steps": steps,
            "step_s": step_s, "inference_s": inference_s, "peak_rss_MB": peak_MB,
            "rss_growth_MB": peak_MB - rss_before_MB, "parameters": sum(p.numel() for p in net.parameters())}


def in_subprocess(case: str, size: int, batch: int, steps: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--one", case, "--size", str(size), "--batch", str(batch),
               "--steps", str(steps), "--threads", str(threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 px, 1 thread, 1 timed step per case")
    parser.add_argument("--threads", default="1,2", help="thread counts to run, comma-separated")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--naive-size", type=int, default=128, help="image size for the naive MSD-net")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (naive: 1)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_case(args.one, args.size, args.batch, args.steps, int(args.threads))))
        return
    if args.quick:
        args.size, args.naive_size, args.threads, args.steps = 64, 64, "1", 1
    plan = [("msd-naive", args.naive_size, 1), ("msd-ours", args.naive_size, args.steps)]
    if args.size != args.naive_size:
        plan.append(("msd-ours", args.size, args.steps))
    plan += [("unet-16", args.size, args.steps), ("unet-32", args.size, args.steps)]
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        for case, size, steps in plan:
            rows.append(in_subprocess(case, size, args.batch, steps, threads))
            r = rows[-1]
            print(f"{case:10s} {size:4d}px threads {threads}: {r['step_s']:.2f} s/step, "
                  f"{r['inference_s']:.3f} s/series, peak {r['peak_rss_MB']:.0f} MB", file=sys.stderr)
    print(f"\nbatch {args.batch}; step = forward + backward + Adam; inference = 1 series, no grad\n")
    print("| case | params | size | threads | s/step | inference s/series | peak RSS MB | RSS growth MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['parameters']:,} | {r['size']}² | {r['threads']} | {r['step_s']:.2f} | "
              f"{r['inference_s']:.3f} | {r['peak_rss_MB']:.0f} | {r['rss_growth_MB']:.0f} |")
    for threads in sorted({r["threads"] for r in rows}):
        naive = next(r for r in rows if r["case"] == "msd-naive" and r["threads"] == threads)
        ours = next(r for r in rows if r["case"] == "msd-ours" and r["threads"] == threads
                    and r["size"] == naive["size"])
        print(f"\nthreads {threads}, {naive['size']}²: ours is {naive['step_s'] / ours['step_s']:.1f}x faster per "
              f"step than naive, {naive['inference_s'] / ours['inference_s']:.1f}x in inference, RSS growth "
              f"{ours['rss_growth_MB']:.0f} vs {naive['rss_growth_MB']:.0f} MB")


if __name__ == "__main__":
    main()
