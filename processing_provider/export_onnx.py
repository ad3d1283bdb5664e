"""``roadlandcover:exportonnx``: a model package as an ONNX file the Deepness plugin runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
)

from .base import RoadLandcoverAlgorithm
from .feedback import ProcessingFeedbackAdapter


class ExportOnnxAlgorithm(RoadLandcoverAlgorithm):
    ALG_ID = "exportonnx"
    DISPLAY_NAME = "Export model to ONNX (Deepness)"
    GROUP = "Deep learning"
    GROUP_ID = "deeplearning"
    #: onnx and onnxruntime are checked in run_core, with a pip command that keeps numpy < 2.
    REQUIRES = ("numpy", "torch")
    HELP = (
        "Writes a trained model package (from Train deep learning model) as an ONNX file with the metadata the "
        "Deepness plugin (PUTvision) reads, so the model runs in Deepness and in any ONNX Runtime.\n\n"
        "The graph takes what Deepness feeds it: float32 tiles (batch, bands, tile, tile) holding the raw pixel "
        "values divided by 255. The model's stretch and normalisation and the softmax are inside the graph, so "
        "the metadata tells Deepness to standardize with mean 0 and std 1, use no probability threshold and no "
        "small-segment removal: Deepness's classes then equal the argmax of Classify pixels on the same tile. "
        "Outputs are class probabilities (land cover: one channel per class; roads: background and road).\n\n"
        "Metadata written: model_type Segmentor, class_names (channel -> class name), resolution (the training "
        "cell size in cm/px, only for models trained in metres), tile_size, tiles_overlap (percent), "
        "standardization_mean/std, seg_thresh 0, seg_small_segment 0, and road_landcover_package (bands, class "
        "values and colours, normalisation) for reference.\n\n"
        "Model package: the .zip (or model.json) written by training.\n"
        "Tile size: side of the square tiles the graph takes (Deepness reads it from the graph); empty uses the "
        "model's training tile size. A multiple of 32 is best.\n"
        "Batch size: fixed batch of the graph; empty makes it dynamic (current Deepness lets you choose the "
        "batch size then; some older releases accept only 1).\n"
        "Tiles overlap: Deepness's overlap between tiles in percent of the tile; empty gives 50 %, the same "
        "context as Classify pixels' default padding (a quarter of the tile on each side).\n"
        "ONNX opset: version of the ONNX operator set (17 runs on ONNX Runtime 1.13 and later).\n"
        "Verify: runs the written file with ONNX Runtime on random tiles and fails when its probabilities differ "
        "from PyTorch's by more than 1e-4.\n"
        "Output: the .onnx file. In Deepness choose it as the model; the parameters fill in from its metadata.\n\n"
        "Needs the Python packages onnx and onnxruntime (the error says how to install them)."
    )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", self.tr("Model package (.zip or model.json)"), QgsProcessingParameterFile.File))
        advanced = [
            QgsProcessingParameterNumber("TILE_SIZE", self.tr("Tile size (pixels; empty = the model's)"),
                                         QgsProcessingParameterNumber.Integer, None, True, 8, 8192),
            QgsProcessingParameterNumber("BATCH_SIZE", self.tr("Batch size (empty = dynamic)"),
                                         QgsProcessingParameterNumber.Integer, None, True, 1, 1024),
            QgsProcessingParameterNumber("OVERLAP", self.tr("Tiles overlap in Deepness (percent; empty = 50)"),
                                         QgsProcessingParameterNumber.Integer, None, True, 0, 90),
            QgsProcessingParameterNumber("OPSET", self.tr("ONNX opset"), QgsProcessingParameterNumber.Integer,
                                         17, False, 11, 21),
            QgsProcessingParameterBoolean("VERIFY", self.tr("Verify with ONNX Runtime"), True),
        ]
        for p in advanced:
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", self.tr("ONNX model"), "ONNX model (*.onnx)"))
        self.addOutput(QgsProcessingOutputNumber("MAX_ABS_DIFF", self.tr("Largest probability difference vs PyTorch")))
        self.addOutput(QgsProcessingOutputString("CLASS_NAMES", self.tr("Output channels (class names)")))

    def run_core(self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                 core_feedback: ProcessingFeedbackAdapter) -> dict[str, Any]:
        import json

        from core.onnx_export import OnnxExportConfig, export_onnx, require_onnx

        from .environment import qgis_python

        def optional_int(name: str) -> int | None:
            value = parameters.get(name)
            return None if value in (None, "") else self.parameterAsInt(parameters, name, context)

        cfg = OnnxExportConfig(
            model=Path(self.parameterAsFile(parameters, "MODEL", context)),
            output=Path(self.parameterAsFileOutput(parameters, "OUTPUT", context)),
            tile_size_px=optional_int("TILE_SIZE"),
            batch_size=optional_int("BATCH_SIZE"),
            tiles_overlap_percent=optional_int("OVERLAP"),
            opset=self.parameterAsInt(parameters, "OPSET", context),
            verify=self.parameterAsBool(parameters, "VERIFY", context),
        )
        require_onnx(qgis_python(), runtime=cfg.verify)
        result = export_onnx(cfg, core_feedback)
        names = json.loads(result.metadata["class_names"])
        return {
            "OUTPUT": str(result.output),
            "MAX_ABS_DIFF": result.max_abs_diff,
            "CLASS_NAMES": ", ".join(f"{k}: {v}" for k, v in names.items()),
        }
