"""Thermal vibrations: per-atom displacement sigma by (element, coordination number).

The table is measured by molecular dynamics (`hrtemnet vibrations`); the simulation displaces
each atom with the sigma of its element and coordination, so edges and defects vibrate as they do.
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

# Mo-S bond length is 2.41 Å; next-nearest Mo-S is 3.9 Å, so 3.0 Å separates first neighbours cleanly.
MO_S_CUTOFF_A = 3.0
C_C_CUTOFF_A = 1.7  # graphene C-C bond 1.42 Å
DEFAULT_TABLE = "vibrations_default.json"


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
    try:
        data = json.loads(text)
        entries = {(row["element"], int(row["coordination"])): (float(row["sigma_xy_A"]), float(row["sigma_z_A"]))
                   for row in data["sigmas"]}
        defaults = {e: (float(v["sigma_xy_A"]), float(v["sigma_z_A"])) for e, v in data.get("defaults", {}).items()}
        table = VibrationTable(float(data["temperature_K"]), str(data.get("potential", "")), entries, defaults)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"{name} is not a vibration table ({type(error).__name__}: {error}); expected "
                        '{"temperature_K": T, "sigmas": [{"element", "coordination", "sigma_xy_A", '
                        '"sigma_z_A"}, ...]}') from None
    if any(s < 0 or s > 1 for pair in entries.values() for s in pair):
        raise UserError(f"{name}: sigmas must lie between 0 and 1 Å")
    return table


def coordination_numbers(atoms: Atoms, cutoff_A: float = MO_S_CUTOFF_A) -> np.ndarray:
    """Mo: number of S neighbours; S: number of Mo neighbours; C: number of C neighbours; others 0."""
    symbols = np.array(atoms.get_chemical_symbols())
    positions = atoms.positions
    boxsize = None
    if np.all(atoms.pbc[:2]) and np.all(np.diag(atoms.cell)[:2] > 0):
        # periodic in x and y only: a huge z box makes z effectively non-periodic
        boxsize = np.array([atoms.cell[0, 0], atoms.cell[1, 1], 1e6])
        positions = np.mod(positions, boxsize)
    counts = np.zeros(len(atoms), dtype=np.int64)
    for element, partner, cutoff in (("Mo", "S", cutoff_A), ("S", "Mo", cutoff_A), ("C", "C", C_C_CUTOFF_A)):
        centres = np.flatnonzero(symbols == element)
        partners = np.flatnonzero(symbols == partner)
        if len(centres) == 0 or len(partners) == 0:
            continue
        tree = cKDTree(positions[partners], boxsize=boxsize)
        neighbours = tree.query_ball_point(positions[centres], cutoff)
        counts[centres] = [len(n) - (1 if element == partner else 0) for n in neighbours]
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
