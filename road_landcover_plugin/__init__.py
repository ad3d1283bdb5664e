"""QGIS plugin entry point: QGIS calls :func:`classFactory` with its interface object."""

from __future__ import annotations

from typing import Any


def classFactory(iface: Any) -> Any:
    from .plugin import RoadLandcoverPlugin

    return RoadLandcoverPlugin(iface)
