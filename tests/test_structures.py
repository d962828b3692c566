import numpy as np
import pytest

from hrtemnet.columns import CLASS_NAMES
from hrtemnet.structures import MOS2_S_S_HEIGHT_A, StructureConfig, columns_from_atoms, random_structure

MO, S2, S = range(3)


def atoms_at(atoms, xy, tolerance=1e-6):
    """Symbols of the atoms within `tolerance` of xy in projection (periodic cell: minimum image)."""
    extent = np.array([atoms.cell[0, 0], atoms.cell[1, 1]])
    offset = (atoms.positions[:, :2] - xy + extent / 2) % extent - extent / 2
    return np.array(atoms.get_chemical_symbols())[np.linalg.norm(offset, axis=1) < tolerance]


@pytest.mark.parametrize("seed", range(6))
def test_labels_lie_on_the_atoms_they_label(seed):
    sample = random_structure(np.random.default_rng(seed))
    columns = sample.columns
    assert len(columns) > 20
    # a tilted specimen moves each S atom by (S-S height / 2) sin(tilt) from its column's centre
    tolerance = MOS2_S_S_HEIGHT_A / 2 * np.sin(sample.params["tilt_rad"]) + 1e-6
    for xy, cls in zip(columns.xy_A, columns.class_index, strict=True):
        on_column = sorted(a for a in atoms_at(sample.atoms, xy, tolerance) if a != "C")  # a-C may lie anywhere
        expected = {MO: ["Mo"], S2: ["S", "S"], S: ["S"]}[cls]
        assert on_column == expected, (CLASS_NAMES[cls], on_column)
    # every Mo and S atom is labelled (graphene is not)
    n_labelled_atoms = np.sum(columns.class_index == MO) + 2 * np.sum(columns.class_index == S2) + np.sum(
        columns.class_index == S)
    symbols = np.array(sample.atoms.get_chemical_symbols())
    assert n_labelled_atoms == np.sum(symbols != "C")  # carbon (graphene, amorphous) is never labelled


def test_single_s_vacancy_gives_an_s_column():
    config = StructureConfig(single_s_vacancy_rate_range=(0.3, 0.3), double_s_vacancy_fraction=0.0,
                             mo_vacancy_rate_range=(0, 0), graphene_probability=0.0, sheet_probability=1.0)
    sample = random_structure(np.random.default_rng(3), config)
    counts = sample.columns.counts()
    assert counts["S"] > 0.2 * (counts["S"] + counts["S2"])
    # the ground truth derived independently from the atoms agrees
    derived = columns_from_atoms(sample.atoms)
    assert derived.counts() == counts


def test_double_vacancy_and_mo_vacancy_remove_columns():
    base = dict(graphene_probability=0.0, sheet_probability=1.0, single_s_vacancy_rate_range=(0.0, 0.0),
                mo_vacancy_rate_range=(0.0, 0.0))
    perfect = random_structure(np.random.default_rng(5), StructureConfig(**base)).columns.counts()
    base.update(single_s_vacancy_rate_range=(0.2, 0.2), double_s_vacancy_fraction=1.0,
                mo_vacancy_rate_range=(0.02, 0.02))
    defective = random_structure(np.random.default_rng(5), StructureConfig(**base)).columns.counts()
    assert defective["S"] == 0  # every vacancy site lost both atoms
    assert defective["S2"] < perfect["S2"] and defective["Mo"] <= perfect["Mo"]


def test_graphene_substrate_sits_below_and_is_not_labelled():
    config = StructureConfig(graphene_probability=1.0, tilt_rad_range=(0.0, 0.0))
    sample = random_structure(np.random.default_rng(0), config)
    symbols = np.array(sample.atoms.get_chemical_symbols())
    z = sample.atoms.positions[:, 2]
    assert np.sum(symbols == "C") > 400
    gap = z[symbols == "S"].min() - z[symbols == "C"].max()
    assert gap == pytest.approx(config.graphene_gap_A)
    assert sample.params["substrate_graphene"] == 1.0


def test_sheet_fills_the_field_and_columns_stay_apart_across_the_periodic_seam():
    config = StructureConfig(sheet_probability=1.0, graphene_probability=0.0)
    sample = random_structure(np.random.default_rng(1), config)
    xy = sample.columns.xy_A
    extent = np.array(config.field_of_view_A)
    assert np.all((xy >= 0) & (xy < extent))
    # 2 columns per 8.65 Å² unit cell
    assert len(xy) == pytest.approx(extent.prod() / 8.65 * 2, rel=0.1)
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(xy, boxsize=extent).query(xy, k=2)
    assert distances[:, 1].min() > 1.5
