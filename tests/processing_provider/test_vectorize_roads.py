"""``roadlandcover:vectorizeroads`` in a real headless QGIS: processing.run, load-on-completion styling, qgis_process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.qgis_support import run_algorithm_json


def test_vectorize_sample_scene_with_processing_run(qgis: Any, sample_scene: Any, tmp_path: Path) -> None:
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject, QgsVectorLayer

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    params = {"INPUT_RASTER": str(sample_scene.road_mask), "THRESHOLD": 0.5, "MIN_SPUR_M": 5.0, "MAX_GAP_M": 15.0,
              "MIN_COMPONENT_M": 25.0, "SIMPLIFY_M": 1.0, "OUTPUT_LINES": str(tmp_path / "lines.gpkg"),
              "OUTPUT_NODES": str(tmp_path / "nodes.gpkg")}
    result = processing.run("roadlandcover:vectorizeroads", params, context=context, feedback=feedback)
    assert result["OUTPUT_LINES"] == str(tmp_path / "lines.gpkg")
    assert result["EDGE_COUNT"] > 20 and result["JUNCTION_COUNT"] >= 15
    lines = QgsVectorLayer(result["OUTPUT_LINES"], "lines", "ogr")
    nodes = QgsVectorLayer(result["OUTPUT_NODES"], "nodes", "ogr")
    assert lines.isValid() and nodes.isValid()
    assert lines.crs().authid() == "EPSG:32633"
    assert [f.name() for f in lines.fields()][-4:] == ["edge_id", "from_node", "to_node", "length_m"]
    assert lines.featureCount() == result["EDGE_COUNT"]
    total = sum(f["length_m"] for f in lines.getFeatures())
    assert total == pytest.approx(result["TOTAL_LENGTH_M"], abs=0.05)  # per-line values are rounded to mm
    ext = lines.extent()
    assert 500_000 <= ext.xMinimum() < ext.xMaximum() <= 500_256 and ext.yMinimum() >= 5_200_000
    degrees = sorted({f["degree"] for f in nodes.getFeatures()})
    assert degrees[0] == 1 and max(degrees) >= 3

    # Both layers are queued to load into the project, with a post-processor that applies the styles.
    to_load = context.layersToLoadOnCompletion()
    assert set(to_load) >= {result["OUTPUT_LINES"], result["OUTPUT_NODES"]}
    details = context.layerToLoadOnCompletionDetails(result["OUTPUT_NODES"])
    details.postProcessor().postProcessLayer(nodes, context, feedback)
    assert nodes.renderer().type() == "categorizedSymbol"
    assert {c.value() for c in nodes.renderer().categories()} == {"junction", "end"}
    context.layerToLoadOnCompletionDetails(result["OUTPUT_LINES"]).postProcessor().postProcessLayer(
        lines, context, feedback)
    assert lines.renderer().type() == "singleSymbol" and lines.renderer().symbol().symbolLayerCount() == 2


def test_vectorize_bad_input_is_a_clear_error(qgis: Any, tmp_path: Path) -> None:
    import processing
    import rasterio
    from qgis.core import QgsProcessingException

    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8") as dst:
        dst.write(np.ones((64, 64), np.uint8), 1)
    with pytest.raises(QgsProcessingException, match="no CRS"):
        processing.run("roadlandcover:vectorizeroads", {
            "INPUT_RASTER": str(path), "OUTPUT_LINES": str(tmp_path / "l.gpkg"),
            "OUTPUT_NODES": str(tmp_path / "n.gpkg")})
    assert not (tmp_path / "l.gpkg").exists()


def test_vectorize_through_qgis_process(qgis: Any, sample_scene: Any, tmp_path: Path) -> None:
    proc, payload = run_algorithm_json("roadlandcover:vectorizeroads", {
        "INPUT_RASTER": sample_scene.road_mask, "MIN_SPUR_M": 5, "OUTPUT_LINES": tmp_path / "l.gpkg",
        "OUTPUT_NODES": tmp_path / "n.gpkg"})
    assert payload is not None, proc.stdout[-2000:]
    results = payload["results"]
    assert results["EDGE_COUNT"] > 20
    assert Path(results["OUTPUT_LINES"]).exists() and Path(results["OUTPUT_NODES"]).exists()
    assert (tmp_path / "l.qml").exists() and (tmp_path / "n.qml").exists()


def test_extract_roads_with_processing_run(qgis: Any, sample_scene: Any, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import processing
    import rasterio

    from tests.core.test_roads_extract import crop, road_package

    pkg = road_package(tmp_path / "pkg")
    image = crop(sample_scene.image, tmp_path / "img.tif")
    result = processing.run("roadlandcover:extractroads", {
        "INPUT_RASTER": str(image), "MODEL": str(pkg / "model.json"), "BATCH_SIZE": 4, "DEVICE": 3,
        "MIN_COMPONENT_M": 5.0, "OUTPUT_PROBABILITY": str(tmp_path / "prob.tif"),
        "OUTPUT_LINES": str(tmp_path / "l.gpkg"), "OUTPUT_NODES": str(tmp_path / "n.gpkg")})
    assert result["OUTPUT_PROBABILITY"] == str(tmp_path / "prob.tif")
    with rasterio.open(result["OUTPUT_PROBABILITY"]) as prob:
        assert prob.count == 1 and prob.read(1).max() > 0.99
    assert result["EDGE_COUNT"] >= 1 and Path(result["OUTPUT_LINES"]).exists()
