"""A QgsTask that trains in the worker process: progress bar, cancel, and the final metrics.

The task starts ``python -m core.train_worker ... --progress-json`` (through :func:`core.train_worker.run_worker`)
on a QGIS background thread, forwards the worker's progress to the task's progress bar, and emits
``epochEnded`` for each row of the per-epoch table and ``logLine`` for every message; the training panel
(:mod:`road_landcover_plugin.training_panel`) connects to both to draw its table and live curves. After the
task ends, :meth:`TrainingTask.per_class_rows` and :meth:`TrainingTask.preview_png` give the final per-class
metrics and the image | truth | prediction picture the trainer wrote into its report folder. Canceling the task asks the worker to stop after the current batch; the best epoch so
far is still saved as the model package. Any failure of the worker, including a crash, ends the task
with an error message; it never takes QGIS down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

LOG_TAG = "Road & Land Cover"


class _TaskFeedback:
    """core.progress.Feedback on top of a QgsTask (progress, cancel, log lines, epoch rows)."""

    def __init__(self, task: TrainingTask) -> None:
        self.task = task

    def set_progress(self, percent: float) -> None:
        self.task.setProgress(float(percent))

    def is_canceled(self) -> bool:
        return bool(self.task.isCanceled())

    def info(self, message: str) -> None:
        self.task.log.append(message)
        QgsMessageLog.logMessage(message, LOG_TAG, Qgis.Info)
        self.task.logLine.emit(message)

    def epoch(self, row: dict[str, Any]) -> None:
        """The worker's structured per-epoch row (core.progress.report_epoch), as the table's strings."""
        text = {k: str(v) for k, v in row.items()}
        self.task.rows.append(text)
        self.task.epochEnded.emit(text)

    def warning(self, message: str) -> None:
        self.task.log.append("warning: " + message)
        QgsMessageLog.logMessage(message, LOG_TAG, Qgis.Warning)
        self.task.logLine.emit("warning: " + message)


class TrainingTask(QgsTask):
    """Train a model in the background. Results in :attr:`result` (the worker's ``done`` event) or :attr:`error`.

    Args:
        folder: training folder.
        output: model package to write.
        config: a :class:`core.training.TrainConfig`.
        report_dir: report folder (default beside the package).
        python: interpreter for the worker (default: one that has torch, else QGIS's Python).
    """

    epochEnded = pyqtSignal(dict)  # noqa: N815 (Qt signal naming)
    finishedWithMessage = pyqtSignal(bool, str)  # noqa: N815
    logLine = pyqtSignal(str)  # noqa: N815

    def __init__(self, folder: str | Path, output: str | Path, config: Any, report_dir: str | Path | None = None,
                 python: str | None = None, description: str = "Training deep learning model") -> None:
        super().__init__(description, QgsTask.CanCancel)
        self.folder = Path(folder)
        self.output = Path(output)
        self.config = config
        self.report_dir = report_dir
        self.python = python
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.log: list[str] = []
        self.rows: list[dict[str, str]] = []

    def run(self) -> bool:
        from core.errors import CanceledError, RoadLandcoverError
        from core.train_worker import find_training_python, run_worker

        python = self.python
        if python is None:
            from processing_provider.environment import qgis_python

            python = find_training_python() or qgis_python()
        try:
            self.result = run_worker(self.folder, self.output, self.config, _TaskFeedback(self),
                                     report_dir=self.report_dir, python=python)
            return True
        except CanceledError as exc:
            self.error = str(exc)
        except RoadLandcoverError as exc:
            self.error = str(exc)
        except Exception as exc:  # a task must never raise into QGIS
            self.error = f"{type(exc).__name__}: {exc}"
        return False

    def report_folder(self) -> Path | None:
        """The report folder (history.csv, metrics, predictions.png), once training has produced one."""
        if self.result is not None and self.result.get("report_dir"):
            return Path(str(self.result["report_dir"]))
        if self.report_dir is not None:
            return Path(self.report_dir)
        return None

    def preview_png(self) -> Path | None:
        """The image | truth | prediction picture of a few validation chips (written when training ends)."""
        folder = self.report_folder()
        path = folder / "predictions.png" if folder is not None else None
        return path if path is not None and path.is_file() else None

    def per_class_rows(self) -> list[dict[str, str]]:
        """Final per-class metrics: value, name, precision, recall, f1, iou, support_px (strings, as in the CSV)."""
        import csv

        folder = self.report_folder()
        table = folder / "metrics_per_class.csv" if folder is not None else None
        if table is not None and table.is_file():
            with open(table, newline="", encoding="utf-8") as f:
                return [dict(row) for row in csv.DictReader(f)]
        per_class = (self.result or {}).get("metrics", {}).get("per_class", {})
        return [{"value": str(v), "name": "", **{k: f"{float(m[k]):.4f}" for k in ("precision", "recall", "f1", "iou")},
                 "support_px": str(m.get("support_px", ""))} for v, m in per_class.items()]

    def summary(self) -> str:
        """The message shown when the task ends."""
        if self.result is None:
            return f"Training failed: {self.error}" if not self.isCanceled() else f"Training canceled: {self.error}"
        r = self.result
        ended = {"completed": "finished", "early_stopping": "stopped early", "canceled": "was canceled"}.get(
            str(r.get("stopped")), str(r.get("stopped")))
        metrics = r.get("metrics", {})
        parts = [f"{k} {metrics[k]:.3f}" for k in ("miou", "road_iou", "accuracy") if k in metrics]
        return (f"Training {ended} after {r.get('epochs_run')} epochs on {r.get('device')}: best epoch "
                f"{r.get('best_epoch')}, {', '.join(parts)}. Model: {r.get('package')}")

    def finished(self, result: bool) -> None:
        message = self.summary()
        QgsMessageLog.logMessage(message, LOG_TAG, Qgis.Success if result else Qgis.Critical)
        self.finishedWithMessage.emit(bool(result), message)
