"""Benchmark of `hrtemnet vibrations`: run time of a 5 ps table, and MD sigmas against a harmonic estimate.

Harmonic estimate: ASE `Phonons` (finite differences, Gamma point of the same cell) on the same LAMMPS
potential through `ase.calculators.lammpslib`, classical equipartition like the MD:
covariance = kT * K^+, with K the force-constant matrix and the rigid-body zero modes projected out
(3 translations for the periodic sheet; 3 translations + 3 rotations for a flake, as Kabsch does in the MD).

    python benchmarks/vibrations.py            # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from ase.calculators.lammpslib import LAMMPSlib
from ase.phonons import Phonons
from ase.units import kB

from hrtemnet.md import (
    SW_MOD_MAXDELCS,
    SW_POTENTIAL,
    MDConfig,
    build_structures,
    import_lammps,
    installed_potential,
    measure_vibrations,
    relaxed_lattice_constants,
    run_md,
    table_rows,
    trajectory_sigmas,
)
from hrtemnet.vibrations import coordination_numbers


def harmonic_sigmas(atoms, temperature_K: float, zero_modes: int) -> tuple[np.ndarray, np.ndarray]:
    """Classical harmonic per-atom (sigma_xy, sigma_z) from the Gamma-point force constants of `atoms`."""
    import_lammps()  # loads MPI for liblammps before lammpslib imports lammps
    calc = LAMMPSlib(
        lmpcmds=[
            "pair_style sw/mod maxdelcs {} {}".format(*SW_MOD_MAXDELCS),
            f"pair_coeff * * {installed_potential(SW_POTENTIAL)} Mo S",
        ],
        atom_types={"Mo": 1, "S": 2},
        keep_alive=True,
        log_file=None,
    )
    with tempfile.TemporaryDirectory() as folder:
        phonons = Phonons(atoms, calc, supercell=(1, 1, 1), delta=0.01, name=f"{folder}/phonon")
        phonons.run()
        phonons.read(acoustic=False)
        force_constants = phonons.get_force_constant()[0]
    force_constants = (force_constants + force_constants.T) / 2
    stiffness, modes = np.linalg.eigh(force_constants)
    order = np.argsort(np.abs(stiffness))[zero_modes:]  # drop rigid-body modes (eigenvalue ~ 0)
    covariance = kB * temperature_K * (modes[:, order] / stiffness[order]) @ modes[:, order].T
    variance = np.diag(covariance).reshape(-1, 3)
    negative = int(np.sum(stiffness[order] < 0))
    if negative:
        print(f"  warning: {negative} unstable modes in the harmonic model")
    return np.sqrt(variance[:, :2].mean(axis=1)), np.sqrt(variance[:, 2])


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--time-ps", type=float, default=20.0, help="MD production time for the comparison")
    parser.add_argument("--temperature-K", type=float, default=300.0)
    args = parser.parse_args()

    tick = time.perf_counter()
    measure_vibrations(MDConfig(time_ps=5.0, equilibration_ps=5.0), log=lambda line: None)
    print(
        f"full default table with 5 ps production (+5 ps equilibration) per structure, 300 K: "
        f"{time.perf_counter() - tick:.1f} s"
    )

    config = MDConfig(temperature_K=args.temperature_K, time_ps=args.time_ps, flake_radii_A=(14.0,))
    constants = relaxed_lattice_constants()
    structures = build_structures(config, constants, np.random.default_rng(0))
    print("| structure | class | atoms | MD sigma_xy | harmonic sigma_xy | MD sigma_z | harmonic sigma_z |")
    print("|---|---|---|---|---|---|---|")
    for name, atoms, periodic_sheet in structures:
        if name.startswith("triangle"):
            continue
        relaxed, frames = run_md(atoms, config, seed=11)
        everything = np.arange(len(relaxed))
        md_xy, md_z = trajectory_sigmas(frames, relaxed.positions, [(everything, not periodic_sheet)])
        tick = time.perf_counter()
        harmonic_xy, harmonic_z = harmonic_sigmas(relaxed, config.temperature_K, 3 if periodic_sheet else 6)
        seconds = time.perf_counter() - tick
        coordination = coordination_numbers(relaxed)
        symbols = relaxed.get_chemical_symbols()
        md_rows = table_rows(symbols, coordination, md_xy, md_z)
        harmonic_rows = table_rows(symbols, coordination, harmonic_xy, harmonic_z)
        for md, harmonic in zip(md_rows, harmonic_rows, strict=True):
            print(
                f"| {name} | {md['element']}({md['coordination']}) | {md['count']} | "
                f"{md['sigma_xy_A']:.4f} | "
                f"{harmonic['sigma_xy_A']:.4f} | {md['sigma_z_A']:.4f} | {harmonic['sigma_z_A']:.4f} |"
            )
        print(f"  ({name}: {len(relaxed)} atoms, harmonic estimate {seconds:.1f} s)")


if __name__ == "__main__":
    main()
