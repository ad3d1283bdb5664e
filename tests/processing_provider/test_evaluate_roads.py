"""``roadlandcover:evaluateroads`` in a real headless QGIS, through processing.run and qgis_process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from shapely.geometry import LineString

from core.vectors import write_vector
from tests.qgis_support import run_algorithm_json

X0, Y0 = 500_000.0, 5_200_000.0


def _lines(path: Path, lines: list[LineString]) -> Path:
    write_vector(path, lines, {"id": np.arange(len(lines), dtype=np.int32)}, crs="EPSG:32633",
                 geometry_type="LineString")
    return path


def test_evaluate_cut_road_with_processing_run(qgis: Any, tmp_path: Path) -> None:
    import processing

    ref = _lines(tmp_path / "ref.gpkg", [LineString([(X0, Y0), (X0 + 100, Y0)])])
    pred = _lines(tmp_path / "pred.gpkg", [LineString([(X0, Y0), (X0 + 70, Y0)]),
                                           LineString([(X0 + 80, Y0), (X0 + 100, Y0)])])
    result = processing.run("roadlandcover:evaluateroads", {
        "PREDICTED": str(pred), "REFERENCE": str(ref), "TOLERANCE_M": 3.0,
        "OUTPUT_REPORT": str(tmp_path / "report.json")})
    # Hand-computed in tests/core/test_road_metrics.py: gt->prop 1/3, prop->gt 1, APLS 0.5.
    assert result["APLS"] == pytest.approx(0.5)
    assert result["APLS_GT_TO_PROP"] == pytest.approx(1 / 3)
    report = json.loads(Path(result["OUTPUT_REPORT"]).read_text())
    for key in ("apls", "apls_gt_to_prop", "apls_prop_to_gt", "relaxed_precision", "relaxed_recall", "relaxed_f1"):
        assert key in report
    assert report["parameters"]["snap_distance_m"] == 4.0
    assert Path(result["OUTPUT_CSV"]).exists() and Path(result["OUTPUT_PNG"]).exists()


def test_vectorize_then_evaluate_sample_scene(qgis: Any, sample_scene: Any, tmp_path: Path) -> None:
    import processing

    vec = processing.run("roadlandcover:vectorizeroads", {
        "INPUT_RASTER": str(sample_scene.road_mask), "MIN_SPUR_M": 5.0,
        "OUTPUT_LINES": str(tmp_path / "l.gpkg"), "OUTPUT_NODES": str(tmp_path / "n.gpkg")})
    result = processing.run("roadlandcover:evaluateroads", {
        "PREDICTED": vec["OUTPUT_LINES"], "REFERENCE": str(sample_scene.road_centerlines),
        "OUTPUT_REPORT": str(tmp_path / "r.json")})
    assert result["APLS"] > 0.95 and result["RELAXED_F1"] > 0.99


def test_evaluate_through_qgis_process(qgis: Any, tmp_path: Path) -> None:
    ref = _lines(tmp_path / "ref.gpkg", [LineString([(X0, Y0), (X0 + 100, Y0)])])
    proc, payload = run_algorithm_json("roadlandcover:evaluateroads", {
        "PREDICTED": ref, "REFERENCE": ref, "OUTPUT_REPORT": tmp_path / "same.json"})
    assert payload is not None, proc.stdout[-2000:]
    assert payload["results"]["APLS"] == pytest.approx(1.0)
    assert json.loads((tmp_path / "same.json").read_text())["relaxed_f1"] == pytest.approx(1.0)
