"""The explicit list of algorithms the provider offers (as QGIS's own providers do)."""

from __future__ import annotations

from .assess_accuracy import AssessAccuracyAlgorithm
from .base import RoadLandcoverAlgorithm
from .classify_pixels import ClassifyPixelsAlgorithm
from .evaluate_roads import EvaluateRoadsAlgorithm
from .export_onnx import ExportOnnxAlgorithm
from .export_training_data import ExportTrainingDataAlgorithm
from .extract_roads import ExtractRoadsAlgorithm
from .sample_scene import SampleSceneAlgorithm
from .train_model import TrainModelAlgorithm
from .vectorize_roads import VectorizeRoadsAlgorithm

ALGORITHMS: tuple[type[RoadLandcoverAlgorithm], ...] = (SampleSceneAlgorithm, ExportTrainingDataAlgorithm,
                                                         VectorizeRoadsAlgorithm, EvaluateRoadsAlgorithm,
                                                         TrainModelAlgorithm, ExtractRoadsAlgorithm,
                                                         ClassifyPixelsAlgorithm, AssessAccuracyAlgorithm,
                                                         ExportOnnxAlgorithm,)
