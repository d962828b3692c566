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

FIELD_A = 38.4
SAMPLING_A = 0.15
DOSE_E_PER_A2 = 3e4


def simulated_series(seed: int) -> np.ndarray:
    """A hexagonal MoS2 flake with S vacancies on vacuum, noisy at DOSE_E_PER_A2 (0 phonons: fast)."""
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
    return apply_dose_noise(images, DOSE_E_PER_A2, SAMPLING_A, rng)


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
        path = write_tiff(Path(folder) / "mos2_series.tif", simulated_series(args.seed))
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
    print(widget.summary.value)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    # 256 colours keep a UI screenshot's look at a third of the size; max-coverage keeps the rare class colours
    Image.fromarray(shot[..., :3]).quantize(256, method=Image.Quantize.MAXCOVERAGE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    viewer.close()


if __name__ == "__main__":
    main()
