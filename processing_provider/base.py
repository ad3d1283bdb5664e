"""Base class of every algorithm: ids, groups, help, dependency check and error mapping."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingFeedback
from qgis.PyQt.QtCore import QCoreApplication

from core import deps, native_libs

from .environment import require
from .errors import core_errors_as_processing
from .feedback import ProcessingFeedbackAdapter


def plain_outputs(results: dict[str, Any]) -> dict[str, Any]:
    """Numpy scalars as Python numbers: QVariant drops them, and qgis_process then prints empty values."""
    return {k: v.item() if hasattr(v, "item") and getattr(v, "shape", None) == () else v for k, v in results.items()}


def report_native_libraries(feedback: QgsProcessingFeedback) -> None:
    """Name the GDAL/GEOS versions in use (for bug reports) and warn when a wheel runs on QGIS's own copy."""
    feedback.pushInfo(f"Native libraries: {native_libs.describe()}")
    for problem in native_libs.mixed_libraries():
        feedback.pushWarning(problem)


class RoadLandcoverAlgorithm(QgsProcessingAlgorithm):
    """Subclasses set the class attributes and implement :meth:`initAlgorithm` and :meth:`run_core`.

    (Not ``run``: that name belongs to ``QgsProcessingAlgorithm``.)
    """

    ALG_ID = ""
    DISPLAY_NAME = ""
    GROUP = "Utilities"
    GROUP_ID = "utilities"
    HELP = ""
    #: Import names of the packages this algorithm needs (checked before it runs).
    REQUIRES: tuple[str, ...] = deps.GEO_STACK

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("RoadLandcover", text)

    def name(self) -> str:
        return self.ALG_ID

    def displayName(self) -> str:
        return self.tr(self.DISPLAY_NAME)

    def group(self) -> str:
        return self.tr(self.GROUP)

    def groupId(self) -> str:
        return self.GROUP_ID

    def shortHelpString(self) -> str:
        return self.tr(self.HELP)

    def createInstance(self) -> RoadLandcoverAlgorithm:
        return type(self)()

    def processAlgorithm(
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        with core_errors_as_processing(feedback, self.DISPLAY_NAME):
            require(self.REQUIRES, self.DISPLAY_NAME)
            report_native_libraries(feedback)
            results = self.run_core(parameters, context, feedback, ProcessingFeedbackAdapter(feedback))
        return plain_outputs(results)

    def run_core(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
        core_feedback: ProcessingFeedbackAdapter,
    ) -> dict[str, Any]:
        """Translate parameters, make the one core call, return the results dict."""
        raise NotImplementedError
