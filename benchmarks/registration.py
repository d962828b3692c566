"""Prediction on drifted and mis-calibrated focal series: alignment residuals, F1 with and without alignment,
F1 with `sampling_A="auto"` on series whose calibration is wrong, the plausibility signature, time per series.

Series are simulated in the shipped models' training window (DESIGN.md: first defocus -50..-10 Å, steps
50 ± 5 Å, 0.15 Å/px, 38.4 Å fields, bare or on graphene, no contamination, static lattice), given Poisson
noise (dose log-uniform 1e4-1e5 e/Å²) and drifted with an exact Fourier shift (periodic simulations), each frame
by its own shift. Predictions go through `hrtemnet.predict`, the same path as `hrtemnet predict`; F1 is the
species-aware F1 of DESIGN.md (`hrtemnet.metrics.score_image`).

    python benchmarks/registration.py --n 20                 # everything, 20 series per experiment
    python benchmarks/registration.py --only residuals --n 40
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from drifted_series import shift_frames, simulated_series  # noqa: E402  (one definition of "in range")

S = 0.15


def noisy_series(index: int, sampling_A: float = S, field_A: float = 38.4):
    """(noisy images, truth, graphene) of series `index`: even bare, odd on graphene."""
    from hrtemnet.simulation import NoiseConfig, add_imaging_noise

    graphene = bool(index % 2)
    images, truth = simulated_series(graphene, seed=1000 + index, field_A=field_A, sampling_A=sampling_A)
    rng = np.random.default_rng(index)
    dose = float(np.exp(rng.uniform(np.log(1e4), np.log(1e5))))
    noisy, _ = add_imaging_noise(images, sampling_A, rng, NoiseConfig(dose_e_per_A2=dose))
    return noisy, truth, graphene


def random_shifts(rng, low_A: float, high_A: float) -> np.ndarray:
    """(3, 2): frame 1 at (0, 0), frames 2 and 3 each moved by low..high Å in a random direction."""
    angle, length = rng.uniform(0, 2 * np.pi, 2), rng.uniform(low_A, high_A, 2)
    return np.vstack([[0.0, 0.0], np.stack([length * np.cos(angle), length * np.sin(angle)], axis=1)])


def f1_of(table, truth, shape, sampling_A=S) -> float:
    from hrtemnet.columns import CLASS_NAMES, Columns
    from hrtemnet.metrics import score_image

    found = Columns(table[["x_A", "y_A"]].to_numpy(), [CLASS_NAMES.index(c) for c in table["class"]])
    return score_image(truth, found, (shape[-1] * sampling_A, shape[-2] * sampling_A)).f1


def residuals(n: int) -> dict:
    """Registration error (Å) of frames 2, 3 against 1 and 3 against 2, shifts 0-5 Å per frame."""
    from hrtemnet.registration import register_frames

    rng = np.random.default_rng(1)
    rows = []
    for index in range(n):
        images, _, graphene = noisy_series(index)
        shifts = random_shifts(rng, 0.0, 5.0)
        drifted = shift_frames(images, shifts, S)
        found = register_frames(drifted, S)
        pair = register_frames(drifted[1:], S)
        errors = list(np.hypot(*(found.shifts_A[1:] - shifts[1:]).T))
        # frames 2 and 3 may be up to 10 Å apart, beyond the search range of a 38 Å field (a quarter: 9.6 Å)
        within = np.hypot(*(shifts[2] - shifts[1])) < 0.25 * images.shape[-1] * S
        errors.append(float(np.hypot(*(pair.shifts_A[1] - (shifts[2] - shifts[1])))) if within else np.nan)
        rows.append({"graphene": graphene, "errors_A": errors, "snr": found.peak_snr[1:].tolist(),
                     "warnings": len(found.warnings)})
    return {"rows": rows}


def drift_f1(n: int, models: list[str]) -> dict:
    """F1 without drift, with 1-3 Å per-frame drift unaligned and aligned; score of right and wrong columns."""
    import hrtemnet
    from hrtemnet.columns import CLASS_NAMES, Columns
    from hrtemnet.metrics import match_image

    rng = np.random.default_rng(2)
    rows = []
    for index in range(n):
        images, truth, graphene = noisy_series(index)
        drifted = shift_frames(images, random_shifts(rng, 1.0, 3.0), S)
        row = {"graphene": graphene}
        for model in models:
            for name, series, align in (("clean", images, True), ("drift_no_align", drifted, False),
                                        ("drift_aligned", drifted, True)):
                table = hrtemnet.predict(series, sampling_A=S, model=model, align=align)
                row[f"{model}_{name}"] = f1_of(table, truth, images.shape)
                row[f"{model}_{name}_warnings"] = len(table.attrs["warnings"])
                if name == "drift_no_align":  # does the score separate right from wrong columns?
                    found = Columns(table[["x_A", "y_A"]].to_numpy(), [CLASS_NAMES.index(c) for c in table["class"]],
                                    table["score"].to_numpy())
                    match = match_image(truth, found, (38.4, 38.4))  # border cut as in F1
                    right = match.correct_pred()
                    row[f"{model}_score_right"] = match.pred.score[right].tolist()
                    row[f"{model}_score_wrong"] = match.pred.score[~right].tolist()
        rows.append(row)
    return {"rows": rows}


def calibration(n: int, model: str) -> dict:
    """A file that states the wrong pixel size: the warning, F1 as stated, F1 with sampling_A='auto'."""
    import hrtemnet
    from hrtemnet.calibration import measure_sampling

    rows = []
    factors = (0.8, 0.9, 0.95, 1.05, 1.1, 1.25)
    for index in range(n):
        true_sampling = (0.12, 0.15, 0.18)[index % 3]
        images, truth, graphene = noisy_series(index, sampling_A=true_sampling)
        measured = measure_sampling(images)
        stated = true_sampling * factors[index % len(factors)]
        as_stated = hrtemnet.predict(images, sampling_A=stated, model=model)
        auto = hrtemnet.predict(images, sampling_A="auto", model=model)
        rows.append({"graphene": graphene, "true": true_sampling, "stated": stated,
                     "measured": None if measured is None else measured.sampling_A,
                     "warned": any(w.startswith("pixel size") for w in as_stated.attrs["warnings"]),
                     "f1_as_stated": f1_of(as_stated, truth, images.shape, true_sampling),
                     "f1_auto": f1_of(auto, truth, images.shape, true_sampling),
                     "auto_warnings": auto.attrs["warnings"]})
    return {"rows": rows}


def signature(n: int, model: str) -> dict:
    """The plausibility warning on in-range series (false alarms) and with the frames reversed or shuffled."""
    import hrtemnet

    rows = []
    for index in range(n):
        images, truth, graphene = noisy_series(index)
        row = {"graphene": graphene}
        shuffled = images[[[1, 0, 2], [0, 2, 1], [2, 0, 1]][index % 3]]
        for name, series in (("in_range", images), ("reversed", images[::-1]), ("shuffled", shuffled)):
            table = hrtemnet.predict(np.ascontiguousarray(series), sampling_A=S, model=model)
            row[name] = any("do not look like MoS2" in w or "no columns found" in w for w in table.attrs["warnings"])
            row[f"{name}_pixel_size_warning"] = any(w.startswith("pixel size") for w in table.attrs["warnings"])
            row[f"{name}_alignment_warning"] = any("alignment" in w for w in table.attrs["warnings"])
            row[f"{name}_f1"] = f1_of(table, truth, images.shape)
        rows.append(row)
    return {"rows": rows}


def timing(model: str, size_px: int, repeats: int) -> dict:
    """Seconds per size_px² series through hrtemnet.predict with and without alignment (after a warm-up)."""
    import hrtemnet

    images, truth, _ = noisy_series(0, field_A=size_px * S)
    drifted = shift_frames(images, np.array([[0, 0], [1.5, -1.0], [-2.0, 2.5]]), S)
    hrtemnet.predict(drifted, sampling_A=S, model=model)  # warm-up: model load, allocations
    out = {}
    for align in (True, False):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            table = hrtemnet.predict(drifted, sampling_A=S, model=model, align=align)
            times.append(time.perf_counter() - start)
        out["aligned" if align else "not_aligned"] = float(np.median(times))
        out[f"f1_{'aligned' if align else 'not_aligned'}"] = f1_of(table, truth, images.shape)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20, help="series per experiment (half on graphene)")
    parser.add_argument("--models", nargs="+", default=["msd", "unet"], help="models for the drift experiment")
    parser.add_argument("--only", nargs="+", default=["residuals", "drift", "calibration", "signature", "timing"])
    parser.add_argument("--size", type=int, default=1024, help="side of the timed series, px")
    parser.add_argument("--out", type=Path, default=Path("registration_results.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    results = {}
    if "residuals" in args.only:
        results["residuals"] = residuals(args.n)
        errors = np.array([r["errors_A"] for r in results["residuals"]["rows"]])
        for graphene in (False, True):
            sel = errors[[r["graphene"] == graphene for r in results["residuals"]["rows"]]]
            valid = sel[np.isfinite(sel)]
            print(f"residuals {'graphene' if graphene else 'bare'}: median 2-1 {np.median(sel[:, 0]):.3f}, "
                  f"3-1 {np.median(sel[:, 1]):.3f}, 3-2 {np.nanmedian(sel[:, 2]):.3f} Å; 95th pct "
                  f"{np.percentile(valid, 95):.3f}; max {valid.max():.3f}; > 0.3 Å: {np.sum(valid > 0.3)}/{valid.size}")
    if "drift" in args.only:
        results["drift"] = drift_f1(args.n, args.models)
        for model in args.models:
            cells = {name: np.mean([r[f"{model}_{name}"] for r in results["drift"]["rows"]])
                     for name in ("clean", "drift_no_align", "drift_aligned")}
            right = np.concatenate([r[f"{model}_score_right"] for r in results["drift"]["rows"]])
            wrong = np.concatenate([r[f"{model}_score_wrong"] for r in results["drift"]["rows"]])
            auc = np.mean(right[:, None] > wrong[None, :]) if len(wrong) and len(right) else float("nan")
            print(f"{model}: mean F1 clean {cells['clean']:.4f}, drifted 1-3 Å unaligned "
                  f"{cells['drift_no_align']:.4f}, aligned {cells['drift_aligned']:.4f}; "
                  f"score AUC right vs wrong (unaligned) {auc:.3f} "
                  f"({len(right)} right, {len(wrong)} wrong)")
    if "calibration" in args.only:
        results["calibration"] = calibration(args.n, args.models[0])
        rows = results["calibration"]["rows"]
        errors = [abs(r["measured"] / r["true"] - 1) for r in rows if r["measured"]]
        print(f"calibration ({args.models[0]}): measured within {100 * max(errors):.2f} % (max), warned on "
              f"{sum(r['warned'] for r in rows)}/{len(rows)} wrong pixel sizes; mean F1 as stated "
              f"{np.mean([r['f1_as_stated'] for r in rows]):.4f}, auto {np.mean([r['f1_auto'] for r in rows]):.4f}")
    if "signature" in args.only:
        results["signature"] = signature(args.n, args.models[0])
        rows = results["signature"]["rows"]
        for name in ("in_range", "reversed", "shuffled"):
            print(f"signature ({args.models[0]}) {name}: warned {sum(r[name] for r in rows)}/{len(rows)}, "
                  f"mean F1 {np.mean([r[f'{name}_f1'] for r in rows]):.4f}; pixel-size warnings "
                  f"{sum(r[f'{name}_pixel_size_warning'] for r in rows)}, alignment warnings "
                  f"{sum(r[f'{name}_alignment_warning'] for r in rows)}")
    if "timing" in args.only:
        results["timing"] = timing(args.models[0], args.size, repeats=3)
        t = results["timing"]
        print(f"time per {args.size}² series ({args.models[0]}, 1 thread): {t['aligned']:.1f} s aligned, "
              f"{t['not_aligned']:.1f} s without alignment (F1 {t['f1_aligned']:.4f})")
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
