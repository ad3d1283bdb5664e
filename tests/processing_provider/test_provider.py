"""The provider in a real headless QGIS: registration, algorithm metadata, processing.run, errors."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest


def test_provider_registered(qgis: Any) -> None:
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById("roadlandcover")
    assert provider is not None
    assert provider.name() == "Road & Land Cover (Deep Learning)"
    ids = [a.id() for a in provider.algorithms()]
    assert "roadlandcover:samplescene" in ids
    for alg in provider.algorithms():
        assert re.fullmatch(r"roadlandcover:[a-z]+", alg.id()), alg.id()
        assert len(alg.shortHelpString()) > 100, f"{alg.id()} needs real help text"


def test_processing_run_sample_scene(qgis: Any, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import processing
    import rasterio

    result = processing.run("roadlandcover:samplescene", {"SIZE_PX": 256, "OUTPUT_FOLDER": str(tmp_path / "s")})
    with rasterio.open(result["IMAGE"]) as src:
        assert src.count == 4 and src.width == 256 and src.crs.to_epsg() == 32633
        assert src.res == (0.5, 0.5)
        assert np.count_nonzero(src.read(1)) > 0.5 * 256 * 256
    for key in ("CLASS_RASTER", "LANDCOVER_POLYGONS", "ROAD_CENTERLINES", "ROAD_MASK"):
        assert (tmp_path / "s").joinpath(result[key].split("/")[-1]).exists()


def test_core_errors_become_processing_exceptions(qgis: Any, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="projected CRS"):
        processing.run("roadlandcover:samplescene",
                       {"SIZE_PX": 256, "CRS": "EPSG:4326", "OUTPUT_FOLDER": str(tmp_path / "geo")})
    assert not (tmp_path / "geo").exists()


def test_feedback_adapter_maps_progress_and_cancel(qgis: Any) -> None:
    from qgis.core import QgsProcessingFeedback

    from core.progress import Feedback, SubFeedback
    from processing_provider.feedback import ProcessingFeedbackAdapter

    fb = QgsProcessingFeedback()
    adapter = ProcessingFeedbackAdapter(fb)
    assert isinstance(adapter, Feedback)
    SubFeedback(adapter, 50, 100).set_progress(50)
    assert fb.progress() == pytest.approx(75)
    assert not adapter.is_canceled()
    fb.cancel()
    assert adapter.is_canceled()
