"""`hrtemnet demo`: fresh simulated focal series, both shipped models, F1 and the Figure 1-style picture.

Nothing here is new logic: it simulates with `dataset.simulate_sample` (bare and graphene alternating),
holds the samples in memory and runs the same evaluation as `hrtemnet evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class DemoConfig:
    num_series: int = 4  # alternating bare / on graphene
    seed: int = 2026
    dose_e_per_A2: float = 3e4
    num_phonons: int = 2
    models: tuple[str, ...] = ("msd", "unet")


def simulate_demo_series(config: DemoConfig, progress: bool = True):
    """Fresh focal series with labels, half of them on graphene, as an in-memory store."""
    from hrtemnet.dataset import InMemorySeries, columns_from_table, recorded_config, simulate_sample
    from hrtemnet.models import load_model
    from hrtemnet.progress import progress_bar
    from hrtemnet.vibrations import vibration_table_for

    table = vibration_table_for(config.num_phonons)
    samples = []
    with progress_bar("series", progress) as bar:
        task = bar.add_task("simulating", total=config.num_series)
        for index in range(config.num_series):
            # the distribution the shipped MSD-net was trained on, from its model card
            dataset_config = recorded_config(load_model("msd").card["training_set"]["config"])
            dataset_config.simulation.num_phonons = config.num_phonons
            dataset_config.structure.graphene_probability = float(index % 2)
            images, table_rows, params = simulate_sample(dataset_config, config.seed, index, table)
            columns = columns_from_table(table_rows)
            samples.append((images, columns, dict(zip(dataset_config.param_names, params.tolist(), strict=True))))
            bar.advance(task)
    return InMemorySeries(samples, dataset_config.simulation.sampling_A)


def run_demo(out_dir: Path, config: DemoConfig | None = None, progress: bool = True):
    from hrtemnet.evaluation import EvaluationConfig, evaluate_models
    from hrtemnet.models import load_model

    config = config or DemoConfig()
    models = [load_model(name) for name in config.models]
    store = simulate_demo_series(config, progress)
    evaluation = EvaluationConfig(dose_e_per_A2=config.dose_e_per_A2, seed=config.seed, dose_sweep_e_per_A2=(),
                                  example_index=min(1, len(store) - 1), progress=progress)
    return evaluate_models(store, models, Path(out_dir), evaluation)
