"""roadlandcover:exportonnx in a real headless QGIS (processing.run) and through qgis_process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.qgis_support import run_algorithm_json

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (make setup installs the onnx extra)")
pytest.importorskip("onnx", reason="onnx is not installed (make setup installs the onnx extra)")

from tests.core.test_onnx_export import deepness_run, make_package, our_probabilities


def test_processing_run_exports_for_deepness(qgis: Any, tmp_path: Path) -> None:
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback, QgsProject

    from core.onnx_export import read_metadata

    pkg = make_package(tmp_path / "unet.zip", "unet", 4, [1, 2, 5], mean=[100.0] * 4, std=[40.0] * 4)
    out = tmp_path / "model.onnx"
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    result = processing.run("roadlandcover:exportonnx", {"MODEL": str(pkg), "TILE_SIZE": 32, "OUTPUT": str(out)},
                            context=context, feedback=QgsProcessingFeedback())
    assert Path(result["OUTPUT"]) == out and out.is_file()
    assert 0 <= result["MAX_ABS_DIFF"] < 1e-4
    assert result["CLASS_NAMES"] == "0: water, 1: forest, 2: buildings"
    meta = read_metadata(out)
    assert meta["model_type"] == "Segmentor" and meta["tile_size"] == 32 and meta["resolution"] == 50.0
    raw = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 4)).astype(np.uint8)
    probs, _ = deepness_run(out, raw)
    np.testing.assert_allclose(probs, our_probabilities(pkg, np.transpose(raw, (0, 3, 1, 2))), atol=1e-4)


def test_processing_run_refuses_a_bad_package(qgis: Any, tmp_path: Path) -> None:
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback, QgsProject

    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip at all")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    with pytest.raises(QgsProcessingException, match="not a readable zip file"):
        processing.run("roadlandcover:exportonnx", {"MODEL": str(bad), "OUTPUT": str(tmp_path / "x.onnx")},
                       context=context, feedback=QgsProcessingFeedback())
    assert not (tmp_path / "x.onnx").exists()


def test_qgis_process_exports_road_model(tmp_path: Path) -> None:
    from core.onnx_export import read_metadata

    pkg = make_package(tmp_path / "road.zip", "linknet", 3, [0, 1], task="roads", outputs=1)
    out = tmp_path / "road.onnx"
    _proc, payload = run_algorithm_json("roadlandcover:exportonnx", {
        "MODEL": pkg, "BATCH_SIZE": 1, "OVERLAP": 25, "OUTPUT": out})
    assert payload is not None and Path(payload["results"]["OUTPUT"]) == out
    assert payload["results"]["CLASS_NAMES"] == "0: background, 1: road"
    meta = read_metadata(out)
    assert meta["class_names"] == {"0": "background", "1": "road"} and meta["tiles_overlap"] == 25
    raw = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3)).astype(np.uint8)
    probs, _ = deepness_run(out, raw)
    assert probs.shape == (1, 2, 64, 64)
    np.testing.assert_allclose(probs, our_probabilities(pkg, np.transpose(raw, (0, 3, 1, 2))), atol=1e-4)


def test_help_documents_every_parameter(qgis: Any) -> None:
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("roadlandcover:exportonnx")
    assert alg is not None
    help_text = alg.shortHelpString()
    for words in ("Model package", "Tile size", "Batch size", "Tiles overlap", "ONNX opset", "Verify", "Output"):
        assert words in help_text, words
    assert {p.name() for p in alg.parameterDefinitions()} == {"MODEL", "TILE_SIZE", "BATCH_SIZE", "OVERLAP", "OPSET",
                                                              "VERIFY", "OUTPUT"}
