"""Thermal vibrations at simulation time: per-atom displacement sigma by (element, coordination number).

The simulation displaces each atom with the sigma of its element and coordination, so edges and defects
vibrate as they do. The table is measured by molecular dynamics (`hrtemnet vibrations`, module
`hrtemnet.md`, which needs LAMMPS); this module only reads it and applies it, so simulating needs no MD code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree

from hrtemnet.errors import UserError

# Mo-S bond 2.41 Å (2.38 Å with the SW potential); next-nearest Mo-S 3.9 Å: 3.0 Å splits them cleanly.
MO_S_CUTOFF_A = 3.0
C_C_CUTOFF_A = 1.7  # graphene C-C bond 1.42 Å
DEFAULT_TABLE = "vibrations_default.json"
# Elements the MD did not cover (graphene's C in a bare-MoS2 table): sigma_xy_A, sigma_z_A at 300 K.
# Value: C(3) of our run with `--substrate graphene` (benchmarks/RESULTS.md).
DEFAULT_SIGMAS = {"C": (0.034, 0.23)}


@dataclass
class VibrationTable:
    temperature_K: float
    potential: str
    entries: dict[tuple[str, int], tuple[float, float]]  # (element, coordination) -> (sigma_xy_A, sigma_z_A)
    defaults: dict[str, tuple[float, float]] = field(default_factory=dict)  # element -> sigmas if unseen

    def sigma_for(self, element: str, coordination: int) -> tuple[float, float]:
        same_element = {c: s for (e, c), s in self.entries.items() if e == element}
        if coordination in same_element:
            return same_element[coordination]
        if same_element:  # nearest coordination measured for this element
            nearest = min(same_element, key=lambda c: (abs(c - coordination), -c))
            return same_element[nearest]
        if element in self.defaults:
            return self.defaults[element]
        raise UserError(f"the vibration table has no entry for element {element}; add a default for it")


def load_vibration_table(path: str | Path | None = None) -> VibrationTable:
    """Read a table written by `hrtemnet vibrations` (None: the table shipped with the package)."""
    try:
        if path is None:
            text = resources.files("hrtemnet.data").joinpath(DEFAULT_TABLE).read_text()
            name = f"shipped {DEFAULT_TABLE}"
        else:
            text = Path(path).read_text()
            name = str(path)
    except FileNotFoundError:
        raise UserError(f"vibration table {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"vibration table {path} is not a readable JSON text file ({type(error).__name__}); "
                        "give a table written by `hrtemnet vibrations`") from None
    try:
        data = json.loads(text)
        entries = {
            (row["element"], int(row["coordination"])): (float(row["sigma_xy_A"]), float(row["sigma_z_A"]))
            for row in data["sigmas"]
        }
        defaults = dict(DEFAULT_SIGMAS)
        defaults.update(
            {e: (float(v["sigma_xy_A"]), float(v["sigma_z_A"])) for e, v in data.get("defaults", {}).items()}
        )
        table = VibrationTable(
            float(data["temperature_K"]), str(data.get("potential", "")), entries, defaults
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise UserError(
            f"{name} is not a vibration table ({type(error).__name__}: {error}); expected "
            '{"temperature_K": T, "sigmas": [{"element", "coordination", "sigma_xy_A", '
            '"sigma_z_A"}, ...]}'
        ) from None
    if any(s < 0 or s > 1 for pair in entries.values() for s in pair):
        raise UserError(f"{name}: sigmas must lie between 0 and 1 Å")
    return table


def vibration_table_for(num_phonons: int, path: str | Path | None = None) -> VibrationTable | None:
    """The table a simulation with `num_phonons` frozen-phonon configurations needs: None for a static lattice."""
    return load_vibration_table(path) if num_phonons > 0 else None


def _periodic_images(atoms: Atoms, reach_A: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions wrapped into the cell, and the shifts to the periodic images within reach_A.

    Only x and y are periodic (see coordination_numbers); the first two cell vectors lie in the layer plane.
    """
    periodic = np.asarray(atoms.pbc) & [True, True, False]
    cell = np.asarray(atoms.cell)
    area = np.linalg.norm(np.cross(cell[0], cell[1]))
    positions = atoms.positions.copy()
    if periodic.any() and area > 0:
        fractional = np.linalg.solve(cell[:2, :2].T, positions[:, :2].T).T
        fractional[:, periodic[:2]] %= 1.0
        positions[:, :2] = fractional @ cell[:2, :2]
    repeats: list[range] = []
    for axis in range(2):
        if not periodic[axis] or area == 0:
            repeats.append(range(1))
            continue
        width = area / np.linalg.norm(cell[1 - axis])  # cell height perpendicular to the other vector
        reach = int(np.ceil(reach_A / width))
        repeats.append(range(-reach, reach + 1))
    return positions, np.array([i * cell[0] + j * cell[1] for i in repeats[0] for j in repeats[1]])


def coordination_numbers(atoms: Atoms, cutoff_A: float = MO_S_CUTOFF_A) -> np.ndarray:
    """Mo: number of S neighbours; S: number of Mo neighbours; C: number of C neighbours; others 0.

    Periodic in x and y where atoms.pbc says so (any cell shape); never across z, because these are 2D
    layers in a vacuum-padded cell (a short cell would otherwise bond the top S to the next cell's graphene).
    """
    symbols = np.array(atoms.get_chemical_symbols())
    counts = np.zeros(len(atoms), dtype=np.int64)
    positions, shifts = _periodic_images(atoms, max(cutoff_A, C_C_CUTOFF_A))
    for element, partner, cutoff in (("Mo", "S", cutoff_A), ("S", "Mo", cutoff_A), ("C", "C", C_C_CUTOFF_A)):
        centres, partners = symbols == element, symbols == partner
        if not centres.any() or not partners.any():
            continue
        images = (positions[partners][None] + shifts[:, None]).reshape(-1, 3)
        found = cKDTree(images).query_ball_point(positions[centres], cutoff, return_length=True)
        counts[centres] = found - (1 if element == partner else 0)  # an atom is not its own neighbour
    return counts


def per_atom_sigmas(atoms: Atoms, table: VibrationTable) -> tuple[np.ndarray, np.ndarray]:
    """(sigma_xy, sigma_z) of every atom from its element and coordination number."""
    symbols = atoms.get_chemical_symbols()
    coordination = coordination_numbers(atoms)
    lookup = {}
    sigmas = np.empty((len(atoms), 2))
    for index, key in enumerate(zip(symbols, coordination.tolist(), strict=True)):
        if key not in lookup:
            lookup[key] = table.sigma_for(*key)
        sigmas[index] = lookup[key]
    return sigmas[:, 0], sigmas[:, 1]


def displace_atoms(atoms: Atoms, table: VibrationTable, rng: np.random.Generator) -> Atoms:
    """A copy of `atoms` with Gaussian thermal displacements of per-atom sigma."""
    sigma_xy, sigma_z = per_atom_sigmas(atoms, table)
    scale = np.stack([sigma_xy, sigma_xy, sigma_z], axis=1)
    displaced = atoms.copy()
    displaced.positions = atoms.positions + rng.standard_normal((len(atoms), 3)) * scale
    return displaced
