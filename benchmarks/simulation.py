"""Focal-series simulation: hrtemnet vs the plain documented abTEM usage, measured in the same run.

Each side runs in its own fresh process on the same structures and optics (8 frozen phonons):
  plain   : abtem.Potential(FrozenPhonons(...), sampling=0.05), lazy waves, .compute() per defocus
  hrtemnet: simulate_focal_series (one exit wave per configuration, 3 CTFs, fast FFT grid,
            one slice per atomic plane), i.e. what `hrtemnet simulate --workers 1` runs per sample
Reported: whole-process wall time (imports and FFT planning included) and the per-series time after
the first series, plus the FFT-only floor of our grid (the transforms alone, nothing else).

    python benchmarks/simulation.py [--series 4] [--phonons 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

OPTICS = {"defocus_A": (-30.0, 20.0, 70.0), "cs_A": 14.29e4, "astigmatism_A": 20.0, "astigmatism_angle_rad": 0.3,
          "focal_spread_A": 30.0}


def structures(n: int):
    import numpy as np

    from hrtemnet.structures import random_structure

    return [random_structure(np.random.default_rng(100 + i)).atoms for i in range(n)]


def run_plain(n: int, phonons: int) -> list[float]:
    import abtem

    from hrtemnet.simulation import phonon_sigmas
    from hrtemnet.vibrations import load_vibration_table

    table = load_vibration_table()
    times = []
    for atoms in structures(n):
        start = time.perf_counter()
        frozen = abtem.FrozenPhonons(atoms, num_configs=phonons, sigmas=phonon_sigmas(atoms, table), seed=1)
        potential = abtem.Potential(frozen, sampling=0.05)
        waves = abtem.PlaneWave(energy=50e3).multislice(potential)
        for defocus in OPTICS["defocus_A"]:
            ctf = abtem.CTF(defocus=defocus, Cs=OPTICS["cs_A"], astigmatism=OPTICS["astigmatism_A"],
                            astigmatism_angle=OPTICS["astigmatism_angle_rad"],
                            focal_spread=OPTICS["focal_spread_A"], energy=50e3)
            waves.apply_ctf(ctf).intensity().mean(0).interpolate(sampling=0.15).compute()
        times.append(time.perf_counter() - start)
    return times


def run_ours(n: int, phonons: int) -> list[float]:
    from hrtemnet.simulation import OpticsParams, SimulationConfig, simulate_focal_series

    times = []
    for atoms in structures(n):
        start = time.perf_counter()
        simulate_focal_series(atoms, OpticsParams(**OPTICS), SimulationConfig(num_phonons=phonons), seed=1)
        times.append(time.perf_counter() - start)
    return times


def fft_floor(phonons: int) -> float:
    """Seconds for the transforms alone of one series on our grid: 2 per slice + 1 + 3 CTFs, per configuration."""
    import numpy as np

    from hrtemnet.simulation import SimulationConfig, simulation_gpts, slice_thicknesses
    from hrtemnet.structures import random_structure

    atoms = random_structure(np.random.default_rng(100)).atoms
    n_slices = len(slice_thicknesses(atoms))
    gpts = simulation_gpts(256, SimulationConfig().oversampling)
    import pyfftw

    array = pyfftw.empty_aligned((gpts, gpts), dtype="complex64")
    array[:] = np.random.default_rng(0).random((gpts, gpts))
    forward = pyfftw.builders.fft2(array, threads=1, planner_effort="FFTW_MEASURE")
    backward = pyfftw.builders.ifft2(array, threads=1, planner_effort="FFTW_MEASURE")
    repeats = 50
    start = time.perf_counter()
    for _ in range(repeats):
        forward()
        backward()
    per_transform = (time.perf_counter() - start) / (2 * repeats)
    return per_transform * phonons * (2 * n_slices + 4)


def child(mode: str, n: int, phonons: int) -> None:
    start = time.perf_counter()
    times = (run_plain if mode == "plain" else run_ours)(n, phonons)
    print(json.dumps({"times": times, "process_s": time.perf_counter() - start}))


def measure(mode: str, n: int, phonons: int) -> dict:
    start = time.perf_counter()
    output = subprocess.run([sys.executable, __file__, "--child", mode, "--series", str(n), "--phonons",
                             str(phonons)], capture_output=True, text=True, check=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=4)
    parser.add_argument("--phonons", type=int, default=8)
    parser.add_argument("--child", choices=["plain", "ours"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args.series, args.phonons)
        return
    results = {mode: measure(mode, args.series, args.phonons) for mode in ("plain", "ours")}
    floor = fft_floor(args.phonons)
    print(f"{args.series} focal series of 3 images, 256x256 px at 0.15 Å, {args.phonons} frozen phonons, 1 process")
    print(f"{'':10} {'process wall s':>15} {'s/series (after 1st)':>22}")
    for mode, result in results.items():
        steady = sum(result["times"][1:]) / max(1, len(result["times"]) - 1)
        result["steady"] = steady
        print(f"{mode:10} {result['wall_s']:15.1f} {steady:22.2f}")
    print(f"speed-up: whole process {results['plain']['wall_s'] / results['ours']['wall_s']:.1f}x, "
          f"per series {results['plain']['steady'] / results['ours']['steady']:.1f}x")
    print(f"FFT-only floor of our grid: {floor:.2f} s/series")


if __name__ == "__main__":
    main()
