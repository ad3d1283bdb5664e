"""roadlandcover:exporttrainingdata in a real headless QGIS: processing.run, qgis_process, layers.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio


def test_processing_run_with_categorized_style(qgis: Any, sample_scene: Any, tmp_path: Path) -> None:
    import processing
    from qgis.core import (
        QgsCategorizedSymbolRenderer,
        QgsFillSymbol,
        QgsProcessingContext,
        QgsProcessingFeedback,
        QgsProject,
        QgsRendererCategory,
        QgsVectorLayer,
    )

    layer = QgsVectorLayer(str(sample_scene.landcover_polygons), "landcover", "ogr")
    assert layer.isValid()
    cats = [QgsRendererCategory(v, QgsFillSymbol.createSimple({"color": c}), name)
            for v, c, name in ((1, "#0000ff", "lake"), (3, "#00ff00", "meadow"))]
    layer.setRenderer(QgsCategorizedSymbolRenderer("classvalue", cats))
    QgsProject.instance().addMapLayer(layer)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    result = processing.run("roadlandcover:exporttrainingdata", {
        "INPUT_RASTER": str(sample_scene.image), "INPUT_LABELS": layer, "CLASS_FIELD": "classvalue",
        "TILE_SIZE_X": 128, "TILE_SIZE_Y": 128, "STRIDE_X": 128, "STRIDE_Y": 128, "BANDS": [3, 2, 1],
        "OUTPUT_FOLDER": str(tmp_path / "o")}, context=context, feedback=QgsProcessingFeedback())
    assert result["CHIP_COUNT"] >= 12 and Path(result["OUTPUT_FOLDER"]) == tmp_path / "o"
    pixels = json.loads(result["CLASS_PIXELS"])
    assert sum(pixels.values()) > 0.9 * result["CHIP_COUNT"] * 128 * 128
    desc = json.loads((tmp_path / "o" / "dataset.json").read_text())
    classes = {c["value"]: c for c in desc["classes"]}
    assert classes[1]["name"] == "lake" and classes[1]["color"] == "#0000ff"
    assert classes[3]["name"] == "meadow" and [b["index"] for b in desc["bands"]] == [3, 2, 1]
    assert result["FOOTPRINTS"].endswith("chip_footprints.gpkg|layername=chips")
    assert QgsVectorLayer(result["FOOTPRINTS"], "f", "ogr").featureCount() == result["CHIP_COUNT"]
    assert result["FOOTPRINTS"] in context.layersToLoadOnCompletion()


def test_memory_and_filtered_vector_layers_are_materialized(qgis: Any, sample_scene: Any, tmp_path: Path) -> None:
    import processing
    from qgis.core import QgsFeatureRequest, QgsVectorLayer

    roads = QgsVectorLayer(str(sample_scene.road_centerlines), "roads", "ogr")
    memory = roads.materialize(QgsFeatureRequest())
    assert memory.providerType() == "memory"
    result = processing.run("roadlandcover:exporttrainingdata", {
        "INPUT_RASTER": str(sample_scene.image), "INPUT_LABELS": memory, "LABEL_MODE": 1, "ORIENTATION": True,
        "TILE_SIZE_X": 128, "TILE_SIZE_Y": 128, "STRIDE_X": 128, "STRIDE_Y": 128,
        "OUTPUT_FOLDER": str(tmp_path / "m")})
    assert result["CHIP_COUNT"] >= 8
    with rasterio.open(tmp_path / "m" / "labels" / "000000.tif") as s:
        assert set(np.unique(s.read(1))) <= {0, 1, 255}
    assert (tmp_path / "m" / "orientation" / "000000.tif").exists()

    from qgis.core import QgsProcessingContext

    from processing_provider.layers import vector_layer_path

    roads.setSubsetString("\"highway\" = 'primary'")
    path, name = vector_layer_path(roads, QgsProcessingContext())
    assert path.endswith(".gpkg") and path != str(sample_scene.road_centerlines) and name == "labels"
    assert QgsVectorLayer(f"{path}|layername=labels", "x", "ogr").featureCount() == roads.featureCount()


def test_raster_materialized_for_extent_at_cell_size(qgis: Any, sample_scene: Any) -> None:
    from qgis.core import QgsProcessingContext, QgsRasterLayer, QgsRectangle

    from processing_provider.layers import raster_layer_path

    layer = QgsRasterLayer(str(sample_scene.image), "img")
    assert raster_layer_path(layer, QgsProcessingContext()) == str(sample_scene.image)
    e = layer.extent()
    sub = QgsRectangle(e.xMinimum(), e.yMaximum() - 64, e.xMinimum() + 64, e.yMaximum())
    out = raster_layer_path(layer, QgsProcessingContext(), extent=sub, cell_size=1.0, force=True)
    with rasterio.open(out) as s, rasterio.open(sample_scene.image) as ref:
        assert (s.width, s.height, s.count) == (64, 64, 4) and s.res == (1.0, 1.0)
        assert s.crs == ref.crs and s.bounds.left == pytest.approx(e.xMinimum())


def test_paletted_raster_legend(qgis: Any, sample_scene: Any) -> None:
    from qgis.core import QgsPalettedRasterRenderer, QgsRasterLayer
    from qgis.PyQt.QtGui import QColor

    from processing_provider.layers import legend_classes

    layer = QgsRasterLayer(str(sample_scene.class_raster), "classes")
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, [
        QgsPalettedRasterRenderer.Class(2, QColor("#123456"), "forest")]))
    names, colors = legend_classes(layer)
    assert names == {2: "forest"} and colors == {2: "#123456"}


def test_bad_class_field_is_a_clear_processing_error(qgis: Any, sample_scene: Any, tmp_path: Path) -> None:
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="non-integer"):
        processing.run("roadlandcover:exporttrainingdata", {
            "INPUT_RASTER": str(sample_scene.image), "INPUT_LABELS": str(sample_scene.road_centerlines),
            "CLASS_FIELD": "width_m", "OUTPUT_FOLDER": str(tmp_path / "bad")})
    assert not (tmp_path / "bad").exists()


def test_qgis_process(qgis: Any, sample_scene: Any, tmp_path: Path) -> None:
    from tests.qgis_support import run_algorithm_json

    proc, payload = run_algorithm_json("roadlandcover:exporttrainingdata", {
        "INPUT_RASTER": sample_scene.image, "INPUT_LABELS": sample_scene.road_centerlines, "LABEL_MODE": 3,
        "SPEED_FIELD": "speed_kph", "TILE_SIZE_X": 128, "TILE_SIZE_Y": 128, "STRIDE_X": 256, "STRIDE_Y": 256,
        "CHIP_FORMAT": 1, "BANDS": "1,2,3", "OUTPUT_FOLDER": tmp_path / "q"})
    assert payload is not None, proc.stdout[-2000:]
    results = payload["results"]
    assert int(results["CHIP_COUNT"]) >= 3
    desc = json.loads((tmp_path / "q" / "dataset.json").read_text())
    assert desc["label_mode"] == "road_speed_bins" and desc["chip_format"] == "png"
    assert desc["speed_bins"]["bands"][-1] == "any road"
    with rasterio.open(tmp_path / "q" / "speed" / "000000.tif") as s:
        assert s.count == len(desc["speed_bins"]["edges"])  # one band per bin + "any road"
