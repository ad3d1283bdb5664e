"""``roadlandcover:classifypixels``: classify a raster with a model package (padded, tiled, streaming)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingUtils,
    QgsRasterLayer,
)

from core import deps

from .base import RoadLandcoverAlgorithm
from .feedback import ProcessingFeedbackAdapter

BLENDS = ("centre", "weighted")
DEVICES = ("auto", "cuda", "mps", "cpu")
TTAS = ("none", "flips", "dihedral")
MERGES = ("mean", "max")


class PalettedStyler(QgsProcessingLayerPostProcessorInterface):
    """Gives the loaded classified layer the package's class colours and names (paletted renderer)."""

    alive: list[PalettedStyler] = []  # post-processors must outlive the algorithm run (see run_core)

    def __init__(self, classes: list[tuple[int, str, str]]) -> None:
        super().__init__()
        self.classes = classes

    def postProcessLayer(self, layer: Any, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> None:
        if isinstance(layer, QgsRasterLayer):
            apply_paletted_style(layer, self.classes)


def apply_paletted_style(layer: QgsRasterLayer, classes: list[tuple[int, str, str]]) -> None:
    from qgis.core import QgsPalettedRasterRenderer
    from qgis.PyQt.QtGui import QColor

    entries = [QgsPalettedRasterRenderer.Class(value, QColor(color), name) for value, name, color in classes]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries))
    layer.triggerRepaint()


class ClassifyPixelsAlgorithm(RoadLandcoverAlgorithm):
    ALG_ID = "classifypixels"
    DISPLAY_NAME = "Classify pixels using deep learning"
    GROUP = "Deep learning"
    GROUP_ID = "deeplearning"
    REQUIRES = deps.DL_STACK
    HELP = (
        "Classifies every pixel of a raster with a trained model package (from Train deep learning model): "
        "land-cover classes, or road / background for road models.\n\n"
        "The raster is read tile by tile with a margin of context (padding) around each tile, reflected at the "
        "raster edges; only the centre of each tile is kept (or overlapping centres are blended with linear "
        "weights), so there are no seams between tiles. Finished blocks go straight into the output, so memory "
        "does not grow with the raster size.\n\n"
        "Input raster: needs the bands the model was trained on, in the same order (checked; the error names "
        "both). Stretch and normalisation come from the model. Pixels that are nodata in the input stay nodata "
        "(255) in the output. Cell size: empty uses the model's training cell size; the raster is resampled on "
        "the fly (bilinear), with a warning when its own cell size differs by more than 2x. Tile size: empty uses "
        "the model's. Padding: context discarded on each tile side, default a quarter of the tile; use at least "
        "the model's receptive field for seamless results. Batch size: tiles per forward pass; halved "
        "automatically when the GPU runs out of memory. Device: auto picks CUDA, then Apple MPS, then the CPU, "
        "and the log says which. Test-time augmentation: average (or max) of the predictions over flips or all 8 "
        "rotations/flips: slower, often a little better.\n\n"
        "Outputs: a tiled, compressed GeoTIFF with the class values, a colour table and class names (loaded with "
        "the class colours in the map), and optionally a float32 probability raster (one band per class, or the "
        "road probability for road models; 0-1, nodata -1)."
    )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT_RASTER", self.tr("Input raster")))
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", self.tr("Model package (.zip or model.json)"), QgsProcessingParameterFile.File))
        self.addParameter(QgsProcessingParameterNumber(
            "CELL_SIZE", self.tr("Cell size (raster CRS units; empty = the model's)"),
            QgsProcessingParameterNumber.Double, None, True, 0.0))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", self.tr("Extent (empty = whole raster)"),
                                                       optional=True))
        advanced = [
            QgsProcessingParameterNumber("TILE_SIZE", self.tr("Tile size (pixels; empty = the model's)"),
                                         QgsProcessingParameterNumber.Integer, None, True, 8, 8192),
            QgsProcessingParameterNumber("PADDING", self.tr("Padding (pixels per side; empty = a quarter of the tile)"),
                                         QgsProcessingParameterNumber.Integer, None, True, 0, 4096),
            QgsProcessingParameterEnum("BLEND", self.tr("Blending"), ["centre crop", "weighted window blending"],
                                       defaultValue=0),
            QgsProcessingParameterNumber("BATCH_SIZE", self.tr("Batch size"), QgsProcessingParameterNumber.Integer,
                                         8, False, 1, 1024),
            QgsProcessingParameterEnum("DEVICE", self.tr("Device"), list(DEVICES), defaultValue=0),
            QgsProcessingParameterEnum("TTA", self.tr("Test-time augmentation"),
                                       ["none", "flips (4)", "all 8 rotations and flips"], defaultValue=0),
            QgsProcessingParameterEnum("TTA_MERGE", self.tr("Merge augmented predictions by"), list(MERGES),
                                       defaultValue=0),
            QgsProcessingParameterBoolean("MIXED_PRECISION", self.tr("Mixed precision on CUDA"), True),
        ]
        for p in advanced:
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT_CLASSIFIED", self.tr("Classified raster")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "OUTPUT_PROBABILITY", self.tr("Probabilities"), optional=True, createByDefault=False))

    def _input_path(self, layer: QgsRasterLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                    cell_size: float | None) -> str:
        """A file GDAL reads: the layer's own file, or a GeoTIFF materialized from it (WMS, XYZ, memory)."""
        source = layer.source().split("|")[0]
        if layer.providerType() == "gdal" and Path(source).is_file():
            return source
        from qgis.core import QgsRasterFileWriter, QgsRasterPipe

        path = QgsProcessingUtils.generateTempFilename("classify_input.tif")
        extent = layer.extent()
        res = cell_size or layer.rasterUnitsPerPixelX() or 1.0
        cols, rows = max(1, int(round(extent.width() / res))), max(1, int(round(extent.height() / res)))
        feedback.pushInfo(f"materializing {layer.name()} ({layer.providerType()}) as {cols} x {rows} px at {res:g}")
        pipe = QgsRasterPipe()
        pipe.set(layer.dataProvider().clone())
        writer = QgsRasterFileWriter(path)
        err = writer.writeRaster(pipe, cols, rows, extent, layer.crs(), context.transformContext(), feedback)
        if err != QgsRasterFileWriter.NoError:
            from core.errors import RasterReadError

            raise RasterReadError(f"could not copy layer {layer.name()} to a GeoTIFF for classification (error {err})")
        return path

    def run_core(self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                 core_feedback: ProcessingFeedbackAdapter) -> dict[str, Any]:
        from core.inference import ClassifyConfig, classify_pixels

        layer = self.parameterAsRasterLayer(parameters, "INPUT_RASTER", context)
        if layer is None:
            from core.errors import RasterReadError

            raise RasterReadError("the input raster could not be loaded; choose a raster layer or file")

        def optional_number(name: str) -> float | None:
            value = parameters.get(name)
            return None if value in (None, "") else self.parameterAsDouble(parameters, name, context)

        cell = optional_number("CELL_SIZE")
        cell = cell if cell else None
        tile = optional_number("TILE_SIZE")
        padding = optional_number("PADDING")
        extent = None
        if parameters.get("EXTENT") not in (None, ""):
            rect = self.parameterAsExtent(parameters, "EXTENT", context, layer.crs())
            if not rect.isNull() and rect.width() > 0:
                extent = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
        out = self.parameterAsOutputLayer(parameters, "OUTPUT_CLASSIFIED", context)
        prob = self.parameterAsOutputLayer(parameters, "OUTPUT_PROBABILITY", context) \
            if parameters.get("OUTPUT_PROBABILITY") not in (None, "") else None
        cfg = ClassifyConfig(
            input_raster=Path(self._input_path(layer, context, feedback, cell)),
            model=Path(self.parameterAsFile(parameters, "MODEL", context)),
            output_classified=Path(out), output_probability=Path(prob) if prob else None,
            cell_size_m=cell, extent=extent,
            tile_size_px=int(tile) if tile else None, padding_px=int(padding) if padding is not None else None,
            blend=BLENDS[self.parameterAsEnum(parameters, "BLEND", context)],
            batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context),
            device=DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
            tta=TTAS[self.parameterAsEnum(parameters, "TTA", context)],
            tta_merge=MERGES[self.parameterAsEnum(parameters, "TTA_MERGE", context)],
            mixed_precision=self.parameterAsBool(parameters, "MIXED_PRECISION", context),
        )
        result = classify_pixels(cfg, core_feedback)
        classes = [(c.value, c.name, c.color) for c in result.classes]
        if context.willLoadLayerOnCompletion(out):
            # QGIS holds only a pointer and calls it after run() has deleted this (copied) algorithm, as the
            # dialog and the batch dialog do: keep the styler alive at class level, as StyleFromQml does.
            styler = PalettedStyler(classes)
            PalettedStyler.alive.append(styler)
            context.layerToLoadOnCompletionDetails(out).setPostProcessor(styler)
        return {
            "OUTPUT_CLASSIFIED": str(result.output_classified),
            "OUTPUT_PROBABILITY": str(result.output_probability) if result.output_probability else None,
            "DEVICE": result.device,
            "TILES": result.tiles,
            "SECONDS": round(result.seconds, 2),
        }
