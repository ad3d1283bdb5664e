"""``roadlandcover:samplescene``: generate the built-in sample scene (imagery with ground truth)."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterCrs,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
)

from .base import RoadLandcoverAlgorithm
from .feedback import ProcessingFeedbackAdapter


class SampleSceneAlgorithm(RoadLandcoverAlgorithm):
    ALG_ID = "samplescene"
    DISPLAY_NAME = "Generate sample scene"
    HELP = (
        "Generates a realistic, georeferenced test scene with its ground truth, the same every time for "
        "the same seed: 4-band imagery (red, green, blue, near-infrared; 0 = nodata in a clipped corner) "
        "with a road network (primary, secondary, tertiary, residential streets, tracks; 3.5-14 m wide) "
        "over land cover (water, forest, fields, buildings, bare ground).\n\n"
        "Outputs in the folder: scene.tif, landcover_classes.tif (class raster with colour table), "
        "landcover_polygons.gpkg (field classvalue), road_centerlines.gpkg (fields highway, speed_kph, "
        "width_m), road_mask.tif.\n\n"
        "Use it to try the whole workflow, for tutorials, and for tests. The default 2400 px at 0.5 m "
        "covers 1.2 x 1.2 km and takes a few seconds."
    )

    OUTPUT_FOLDER = "OUTPUT_FOLDER"

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterNumber(
            "SIZE_PX", self.tr("Width and height (pixels)"), QgsProcessingParameterNumber.Integer, 2400, False, 128, 20000))
        self.addParameter(QgsProcessingParameterNumber(
            "CELL_SIZE", self.tr("Cell size (metres)"), QgsProcessingParameterNumber.Double, 0.5, False, 0.05, 10.0))
        self.addParameter(QgsProcessingParameterNumber(
            "SEED", self.tr("Random seed"), QgsProcessingParameterNumber.Integer, 42))
        self.addParameter(QgsProcessingParameterCrs(
            "CRS", self.tr("Projected CRS (default EPSG:32633)"), "EPSG:32633", optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Output folder")))
        self.addOutput(QgsProcessingOutputRasterLayer("IMAGE", self.tr("Imagery")))
        self.addOutput(QgsProcessingOutputRasterLayer("CLASS_RASTER", self.tr("Land-cover class raster")))
        self.addOutput(QgsProcessingOutputVectorLayer(
            "LANDCOVER_POLYGONS", self.tr("Land-cover polygons"), QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputVectorLayer(
            "ROAD_CENTERLINES", self.tr("Road centerlines"), QgsProcessing.TypeVectorLine))
        self.addOutput(QgsProcessingOutputRasterLayer("ROAD_MASK", self.tr("Road mask")))

    def run_core(self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback,
            core_feedback: ProcessingFeedbackAdapter) -> dict[str, Any]:
        from core.sample_data import SampleSceneConfig, generate_sample_scene

        crs = self.parameterAsCrs(parameters, "CRS", context)
        if not crs.isValid():
            crs = QgsCoordinateReferenceSystem("EPSG:32633")
        if crs.isGeographic():
            from core.errors import ConfigError

            raise ConfigError(f"the sample scene needs a projected CRS in metres; {crs.authid() or 'the CRS'} is not one")
        cfg = SampleSceneConfig(
            size_px=self.parameterAsInt(parameters, "SIZE_PX", context),
            cell_size_m=self.parameterAsDouble(parameters, "CELL_SIZE", context),
            seed=self.parameterAsInt(parameters, "SEED", context),
            crs=crs.authid() or crs.toWkt(),
        )
        folder = self.parameterAsString(parameters, self.OUTPUT_FOLDER, context)
        scene = generate_sample_scene(folder, cfg, core_feedback)
        return {
            self.OUTPUT_FOLDER: str(scene.folder),
            "IMAGE": str(scene.image),
            "CLASS_RASTER": str(scene.class_raster),
            "LANDCOVER_POLYGONS": str(scene.landcover_polygons),
            "ROAD_CENTERLINES": str(scene.road_centerlines),
            "ROAD_MASK": str(scene.road_mask),
        }
