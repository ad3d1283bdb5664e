"""Pure-Python backend of the Road & Land Cover plugin.

Nothing in this package imports QGIS or Qt: it takes paths, numbers, CRS strings, arrays and
shapely geometries, so the same code runs inside QGIS, from ``qgis_process`` and headless on a
GPU server (``road-landcover`` on the command line). Heavy dependencies (torch, rasterio) are
imported by the modules that need them, never here, so that ``core.deps`` can report what is
missing instead of failing on import.
"""

__version__ = "0.1.0"
