"""QGIS layers as files that core can read, and the user's legend as class names and colours.

Core reads paths. A file-based layer (GDAL raster, OGR vector without a filter) passes its own path, so
nothing is copied. Anything else is materialized once into the Processing temporary folder:

* a raster that is not a GDAL file (WMS, XYZ, WCS, a virtual raster provider) is rendered for an extent at
  a cell size into a GeoTIFF (raw values when the provider gives values, RGBA when it only gives colours);
* a vector layer that is in memory, filtered (subset string), or restricted to its selection is written to
  a GeoPackage with the same CRS and attributes.

:func:`legend_classes` reads a categorized (vector) or paletted (raster) renderer, so the training folder,
the model and the classified output carry the user's class names and colours.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingUtils,
    QgsProviderRegistry,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
)


def _temp_path(suffix: str) -> str:
    return os.path.join(QgsProcessingUtils.tempFolder(), f"rlc_{uuid.uuid4().hex[:10]}{suffix}")


def _file_of(layer: QgsMapLayer) -> tuple[str, dict[str, Any]]:
    """(path, decoded uri parts) of a file-based layer, or ('', {}) when it is not one."""
    provider = layer.providerType()
    if provider not in ("gdal", "ogr"):
        return "", {}
    parts = dict(QgsProviderRegistry.instance().decodeUri(provider, layer.source()))
    path = str(parts.get("path") or "")
    return (path, parts) if path and os.path.isfile(path) else ("", {})


def raster_layer_path(layer: QgsRasterLayer, context: QgsProcessingContext,
                      feedback: QgsProcessingFeedback | None = None, extent: QgsRectangle | None = None,
                      cell_size: float | None = None, force: bool = False) -> str:
    """A GDAL-readable path for ``layer``: its own file, or a GeoTIFF rendered for ``extent`` at ``cell_size``.

    Args:
        extent: area to materialize, in the layer's CRS (default: the layer's extent).
        cell_size: cell size in layer CRS units (default: the layer's own resolution when it has one).
        force: materialize even a file-based layer (tests; rasters inside archives).
    """
    path, parts = _file_of(layer)
    if path and not force and not parts.get("layerName"):
        return path
    if layer.providerType() == "gdal" and not force and os.path.exists(layer.source()):
        return layer.source()
    ext = QgsRectangle(extent) if extent is not None and not extent.isEmpty() else layer.extent()
    ext = ext.intersect(layer.extent()) if not layer.extent().isEmpty() else ext
    if ext.isEmpty():
        raise QgsProcessingException(
            f"the extent does not overlap the raster layer {layer.name()}; choose an extent inside it")
    res = cell_size or (layer.rasterUnitsPerPixelX() if layer.dataProvider().capabilities()
                        & layer.dataProvider().Size else 0.0)
    if not res or res <= 0:
        raise QgsProcessingException(
            f"the raster layer {layer.name()} ({layer.providerType()}) has no native cell size; set the cell size "
            "so it can be downloaded/rendered at that resolution")
    ncols = max(1, int(round(ext.width() / res)))
    nrows = max(1, int(round(ext.height() / res)))
    if ncols * nrows > 40000 * 40000:
        raise QgsProcessingException(
            f"rendering {layer.name()} at cell size {res:g} needs {ncols}x{nrows} pixels; use a smaller extent "
            "or a larger cell size")
    out = _temp_path(".tif")
    if feedback is not None:
        feedback.pushInfo(f"materializing {layer.name()} ({layer.providerType()}) to {out}: {ncols}x{nrows} px")
    pipe = QgsRasterPipe()
    provider = layer.dataProvider().clone()
    if not pipe.set(provider):
        raise QgsProcessingException(f"cannot read the raster layer {layer.name()}")
    from qgis.core import Qgis

    argb = provider.dataType(1) in (Qgis.ARGB32, Qgis.ARGB32_Premultiplied)
    if argb and layer.renderer() is not None:
        pipe.set(layer.renderer().clone())
    writer = QgsRasterFileWriter(out)
    writer.setOutputFormat("GTiff")
    writer.setCreateOptions(["COMPRESS=DEFLATE", "TILED=YES"])
    err = writer.writeRaster(pipe, ncols, nrows, ext, layer.crs(), context.transformContext(), feedback)
    if err != QgsRasterFileWriter.NoError or not os.path.exists(out):
        raise QgsProcessingException(f"could not write the raster layer {layer.name()} to a GeoTIFF (error {err})")
    return out


def vector_layer_path(layer: QgsVectorLayer, context: QgsProcessingContext,
                      feedback: QgsProcessingFeedback | None = None, selected_only: bool = False,
                      force: bool = False) -> tuple[str, str | None]:
    """(path, layer name) that core's ``read_vector`` reads: the layer's own file, or a temporary GeoPackage."""
    path, parts = _file_of(layer)
    filtered = bool(layer.subsetString()) or (selected_only and layer.selectedFeatureCount() > 0)
    if path and not filtered and not force:
        return path, (str(parts["layerName"]) if parts.get("layerName") else None)
    out = _temp_path(".gpkg")
    if feedback is not None:
        feedback.pushInfo(f"writing {layer.name()} ({layer.providerType()}) to {out}")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = "labels"
    options.fileEncoding = "UTF-8"
    options.onlySelectedFeatures = bool(selected_only and layer.selectedFeatureCount() > 0)
    result = QgsVectorFileWriter.writeAsVectorFormatV3(layer, out, context.transformContext(), options)
    if result[0] != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"could not write the vector layer {layer.name()} to a GeoPackage: {result[1]}")
    return out, "labels"


def layer_crs_string(crs: QgsCoordinateReferenceSystem) -> str:
    """An authority id when there is one (``EPSG:32633``), else WKT: what rasterio accepts."""
    return crs.authid() if crs.authid() else crs.toWkt()


def _to_int(value: Any) -> int | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if f == int(f) else None


def legend_classes(layer: QgsMapLayer, field: str | None = None) -> tuple[dict[int, str], dict[int, str]]:
    """(names, colours) by class value from a categorized or paletted renderer; empty when there is none.

    A categorized renderer is used only when it classifies ``field`` (or any field when ``field`` is None)
    and its category values are integers; colours come from each category's symbol.
    """
    names: dict[int, str] = {}
    colors: dict[int, str] = {}
    if isinstance(layer, QgsVectorLayer):
        renderer = layer.renderer()
        if renderer is None or renderer.type() != "categorizedSymbol":
            return names, colors
        attr = renderer.classAttribute()
        if field and attr.lower() != field.lower():
            return names, colors
        for cat in renderer.categories():
            v = _to_int(cat.value())
            if v is None or not 0 <= v <= 254:
                continue
            names[v] = cat.label() or str(v)
            if cat.symbol() is not None:
                colors[v] = cat.symbol().color().name()
    elif isinstance(layer, QgsRasterLayer):
        renderer = layer.renderer()
        if renderer is None or renderer.type() != "paletted":
            return names, colors
        for cls in renderer.classes():
            v = _to_int(cls.value)
            if v is None or not 0 <= v <= 254:
                continue
            names[v] = cls.label or str(v)
            colors[v] = cls.color.name()
    return names, colors
