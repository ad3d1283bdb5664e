"""``roadlandcover:evaluateroads``: predicted road lines vs reference lines (APLS, relaxed P/R/F1, pixel IoU)."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterVectorLayer,
)

from .base import RoadLandcoverAlgorithm
from .feedback import ProcessingFeedbackAdapter


class EvaluateRoadsAlgorithm(RoadLandcoverAlgorithm):
    ALG_ID = "evaluateroads"
    DISPLAY_NAME = "Evaluate roads (APLS, relaxed precision/recall)"
    GROUP = "Roads"
    GROUP_ID = "roads"
    HELP = (
        "Compares predicted road centerlines with reference centerlines and writes a report: JSON "
        "(keys apls, apls_gt_to_prop, apls_prop_to_gt, relaxed_precision, relaxed_recall, relaxed_f1, "
        "pixel_iou, pixel_precision, pixel_recall, lengths and every parameter), a CSV with the same "
        "numbers, and a PNG with the reference (blue) and the proposal (orange) drawn over each other "
        "(white where they overlap).\n\n"
        "APLS (Average Path Length Similarity) measures whether the predicted network routes like the "
        "real one: for pairs of points on the reference, it compares the shortest-path length through "
        "the reference with the one through the prediction; a missing connection costs as much as a "
        "completely wrong path. It follows the SpaceNet-3 definition with the reference code's defaults, "
        "so scores compare with the literature: control points every 50 m along the roads, points "
        "snapped to the other network within 4 m, paths of at least 10 m, penalty min(1, |L - L'| / L), "
        "both directions combined by the harmonic mean. These settings are printed in every report; "
        "change them (advanced) only knowing that scores then no longer compare.\n\n"
        "Relaxed precision is the share of predicted road length within the tolerance (TOLERANCE_M, "
        "default 3 m) of a reference road; relaxed recall the share of reference length within the "
        "tolerance of a predicted road. Pixel IoU compares both networks drawn 4 m wide (SpaceNet's "
        "2 m half-width).\n\n"
        "Lengths are measured in metres: layers in degrees are projected to the UTM zone of the "
        "reference. Both layers should cover the same area (clip the reference to the predicted area)."
    )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterVectorLayer(
            "PREDICTED", self.tr("Predicted road lines"), [QgsProcessing.TypeVectorLine]))
        self.addParameter(QgsProcessingParameterVectorLayer(
            "REFERENCE", self.tr("Reference road lines (ground truth)"), [QgsProcessing.TypeVectorLine]))
        self.addParameter(QgsProcessingParameterNumber(
            "TOLERANCE_M", self.tr("Relaxed tolerance (metres)"), QgsProcessingParameterNumber.Double, 3.0, False,
            0.01))
        advanced = [
            QgsProcessingParameterNumber("CONTROL_POINT_SPACING_M", self.tr("APLS control point spacing (metres)"),
                                         QgsProcessingParameterNumber.Double, 50.0, False, 1.0),
            QgsProcessingParameterNumber("SNAP_DISTANCE_M", self.tr("APLS node snapping distance (metres)"),
                                         QgsProcessingParameterNumber.Double, 4.0, False, 0.0),
        ]
        for param in advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_REPORT", self.tr("Report (JSON; a CSV and a PNG are written beside it)"),
            self.tr("JSON files (*.json)")))
        for key, label in (("APLS", "APLS"), ("APLS_GT_TO_PROP", "APLS ground truth onto proposal"),
                           ("APLS_PROP_TO_GT", "APLS proposal onto ground truth"),
                           ("RELAXED_PRECISION", "Relaxed precision"), ("RELAXED_RECALL", "Relaxed recall"),
                           ("RELAXED_F1", "Relaxed F1"), ("PIXEL_IOU", "Pixel IoU")):
            self.addOutput(QgsProcessingOutputNumber(key, self.tr(label)))
        self.addOutput(QgsProcessingOutputFile("OUTPUT_CSV", self.tr("Report table (CSV)")))
        self.addOutput(QgsProcessingOutputFile("OUTPUT_PNG", self.tr("Overlay picture (PNG)")))

    def run_core(self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                 core_feedback: ProcessingFeedbackAdapter) -> dict[str, Any]:
        from pathlib import Path

        from core.errors import ConfigError
        from core.road_metrics import AplsConfig, EvaluateRoadsConfig, evaluate_roads

        from .layers import vector_layer_path

        paths = {}
        for name in ("PREDICTED", "REFERENCE"):
            layer = self.parameterAsVectorLayer(parameters, name, context)
            if layer is None:
                raise ConfigError(f"the {name.lower()} road layer could not be loaded; choose a line layer")
            paths[name] = vector_layer_path(layer, context, feedback)
        cfg = EvaluateRoadsConfig(
            tolerance_m=self.parameterAsDouble(parameters, "TOLERANCE_M", context),
            apls=AplsConfig(
                control_point_spacing_m=self.parameterAsDouble(parameters, "CONTROL_POINT_SPACING_M", context),
                snap_distance_m=self.parameterAsDouble(parameters, "SNAP_DISTANCE_M", context),
            ),
        )
        out = self.parameterAsFileOutput(parameters, "OUTPUT_REPORT", context)
        if not out.lower().endswith(".json"):
            out = str(Path(out).with_suffix(".json"))
        (pred, pred_layer), (ref, ref_layer) = paths["PREDICTED"], paths["REFERENCE"]
        report = evaluate_roads(pred, ref, out, cfg, core_feedback, predicted_layer=pred_layer,
                                reference_layer=ref_layer)
        return {
            "OUTPUT_REPORT": out,
            "OUTPUT_CSV": str(Path(out).with_suffix(".csv")),
            "OUTPUT_PNG": str(Path(out).with_suffix(".png")),
            "APLS": report["apls"],
            "APLS_GT_TO_PROP": report["apls_gt_to_prop"],
            "APLS_PROP_TO_GT": report["apls_prop_to_gt"],
            "RELAXED_PRECISION": report["relaxed_precision"],
            "RELAXED_RECALL": report["relaxed_recall"],
            "RELAXED_F1": report["relaxed_f1"],
            "PIXEL_IOU": report["pixel_iou"],
        }
