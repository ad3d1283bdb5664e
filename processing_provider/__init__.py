"""QGIS Processing algorithms that wrap core: parameters in, one core call, results out.

Translation only: no image processing happens here. Modules import core's heavy parts (numpy,
rasterio, torch) inside ``processAlgorithm`` so the provider loads even when they are missing.
"""

from core.native_libs import isolate_bundled_libraries

# Before anything imports rasterio/pyogrio/shapely inside QGIS: their wheels' GDAL, PROJ and GEOS must not
# bind to the copies QGIS itself links (see core/native_libs.py).
isolate_bundled_libraries()
