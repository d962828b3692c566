"""Make docs/napari_screenshot.png: a simulated MoS2 focal series opened in napari, columns found by the widget.

The series is written as a calibrated 3-image TIFF and opened through the plugin's reader, as a user
would (`napari series.tif`); "Find columns" runs in its worker thread like a click. napari draws with
OpenGL, so this needs a display; headless: `xvfb-run -a python docs/napari_screenshot.py`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from hrtemnet.columns import CLASS_NAMES, Columns

FIELD_A = 38.4
SAMPLING_A = 0.15
DOSE_E_PER_A2 = 3e4
# (dx, dy) Å of each frame's content: the drift between exposures of a real series, for the widget to align
DRIFT_A = ((0.0, 0.0), (1.2, -0.8), (-1.5, 1.0))


def simulated_series(seed: int):
    """A MoS2 flake with S vacancies on vacuum, frames drifted by DRIFT_A, noisy at DOSE_E_PER_A2 (0 phonons:
    fast); returns the images and the true columns."""
    from hrtemnet.registration import apply_shifts
    from hrtemnet.simulation import OpticsParams, SimulationConfig, apply_dose_noise, simulate_focal_series
    from hrtemnet.structures import StructureConfig, random_structure

    config = StructureConfig(sheet_probability=0.0, graphene_probability=0.0, single_s_vacancy_rate_range=(0.08, 0.10),
                             flake_radius_A_range=(15.0, 17.0))
    for name, clean in (("carbon_probability", 0.0), ("tilt_rad_range", (0.0, 0.0))):
        if hasattr(config, name):  # the realism options, where present: no contamination, no tilt
            setattr(config, name, clean)
    rng = np.random.default_rng(seed)
    sample = random_structure(rng, config)
    images = simulate_focal_series(sample.atoms, OpticsParams(), SimulationConfig(sampling_A=SAMPLING_A,
                                                                                 num_phonons=0))
    drifted = apply_shifts(images, -np.asarray(DRIFT_A), SAMPLING_A)  # apply_shifts moves frames back
    return apply_dose_noise(drifted, DOSE_E_PER_A2, SAMPLING_A, rng), sample.columns


def write_tiff(path: Path, images: np.ndarray) -> Path:
    """A 3-image TIFF calibrated the ImageJ way (pixels per nm), which hrtemnet.io reads."""
    import tifffile

    tifffile.imwrite(path, images, imagej=True, resolution=(1 / (SAMPLING_A / 10),) * 2, metadata={"unit": "nm"})
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("napari_screenshot.png"))
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()

    import napari
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    with tempfile.TemporaryDirectory() as folder:
        images, truth = simulated_series(args.seed)
        path = write_tiff(Path(folder) / "mos2_series.tif", images)
        viewer = napari.Viewer(title="hrtemnet in napari")
        viewer.window.resize(1280, 760)
        viewer.open(str(path), plugin="hrtemnet")
    _, widget = viewer.window.add_plugin_dock_widget("hrtemnet", "Find columns")
    widget.find_columns()
    deadline = time.monotonic() + 300
    while widget.worker is not None and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.05)
    for _ in range(20):  # let the dock lay out its new text
        QApplication.processEvents()
        time.sleep(0.05)
    if "columns" not in viewer.layers:
        raise SystemExit(f"no columns: {widget.status.value}")
    viewer.canvas.overlays.scale_bar.visible = True  # in Å: the reader gives the layer its units
    viewer.reset_view()
    from hrtemnet.metrics import score_image
    from hrtemnet.napari import layer_table

    table = layer_table(viewer.layers["columns"])
    found = Columns(table[["x_A", "y_A"]].to_numpy(), [CLASS_NAMES.index(c) for c in table["class"]])
    height, width = images.shape[-2:]
    score = score_image(truth, found, (width * SAMPLING_A, height * SAMPLING_A))
    print(widget.summary.value.replace("\n", " "))
    measured = ", ".join(f"({dx:+.2f}, {dy:+.2f})" for dx, dy in table.attrs["shifts_A"][1:])
    print(f"drift put in {DRIFT_A[1:]} Å, measured {measured} Å; "
          f"F1 {score.f1:.4f} against the true columns (position F1 {score.position_f1:.4f})")
    shot = viewer.screenshot(canvas_only=False, flash=False)
    # 256 colours keep a UI screenshot's look at a third of the size; max-coverage keeps the rare class colours
    Image.fromarray(shot[..., :3]).quantize(256, method=Image.Quantize.MAXCOVERAGE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    viewer.close()


if __name__ == "__main__":
    main()
