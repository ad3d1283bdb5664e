"""``roadlandcover:vectorizeroads``: road probability or mask raster -> road centerlines and junctions."""

from __future__ import annotations

import os
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
)

from .base import RoadLandcoverAlgorithm
from .feedback import ProcessingFeedbackAdapter

_VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".fgb")


class StyleFromQml(QgsProcessingLayerPostProcessorInterface):
    """Applies a ``.qml`` style to an output layer when Processing loads it into the project.

    Post-processors must outlive the algorithm run (QGIS calls them after it returns), so every
    instance is kept in a class-level list.
    """

    _alive: list[StyleFromQml] = []

    def __init__(self, qml_path: str) -> None:
        super().__init__()
        self.qml_path = qml_path

    def postProcessLayer(self, layer: Any, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> None:
        if layer is not None and layer.isValid() and os.path.exists(self.qml_path):
            layer.loadNamedStyle(self.qml_path)
            layer.triggerRepaint()

    @classmethod
    def create(cls, qml_path: str) -> StyleFromQml:
        instance = cls(qml_path)
        cls._alive.append(instance)
        return instance


def file_output(algorithm: RoadLandcoverAlgorithm, parameters: dict[str, Any], name: str,
                context: QgsProcessingContext) -> str:
    """The destination path of a vector output; a memory or database destination becomes a temporary GeoPackage."""
    path = str(algorithm.parameterAsOutputLayer(parameters, name, context))
    if not path.lower().endswith(_VECTOR_SUFFIXES) or path.startswith(("memory:", "ogr:", "postgres:")):
        path = QgsProcessingUtils.generateTempFilename(f"{name.lower()}.gpkg")
    return path


def load_styled(context: QgsProcessingContext, path: str, display_name: str, output: str) -> str:
    """Make sure the (single-layer) output file is added to the map on completion, styled by its ``.qml``."""
    qml = os.path.splitext(path)[0] + ".qml"
    if context.willLoadLayerOnCompletion(path):
        details = context.layerToLoadOnCompletionDetails(path)
        details.setPostProcessor(StyleFromQml.create(qml))
        return path
    if context.project() is not None:
        details = QgsProcessingContext.LayerDetails(display_name, context.project(), output)
        details.setPostProcessor(StyleFromQml.create(qml))
        context.addLayerToLoadOnCompletion(path, details)
    return path


class VectorizeRoadsAlgorithm(RoadLandcoverAlgorithm):
    ALG_ID = "vectorizeroads"
    DISPLAY_NAME = "Vectorize roads (probability or mask -> centerlines)"
    GROUP = "Roads"
    GROUP_ID = "roads"
    HELP = (
        "Turns a road probability raster (0-1) or a road mask (0/1 or 0/255) into clean, connected road "
        "centerlines and a junctions layer, ready for routing and for the Evaluate roads algorithm.\n\n"
        "Steps: threshold; removal of small blobs and filling of small holes; skeleton (one-pixel-wide "
        "centerline); graph with junctions and dead ends as nodes; spur pruning; gap closing between "
        "dead ends that point at each other; removal of short isolated pieces; line simplification.\n\n"
        "All distances are in metres and converted with the raster's cell size (rasters in degrees are "
        "handled: the cell size in metres is taken at the raster's centre latitude).\n\n"
        "Threshold: pixels with a value >= threshold are road (0.5 for probabilities and 0/1 masks; "
        "use 128 for 0-255 probabilities).\n"
        "Minimum spur length (MIN_SPUR_M, default 10 m): dead-end branches off a junction shorter than "
        "this are removed; they are mostly skeleton hairs at road edges and corners. Lower it to keep "
        "short real dead ends.\n"
        "Maximum gap (MAX_GAP_M, default 15 m): two dead ends closer than this whose directions agree "
        "within the maximum gap angle (30 degrees) are joined (trees, shadows, bridges). 0 turns it off.\n"
        "Minimum piece length (MIN_COMPONENT_M, default 25 m): connected pieces with less road in total "
        "are removed (false detections on roofs, fields).\n"
        "Simplification tolerance (SIMPLIFY_M, default 1 m): Douglas-Peucker tolerance; junctions and "
        "ends never move.\n\n"
        "Large rasters are processed in blocks (advanced: block size) and joined across block seams, so "
        "memory stays small and a road crossing a block edge is one continuous line.\n\n"
        "Outputs: road lines (edge_id, from_node, to_node, length_m; geodesic length for rasters in "
        "degrees) and nodes (node_id, degree, kind = junction or end), written as GeoPackages with "
        "styles and added to the map."
    )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(
            "INPUT_RASTER", self.tr("Road probability or mask raster")))
        self.addParameter(QgsProcessingParameterNumber(
            "THRESHOLD", self.tr("Threshold (value >= threshold is road)"), QgsProcessingParameterNumber.Double, 0.5))
        self.addParameter(QgsProcessingParameterNumber(
            "MIN_SPUR_M", self.tr("Minimum spur length (metres)"), QgsProcessingParameterNumber.Double, 10.0, False, 0.0))
        self.addParameter(QgsProcessingParameterNumber(
            "MAX_GAP_M", self.tr("Maximum gap to close (metres, 0 = off)"), QgsProcessingParameterNumber.Double,
            15.0, False, 0.0))
        self.addParameter(QgsProcessingParameterNumber(
            "MIN_COMPONENT_M", self.tr("Minimum length of an isolated piece (metres)"),
            QgsProcessingParameterNumber.Double, 25.0, False, 0.0))
        self.addParameter(QgsProcessingParameterNumber(
            "SIMPLIFY_M", self.tr("Simplification tolerance (metres, 0 = off)"), QgsProcessingParameterNumber.Double,
            1.0, False, 0.0))
        advanced = [
            QgsProcessingParameterBand("BAND", self.tr("Band"), 1, "INPUT_RASTER", optional=True),
            QgsProcessingParameterNumber("MAX_GAP_ANGLE", self.tr("Maximum gap angle (degrees)"),
                                         QgsProcessingParameterNumber.Double, 30.0, False, 0.0, 90.0),
            QgsProcessingParameterNumber("MIN_BLOB_AREA_M2", self.tr("Remove blobs smaller than (square metres)"),
                                         QgsProcessingParameterNumber.Double, 20.0, False, 0.0),
            QgsProcessingParameterNumber("MAX_HOLE_AREA_M2", self.tr("Fill holes smaller than (square metres)"),
                                         QgsProcessingParameterNumber.Double, 20.0, False, 0.0),
            QgsProcessingParameterNumber("BLOCK_SIZE", self.tr("Block size (pixels)"),
                                         QgsProcessingParameterNumber.Integer, 4096, False, 256, 65536),
        ]
        for param in advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT_LINES", self.tr("Road lines"), QgsProcessing.TypeVectorLine))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT_NODES", self.tr("Road nodes (junctions and dead ends)"), QgsProcessing.TypeVectorPoint))
        self.addOutput(QgsProcessingOutputNumber("EDGE_COUNT", self.tr("Number of road lines")))
        self.addOutput(QgsProcessingOutputNumber("JUNCTION_COUNT", self.tr("Number of junctions")))
        self.addOutput(QgsProcessingOutputNumber("TOTAL_LENGTH_M", self.tr("Total road length (metres)")))

    def vectorize_config(self, parameters: dict[str, Any], context: QgsProcessingContext) -> Any:
        """The vectorization parameters (shared with Extract roads, which has no BAND: band 1)."""
        from core.roads import VectorizeConfig

        has_band = self.parameterDefinition("BAND") is not None
        return VectorizeConfig(
            threshold=self.parameterAsDouble(parameters, "THRESHOLD", context),
            min_spur_m=self.parameterAsDouble(parameters, "MIN_SPUR_M", context),
            max_gap_m=self.parameterAsDouble(parameters, "MAX_GAP_M", context),
            max_gap_angle_deg=self.parameterAsDouble(parameters, "MAX_GAP_ANGLE", context),
            min_component_m=self.parameterAsDouble(parameters, "MIN_COMPONENT_M", context),
            simplify_m=self.parameterAsDouble(parameters, "SIMPLIFY_M", context),
            min_blob_area_m2=self.parameterAsDouble(parameters, "MIN_BLOB_AREA_M2", context),
            max_hole_area_m2=self.parameterAsDouble(parameters, "MAX_HOLE_AREA_M2", context),
            band=max(1, self.parameterAsInt(parameters, "BAND", context)) if has_band else 1,
            block_size_px=self.parameterAsInt(parameters, "BLOCK_SIZE", context),
        )

    def run_core(self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                 core_feedback: ProcessingFeedbackAdapter) -> dict[str, Any]:
        from core.roads import vectorize_roads

        from .layers import raster_layer_path

        layer = self.parameterAsRasterLayer(parameters, "INPUT_RASTER", context)
        if layer is None:
            from core.errors import ConfigError

            raise ConfigError("the road raster could not be loaded; choose a raster layer or file")
        raster = raster_layer_path(layer, context, feedback)
        cfg = self.vectorize_config(parameters, context)
        lines_path = file_output(self, parameters, "OUTPUT_LINES", context)
        nodes_path = file_output(self, parameters, "OUTPUT_NODES", context)
        result = vectorize_roads(raster, lines_path, nodes_path, cfg, core_feedback)
        lines = load_styled(context, str(result.lines), self.tr("Road lines"), "OUTPUT_LINES")
        nodes = load_styled(context, str(result.nodes), self.tr("Road nodes"), "OUTPUT_NODES")
        return {
            "OUTPUT_LINES": lines,
            "OUTPUT_NODES": nodes,
            "EDGE_COUNT": result.edge_count,
            "JUNCTION_COUNT": result.junction_count,
            "TOTAL_LENGTH_M": result.total_length_m,
        }
