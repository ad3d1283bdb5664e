"""The training dock: choose a training folder, train in the background, watch the table and live curves.

Training runs as a :class:`~road_landcover_plugin.training_task.TrainingTask` in QGIS's task manager (the
task itself waits on a worker process), so QGIS stays responsive; the task's signals come from its
background thread and reach this panel through queued connections, i.e. on the main thread. The chart is
drawn with QPainter in a small widget, so the plugin needs no plotting library.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import QPointF, QRectF, Qt
from qgis.PyQt.QtGui import QColor, QFont, QPainter, QPainterPath, QPen, QPixmap
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from .training_task import TrainingTask

#: Columns of the per-epoch table (keys of the trainer's epoch rows).
EPOCH_COLUMNS = ("epoch", "train_loss", "valid_loss", "accuracy", "miou", "road_iou", "seconds")
CLASS_COLUMNS = ("value", "name", "precision", "recall", "f1", "iou", "support_px")
SERIES = {  # key: (colour, axis) - losses on the left axis, metrics (0-1) on the right
    "train_loss": ("#1f77b4", "loss"), "valid_loss": ("#ff7f0e", "loss"),
    "miou": ("#2ca02c", "metric"), "road_iou": ("#d62728", "metric"), "accuracy": ("#9467bd", "metric"),
}


class TrainingChart(QWidget):
    """Loss (left axis) and metric (right axis, 0-1) per epoch, redrawn as each epoch ends."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[dict[str, float]] = []
        self.setMinimumSize(320, 180)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)

    def set_rows(self, rows: list[dict[str, float]]) -> None:
        self.rows = list(rows)
        self.update()

    def add_row(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        self.update()

    def series(self) -> dict[str, list[tuple[float, float]]]:
        """(epoch, value) points per drawn key: what the chart shows (tests check it)."""
        out: dict[str, list[tuple[float, float]]] = {}
        for key in SERIES:
            pts = [(r["epoch"], r[key]) for r in self.rows if key in r and math.isfinite(r[key])]
            if pts:
                out[key] = pts
        return out

    def paintEvent(self, _event: Any) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        p.fillRect(self.rect(), QColor("white"))
        font = QFont(p.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        p.setFont(font)
        fm = p.fontMetrics()
        left, right, top, bottom = fm.horizontalAdvance("0.000") + 10, fm.horizontalAdvance("0.00") + 12, 22, fm.height() + 14
        plot = QRectF(left, top, max(10, self.width() - left - right), max(10, self.height() - top - bottom))
        p.setPen(QPen(QColor("#888888"), 1))
        p.drawRect(plot)
        data = self.series()
        if not data:
            p.setPen(QColor("#666666"))
            p.drawText(plot, Qt.AlignCenter, "the curves appear here after the first epoch")
            p.end()
            return
        epochs = [e for pts in data.values() for e, _ in pts]
        x0, x1 = min(epochs), max(epochs)
        if x1 == x0:
            x0, x1 = x0 - 0.5, x1 + 0.5
        losses = [v for k, pts in data.items() if SERIES[k][1] == "loss" for _, v in pts]
        lmax = max(losses) if losses and max(losses) > 0 else 1.0
        if len(losses) >= 3:  # one diverging validation epoch must not flatten every other point: clip it
            typical = sorted(losses)[len(losses) // 2]
            lmax = min(lmax, 4 * typical) if typical > 0 else lmax
        lmax *= 1.05
        # axis labels and grid
        p.setPen(QColor("#444444"))
        for i in range(5):
            frac = i / 4
            y = plot.bottom() - frac * plot.height()
            p.setPen(QPen(QColor("#eeeeee"), 1))
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            p.setPen(QColor("#1f77b4"))
            p.drawText(QRectF(0, y - fm.height() / 2, left - 4, fm.height()), Qt.AlignRight | Qt.AlignVCenter,
                       f"{lmax * frac:.3g}")
            p.setPen(QColor("#2ca02c"))
            p.drawText(QRectF(plot.right() + 4, y - fm.height() / 2, right, fm.height()), Qt.AlignLeft | Qt.AlignVCenter,
                       f"{frac:.2f}")
        p.setPen(QColor("#444444"))
        step = max(1, int(math.ceil((x1 - x0) / 8)))
        e = int(math.ceil(x0))
        while e <= x1:
            x = plot.left() + (e - x0) / (x1 - x0) * plot.width()
            p.drawText(QRectF(x - 20, plot.bottom() + 2, 40, fm.height()), Qt.AlignHCenter | Qt.AlignTop, str(e))
            e += step
        p.drawText(QRectF(plot.left(), plot.bottom() + fm.height(), plot.width(), fm.height() + 4), Qt.AlignHCenter,
                   "epoch")
        # curves
        legend_x = plot.left() + 4
        for key, pts in data.items():
            colour, axis = SERIES[key]
            top_value = lmax if axis == "loss" else 1.0

            def to_xy(pt: tuple[float, float], top_value: float = top_value) -> QPointF:
                fx = (pt[0] - x0) / (x1 - x0)
                fy = min(max(pt[1] / top_value, 0.0), 1.0)
                return QPointF(plot.left() + fx * plot.width(), plot.bottom() - fy * plot.height())

            p.setPen(QPen(QColor(colour), 2, Qt.DashLine if axis == "metric" else Qt.SolidLine))
            path = QPainterPath(to_xy(pts[0]))
            for pt in pts[1:]:
                path.lineTo(to_xy(pt))
            p.drawPath(path)
            p.setBrush(QColor(colour))
            for pt in pts:
                p.drawEllipse(to_xy(pt), 2.5, 2.5)
            p.setBrush(Qt.NoBrush)
            p.drawText(QPointF(legend_x, top - 6), key)
            legend_x += fm.horizontalAdvance(key) + 14
        p.end()


def _number(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class TrainingPanel(QDockWidget):
    """Dock widget: parameters, Start/Cancel, progress, per-epoch table, live chart, final metrics, preview, log."""

    def __init__(self, iface: Any = None, parent: QWidget | None = None) -> None:
        super().__init__("Road & Land Cover – training", parent)
        self.setObjectName("RoadLandcoverTrainingPanel")
        self.iface = iface
        self.task: TrainingTask | None = None
        self.python: str | None = None  # interpreter for the worker (None: the task finds one)
        body = QWidget()
        layout = QVBoxLayout(body)
        form = QFormLayout()
        self.folder = QgsFileWidget()
        self.folder.setStorageMode(QgsFileWidget.GetDirectory)
        self.folder.setToolTip("Training folder written by 'Export training data' (holds dataset.json)")
        form.addRow("Training folder", self.folder)
        self.output = QgsFileWidget()
        self.output.setStorageMode(QgsFileWidget.SaveFile)
        self.output.setFilter("Model package (*.zip)")
        form.addRow("Model package", self.output)
        self.model = QComboBox()
        self.model.addItems(["unet", "linknet", "multitask_road"])
        self.encoder = QComboBox()
        self.encoder.addItems(["resnet18", "resnet34", "resnet50"])
        self.encoder.setCurrentText("resnet34")
        row = QHBoxLayout()
        row.addWidget(self.model)
        row.addWidget(self.encoder)
        form.addRow("Model / encoder", row)
        self.base_width = self._spin(4, 256, 64, 4, "64 = standard ResNet; 8-16 for quick CPU trials")
        self.epochs = self._spin(1, 10000, 20, 1, "maximum number of epochs (early stopping may end sooner)")
        self.batch = self._spin(1, 4096, 8, 1, "chips per step; halved automatically on CUDA out-of-memory")
        row = QHBoxLayout()
        for label, widget in (("width", self.base_width), ("epochs", self.epochs), ("batch", self.batch)):
            row.addWidget(QLabel(label))
            row.addWidget(widget)
        form.addRow("", row)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(0.0, 1.0)
        self.lr.setSingleStep(0.0005)
        self.lr.setValue(0.0)
        self.lr.setSpecialValueText("find it (learning-rate finder)")
        self.patience = self._spin(0, 1000, 5, 1, "epochs without improvement before stopping (0 = never)")
        row = QHBoxLayout()
        row.addWidget(self.lr, 2)
        row.addWidget(QLabel("patience"))
        row.addWidget(self.patience)
        form.addRow("Learning rate", row)
        self.device = QComboBox()
        self.device.addItems(["auto", "cuda", "mps", "cpu"])
        form.addRow("Device", self.device)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Train in background")
        self.start_button.setObjectName("start")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        layout.addWidget(self.progress)
        self.status = QLabel("Choose a training folder and a model package, then Train.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.status)
        self.tabs = QTabWidget()
        split = QSplitter(Qt.Vertical)
        self.chart = TrainingChart()
        self.table = QTableWidget(0, len(EPOCH_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(EPOCH_COLUMNS))
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.verticalHeader().setVisible(False)
        split.addWidget(self.chart)
        split.addWidget(self.table)
        split.setSizes([220, 160])
        self.tabs.addTab(split, "Epochs")
        self.classes = QTableWidget(0, len(CLASS_COLUMNS))
        self.classes.setHorizontalHeaderLabels(list(CLASS_COLUMNS))
        self.classes.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.classes.verticalHeader().setVisible(False)
        self.tabs.addTab(self.classes, "Per-class metrics")
        self.preview = QLabel("image | truth | prediction of validation chips, when training ends")
        self.preview.setAlignment(Qt.AlignCenter)
        scroll = QScrollArea()
        scroll.setWidget(self.preview)
        scroll.setWidgetResizable(True)
        self.tabs.addTab(scroll, "Preview")
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.tabs.addTab(self.log, "Log")
        layout.addWidget(self.tabs, 1)
        self.setWidget(body)
        self.rows: list[dict[str, float]] = []
        self.start_button.clicked.connect(self.start_from_form)
        self.cancel_button.clicked.connect(self.cancel)

    @staticmethod
    def _spin(lo: int, hi: int, value: int, step: int, tip: str) -> QSpinBox:
        s = QSpinBox()
        s.setRange(lo, hi)
        s.setSingleStep(step)
        s.setValue(value)
        s.setToolTip(tip)
        return s

    # ---------------------------------------------------------------- running
    def config(self) -> Any:
        from core.training import TrainConfig

        return TrainConfig(model=self.model.currentText(), encoder=self.encoder.currentText(),
                           base_width=self.base_width.value(), epochs=self.epochs.value(),
                           batch_size=self.batch.value(), learning_rate=self.lr.value(),
                           patience=self.patience.value(), device=self.device.currentText())

    def start_from_form(self) -> None:
        folder, output = self.folder.filePath().strip(), self.output.filePath().strip()
        if not folder or not output:
            self.status.setText("Choose the training folder and where to save the model package first.")
            return
        if not output.lower().endswith(".zip"):
            output += ".zip"
        try:
            config = self.config()
        except ValueError as exc:  # core's ConfigError: say what to change
            self.status.setText(str(exc))
            return
        self.start(folder, output, config)

    def start(self, folder: str | Path, output: str | Path, config: Any, report_dir: str | Path | None = None) -> TrainingTask:
        """Start a training task in QGIS's task manager and follow it (returns the task)."""
        if self.task is not None:
            raise RuntimeError("a training is already running in this panel; cancel it or wait for it to finish")
        self.rows = []
        self.chart.set_rows([])
        self.table.setRowCount(0)
        self.classes.setRowCount(0)
        self.preview.setPixmap(QPixmap())
        self.preview.setText("image | truth | prediction of validation chips, when training ends")
        self.log.clear()
        self.progress.setValue(0)
        task = TrainingTask(folder, output, config, report_dir=report_dir, python=self.python,
                            description=f"Training {config.model} on {Path(folder).name}")
        queued = Qt.QueuedConnection  # the task emits from its background thread
        task.epochEnded.connect(self.on_epoch, queued)
        task.logLine.connect(self.on_log, queued)
        task.progressChanged.connect(self.on_progress, queued)
        # emitted from QgsTask.finished() on the main thread; direct, so the task is still alive in the slot
        task.finishedWithMessage.connect(self.on_finished, Qt.DirectConnection)
        self.task = task
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"Training {config.model} ({config.encoder}) on {folder} …")
        QgsApplication.taskManager().addTask(task)
        return task

    def cancel(self) -> None:
        if self.task is not None:
            self.status.setText("Canceling: the worker stops after the current batch and keeps the best epoch …")
            self.task.cancel()

    # ---------------------------------------------------------------- slots (main thread)
    def on_progress(self, percent: float) -> None:
        self.progress.setValue(int(round(percent)))

    def on_log(self, line: str) -> None:
        self.log.appendPlainText(line)

    def on_epoch(self, row: dict[str, str]) -> None:
        numbers = {k: v for k, v in ((k, _number(v)) for k, v in row.items()) if v is not None}
        self.rows.append(numbers)
        self.chart.add_row(numbers)
        r = self.table.rowCount()
        self.table.insertRow(r)
        for c, key in enumerate(EPOCH_COLUMNS):
            self.table.setItem(r, c, QTableWidgetItem(str(row.get(key, ""))))
        self.table.scrollToBottom()
        metric = "road_iou" if "road_iou" in row else "miou"
        self.status.setText(f"epoch {row.get('epoch')}: valid loss {row.get('valid_loss')}, "
                            f"{metric} {row.get(metric)} ({row.get('seconds')} s)")

    def on_finished(self, ok: bool, message: str) -> None:
        task = self.task
        self.task = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.status.setText(message)
        if ok:
            self.progress.setValue(100)
        if task is None:
            return
        rows = task.per_class_rows()
        self.classes.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, key in enumerate(CLASS_COLUMNS):
                self.classes.setItem(r, c, QTableWidgetItem(str(row.get(key, ""))))
        png = task.preview_png()
        if png is not None:
            pix = QPixmap(str(png))
            self.preview.setPixmap(pix)
            self.preview.setText("")
        if self.iface is not None:
            level = Qgis.Success if ok else Qgis.Warning
            self.iface.messageBar().pushMessage("Road & Land Cover", message, level=level, duration=10 if ok else 0)
