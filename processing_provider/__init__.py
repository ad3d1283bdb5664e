"""QGIS Processing algorithms that wrap core: parameters in, one core call, results out.

Translation only: no image processing happens here. Modules import core's heavy parts (numpy,
rasterio, torch) inside ``processAlgorithm`` so the provider loads even when they are missing.
"""
