"""The "Find columns" dock widget: settings, prediction in a worker thread, class edits, CSV export.

A thin layer over `hrtemnet.napari._columns` (which notebooks and tests use directly): the network
runs in a `thread_worker`, so the viewer stays responsive, with napari's activity progress bar and
a busy bar in the widget; errors a user can fix are shown as one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
)

from hrtemnet.columns import CLASS_NAMES
from hrtemnet.errors import UserError
from hrtemnet.napari import _columns

MODEL_FILE_CHOICE = "file"  # after the shipped models' names (hrtemnet.models.SHIPPED_MODEL_NAMES)
PIXEL_SIZE_CHOICES = ("from file", "given", "auto")


class ColumnsWidget(Container):
    """Find, correct and export the atomic columns of the focal series in an image layer."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self.worker = None
        self.image = ComboBox(label="focal series", choices=self._image_layer_names)
        from hrtemnet.models import SHIPPED_MODEL_NAMES  # here: importing torch waits until the widget opens

        self.model = ComboBox(label="model", choices=(*SHIPPED_MODEL_NAMES, MODEL_FILE_CHOICE), value="msd")
        self.model_file = FileEdit(label="model file", mode="r", filter="*.pt", enabled=False)
        self.pixel_size = ComboBox(label="pixel size", choices=PIXEL_SIZE_CHOICES, value="from file")
        self.sampling_A = FloatSpinBox(label="Å/px", value=0.15, min=0.01, max=2.0, step=0.005, enabled=False)
        self.align = CheckBox(text="align frames to frame 1", value=True)
        self.border_A = FloatSpinBox(label="border (Å)", value=2.0, min=0.0, max=50.0, step=0.5,
                                     tooltip="columns this near the edges are left out of the summary")
        self.defocus = LineEdit(label="defocus (Å)", value="",
                                tooltip="nominal defocus of the three frames, e.g. -40,10,60 (positive = underfocus); "
                                        "unet-wide and models trained with --defocus-input need it; msd and unet "
                                        "do not use it")
        self.flip_average = CheckBox(text="average over the 8 flips/rotations (slower, fewer errors)", value=False)
        self.defocus_search_A = FloatSpinBox(
            label="defocus search (Å)", value=0.0, min=0.0, max=300.0, step=20.0,
            tooltip="with a defocus: when the columns score low, also try the values shifted by up to this much "
                    "(steps of 20 Å) and keep a clearly more confident shift; e.g. 60 when the absolute defocus "
                    "is known poorly")
        self.sublattice_vote = CheckBox(text="sublattice vote (single-phase 2H samples: Mo vs S2 per patch)",
                                        value=False)
        self.find = PushButton(text="Find columns")
        self.busy = ProgressBar(min=0, max=0, visible=False)  # min = max: an indeterminate (busy) bar
        self.summary = Label(value="no columns yet")
        self.new_class = ComboBox(label="class", choices=CLASS_NAMES, value="S")
        self.set_class = PushButton(text="Set class of selected points")
        self.export_path = FileEdit(label="CSV", mode="w", filter="*.csv")
        self.export = PushButton(text="Export")
        self.status = Label(value="")
        super().__init__(widgets=[
            self.image, self.model, self.model_file, self.pixel_size, self.sampling_A, self.align,
            self.border_A, self.defocus, self.defocus_search_A, self.flip_average, self.sublattice_vote, self.find,
            self.busy, self.summary, self.new_class,
            self.set_class, self.export_path, self.export, self.status,
        ])
        self.model.changed.connect(lambda value: setattr(self.model_file, "enabled", value == MODEL_FILE_CHOICE))
        self.pixel_size.changed.connect(lambda value: setattr(self.sampling_A, "enabled", value == "given"))
        self.find.changed.connect(self.find_columns)
        self.set_class.changed.connect(self.set_selected_class)
        self.export.changed.connect(self.export_columns)
        self.viewer.layers.events.inserted.connect(self._layers_changed)
        self.viewer.layers.events.removed.connect(self._layers_changed)
        self.status.native.setWordWrap(True)  # long messages wrap instead of widening the dock
        self._layers_changed()

    # ---- settings --------------------------------------------------------------------------------------

    def _image_layer_names(self, *_) -> list[str]:
        import napari

        return [layer.name for layer in self.viewer.layers if isinstance(layer, napari.layers.Image)]

    def _layers_changed(self, *_) -> None:
        self.image.reset_choices()
        layer = self.columns_layer()
        if layer is not None:
            self.show_summary()

    def model_spec(self) -> str:
        if self.model.value != MODEL_FILE_CHOICE:
            return self.model.value
        path = Path(self.model_file.value)
        if not path.is_file():
            raise UserError("choose a model file (.pt from `hrtemnet train`) or a shipped model")
        return str(path)

    def defocus_spec(self) -> tuple[float, ...] | None:
        from hrtemnet.io import check_defocus

        text = self.defocus.value.strip()
        return check_defocus(text, "defocus") if text else None

    def sampling_spec(self) -> float | str | None:
        return {"from file": None, "given": float(self.sampling_A.value), "auto": "auto"}[self.pixel_size.value]

    def columns_layer(self):
        layers = self.viewer.layers
        return layers[_columns.COLUMNS_LAYER_NAME] if _columns.COLUMNS_LAYER_NAME in layers else None

    # ---- actions ---------------------------------------------------------------------------------------

    def find_columns(self, *_) -> None:
        """Start the prediction in a worker thread; the result arrives in `_show_prediction`."""
        from napari.qt.threading import thread_worker

        try:
            if not self.image.value:
                raise UserError("open a focal series first (File > Open, or drag a file onto the viewer)")
            image = self.viewer.layers[self.image.value]
            sampling, source = _columns.series_sampling_A(image, self.sampling_spec())
            model, align, border_A = self.model_spec(), bool(self.align.value), float(self.border_A.value)
            defocus_A = self.defocus_spec()
        except UserError as error:
            self._report(error)
            return
        images = np.asarray(image.data)
        # ignore_errors: otherwise superqt also re-raises the worker's error in the main thread, which aborts Qt;
        # `_report` shows it instead (e.g. unet-wide chosen without a defocus)
        worker = thread_worker(_columns.predict_table, progress={"total": 0, "desc": "Finding columns"},
                               ignore_errors=True)(
            images, sampling, model, align, border_A, source, defocus_A, bool(self.flip_average.value),
            bool(self.sublattice_vote.value), float(self.defocus_search_A.value))
        worker.returned.connect(lambda table: self._show_prediction(image, table))
        worker.errored.connect(self._report)
        worker.finished.connect(self._prediction_finished)
        self.find.enabled, self.busy.visible = False, True
        self.status.value = f"finding columns in {image.name} with {model} ..."
        self.worker = worker
        worker.start()

    def _show_prediction(self, image, table) -> None:
        from napari.utils.notifications import show_warning

        layer = _columns.show_columns(self.viewer, image, table)
        layer.events.data.connect(lambda *_: self.show_summary())
        layer.events.features.connect(lambda *_: self.show_summary())
        self.show_summary()
        attrs = table.attrs
        lines = [f"{len(layer.data)} columns at {attrs['sampling_A']:.4f} Å/px ({attrs['sampling_source']})"]
        if attrs["aligned"]:
            shifts = attrs["shifts_A"][1:]
            lines.append("frame shifts " + ", ".join(f"({dx:+.2f}, {dy:+.2f})" for dx, dy in shifts) + " Å")
        lines.append("select points: drag to move, Del deletes,")
        lines.append("class: " + ", ".join(f"{key} {name}" for name, key in _columns.CLASS_KEYS.items()))
        for message in attrs["warnings"]:
            lines.append(f"warning: {message}")
            show_warning(f"hrtemnet: {message}")
        self.status.value = "\n".join(lines)

    def _prediction_finished(self) -> None:
        self.find.enabled, self.busy.visible = True, False
        self.worker = None

    def show_summary(self) -> None:
        layer = self.columns_layer()
        # one clause a line: a narrow dock shows it whole
        text = _columns.summary_line(layer).replace(": ", ":\n", 1).replace("; ", "\n") if layer else "no columns yet"
        self.summary.value = text

    def set_selected_class(self, *_) -> None:
        layer = self.columns_layer()
        if layer is None:
            self._report(UserError("no `columns` layer yet: press Find columns first"))
            return
        changed = _columns.set_class(layer, self.new_class.value)
        self.show_summary()
        self.status.value = f"{changed} point(s) set to {self.new_class.value}" if changed else \
            "select points first (select mode, click or drag a box)"

    def export_columns(self, *_) -> None:
        layer = self.columns_layer()
        try:
            if layer is None:
                raise UserError("no `columns` layer to export: press Find columns first")
            path = Path(self.export_path.value)
            if not path.name or path.is_dir():
                raise UserError("choose a CSV file name to export to")
            written = _columns.export_columns(layer, path)
        except (UserError, OSError) as error:
            self._report(error)
            return
        self.status.value = f"wrote {len(layer.data)} columns to {written}"

    def _report(self, error: Exception) -> None:
        """One line for errors a user can fix; anything else also goes to napari's notifications."""
        self.status.value = f"error: {error}"
        if not isinstance(error, UserError):
            from napari.utils.notifications import show_error

            show_error(f"hrtemnet: {type(error).__name__}: {error}")
