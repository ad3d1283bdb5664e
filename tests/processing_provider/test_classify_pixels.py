"""roadlandcover:classifypixels in a real headless QGIS (processing.run) and through qgis_process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from tests.core.test_inference import make_package, read, write_raster
from tests.qgis_support import run_algorithm_json


def test_processing_run_classifies_and_styles(qgis: Any, tmp_path: Path) -> None:
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject, QgsRasterLayer

    pkg = make_package(tmp_path / "onehot.zip", "test_onehot", 1, [0, 1, 2, 3])
    classes = np.random.default_rng(0).integers(0, 4, (37, 45)).astype(np.uint8)
    classes[:3, :3] = 99
    src = write_raster(tmp_path / "in.tif", classes, nodata=99)
    out = tmp_path / "cls.tif"
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    params = {"INPUT_RASTER": str(src), "MODEL": str(pkg), "TILE_SIZE": 16, "PADDING": 4, "BLEND": 1,
              "DEVICE": 3, "OUTPUT_CLASSIFIED": str(out), "OUTPUT_PROBABILITY": str(tmp_path / "p.tif")}
    result = processing.run("roadlandcover:classifypixels", params, context=context, feedback=QgsProcessingFeedback())
    expected = classes.copy()
    expected[:3, :3] = 255
    np.testing.assert_array_equal(read(out)[0], expected)
    assert result["DEVICE"].startswith("cpu") and Path(result["OUTPUT_PROBABILITY"]).exists()
    with rasterio.open(tmp_path / "p.tif") as p:
        assert p.count == 4 and p.dtypes[0] == "float32"
    # The layer opens with the class colours and names (paletted), from the .qml sidecar ...
    layer = QgsRasterLayer(str(out), "cls")
    assert layer.isValid()
    _msg, ok = layer.loadDefaultStyle()
    assert ok and layer.renderer().type() == "paletted"
    assert [c.label for c in layer.renderer().classes()] == ["class0", "class1", "class2", "class3"]
    # ... and from the post-processor set when the GUI loads the result.
    from processing_provider.classify_pixels import PalettedStyler

    styler = PalettedStyler([(1, "water", "#1f78b4"), (2, "forest", "#33a02c")])
    plain = QgsRasterLayer(str(out), "plain", "gdal", QgsRasterLayer.LayerOptions(loadDefaultStyle=False))
    styler.postProcessLayer(plain, context, QgsProcessingFeedback())
    assert plain.renderer().type() == "paletted"
    assert [(c.value, c.label, c.color.name()) for c in plain.renderer().classes()] == [
        (1, "water", "#1f78b4"), (2, "forest", "#33a02c")]


def test_post_processor_is_attached_when_loading_on_completion(qgis: Any, tmp_path: Path) -> None:
    from qgis.core import (
        QgsApplication,
        QgsProcessingContext,
        QgsProcessingFeedback,
        QgsProject,
    )

    pkg = make_package(tmp_path / "onehot", "test_onehot", 1, [0, 1])
    src = write_raster(tmp_path / "in.tif", np.zeros((10, 10), np.uint8))
    out = str(tmp_path / "cls.tif")
    alg = QgsApplication.processingRegistry().createAlgorithmById("roadlandcover:classifypixels")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    context.addLayerToLoadOnCompletion(out, QgsProcessingContext.LayerDetails("cls", QgsProject.instance(), "OUTPUT"))
    params = {"INPUT_RASTER": str(src), "MODEL": str(pkg / "model.json"), "TILE_SIZE": 8, "DEVICE": 3,
              "OUTPUT_CLASSIFIED": out}
    ok = alg.prepare(params, context, QgsProcessingFeedback())
    assert ok
    alg.runPrepared(params, context, QgsProcessingFeedback())
    assert context.layerToLoadOnCompletionDetails(out).postProcessor() is not None


def test_band_mismatch_is_a_processing_error(qgis: Any, tmp_path: Path) -> None:
    import processing
    from qgis.core import QgsProcessingException

    pkg = make_package(tmp_path / "conv", "test_tinyconv", 2, [1, 2])
    src = write_raster(tmp_path / "in.tif", np.zeros((3, 12, 12), np.float32)[:1])
    with pytest.raises(QgsProcessingException, match="expects 2 bands"):
        processing.run("roadlandcover:classifypixels", {"INPUT_RASTER": str(src), "MODEL": str(pkg / "model.json"), "DEVICE": 3,
                                                         "OUTPUT_CLASSIFIED": str(tmp_path / "o.tif")})
    assert not (tmp_path / "o.tif").exists()


def test_qgis_process_classifies_with_a_unet_package(tmp_path: Path) -> None:
    pytest.importorskip("qgis.core")
    from core.models import available_models

    if "unet" not in available_models():
        pytest.skip("the unet architecture is not available yet")
    from core.model_package import save_package
    from core.models import build_model
    from tests.core.test_inference import definition

    d = definition("unet", 3, [1, 2, 3], tile=64)
    d["architecture"]["options"] = {"encoder": "resnet18", "base_width": 8}
    model = build_model("unet", 3, 3, encoder="resnet18", base_width=8)
    pkg = save_package(tmp_path / "unet.zip", d, model.state_dict())
    src = write_raster(tmp_path / "in.tif", np.random.default_rng(0).integers(0, 255, (3, 50, 70)).astype(np.uint8))
    out = tmp_path / "cls.tif"
    _proc, payload = run_algorithm_json("roadlandcover:classifypixels", {
        "INPUT_RASTER": src, "MODEL": pkg, "DEVICE": 3, "TILE_SIZE": 64, "PADDING": 16, "OUTPUT_CLASSIFIED": out})
    assert payload is not None and Path(payload["results"]["OUTPUT_CLASSIFIED"]) == out
    with rasterio.open(out) as dst, rasterio.open(src) as ref:
        assert dst.shape == ref.shape and dst.transform == ref.transform and dst.crs == ref.crs
        assert set(np.unique(dst.read(1))) <= {1, 2, 3}
