"""Single-layer 2H-MoS2 structures viewed along (001), with defects, edges and a graphene substrate.

Everything is built column by column in the image plane first (Mo, S2 and S columns), so the
ground truth is exact by construction: it is the list of columns of the *undisplaced* atoms.
Thermal displacements are applied later, in the simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree

from hrtemnet.columns import CLASS_NAMES, Columns
from hrtemnet.errors import UserError

MO, S2, S = (CLASS_NAMES.index(name) for name in ("Mo", "S2", "S"))

# Geometry of single-layer 2H-MoS2 (experimental): in-plane lattice constant and the vertical
# S-S distance within one column.
MOS2_LATTICE_A = 3.16
MOS2_S_S_HEIGHT_A = 3.17
GRAPHENE_LATTICE_A = 2.46
# Columns closer than this across the periodic seam of a sheet would overlap unphysically.
MIN_COLUMN_SEPARATION_A = 1.5
# Projected Mo-S2 column distance is a/sqrt(3) = 1.83 Å; a column with no partner closer than
# this is a dangling edge column.
NEIGHBOUR_CUTOFF_A = 2.1
STRUCTURE_KINDS = ("sheet", "hexagonal_flake", "irregular_flake")


@dataclass
class StructureConfig:
    """How random MoS2 structures are drawn (the defaults are listed in docs/training_distribution.md)."""

    field_of_view_A: tuple[float, float] = (38.4, 38.4)  # (x extent, y extent) of the cell
    sheet_probability: float = 0.5  # otherwise a flake (hexagonal or irregular, half each)
    flake_radius_A_range: tuple[float, float] = (9.0, 17.0)
    single_s_vacancy_rate_range: tuple[float, float] = (0.0, 0.10)  # per S2 column
    double_s_vacancy_fraction: float = 0.1  # share of S vacancy sites that lose both S atoms
    mo_vacancy_rate_range: tuple[float, float] = (0.0, 0.02)
    graphene_probability: float = 0.5
    graphene_gap_A: float = 3.3  # graphene plane to lower S plane
    vacuum_A: float = 2.0  # above and below the atoms along z
    # Amorphous carbon contamination (never labelled): a layer on top, below or both, in about half the samples.
    carbon_probability: float = 0.5
    carbon_thickness_A_range: tuple[float, float] = (0.0, 10.0)  # per layer
    carbon_density_g_cm3_range: tuple[float, float] = (1.8, 2.2)
    carbon_min_distance_A: float = 1.3  # random close packing with this hard-core distance (a-C bonds: 1.4-1.5 Å)
    carbon_gap_A: float = 2.5  # layer surface to the nearest MoS2 S plane or graphene sheet (a van der Waals gap)
    # Specimen tilt: the whole specimen is rotated by up to this angle about a random in-plane axis.
    tilt_rad_range: tuple[float, float] = (0.0, 0.0349)  # 0-2°

    def __post_init__(self):
        self.field_of_view_A = tuple(float(v) for v in self.field_of_view_A)
        if min(self.field_of_view_A) < 5.0:
            raise ValueError("field_of_view_A must be at least 5 Å in both directions")


@dataclass
class StructureSample:
    """A drawn structure: the undisplaced atoms, their columns (ground truth) and what was drawn."""

    atoms: Atoms
    columns: Columns
    params: dict


def _rotation(angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s], [s, c]])


def _lattice_points(basis: np.ndarray, radius_A: float) -> np.ndarray:
    """All integer combinations of the two basis vectors within radius_A of the origin."""
    n = int(np.ceil(radius_A / np.min(np.linalg.norm(basis, axis=1)) * 1.2)) + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    points = i.reshape(-1, 1) * basis[0] + j.reshape(-1, 1) * basis[1]
    return points[np.linalg.norm(points, axis=1) <= radius_A]


def _hexagonal_basis(lattice_A: float) -> np.ndarray:
    return lattice_A * np.array([[1.0, 0.0], [0.5, np.sqrt(3) / 2]])


def mos2_columns(rotation_rad: float, origin_A: np.ndarray, radius_A: float) -> tuple[np.ndarray, np.ndarray]:
    """Perfect MoS2 columns (xy, class) in a disc of radius_A around origin_A."""
    basis = _hexagonal_basis(MOS2_LATTICE_A)
    points = _lattice_points(basis, radius_A + MOS2_LATTICE_A)
    s2_offset = (basis[0] + basis[1]) / 3  # the S2 site of the 2H unit cell
    xy = np.concatenate([points, points + s2_offset])
    classes = np.concatenate([np.full(len(points), MO), np.full(len(points), S2)])
    xy = xy @ _rotation(rotation_rad).T + origin_A
    keep = np.linalg.norm(xy - origin_A, axis=1) <= radius_A
    return xy[keep], classes[keep]


def _remove_periodic_overlaps(xy: np.ndarray, extent: np.ndarray, min_distance_A: float) -> np.ndarray:
    """Mask that drops the later of any two points closer than min_distance_A across the periodic cell."""
    tree = cKDTree(np.mod(xy, extent), boxsize=extent)
    keep = np.ones(len(xy), dtype=bool)
    for i, j in sorted(tree.query_pairs(min_distance_A)):
        if keep[i] and keep[j]:
            keep[j] = False
    return keep


def _flake_mask(xy: np.ndarray, centre: np.ndarray, radius_A: float, kind: str, rotation_rad: float,
                rng: np.random.Generator) -> np.ndarray:
    rel = (xy - centre) @ _rotation(-rotation_rad).T  # in lattice-aligned frame
    angle = np.arctan2(rel[:, 1], rel[:, 0])
    distance = np.linalg.norm(rel, axis=1)
    if kind == "hexagonal_flake":
        # Zigzag edges run along the lattice vectors: a hexagon with flat sides at 30° + k*60°.
        sector = np.mod(angle, np.pi / 3) - np.pi / 6
        boundary = radius_A * np.cos(np.pi / 6) / np.cos(sector)
    else:
        # Irregular outline: a smooth random radius function of angle (a few Fourier modes).
        modes = np.arange(1, 5)
        amplitudes = rng.uniform(0.0, 0.18, size=len(modes)) / modes**0.5
        phases = rng.uniform(0, 2 * np.pi, size=len(modes))
        boundary = radius_A * (1 + np.sum(amplitudes * np.cos(np.outer(angle, modes) + phases), axis=1))
    return distance <= boundary


def _drop_dangling_columns(xy: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Mask keeping columns with at least two neighbours of the other kind (no dangling edge atoms)."""
    tree = cKDTree(xy)
    neighbours = tree.query_ball_point(xy, NEIGHBOUR_CUTOFF_A)
    is_mo = classes == MO
    counts = np.array([np.sum(is_mo[n] != is_mo[i]) for i, n in enumerate(neighbours)])
    return counts >= 2


def graphene_positions(extent: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Carbon xy positions of a randomly rotated, shifted graphene sheet cut to the periodic cell."""
    rotation = rng.uniform(0, 2 * np.pi)
    basis = _hexagonal_basis(GRAPHENE_LATTICE_A)
    radius = float(np.linalg.norm(extent)) * 0.75
    points = _lattice_points(basis, radius)
    xy = np.concatenate([points, points + (basis[0] + basis[1]) / 3]) @ _rotation(rotation).T
    xy = xy + extent / 2 + rng.uniform(0, GRAPHENE_LATTICE_A, size=2)
    inside = np.all((xy >= 0) & (xy < extent), axis=1)
    xy = xy[inside]
    xy = xy[_remove_periodic_overlaps(xy, extent, 1.0)]
    return xy, rotation


# Amorphous carbon: 12.011 g/mol; g/cm³ -> atoms/Å³.
CARBON_ATOMS_PER_A3_PER_G_CM3 = 6.02214076e23 / 12.011 / 1e24


def amorphous_carbon_positions(extent: np.ndarray, z_range_A: tuple[float, float], density_g_cm3: float,
                               min_distance_A: float, rng: np.random.Generator) -> np.ndarray:
    """Random carbon positions (n, 3) filling a periodic slab at the given density, no two closer than
    `min_distance_A` (random sequential packing: overlapping atoms are redrawn until none remain).

    At 2 g/cm³ and 1.3 Å this is ~12 % packing, far from jamming, so a few redraw rounds suffice. It gives the
    right density and a hard core, which is what a 50-80 keV image of a-C sees (a speckle background)."""
    z_low, z_high = z_range_A
    volume = float(extent[0] * extent[1] * (z_high - z_low))
    n = int(round(volume * density_g_cm3 * CARBON_ATOMS_PER_A3_PER_G_CM3))
    if n == 0:
        return np.zeros((0, 3))
    low, high = np.array([0.0, 0.0, z_low]), np.array([extent[0], extent[1], z_high])
    positions = rng.uniform(low, high, size=(n, 3))
    box = np.array([extent[0], extent[1], 1e9])  # periodic in x, y only
    for _ in range(200):
        pairs = cKDTree(positions, boxsize=box).query_pairs(min_distance_A, output_type="ndarray")
        if len(pairs) == 0:
            break
        redraw = np.unique(pairs[:, 1])
        positions[redraw] = rng.uniform(low, high, size=(len(redraw), 3))
    return positions


def draw_contamination(rng: np.random.Generator, config: StructureConfig) -> dict:
    """Carbon layer thicknesses (top, bottom) in Å and density; zero thickness when there is none."""
    top = bottom = 0.0
    density = float(np.mean(config.carbon_density_g_cm3_range))
    if config.carbon_probability > 0 and config.carbon_thickness_A_range[1] > 0:
        present = rng.random() < config.carbon_probability
        side = int(rng.integers(3))  # 0 top, 1 bottom, 2 both
        thickness = rng.uniform(*config.carbon_thickness_A_range, size=2)
        density = float(rng.uniform(*config.carbon_density_g_cm3_range))
        if present:
            top = float(thickness[0]) if side in (0, 2) else 0.0
            bottom = float(thickness[1]) if side in (1, 2) else 0.0
    return {"carbon_top_A": top, "carbon_bottom_A": bottom, "carbon_density_g_cm3": density}


def columns_to_atoms(xy: np.ndarray, classes: np.ndarray, s_missing_top: np.ndarray,
                     extent: np.ndarray, carbon_xy: np.ndarray | None, config: StructureConfig,
                     contamination: dict | None = None, rng: np.random.Generator | None = None) -> Atoms:
    """Stack atoms on the columns: Mo in the middle plane, S above and below, graphene underneath, and
    amorphous carbon layers (`contamination` from `draw_contamination`) above the top and below the bottom."""
    contamination = contamination or {"carbon_top_A": 0.0, "carbon_bottom_A": 0.0}
    bottom_A, top_A = contamination["carbon_bottom_A"], contamination["carbon_top_A"]
    z_bottom_carbon = config.vacuum_A
    z_carbon = z_bottom_carbon + (bottom_A + config.carbon_gap_A if bottom_A > 0 else 0.0)
    z_s_low = z_carbon + (config.graphene_gap_A if carbon_xy is not None else 0.0)  # without graphene: a-C's gap
    z_mo = z_s_low + MOS2_S_S_HEIGHT_A / 2
    z_s_high = z_s_low + MOS2_S_S_HEIGHT_A
    symbols, positions = [], []
    for (x, y), cls, top_missing in zip(xy, classes, s_missing_top, strict=True):
        if cls == MO:
            symbols.append("Mo")
            positions.append((x, y, z_mo))
        elif cls == S2:
            symbols += ["S", "S"]
            positions += [(x, y, z_s_low), (x, y, z_s_high)]
        else:  # single S: which one is missing does not change the projected column
            symbols.append("S")
            positions.append((x, y, z_s_low if top_missing else z_s_high))
    if carbon_xy is not None:
        symbols += ["C"] * len(carbon_xy)
        positions += [(x, y, z_carbon) for x, y in carbon_xy]
    height = z_s_high
    layers = []
    if bottom_A > 0:
        layers.append((z_bottom_carbon, z_bottom_carbon + bottom_A))
    if top_A > 0:
        layers.append((z_s_high + config.carbon_gap_A, z_s_high + config.carbon_gap_A + top_A))
        height = layers[-1][1]
    for z_range in layers:
        if rng is None:
            raise ValueError("columns_to_atoms needs an rng to place amorphous carbon")
        carbon = amorphous_carbon_positions(extent, z_range, contamination["carbon_density_g_cm3"],
                                            config.carbon_min_distance_A, rng)
        symbols += ["C"] * len(carbon)
        positions += [tuple(p) for p in carbon]
    height += config.vacuum_A
    return Atoms(symbols=symbols, positions=np.array(positions).reshape(-1, 3),
                 cell=[extent[0], extent[1], height], pbc=True)


def tilt_specimen(atoms: Atoms, columns: Columns, tilt_rad: float, axis_angle_rad: float,
                  z_centre_A: float) -> tuple[Atoms, Columns]:
    """Rotate the specimen by `tilt_rad` about an in-plane axis at angle `axis_angle_rad` from x, through the
    cell centre at height `z_centre_A` (the Mo plane). Columns move with the Mo plane (their projected centre);
    atoms are wrapped back into the periodic cell. A 2° tilt moves the two S atoms of an S2 column apart by
    2 · 1.585 Å · sin 2° = 0.11 Å in projection, and an atom 10 Å above the plane by 0.35 Å."""
    if tilt_rad == 0:
        return atoms, columns
    from scipy.spatial.transform import Rotation

    axis = np.array([np.cos(axis_angle_rad), np.sin(axis_angle_rad), 0.0])
    rotation = Rotation.from_rotvec(tilt_rad * axis).as_matrix()
    extent = np.array([atoms.cell[0, 0], atoms.cell[1, 1]])
    centre = np.array([extent[0] / 2, extent[1] / 2, z_centre_A])
    tilted = atoms.copy()
    tilted.positions = (atoms.positions - centre) @ rotation.T + centre
    z_low = tilted.positions[:, 2].min() - atoms.positions[:, 2].min()
    tilted.positions[:, 2] -= min(z_low, 0.0)  # keep the vacuum below the lowest atom
    tilted.cell[2, 2] = tilted.positions[:, 2].max() + (atoms.cell[2, 2] - atoms.positions[:, 2].max())
    tilted.wrap()
    column_points = np.c_[columns.xy_A, np.full(len(columns), z_centre_A)]
    xy = ((column_points - centre) @ rotation.T + centre)[:, :2]
    return tilted, Columns(np.mod(xy, extent), columns.class_index)


def atomic_plane_boundaries(atoms: Atoms, tolerance_A: float = 1.0) -> tuple[float, ...]:
    """Slice thicknesses with one slice per atomic plane (boundaries half-way between planes).

    A plane holds the atoms within `tolerance_A` above its lowest one: the MoS2 planes (1.58 Å apart) and
    graphene stay separate, a tilted plane stays one slice, and amorphous carbon gets ~1 Å slices."""
    z = np.sort(atoms.positions[:, 2])
    planes = [z[0]]
    for value in z[1:]:
        if value - planes[-1] > tolerance_A:
            planes.append(value)
    cuts = [0.0] + [(a + b) / 2 for a, b in zip(planes[:-1], planes[1:], strict=True)] + [atoms.cell[2, 2]]
    return tuple(np.diff(cuts))


def random_structure(rng: np.random.Generator, config: StructureConfig | None = None) -> StructureSample:
    """Draw one MoS2 structure (sheet or flake, defects, optional graphene) and its ground truth."""
    config = config or StructureConfig()
    extent = np.array(config.field_of_view_A)
    kind = STRUCTURE_KINDS[0] if rng.random() < config.sheet_probability else str(rng.choice(STRUCTURE_KINDS[1:]))
    rotation = rng.uniform(0, 2 * np.pi)
    if kind == "sheet":
        centre = extent / 2 + rng.uniform(-MOS2_LATTICE_A, MOS2_LATTICE_A, size=2)
        xy, classes = mos2_columns(rotation, centre, float(np.linalg.norm(extent)) * 0.75)
        inside = np.all((xy >= 0) & (xy < extent), axis=1)
        xy, classes = xy[inside], classes[inside]
        keep = _remove_periodic_overlaps(xy, extent, MIN_COLUMN_SEPARATION_A)
        flake_radius = 0.0
    else:
        flake_radius = rng.uniform(*config.flake_radius_A_range)
        flake_radius = min(flake_radius, 0.5 * min(extent) - 2.0)
        centre = extent / 2 + rng.uniform(-0.15, 0.15, size=2) * (extent - 2 * flake_radius).clip(0)
        xy, classes = mos2_columns(rotation, centre, 1.3 * flake_radius)
        keep = _flake_mask(xy, centre, flake_radius, kind, rotation, rng)
        keep &= np.all((xy >= 0.5) & (xy < extent - 0.5), axis=1)
    xy, classes = xy[keep], classes[keep]
    if kind != "sheet":
        keep = _drop_dangling_columns(xy, classes)
        xy, classes = xy[keep], classes[keep]

    single_s_rate = rng.uniform(*config.single_s_vacancy_rate_range)
    mo_vacancy_rate = rng.uniform(*config.mo_vacancy_rate_range)
    is_s2 = classes == S2
    vacancy_site = is_s2 & (rng.random(len(classes)) < single_s_rate)
    both_missing = vacancy_site & (rng.random(len(classes)) < config.double_s_vacancy_fraction)
    mo_missing = (classes == MO) & (rng.random(len(classes)) < mo_vacancy_rate)
    classes = np.where(vacancy_site, S, classes)
    keep = ~(both_missing | mo_missing)
    xy, classes = xy[keep], classes[keep]
    s_missing_top = rng.random(len(classes)) < 0.5

    on_graphene = rng.random() < config.graphene_probability
    carbon_xy, graphene_rotation = graphene_positions(extent, rng) if on_graphene else (None, np.nan)
    contamination = draw_contamination(rng, config)
    atoms = columns_to_atoms(xy, classes, s_missing_top, extent, carbon_xy, config, contamination, rng)
    columns = Columns(xy, classes)
    tilt, tilt_axis = 0.0, 0.0
    if config.tilt_rad_range[1] > 0:
        tilt, tilt_axis = float(rng.uniform(*config.tilt_rad_range)), float(rng.uniform(0, np.pi))
        symbols = np.array(atoms.get_chemical_symbols())
        plane = symbols == "Mo" if np.any(symbols == "Mo") else symbols != "C"
        atoms, columns = tilt_specimen(atoms, columns, tilt, tilt_axis, float(np.mean(atoms.positions[plane, 2])))
    params = {
        "structure_kind": float(STRUCTURE_KINDS.index(kind)),
        "rotation_rad": float(rotation),
        "flake_radius_A": float(flake_radius),
        "single_s_vacancy_rate": float(single_s_rate),
        "mo_vacancy_rate": float(mo_vacancy_rate),
        "substrate_graphene": float(on_graphene),
        "graphene_rotation_rad": float(graphene_rotation),
        "num_atoms": float(len(atoms)),
        **contamination,
        "tilt_rad": tilt,
        "tilt_axis_rad": tilt_axis,
    }
    return StructureSample(atoms=atoms, columns=columns, params=params)


def columns_from_atoms(atoms: Atoms, column_tolerance_A: float = 0.3) -> Columns:
    """Ground-truth columns of any (undisplaced) MoS2 structure: one per Mo atom, S grouped by xy.

    Carbon and other elements are not labelled. Used for user-supplied structures.
    """
    symbols = np.array(atoms.get_chemical_symbols())
    xy_mo = atoms.positions[symbols == "Mo", :2]
    xy_s = atoms.positions[symbols == "S", :2]
    xy_list = [xy_mo]
    classes = [np.full(len(xy_mo), MO)]
    if len(xy_s):
        tree = cKDTree(xy_s)
        groups: dict[int, list[int]] = {}
        root = np.arange(len(xy_s))
        for i, j in sorted(tree.query_pairs(column_tolerance_A)):
            root[j] = root[i]
        for index, r in enumerate(root):
            groups.setdefault(int(r), []).append(index)
        centres = np.array([xy_s[g].mean(axis=0) for g in groups.values()])
        counts = np.array([len(g) for g in groups.values()])
        xy_list.append(centres)
        classes.append(np.where(counts >= 2, S2, S))
    return Columns(np.concatenate(xy_list), np.concatenate(classes))



def read_structure(path) -> Atoms:
    """Read a user's structure file with ASE; it must carry a cell and atoms."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise UserError(f"structure file {path} does not exist")
    try:
        atoms = ase.io.read(path)
    except Exception as error:  # ASE raises many types for unreadable files
        raise UserError(f"{path}: ASE cannot read this structure ({type(error).__name__}: {error}); "
                        "use a format with a cell such as extxyz, cif or traj") from None
    if isinstance(atoms, list):
        atoms = atoms[0]
    if len(atoms) == 0:
        raise UserError(f"{path}: the structure has no atoms")
    if np.any(np.abs(atoms.cell.lengths()) < 1e-6):
        raise UserError(f"{path}: the structure has no cell; give a file with a cell "
                        "(extxyz with Lattice=..., cif, traj)")
    return atoms
