"""``roadlandcover:extractroads``: imagery + road model -> road probability -> centerlines, in one step."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from core import deps

from .feedback import ProcessingFeedbackAdapter
from .vectorize_roads import VectorizeRoadsAlgorithm, file_output, load_styled

DEVICES = ("auto", "cuda", "mps", "cpu")


class ExtractRoadsAlgorithm(VectorizeRoadsAlgorithm):
    ALG_ID = "extractroads"
    DISPLAY_NAME = "Extract roads (imagery + road model -> centerlines)"
    REQUIRES = deps.DL_STACK
    HELP = (
        "Runs a road model package on imagery and turns its road probability into clean, connected road "
        "centerlines and junctions, in one step: the same as Classify Pixels (road probability output) "
        "followed by Vectorize roads.\n\n"
        "Model: the model package written by training (model.json of its folder, or the zip); it must "
        "be a road model. Cell size (CELL_SIZE, in the raster's units; 0 = the model's training cell "
        "size), padding (PADDING, pixels of context dropped at each tile side; -1 = a quarter of the "
        "tile), batch size and device (auto picks CUDA, then Apple MPS, then the CPU) work as in "
        "Classify Pixels. The road probability raster (0-1, nodata -1) is kept (OUTPUT_PROBABILITY).\n\n"
        "Vectorization parameters (threshold on the probability, spur length, gap closing, minimum piece "
        "length, simplification; all in metres) are those of Vectorize roads: see its help."
    )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        super().initAlgorithm(config)
        self.parameterDefinition("INPUT_RASTER").setDescription(self.tr("Imagery"))
        self.removeParameter("BAND")
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", self.tr("Road model package (model.json or .zip)"), QgsProcessingParameterFile.File,
            fileFilter="Model package (model.json *.json *.zip)"))
        self.addParameter(QgsProcessingParameterNumber(
            "CELL_SIZE", self.tr("Cell size (raster units; 0 = the model's)"), QgsProcessingParameterNumber.Double,
            0.0, False, 0.0))
        extra = [
            QgsProcessingParameterNumber("PADDING", self.tr("Padding (pixels; -1 = a quarter of the tile)"),
                                         QgsProcessingParameterNumber.Integer, -1, False, -1),
            QgsProcessingParameterNumber("BATCH_SIZE", self.tr("Batch size"), QgsProcessingParameterNumber.Integer,
                                         8, False, 1),
            QgsProcessingParameterEnum("DEVICE", self.tr("Device"), list(DEVICES), defaultValue=0),
        ]
        for param in extra:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterRasterDestination(
            "OUTPUT_PROBABILITY", self.tr("Road probability")))

    def run_core(self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                 core_feedback: ProcessingFeedbackAdapter) -> dict[str, Any]:
        from core.errors import ConfigError
        from core.roads import extract_roads

        from .layers import raster_layer_path

        layer = self.parameterAsRasterLayer(parameters, "INPUT_RASTER", context)
        if layer is None:
            raise ConfigError("the imagery could not be loaded; choose a raster layer or file")
        model = self.parameterAsFile(parameters, "MODEL", context)
        if not model:
            raise ConfigError("choose the road model package (model.json of its folder, or the zip)")
        cfg = self.vectorize_config(parameters, context)
        cell = self.parameterAsDouble(parameters, "CELL_SIZE", context)
        padding = self.parameterAsInt(parameters, "PADDING", context)
        probability = self.parameterAsOutputLayer(parameters, "OUTPUT_PROBABILITY", context)
        result = extract_roads(
            raster_layer_path(layer, context, feedback), model, probability,
            file_output(self, parameters, "OUTPUT_LINES", context), file_output(self, parameters, "OUTPUT_NODES", context),
            cfg, cell_size_m=cell if cell > 0 else None, padding_px=padding if padding >= 0 else None,
            batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context),
            device=DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)], feedback=core_feedback,
        )
        return {
            "OUTPUT_LINES": load_styled(context, str(result.lines), self.tr("Road lines"), "OUTPUT_LINES"),
            "OUTPUT_NODES": load_styled(context, str(result.nodes), self.tr("Road nodes"), "OUTPUT_NODES"),
            "OUTPUT_PROBABILITY": probability,
            "EDGE_COUNT": result.edge_count,
            "JUNCTION_COUNT": result.junction_count,
            "TOTAL_LENGTH_M": result.total_length_m,
        }
