"""The explicit list of algorithms the provider offers (as QGIS's own providers do)."""

from __future__ import annotations

from .base import RoadLandcoverAlgorithm
from .export_training_data import ExportTrainingDataAlgorithm
from .sample_scene import SampleSceneAlgorithm

ALGORITHMS: tuple[type[RoadLandcoverAlgorithm], ...] = (SampleSceneAlgorithm, ExportTrainingDataAlgorithm,)
