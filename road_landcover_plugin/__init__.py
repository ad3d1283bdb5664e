"""QGIS plugin entry point: QGIS calls :func:`classFactory` with its interface object."""

from __future__ import annotations

from typing import Any


def classFactory(iface: Any) -> Any:
    # First, before any module imports rasterio/pyogrio/shapely: keep their bundled GDAL/GEOS apart from QGIS's.
    from core.native_libs import isolate_bundled_libraries

    isolate_bundled_libraries()
    from .plugin import RoadLandcoverPlugin

    return RoadLandcoverPlugin(iface)
