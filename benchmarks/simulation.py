"""Focal-series simulation: hrtemnet vs the plain documented abTEM usage, measured in the same run.

Each side runs in its own fresh process on the same structures and optics (8 frozen phonons), bare MoS2
(sheets and flakes, half on graphene; no amorphous carbon, no tilt) on the 38.4 Å field at 0.15 Å/px:
  plain   : abtem.Potential(FrozenPhonons(...), sampling=0.05), lazy waves, .compute() per defocus
  hrtemnet: simulate_focal_series (one exit wave per configuration, 3 CTFs, fast FFT grid,
            one slice per atomic plane) on one thread, i.e. what a dataset worker runs per sample
            (`--threads N`: its configurations on N threads, as `hrtemnet simulate --workers 1` runs them
            with a thread per core; the same images)
Reported: whole-process wall time (imports and FFT planning included) and the per-series time after
the first series, plus the FFT-only floor of our grid (the transforms alone, nothing else).
`--carbon 0 5 10` also times ours (fresh process each) with that many Å of amorphous carbon (2 g/cm³) on
top of the same structures, with the FFT floor of each (carbon adds ~1 Å slices).
`--previous REV` instead times the simulator of git revision REV (its src/hrtemnet/simulation.py) against
today's in one warm process, alternating per series, counts the focal series that are equal to the bit and
prints the largest difference (vacuum intensity = 1) and the lowest Pearson r of an image.
`--outside N` instead runs the whole commands N times, alternating: `hrtemnet simulate OUT.zarr --n SERIES
--phonons PHONONS --workers 1` (a config without carbon and tilt, as above) against the plain usage's
process (`--child plain`), each timed from process start to exit.

    python benchmarks/simulation.py [--series 4] [--phonons 8] [--carbon 0 5 10] [--threads 1]
    python benchmarks/simulation.py --outside 2 --series 8 --phonons 8
    python benchmarks/simulation.py --previous 8acba68 --series 4 --phonons 8 --carbon 0 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPTICS = {"defocus_A": (-30.0, 20.0, 70.0), "cs_A": 14.29e4, "astigmatism_A": 20.0, "astigmatism_angle_rad": 0.3,
          "focal_spread_A": 30.0}


BARE = {"carbon_probability": 0.0, "tilt_rad_range": (0.0, 0.0)}  # bare MoS2, as issue 14 measures it


def structures(n: int, carbon_A: float = 0.0):
    import numpy as np

    from hrtemnet.structures import StructureConfig, random_structure

    return [with_carbon(random_structure(np.random.default_rng(100 + i), StructureConfig(**BARE)).atoms, carbon_A,
                        200 + i) for i in range(n)]


def with_carbon(atoms, thickness_A: float, seed: int, density_g_cm3: float = 2.0, gap_A: float = 2.5):
    """`atoms` with an amorphous carbon slab of `thickness_A` on top (the cell grows to hold it)."""
    import numpy as np
    from ase import Atoms

    if thickness_A <= 0:
        return atoms
    rng = np.random.default_rng(seed)
    extent = np.diag(atoms.cell)[:2]
    bottom = atoms.positions[:, 2].max() + gap_A
    try:  # the project's packing (hard-core distance) where it exists
        from hrtemnet.structures import amorphous_carbon_positions

        positions = amorphous_carbon_positions(extent, (bottom, bottom + thickness_A), density_g_cm3, 1.3, rng)
    except ImportError:
        n = int(round(extent[0] * extent[1] * thickness_A * density_g_cm3 * 6.02214076e23 / 12.011 / 1e24))
        positions = rng.uniform([0, 0, bottom], [extent[0], extent[1], bottom + thickness_A], size=(n, 3))
    result = atoms + Atoms("C" * len(positions), positions=positions)
    cell = np.array(atoms.cell)
    cell[2, 2] = max(cell[2, 2], bottom + thickness_A + gap_A)
    result.set_cell(cell)
    return result


def run_plain(n: int, phonons: int) -> list[tuple[float, float]]:
    import abtem

    from hrtemnet.simulation import phonon_sigmas
    from hrtemnet.vibrations import load_vibration_table

    table = load_vibration_table()
    times = []
    for atoms in structures(n):
        start = clock()
        frozen = abtem.FrozenPhonons(atoms, num_configs=phonons, sigmas=phonon_sigmas(atoms, table), seed=1)
        potential = abtem.Potential(frozen, sampling=0.05)
        waves = abtem.PlaneWave(energy=50e3).multislice(potential)
        for defocus in OPTICS["defocus_A"]:
            ctf = abtem.CTF(defocus=defocus, Cs=OPTICS["cs_A"], astigmatism=OPTICS["astigmatism_A"],
                            astigmatism_angle=OPTICS["astigmatism_angle_rad"],
                            focal_spread=OPTICS["focal_spread_A"], energy=50e3)
            waves.apply_ctf(ctf).intensity().mean(0).interpolate(sampling=0.15).compute()
        times.append(since(start))
    return times


def run_ours(n: int, phonons: int, carbon_A: float = 0.0, threads: int = 1) -> list[tuple[float, float]]:
    from hrtemnet.simulation import OpticsParams, SimulationConfig, simulate_focal_series

    times = []
    for atoms in structures(n, carbon_A):
        start = clock()
        simulate_focal_series(atoms, OpticsParams(**OPTICS), SimulationConfig(num_phonons=phonons), seed=1,
                              threads=threads)
        times.append(since(start))
    return times


def clock() -> tuple[float, float]:
    """(wall, CPU of this process's threads) in seconds: on shared cores the CPU time is the steadier figure."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fft_floor(phonons: int, carbon_A: float = 0.0, n_structures: int = 4) -> tuple[float, float]:
    """(wall, CPU) seconds for the transforms alone of one series on our grid: 2 per slice + 1 + 3 CTFs, per
    configuration (the mean slice count of the benchmark's structures)."""
    import numpy as np

    from hrtemnet.simulation import SimulationConfig, simulation_gpts, slice_thicknesses

    n_slices = float(np.mean([len(slice_thicknesses(atoms)) for atoms in structures(n_structures, carbon_A)]))
    gpts = simulation_gpts(256, SimulationConfig().oversampling)
    import pyfftw

    array = pyfftw.empty_aligned((gpts, gpts), dtype="complex64")
    array[:] = np.random.default_rng(0).random((gpts, gpts))
    forward = pyfftw.builders.fft2(array, threads=1, planner_effort="FFTW_MEASURE")
    backward = pyfftw.builders.ifft2(array, threads=1, planner_effort="FFTW_MEASURE")
    repeats = 50
    start = clock()
    for _ in range(repeats):
        forward()
        backward()
    return tuple(t / (2 * repeats) * phonons * (2 * n_slices + 4) for t in since(start))


def child(mode: str, n: int, phonons: int, carbon_A: float = 0.0, threads: int = 1) -> None:
    times = run_plain(n, phonons) if mode == "plain" else run_ours(n, phonons, carbon_A, threads)
    print(json.dumps({"times": [wall for wall, _ in times], "cpu_times": [cpu for _, cpu in times]}))


def measure(mode: str, n: int, phonons: int, carbon_A: float = 0.0, threads: int = 1) -> dict:
    """A fresh process: its wall time and CPU time from start to exit, and its per-series times (wall, CPU)
    averaged after the first series."""
    start, cpu = time.perf_counter(), children_cpu_s()
    output = subprocess.run([sys.executable, __file__, "--child", mode, "--series", str(n), "--phonons",
                             str(phonons), "--child-carbon", str(carbon_A), "--threads", str(threads)],
                            capture_output=True, text=True, check=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["wall_s"], result["cpu_s"] = time.perf_counter() - start, children_cpu_s() - cpu
    after_first = max(1, n - 1)
    result["steady"] = sum(result["times"][1:]) / after_first
    result["steady_cpu"] = sum(result["cpu_times"][1:]) / after_first
    return result


def outside_check(rounds: int, n: int, phonons: int) -> None:
    """Whole commands, alternating: `hrtemnet simulate ... --workers 1` and the plain usage's process."""
    script = Path(sys.executable).with_name("hrtemnet")  # the entry point itself, not a shell shim in front of it
    command = str(script) if script.exists() else shutil.which("hrtemnet")
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "bare.json"
        config.write_text(json.dumps({"structure": BARE}))
        sides = {"hrtemnet simulate": lambda r: [command, "simulate", str(Path(folder) / f"out{r}.zarr"), "--n",
                                                 str(n), "--phonons", str(phonons), "--workers", "1", "--config",
                                                 str(config)],
                 "plain abTEM": lambda r: [sys.executable, __file__, "--child", "plain", "--series", str(n),
                                           "--phonons", str(phonons)]}
        print(f"whole commands, {n} focal series, {phonons} frozen phonons each, bare MoS2; seconds from start to "
              "exit (wall, and CPU of the process and its threads)")
        for r in range(rounds):
            walls, cpus = {}, {}
            for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                start, cpu = time.perf_counter(), children_cpu_s()
                subprocess.run(sides[name](r), capture_output=True, text=True, check=True)
                walls[name], cpus[name] = time.perf_counter() - start, children_cpu_s() - cpu
            ours, plain = "hrtemnet simulate", "plain abTEM"
            print(f"round {r + 1}: {ours} {walls[ours]:.2f} s (CPU {cpus[ours]:.2f} s), {plain} {walls[plain]:.2f} s "
                  f"(CPU {cpus[plain]:.2f} s): {walls[plain] / walls[ours]:.1f}x wall, "
                  f"{cpus[plain] / cpus[ours]:.1f}x CPU", flush=True)


def against_previous(revision: str, n: int, phonons: int, carbons: list[float]) -> None:
    """The simulator of `revision` against today's, same process, warm, alternating; equal images counted."""
    import importlib.util

    import numpy as np

    import hrtemnet.simulation as today

    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{revision}:src/hrtemnet/simulation.py"], cwd=root, check=True,
                            capture_output=True, text=True).stdout
    name = "hrtemnet.simulation_previous"
    spec = importlib.util.spec_from_loader(name, loader=None)
    previous = importlib.util.module_from_spec(spec)
    sys.modules[name] = previous  # dataclasses look their module up
    exec(compile(source, f"{revision}:src/hrtemnet/simulation.py", "exec"), previous.__dict__)
    sides = {"previous": previous, "today": today}
    print(f"simulate_focal_series of {revision} vs today's, one warm process, alternating, {phonons} phonons; "
          "wall s (CPU s)")
    for carbon_A in carbons or [0.0]:
        atoms = structures(n + 1, carbon_A)
        for module in sides.values():  # plans, kernels, first-call costs
            module.simulate_focal_series(atoms[0], module.OpticsParams(**OPTICS),
                                         module.SimulationConfig(num_phonons=phonons), seed=1)
        times = {side: [] for side in sides}
        equal, largest, lowest_r = 0, 0.0, 1.0
        for index, structure in enumerate(atoms[1:]):
            images = {}
            for side in list(sides) if index % 2 == 0 else list(sides)[::-1]:
                module = sides[side]
                start = clock()
                images[side] = module.simulate_focal_series(structure, module.OpticsParams(**OPTICS),
                                                            module.SimulationConfig(num_phonons=phonons), seed=1)
                times[side].append(since(start))
            equal += int(np.array_equal(images["previous"], images["today"]))
            largest = max(largest, float(np.abs(images["previous"] - images["today"].astype(np.float64)).max()))
            lowest_r = min([lowest_r] + [float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
                                         for a, b in zip(images["previous"], images["today"], strict=True)])
        wall = {side: np.mean([t[0] for t in ts]) for side, ts in times.items()}
        cpu = {side: np.mean([t[1] for t in ts]) for side, ts in times.items()}
        print(f"{carbon_A:g} Å carbon: previous {wall['previous']:.3f} ({cpu['previous']:.3f}), today "
              f"{wall['today']:.3f} ({cpu['today']:.3f}) s/series: {wall['previous'] / wall['today']:.2f}x "
              f"(CPU {cpu['previous'] / cpu['today']:.2f}x); {equal} of {n} focal series equal to the bit, largest "
              f"difference {largest:.1e}, lowest Pearson r {lowest_r:.9f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=4)
    parser.add_argument("--phonons", type=int, default=8)
    parser.add_argument("--carbon", nargs="*", type=float, default=[], help="Å of carbon on top, ours only")
    parser.add_argument("--child", choices=["plain", "ours"])
    parser.add_argument("--outside", type=int, default=0, metavar="ROUNDS",
                        help="time the whole commands instead, alternating, this many rounds")
    parser.add_argument("--previous", metavar="REV", help="time this git revision's simulator against today's")
    parser.add_argument("--threads", type=int, default=1, help="threads of ours per series (configurations)")
    parser.add_argument("--child-carbon", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.series, args.phonons, args.child_carbon, args.threads)
        return
    if args.previous:
        against_previous(args.previous, args.series, args.phonons, args.carbon)
        return
    if args.outside:
        outside_check(args.outside, args.series, args.phonons)
        return
    results = {mode: measure(mode, args.series, args.phonons, threads=args.threads) for mode in ("plain", "ours")}
    floor, floor_cpu = fft_floor(args.phonons, n_structures=args.series)
    print(f"{args.series} focal series of 3 images, 256x256 px at 0.15 Å, {args.phonons} frozen phonons, 1 process, "
          f"ours on {args.threads} thread(s); wall s (CPU s of the process and its threads)")
    print(f"{'':10} {'whole process':>22} {'per series after the 1st':>26}")
    for mode, result in results.items():
        print(f"{mode:10} {result['wall_s']:11.1f} ({result['cpu_s']:7.1f}) "
              f"{result['steady']:15.3f} ({result['steady_cpu']:7.3f})")
    plain, ours = results["plain"], results["ours"]
    print(f"speed-up: whole process {plain['wall_s'] / ours['wall_s']:.1f}x "
          f"(CPU {plain['cpu_s'] / ours['cpu_s']:.1f}x), "
          f"per series {plain['steady'] / ours['steady']:.1f}x (CPU {plain['steady_cpu'] / ours['steady_cpu']:.1f}x)")
    print(f"FFT-only floor of our grid: {floor:.3f} s/series (CPU {floor_cpu:.3f}); ours steady / floor: "
          f"{ours['steady'] / floor:.2f}x (CPU {ours['steady_cpu'] / floor_cpu:.2f}x)")
    for carbon_A in args.carbon:
        result = measure("ours", args.series, args.phonons, carbon_A, args.threads)
        floor, floor_cpu = fft_floor(args.phonons, carbon_A, args.series)
        print(f"ours, {carbon_A:g} Å carbon on top: {result['steady']:.3f} s/series after the 1st (CPU "
              f"{result['steady_cpu']:.3f}; process {result['wall_s']:.1f} s), FFT floor {floor:.3f} s/series (CPU "
              f"{floor_cpu:.3f}), ratio {result['steady'] / floor:.2f}x (CPU {result['steady_cpu'] / floor_cpu:.2f}x)",
              flush=True)


if __name__ == "__main__":
    main()
