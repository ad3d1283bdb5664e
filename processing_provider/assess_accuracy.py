"""``roadlandcover:assessaccuracy``: a classified raster against a reference raster or polygons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsRasterLayer,
    QgsVectorLayer,
)

from .base import RoadLandcoverAlgorithm
from .feedback import ProcessingFeedbackAdapter


class AssessAccuracyAlgorithm(RoadLandcoverAlgorithm):
    ALG_ID = "assessaccuracy"
    DISPLAY_NAME = "Assess classification accuracy"
    GROUP = "Deep learning"
    GROUP_ID = "deeplearning"
    HELP = (
        "Compares a classified raster with a reference: another classified raster (resampled nearest-neighbour "
        "onto the classified grid when it differs) or polygons with a class field (rasterized on the classified "
        "grid, pixel centres; reprojected when their CRS differs).\n\n"
        "Reports, per class, precision, recall, F1 and IoU (from the counts of true positives, false positives and "
        "false negatives over all evaluated pixels), and overall accuracy, Cohen's kappa and mean IoU. Pixels where "
        "the reference is nodata or one of the ignored classes, where no polygon lies, or where the classified "
        "raster is nodata are not evaluated; a prediction of a class outside the evaluated ones counts as an error.\n\n"
        "Ignored classes: comma-separated class values (for example 0 for unlabelled). Outputs: the JSON report "
        "(keys overall_accuracy, kappa, miou, per_class, confusion_matrix), a per-class CSV and a confusion-matrix "
        "CSV beside it, and an HTML summary."
    )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("CLASSIFIED", self.tr("Classified raster")))
        self.addParameter(QgsProcessingParameterMapLayer("REFERENCE", self.tr("Reference (raster or polygons)")))
        self.addParameter(QgsProcessingParameterField(
            "CLASS_FIELD", self.tr("Class field (polygons: class values or class names)"),
            parentLayerParameterName="REFERENCE", optional=True, type=QgsProcessingParameterField.Any))
        self.addParameter(QgsProcessingParameterString(
            "IGNORE_CLASSES", self.tr("Ignored class values (comma-separated)"), "", optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_REPORT", self.tr("Accuracy report"), "JSON files (*.json)"))
        self.addOutput(QgsProcessingOutputFile("OUTPUT_HTML", self.tr("HTML summary")))
        self.addOutput(QgsProcessingOutputFile("OUTPUT_CSV", self.tr("Per-class table (CSV)")))
        for key, name in (("OVERALL_ACCURACY", "Overall accuracy"), ("KAPPA", "Kappa"), ("MIOU", "Mean IoU")):
            self.addOutput(QgsProcessingOutputNumber(key, self.tr(name)))

    def run_core(self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                 core_feedback: ProcessingFeedbackAdapter) -> dict[str, Any]:
        from core.accuracy import AccuracyConfig, assess_accuracy
        from core.errors import ConfigError

        classified = self.parameterAsRasterLayer(parameters, "CLASSIFIED", context)
        reference = self.parameterAsLayer(parameters, "REFERENCE", context)
        if classified is None or reference is None:
            raise ConfigError("choose a classified raster and a reference layer")
        layer_name = None
        ref_source = reference.source().split("|")[0]
        if isinstance(reference, QgsVectorLayer):
            parts = dict(p.split("=", 1) for p in reference.source().split("|")[1:] if "=" in p)
            layer_name = parts.get("layername")
        elif not isinstance(reference, QgsRasterLayer):
            raise ConfigError(f"the reference {reference.name()} must be a raster or a polygon layer")
        text = self.parameterAsString(parameters, "IGNORE_CLASSES", context) or ""
        try:
            ignore = tuple(int(v) for v in text.replace(";", ",").split(",") if v.strip())
        except ValueError as exc:
            raise ConfigError(f"ignored classes must be integers separated by commas, got {text!r}") from exc
        field = self.parameterAsString(parameters, "CLASS_FIELD", context) or None
        report = Path(self.parameterAsFileOutput(parameters, "OUTPUT_REPORT", context))
        result = assess_accuracy(AccuracyConfig(
            Path(classified.source().split("|")[0]), Path(ref_source), report, field, layer_name, ignore), core_feedback)
        feedback.pushInfo(f"overall accuracy {result['overall_accuracy']}, kappa {result['kappa']}, "
                          f"mIoU {result['miou']}")
        return {"OUTPUT_REPORT": str(result.report), "OUTPUT_HTML": str(result.html), "OUTPUT_CSV": str(result.csv),
                "OVERALL_ACCURACY": result["overall_accuracy"], "KAPPA": result["kappa"], "MIOU": result["miou"]}
