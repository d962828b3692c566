"""Small simulated MoS2 focal series inside the shipped models' range, and drift applied to them (test helper)."""

from __future__ import annotations

from hrtemnet.dataset import SEED_WINDOW, DatasetConfig, columns_from_table, simulate_sample
from hrtemnet.evaluation import shift_frames  # noqa: F401  (the realism suite's drift; tests and benchmarks use it)


def in_range_config(graphene: bool, field_A: float = 38.4, sampling_A: float = 0.15,
                    sheet: bool | None = None) -> DatasetConfig:
    """The first models' training window (DESIGN.md): defocus -50..-10 Å then steps of 50 ± 5 Å, no
    contamination or tilt, static lattice (fast)."""
    config = DatasetConfig()
    config.simulation.num_phonons = 0
    config.simulation.sampling_A = sampling_A
    config.structure.field_of_view_A = (field_A, field_A)
    config.structure.graphene_probability = float(graphene)
    if sheet is not None:
        config.structure.sheet_probability = float(sheet)
    for section, values in SEED_WINDOW.items():
        for name, value in values.items():
            setattr(getattr(config, section), name, value)
    return config


def simulated_series(graphene: bool, seed: int, field_A: float = 38.4, sampling_A: float = 0.15,
                     sheet: bool | None = None):
    """(noise-free images (3, H, W), true columns) of one in-range series (a sheet, a flake or either)."""
    images, table, _ = simulate_sample(in_range_config(graphene, field_A, sampling_A, sheet), seed, 0)
    return images, columns_from_table(table)
