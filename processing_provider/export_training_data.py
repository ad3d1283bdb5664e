"""``roadlandcover:exporttrainingdata``: image + label chips and their description, for training."""

from __future__ import annotations

import json
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorLayer,
    QgsRasterLayer,
    QgsVectorLayer,
)

from .base import RoadLandcoverAlgorithm
from .feedback import ProcessingFeedbackAdapter

LABEL_MODES = ("classified_tiles", "road_binary", "road_speed_continuous", "road_speed_bins")
LABEL_MODE_NAMES = ("Classified tiles (land cover)", "Road mask: binary buffer",
                    "Road mask: continuous, proportional to speed", "Road mask: speed bins + any road")
NOFEATURE = ("ONLY_TILES_WITH_FEATURES", "ALL_TILES")
CHIP_FORMATS = ("tif", "png", "jpg")
STRETCHES = ("none", "percentile", "minmax")
STRETCH_NAMES = ("None (raw values)", "Percentile 2-98 % to 8 bit", "Min-max to 8 bit")
RESAMPLINGS = ("bilinear", "cubic", "nearest")


class ExportTrainingDataAlgorithm(RoadLandcoverAlgorithm):
    ALG_ID = "exporttrainingdata"
    DISPLAY_NAME = "Export training data for deep learning"
    GROUP = "Training data"
    GROUP_ID = "trainingdata"
    HELP = (
        "Cuts the input raster into image chips with matching label chips and writes a training folder "
        "(images/, labels/, dataset.json with classes, band statistics, cell size and CRS, chips.csv, "
        "chip_footprints.gpkg and preview.png) that 'Train deep learning model' reads.\n\n"
        "<b>Labels</b>: a vector layer (polygons are burned with their class; lines and points are buffered by "
        "the buffer distance, in metres even when the layer is in degrees) or a classified raster. The class "
        "field holds whole numbers 1-254 (0 means unlabelled and is ignored in training, so sparse labels "
        "work) or class names, which are numbered alphabetically 1..N (a warning lists them). Without a class field, a 'classvalue' or 'value' field is used, else everything is class 1. "
        "Class names and colours come from the layer's categorized/paletted style when it has one.\n\n"
        "<b>Label mode</b>: classified tiles for land cover; road masks from centerlines for road models "
        "(binary buffer as in SpaceNet: 2 m half-width; continuous proportional to a speed field; or one "
        "band per speed bin plus an 'any road' band), optionally with orientation chips for the multi-task "
        "road model.\n\n"
        "<b>Tiles</b>: chips of tile size pixels every stride pixels (a stride smaller than the tile gives "
        "overlapping chips), at the raster's cell size unless you set one (image resampled bilinear/cubic, "
        "labels nearest). Rotation adds copies rotated by multiples of the angle (corners rotated in from "
        "outside are ignored). Chips with more nodata than the limit are skipped; label pixels under image "
        "nodata are ignored. With a mask layer, only chips entirely inside its polygons are exported.\n\n"
        "<b>Formats</b>: TIFF keeps any band count and data type (16-bit, signed, float); PNG takes 1-4 bands "
        "of 8/16 bit and JPEG 1 or 3 bands of 8 bit (use a stretch to get 8 bit). The stretch maps raw "
        "values to 0-255 and is recorded so inference applies the same.\n\n"
        "Memory does not grow with the raster (windowed reads, labels through a spatial index). Cancel leaves "
        "no half-written folder. The chip footprints are added to the map."
    )

    INPUT_RASTER = "INPUT_RASTER"
    INPUT_LABELS = "INPUT_LABELS"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        num = QgsProcessingParameterNumber
        adv = QgsProcessingParameterDefinition.FlagAdvanced

        def add(param: QgsProcessingParameterDefinition, advanced: bool = False) -> None:
            if advanced:
                param.setFlags(param.flags() | adv)
            self.addParameter(param)

        add(QgsProcessingParameterRasterLayer(self.INPUT_RASTER, self.tr("Input raster")))
        add(QgsProcessingParameterMapLayer(
            self.INPUT_LABELS, self.tr("Labels (vector layer or classified raster)"),
            types=[QgsProcessing.TypeVectorAnyGeometry, QgsProcessing.TypeRaster]))
        add(QgsProcessingParameterField(
            "CLASS_FIELD", self.tr("Class field (integers 1-254, 0 = unlabelled; or class names)"), None, self.INPUT_LABELS,
            QgsProcessingParameterField.Any, optional=True))
        add(QgsProcessingParameterField(
            "CLASS_NAME_FIELD", self.tr("Class name field"), None, self.INPUT_LABELS,
            QgsProcessingParameterField.Any, optional=True), True)
        add(QgsProcessingParameterEnum(
            "LABEL_MODE", self.tr("Label mode"), options=list(LABEL_MODE_NAMES), defaultValue=0))
        add(num("BUFFER_M", self.tr("Buffer for lines (half-width) and points (radius), metres"), num.Double,
                2.0, False, 0.01, 1000.0))
        add(QgsProcessingParameterField(
            "SPEED_FIELD", self.tr("Speed field (speed label modes)"), None, self.INPUT_LABELS,
            QgsProcessingParameterField.Numeric, optional=True))
        add(num("SPEED_BIN_WIDTH", self.tr("Speed bin width (speed field units)"), num.Double, 10.0, False,
                0.001), True)
        add(num("SPEED_MAX", self.tr("Speed mapped to the top value/bin (0 = the data's maximum)"), num.Double,
                0.0, False, 0.0), True)
        add(QgsProcessingParameterBoolean("ORIENTATION", self.tr("Also export road orientation chips"), False))
        add(num("ORIENTATION_BIN_DEG", self.tr("Orientation bin size (degrees)"), num.Double, 5.0, False,
                0.71, 90.0), True)
        add(num("ORIENTATION_WIDTH_M", self.tr("Orientation band width, metres (0 = the road mask)"), num.Double,
                0.0, False, 0.0), True)
        add(num("TILE_SIZE_X", self.tr("Tile size X (pixels)"), num.Integer, 256, False, 8, 8192))
        add(num("TILE_SIZE_Y", self.tr("Tile size Y (pixels)"), num.Integer, 256, False, 8, 8192))
        add(num("STRIDE_X", self.tr("Stride X (pixels)"), num.Integer, 128, False, 1, 8192))
        add(num("STRIDE_Y", self.tr("Stride Y (pixels)"), num.Integer, 128, False, 1, 8192))
        add(num("CELL_SIZE", self.tr("Cell size in raster CRS units (0 = the raster's)"), num.Double, 0.0, False,
                0.0))
        add(QgsProcessingParameterEnum(
            "RESAMPLING", self.tr("Image resampling (labels always nearest)"), options=list(RESAMPLINGS),
            defaultValue=0), True)
        add(QgsProcessingParameterExtent("EXTENT", self.tr("Extent"), optional=True))
        add(QgsProcessingParameterVectorLayer(
            "MASK_POLYGONS", self.tr("Mask polygons (only chips fully inside)"),
            [QgsProcessing.TypeVectorPolygon], optional=True), True)
        add(num("ROTATION_ANGLE", self.tr("Rotation angle for extra rotated chips (degrees, 0 = none)"),
                num.Double, 0.0, False, 0.0, 359.0), True)
        add(QgsProcessingParameterEnum(
            "OUTPUT_NOFEATURE_TILES", self.tr("Tiles to export"), options=list(NOFEATURE), defaultValue=0))
        add(num("MAX_NODATA_PERCENT", self.tr("Maximum nodata per chip (%)"), num.Double, 25.0, False, 0.0,
                100.0), True)
        add(QgsProcessingParameterEnum(
            "CHIP_FORMAT", self.tr("Chip format"), options=["TIFF", "PNG", "JPEG"], defaultValue=0))
        add(QgsProcessingParameterBand(
            "BANDS", self.tr("Bands (in this order; default all but alpha)"), None, self.INPUT_RASTER,
            optional=True, allowMultiple=True))
        add(QgsProcessingParameterEnum(
            "STRETCH", self.tr("Stretch"), options=list(STRETCH_NAMES), defaultValue=0))
        add(num("MAX_CHIPS", self.tr("Stop after this many chips (0 = all)"), num.Integer, 0, False, 0), True)
        add(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Output training folder")))
        self.addOutput(QgsProcessingOutputNumber("CHIP_COUNT", self.tr("Number of chips")))
        self.addOutput(QgsProcessingOutputString("CLASS_PIXELS", self.tr("Pixels per class (JSON)")))
        self.addOutput(QgsProcessingOutputVectorLayer(
            "FOOTPRINTS", self.tr("Chip footprints"), QgsProcessing.TypeVectorPolygon))

    def run_core(self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                 core_feedback: ProcessingFeedbackAdapter) -> dict[str, Any]:
        from core.chips import ExportConfig, export_training_data

        from .layers import legend_classes, raster_layer_path, vector_layer_path

        raster = self.parameterAsRasterLayer(parameters, self.INPUT_RASTER, context)
        if raster is None:
            raise QgsProcessingException("the input raster is missing or cannot be loaded")
        labels = self.parameterAsLayer(parameters, self.INPUT_LABELS, context)
        if labels is None:
            raise QgsProcessingException("the label layer is missing or cannot be loaded")
        cell = self.parameterAsDouble(parameters, "CELL_SIZE", context)
        extent = None
        if parameters.get("EXTENT"):
            extent = self.parameterAsExtent(parameters, "EXTENT", context, raster.crs())
            if extent.isEmpty():
                extent = None
        raster_path = raster_layer_path(raster, context, feedback, extent, cell or None)

        class_field = self.parameterAsString(parameters, "CLASS_FIELD", context) or None
        labels_layer = None
        if isinstance(labels, QgsVectorLayer):
            labels_path, labels_layer = vector_layer_path(labels, context, feedback)
        elif isinstance(labels, QgsRasterLayer):
            labels_path = raster_layer_path(labels, context, feedback)
            if not labels_path.lower().endswith((".tif", ".tiff", ".vrt", ".img", ".jp2")):
                labels_path = raster_layer_path(labels, context, feedback, force=True)
        else:
            raise QgsProcessingException(f"the label layer {labels.name()} is neither a vector nor a raster layer")
        names, colors = legend_classes(labels, class_field)
        if names:
            feedback.pushInfo(f"class names and colours from the style of {labels.name()}: {names}")

        mask_path = None
        mask = self.parameterAsVectorLayer(parameters, "MASK_POLYGONS", context)
        if mask is not None:
            mask_path, mask_layer = vector_layer_path(mask, context, feedback)
            if mask_layer:
                mask_path = vector_layer_path(mask, context, feedback, force=True)[0]

        raw_bands = parameters.get("BANDS")
        if isinstance(raw_bands, str) and raw_bands.strip():  # qgis_process: BANDS=3,2,1
            try:
                bands: tuple[int, ...] | None = tuple(int(b) for b in raw_bands.replace(";", ",").split(","))
            except ValueError:
                raise QgsProcessingException(f"BANDS={raw_bands!r}: give band numbers like 3,2,1") from None
        else:
            bands = tuple(b for b in self.parameterAsInts(parameters, "BANDS", context) or () if b > 0) or None
        mode = LABEL_MODES[self.parameterAsEnum(parameters, "LABEL_MODE", context)]
        speed_max = self.parameterAsDouble(parameters, "SPEED_MAX", context)
        owidth = self.parameterAsDouble(parameters, "ORIENTATION_WIDTH_M", context)
        max_chips = self.parameterAsInt(parameters, "MAX_CHIPS", context)
        folder = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        cfg = ExportConfig(
            raster=raster_path,
            labels=labels_path,
            output_folder=folder,
            labels_layer=labels_layer,
            class_field=class_field,
            class_name_field=self.parameterAsString(parameters, "CLASS_NAME_FIELD", context) or None,
            label_mode=mode,
            buffer_m=self.parameterAsDouble(parameters, "BUFFER_M", context),
            speed_field=self.parameterAsString(parameters, "SPEED_FIELD", context) or None,
            speed_max=speed_max or None,
            speed_bin_width=self.parameterAsDouble(parameters, "SPEED_BIN_WIDTH", context),
            orientation=self.parameterAsBoolean(parameters, "ORIENTATION", context),
            orientation_bin_deg=self.parameterAsDouble(parameters, "ORIENTATION_BIN_DEG", context),
            orientation_width_m=owidth or None,
            tile_size_px=(self.parameterAsInt(parameters, "TILE_SIZE_X", context),
                          self.parameterAsInt(parameters, "TILE_SIZE_Y", context)),
            stride_px=(self.parameterAsInt(parameters, "STRIDE_X", context),
                       self.parameterAsInt(parameters, "STRIDE_Y", context)),
            cell_size=(cell, cell) if cell > 0 else None,
            resampling=RESAMPLINGS[self.parameterAsEnum(parameters, "RESAMPLING", context)],
            extent=(extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()) if extent else None,
            mask_polygons=mask_path,
            rotation_deg=self.parameterAsDouble(parameters, "ROTATION_ANGLE", context),
            only_tiles_with_features=self.parameterAsEnum(parameters, "OUTPUT_NOFEATURE_TILES", context) == 0,
            max_nodata_percent=self.parameterAsDouble(parameters, "MAX_NODATA_PERCENT", context),
            chip_format=CHIP_FORMATS[self.parameterAsEnum(parameters, "CHIP_FORMAT", context)],
            bands=bands,
            stretch=STRETCHES[self.parameterAsEnum(parameters, "STRETCH", context)],
            class_names=names or None,
            class_colors=colors or None,
            max_chips=max_chips or None,
        )
        result = export_training_data(cfg, core_feedback)
        footprints = f"{result.footprints}|layername=chips"
        # In the GUI (and in models) the footprints appear in the map once the algorithm finishes.
        details = QgsProcessingContext.LayerDetails(self.tr("Chip footprints"), context.project(), "FOOTPRINTS")
        context.addLayerToLoadOnCompletion(footprints, details)
        return {
            self.OUTPUT_FOLDER: str(result.folder),
            "CHIP_COUNT": result.chip_count,
            "CLASS_PIXELS": json.dumps({str(k): v for k, v in result.class_pixels.items()}),
            "FOOTPRINTS": footprints,
        }
