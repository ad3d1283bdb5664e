"""roadlandcover:assessaccuracy in a real headless QGIS and through qgis_process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely

from core.vectors import write_vector
from tests.core.test_inference import write_raster
from tests.qgis_support import run_algorithm_json


def _inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    pred = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 255, 2]], dtype=np.uint8)
    ref = np.array([[1, 1, 1, 2], [0, 1, 2, 2], [3, 2, 3, 2]], dtype=np.uint8)
    x0, y0 = 500000.0, 5000000.0
    polys = write_vector(tmp_path / "ref.gpkg", [shapely.box(x0, y0 - 2, x0 + 2, y0)],
                         {"classvalue": np.array([1], dtype=np.int32)}, "EPSG:32633", layer="truth")
    return (write_raster(tmp_path / "cls.tif", pred, nodata=255), write_raster(tmp_path / "ref.tif", ref), polys)


def test_processing_run_raster_and_polygon_reference(qgis: Any, tmp_path: Path) -> None:
    import processing

    cls, ref, polys = _inputs(tmp_path)
    result = processing.run("roadlandcover:assessaccuracy", {
        "CLASSIFIED": str(cls), "REFERENCE": str(ref), "IGNORE_CLASSES": "0", "OUTPUT_REPORT": str(tmp_path / "a.json")})
    assert result["OVERALL_ACCURACY"] == pytest.approx(0.8)
    report = json.loads(Path(result["OUTPUT_REPORT"]).read_text())
    assert set(report) >= {"overall_accuracy", "kappa", "miou", "per_class"}
    assert Path(result["OUTPUT_HTML"]).exists() and Path(result["OUTPUT_CSV"]).exists()
    result = processing.run("roadlandcover:assessaccuracy", {
        "CLASSIFIED": str(cls), "REFERENCE": f"{polys}|layername=truth", "CLASS_FIELD": "classvalue",
        "OUTPUT_REPORT": str(tmp_path / "b.json")})
    assert result["OVERALL_ACCURACY"] == pytest.approx(1.0)


def test_bad_ignore_list_is_a_processing_error(qgis: Any, tmp_path: Path) -> None:
    import processing
    from qgis.core import QgsProcessingException

    cls, ref, _ = _inputs(tmp_path)
    with pytest.raises(QgsProcessingException, match="integers separated by commas"):
        processing.run("roadlandcover:assessaccuracy", {"CLASSIFIED": str(cls), "REFERENCE": str(ref),
                                                         "IGNORE_CLASSES": "zero", "OUTPUT_REPORT": str(tmp_path / "x.json")})


def test_qgis_process_assess_accuracy(tmp_path: Path) -> None:
    pytest.importorskip("qgis.core")
    cls, ref, _ = _inputs(tmp_path)
    _proc, payload = run_algorithm_json("roadlandcover:assessaccuracy", {
        "CLASSIFIED": cls, "REFERENCE": ref, "IGNORE_CLASSES": "0", "OUTPUT_REPORT": tmp_path / "q.json"})
    assert payload is not None, _proc.stdout[-2000:]
    assert Path(payload["results"]["OUTPUT_REPORT"]) == tmp_path / "q.json"
    # Numeric outputs reach qgis_process (numpy scalars would arrive empty: base.plain_outputs converts them).
    assert payload["results"]["OVERALL_ACCURACY"] == pytest.approx(0.8)
    assert isinstance(payload["results"]["KAPPA"], float)
    assert json.loads((tmp_path / "q.json").read_text())["overall_accuracy"] == pytest.approx(0.8)
    assert json.loads((tmp_path / "q.json").read_text())["per_class"]["2"]["precision"] == pytest.approx(0.8)


def test_processing_run_reference_with_class_names(qgis: Any, tmp_path: Path) -> None:
    """A text class field is offered by the dialog and matched with the classified raster's class names."""
    import processing
    import rasterio

    cls, _ref, _polys = _inputs(tmp_path)
    with rasterio.open(cls, "r+") as dst:
        dst.update_tags(CLASS_NAMES="1:forest,2:water,3:field")
    x0, y0 = 500000.0, 5000000.0
    named = write_vector(tmp_path / "named.gpkg", [shapely.box(x0, y0 - 2, x0 + 2, y0)],
                         {"landcover": np.array(["Forest"], dtype=object)}, "EPSG:32633")
    result = processing.run("roadlandcover:assessaccuracy", {
        "CLASSIFIED": str(cls), "REFERENCE": str(named), "CLASS_FIELD": "landcover",
        "OUTPUT_REPORT": str(tmp_path / "n.json")})
    assert result["OVERALL_ACCURACY"] == pytest.approx(1.0)
    assert json.loads(Path(result["OUTPUT_REPORT"]).read_text())["per_class"]["1"]["name"] == "forest"
