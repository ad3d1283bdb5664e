"""Results in the map: one layer group per run, each layer styled for what it is.

Used by the plugin after a Processing dialog finishes (``algorithmFinished``) and after a background task
ends (``QgsTask.finished``): both run on the main thread, the only thread allowed to touch the project.

Styling reuses what the other steps already write: a classified raster carries a colour table and a
``.qml`` legend (core.classes), road lines and nodes a ``.qml`` each (core.roads), and Processing's
post-processors style what they load. This module only adds what is missing: the probability ramp,
chip footprints as outlines, and a fallback when a sidecar style is absent (e.g. the file was copied).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsColorRampShader,
    QgsFillSymbol,
    QgsLayerTreeGroup,
    QgsLineSymbol,
    QgsMapLayer,
    QgsMarkerSymbol,
    QgsMessageLog,
    QgsPalettedRasterRenderer,
    QgsProject,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsStyle,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

GROUP_PREFIX = "Road & Land Cover – "

#: Output name (Processing results key) -> (kind, layer name). The order is the drawing order, top first.
OUTPUTS: dict[str, tuple[str, str]] = {
    "OUTPUT_NODES": ("road_nodes", "Road junctions and ends"),
    "OUTPUT_LINES": ("road_lines", "Road lines"),
    "ROAD_CENTERLINES": ("reference_roads", "Road centerlines (truth)"),
    "FOOTPRINTS": ("footprints", "Chip footprints"),
    "LANDCOVER_POLYGONS": ("polygons", "Land-cover polygons"),
    "OUTPUT_CLASSIFIED": ("classified", "Classified"),
    "CLASS_RASTER": ("classified", "Land-cover classes (truth)"),
    "OUTPUT_PROBABILITY": ("probability", "Probability"),
    "ROAD_MASK": ("mask", "Road mask (truth)"),
    "IMAGE": ("image", "Imagery"),
}
_RASTER_KINDS = {"classified", "probability", "mask", "image"}


def group_name(step: str, when: datetime.datetime | None = None) -> str:
    """``Road & Land Cover – Classify pixels 14:03:27``: one group per run, told apart by the time."""
    when = when or datetime.datetime.now()
    return f"{GROUP_PREFIX}{step} {when:%H:%M:%S}"


def _file_part(source: str) -> str:
    """The file of a layer source (``/x/a.gpkg|layername=chips`` -> ``/x/a.gpkg``), normalised for comparison."""
    path = source.split("|")[0]
    return os.path.normcase(os.path.realpath(path)) if path else ""


def _layer_part(source: str) -> str | None:
    for piece in source.split("|")[1:]:
        if piece.startswith("layername="):
            return piece[len("layername="):]
    return None


def find_layers(project: QgsProject, source: str) -> list[QgsMapLayer]:
    """Layers of ``project`` reading the file of ``source`` (and its sub-layer when one is named)."""
    want, sub = _file_part(source), _layer_part(source)
    found = []
    for layer in project.mapLayers().values():
        if _file_part(layer.source()) != want:
            continue
        if sub is not None and _layer_part(layer.source()) not in (None, sub):
            continue
        found.append(layer)
    return found


def _sidecar_qml(layer: QgsMapLayer) -> str | None:
    qml = Path(layer.source().split("|")[0]).with_suffix(".qml")
    return str(qml) if qml.is_file() else None


# --------------------------------------------------------------------------- styles


def style_classified(layer: QgsRasterLayer, classes: Sequence[tuple[int, str, str]] | None = None) -> None:
    """Paletted renderer with class names and colours: ``classes`` (value, name, colour), else the file's own
    ``.qml`` legend, else its GDAL colour table."""
    if classes:
        entries = [QgsPalettedRasterRenderer.Class(int(v), QColor(c), str(n)) for v, n, c in classes]
        layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries))
    elif layer.renderer() is not None and layer.renderer().type() == "paletted" and layer.renderer().classes():
        pass  # Processing's post-processor or the default .qml style already did it
    elif _sidecar_qml(layer):
        layer.loadNamedStyle(_sidecar_qml(layer))
    else:
        table = layer.dataProvider().colorTable(1)
        entries = QgsPalettedRasterRenderer.colorTableToClassData(table) if table else []
        entries = [e for e in entries if e.color.alpha() > 0 or e.value != 0]
        if entries:
            layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries))
    layer.triggerRepaint()


def style_probability(layer: QgsRasterLayer, band: int = 1, ramp: str = "Magma") -> None:
    """Continuous colour ramp from 0 to 1 on ``band`` (the road probability, or the first class's)."""
    color_ramp = QgsStyle.defaultStyle().colorRamp(ramp) or QgsStyle.defaultStyle().colorRamp("Viridis")
    shader_fn = QgsColorRampShader(0.0, 1.0, color_ramp, QgsColorRampShader.Interpolated)
    shader_fn.classifyColorRamp(5, band, layer.extent(), layer.dataProvider())
    items = [QgsColorRampShader.ColorRampItem(i / 4, color_ramp.color(i / 4), f"{i / 4:.2f}") for i in range(5)]
    shader_fn.setColorRampItemList(items)
    shader = QgsRasterShader(0.0, 1.0)
    shader.setRasterShaderFunction(shader_fn)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), band, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(1.0)
    layer.setRenderer(renderer)
    if layer.bandCount() > 1:
        layer.setName(f"{layer.name()} (band {band} of {layer.bandCount()})")
    layer.triggerRepaint()


def _single_symbol(layer: QgsVectorLayer, symbol: Any) -> None:
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    layer.triggerRepaint()


def style_road_lines(layer: QgsVectorLayer) -> None:
    """The ``.qml`` core wrote beside the lines, else orange lines."""
    qml = _sidecar_qml(layer)
    if qml:
        layer.loadNamedStyle(qml)
    else:
        _single_symbol(layer, QgsLineSymbol.createSimple({"line_color": "#ff7f00", "line_width": "0.8"}))
    layer.triggerRepaint()


def style_road_nodes(layer: QgsVectorLayer) -> None:
    """The ``.qml`` core wrote (junctions and dead ends by ``kind``), else small red dots."""
    qml = _sidecar_qml(layer)
    if qml:
        layer.loadNamedStyle(qml)
    else:
        _single_symbol(layer, QgsMarkerSymbol.createSimple({"name": "circle", "color": "#e31a1c", "size": "1.6"}))
    layer.triggerRepaint()


def style_footprints(layer: QgsVectorLayer) -> None:
    """Outlines only, so the imagery under the chips stays visible."""
    _single_symbol(layer, QgsFillSymbol.createSimple(
        {"color": "0,0,0,0", "outline_color": "#ff00ff", "outline_width": "0.3", "style": "no"}))


def style_reference_roads(layer: QgsVectorLayer) -> None:
    """Truth centerlines in blue, to tell them apart from extracted roads (orange)."""
    _single_symbol(layer, QgsLineSymbol.createSimple({"line_color": "#1f78b4", "line_width": "0.5"}))


def style_layer(layer: QgsMapLayer, kind: str, classes: Sequence[tuple[int, str, str]] | None = None) -> None:
    """Style ``layer`` for its ``kind`` (see :data:`OUTPUTS`); unknown kinds keep QGIS's default style."""
    if kind == "classified" and isinstance(layer, QgsRasterLayer):
        style_classified(layer, classes)
    elif kind == "probability" and isinstance(layer, QgsRasterLayer):
        style_probability(layer)
    elif kind == "mask" and isinstance(layer, QgsRasterLayer):
        style_classified(layer, [(0, "background", "#00000000"), (1, "road", "#ffff00")])
    elif kind == "road_lines" and isinstance(layer, QgsVectorLayer):
        style_road_lines(layer)
    elif kind == "road_nodes" and isinstance(layer, QgsVectorLayer):
        style_road_nodes(layer)
    elif kind == "footprints" and isinstance(layer, QgsVectorLayer):
        style_footprints(layer)
    elif kind == "reference_roads" and isinstance(layer, QgsVectorLayer):
        style_reference_roads(layer)
    elif kind == "polygons" and isinstance(layer, QgsVectorLayer) and _sidecar_qml(layer):
        layer.loadNamedStyle(_sidecar_qml(layer))


def _load(source: str, kind: str, name: str) -> QgsMapLayer | None:
    if kind in _RASTER_KINDS:
        layer: QgsMapLayer = QgsRasterLayer(source, name, "gdal")
    else:
        layer = QgsVectorLayer(source, name, "ogr")
    return layer if layer.isValid() else None


# --------------------------------------------------------------------------- groups


def add_results_group(project: QgsProject, step: str, outputs: Mapping[str, Any],
                      load_missing: bool | Sequence[str] = False,
                      classes: Sequence[tuple[int, str, str]] | None = None,
                      when: datetime.datetime | None = None) -> QgsLayerTreeGroup | None:
    """Put the map layers of one run into a new group at the top of the layer tree, styled.

    Args:
        project: the project (main thread only).
        step: the step's name, used in the group name.
        outputs: results dict of the algorithm (output name -> path); names not in :data:`OUTPUTS` are ignored.
        load_missing: load outputs that are not in the project yet (True: all; a sequence: those names).
            Outputs Processing already loaded (as the dialog does for destinations) are moved, never duplicated;
            outputs the user chose not to open stay closed unless named here.
        classes: (value, name, colour) for the classified raster, when known.
        when: time in the group name (default now).

    Returns:
        The group, or None when the run had no map layer (no empty group is left behind).
    """
    root = project.layerTreeRoot()
    picked: list[tuple[QgsMapLayer, str, bool]] = []  # (layer, kind, already in the project)
    for key, (kind, name) in OUTPUTS.items():
        value = outputs.get(key)
        if not value or not isinstance(value, str):
            continue
        existing = find_layers(project, value)
        if existing:
            picked += [(layer, kind, True) for layer in existing]
            continue
        wanted = load_missing if isinstance(load_missing, bool) else key in load_missing
        if wanted and os.path.exists(value.split("|")[0]):
            layer = _load(value, kind, name)
            if layer is not None:
                picked.append((layer, kind, False))
            else:
                QgsMessageLog.logMessage(f"could not open the {name} output {value}", "Road & Land Cover",
                                         Qgis.Warning)
    if not picked:
        return None
    group = root.insertGroup(0, group_name(step, when))
    for layer, kind, in_project in picked:
        style_layer(layer, kind, classes)
        if in_project:
            node = root.findLayer(layer.id())
            if node is not None and node.parent() is not group:
                parent = node.parent()
                group.addChildNode(node.clone())
                parent.removeChildNode(node)
                continue
            if node is not None:
                continue
        project.addMapLayer(layer, False)
        group.addLayer(layer)
    return group
