"""Adapter from ``QgsProcessingFeedback`` to core's small progress/cancel protocol."""

from __future__ import annotations

from qgis.core import QgsProcessingFeedback


class ProcessingFeedbackAdapter:
    """Implements :class:`core.progress.Feedback` on top of a QGIS feedback object."""

    def __init__(self, feedback: QgsProcessingFeedback | None) -> None:
        self._feedback = feedback if feedback is not None else QgsProcessingFeedback()

    def set_progress(self, percent: float) -> None:
        self._feedback.setProgress(float(percent))

    def is_canceled(self) -> bool:
        return bool(self._feedback.isCanceled())

    def info(self, message: str) -> None:
        self._feedback.pushInfo(message)

    def warning(self, message: str) -> None:
        self._feedback.pushWarning(message)
