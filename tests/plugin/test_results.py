"""Result groups (road_landcover_plugin.results) in a headless QGIS: move, do not duplicate, style, respect choices."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

pytestmark = pytest.mark.qgis


def test_group_moves_loaded_layers_loads_named_ones_and_styles_them(qgis: Any, sample_scene: Any) -> None:
    from qgis.core import QgsLayerTreeGroup, QgsProject, QgsRasterLayer

    from road_landcover_plugin import results

    project = QgsProject.instance()
    project.clear()
    loaded = QgsRasterLayer(str(sample_scene.class_raster), "as Processing loaded it")
    project.addMapLayer(loaded)  # at the root, like Processing's post-processing
    outputs = {"OUTPUT_CLASSIFIED": str(sample_scene.class_raster),
               "FOOTPRINTS": f"{sample_scene.landcover_polygons}|layername=landcover",
               "OUTPUT_PROBABILITY": str(sample_scene.road_mask),  # not loaded by the user: stays closed
               "CHIP_COUNT": 12}
    when = datetime.datetime(2024, 5, 6, 7, 8, 9)
    group = results.add_results_group(project, "Export training data", outputs, load_missing=["FOOTPRINTS"],
                                      when=when)
    assert group is not None and group.name() == "Road & Land Cover – Export training data 07:08:09"
    root = project.layerTreeRoot()
    assert [type(n) for n in root.children()] == [QgsLayerTreeGroup], "the loaded layer must move into the group"
    layers = [n.layer() for n in group.findLayers()]
    assert [layer.name() for layer in layers] == ["Chip footprints", "as Processing loaded it"]
    assert len(project.mapLayers()) == 2 and loaded in layers
    footprints, classified = layers
    symbol = footprints.renderer().symbol()
    assert footprints.renderer().type() == "singleSymbol" and symbol.color().alpha() == 0
    assert symbol.symbolLayer(0).strokeColor().name() == "#ff00ff"
    assert classified.renderer().type() == "paletted"
    assert [c.label for c in classified.renderer().classes()][:2] == ["water", "forest"]

    # classes given explicitly win over the file's own legend
    again = results.add_results_group(project, "Classify pixels", {"OUTPUT_CLASSIFIED": str(sample_scene.class_raster)},
                                      classes=[(1, "lake", "#0000ff"), (2, "wood", "#00ff00")])
    assert again is not None and [n.layer() for n in again.findLayers()] == [classified]
    assert [(c.value, c.label, c.color.name()) for c in classified.renderer().classes()] == [
        (1.0, "lake", "#0000ff"), (2.0, "wood", "#00ff00")]
    assert group.findLayers() == [] or [n.layer() for n in group.findLayers()] == [footprints]
    project.clear()


def test_probability_ramp_and_no_empty_group(qgis: Any, sample_scene: Any) -> None:
    from qgis.core import QgsProject

    from road_landcover_plugin import results

    project = QgsProject.instance()
    project.clear()
    assert results.add_results_group(project, "Assess accuracy", {"OUTPUT_REPORT": "/tmp/r.json", "KAPPA": 0.5}) is None
    assert project.layerTreeRoot().children() == []
    group = results.add_results_group(project, "Extract roads", {"OUTPUT_PROBABILITY": str(sample_scene.road_mask)},
                                      load_missing=True)
    layer = group.findLayers()[0].layer()
    renderer = layer.renderer()
    assert renderer.type() == "singlebandpseudocolor"
    assert (renderer.classificationMin(), renderer.classificationMax()) == (0.0, 1.0)
    items = renderer.shader().rasterShaderFunction().colorRampItemList()
    assert [round(i.value, 2) for i in items] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert items[0].color != items[-1].color
    project.clear()
