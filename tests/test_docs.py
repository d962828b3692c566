"""The documentation that is generated from the code matches the code."""

from __future__ import annotations

from pathlib import Path

from hrtemnet import docs

REPO = Path(__file__).resolve().parents[1]


def test_training_distribution_page_is_generated_from_the_current_defaults():
    committed = (REPO / docs.PAGE).read_text()
    assert committed == docs.training_distribution_page(), (
        f"{docs.PAGE} is out of date with the dataclass defaults: run `python -m hrtemnet.docs` in the repository"
    )


def test_every_default_of_the_training_distribution_is_on_the_page():
    from hrtemnet.simulation import NoiseConfig, OpticsRanges
    from hrtemnet.structures import StructureConfig

    page = docs.training_distribution_page()
    for cls in (StructureConfig, OpticsRanges, NoiseConfig):
        for name in cls.__dataclass_fields__:
            assert f"| `{name}` |" in page, name
    low, high = NoiseConfig().dose_e_per_A2_range
    assert f"| `dose_e_per_A2_range` | {low:g} – {high:g} | e/Å² |" in page


def test_units_and_values_are_read_from_the_names():
    assert docs.unit_of("dose_e_per_A2_range") == "e/Å²"
    assert docs.unit_of("tilt_rad_range") == "rad"
    assert docs.unit_of("misregistration_A_max") == "Å"
    assert docs.unit_of("sheet_probability") == ""
    assert docs.format_value((0.0, 0.0349), "rad", is_range=True) == "0 – 0.0349 (0 – 2°)"
    assert docs.format_value((5e4, 25e4), "Å", is_range=True) == "50000 – 250000 (5 – 25 µm)"
    assert docs.format_value((38.4, 38.4), "Å") == "(38.4, 38.4)"


def test_check_mode_reports_a_stale_page(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert docs.main(["--check"]) == 1  # no page yet
    assert docs.main([]) == 0
    assert docs.main(["--check"]) == 0
    (tmp_path / docs.PAGE).write_text("stale\n")
    assert docs.main(["--check"]) == 1
