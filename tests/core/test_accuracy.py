"""assess_accuracy: classified raster vs reference raster / polygons; report files and values."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from core.accuracy import AccuracyConfig, assess_accuracy
from core.errors import LabelError
from core.vectors import write_vector
from tests.core.test_inference import write_raster


def _classified(tmp_path: Path) -> Path:
    pred = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 255, 2]], dtype=np.uint8)
    return write_raster(tmp_path / "cls.tif", pred, nodata=255)


def test_raster_reference_hand_computed(tmp_path: Path) -> None:
    cls = _classified(tmp_path)
    ref = write_raster(tmp_path / "ref.tif", np.array([[1, 1, 1, 2], [0, 1, 2, 2], [3, 2, 3, 2]], dtype=np.uint8))
    result = assess_accuracy(AccuracyConfig(cls, ref, tmp_path / "rep" / "acc.json", ignore_classes=(0,)))
    # evaluated: 10 (one ignored reference 0, one nodata prediction). Correct: (0,0)(0,1)(0,3)(1,1)(1,2)(1,3)(2,0)(2,3)=8
    report = json.loads(result.report.read_text())
    assert report["overall_accuracy"] == pytest.approx(0.8)
    assert set(report["per_class"]) == {"1", "2", "3"}
    assert report["per_class"]["1"]["recall"] == pytest.approx(3 / 4)  # ref 1: 4 pixels, 3 predicted 1
    assert report["per_class"]["2"]["precision"] == pytest.approx(4 / 5)  # predicted 2: 5 pixels, 4 correct
    assert report["per_class"]["3"]["iou"] == pytest.approx(1 / 2)  # tp 1, fp 1 (ref 2 predicted 3), fn 0
    # kappa by hand: rows (ref) 1:4 2:5 3:1 ; cols (pred) 1:3 2:5 3:2 (+ other 0); n=10
    pe = (4 * 3 + 5 * 5 + 1 * 2) / 100
    assert report["kappa"] == pytest.approx((0.8 - pe) / (1 - pe))
    assert report["miou"] == pytest.approx(np.mean([3 / 4, 4 / 6, 1 / 2]))
    rows = list(csv.DictReader(result.csv.open()))
    assert [r["class_value"] for r in rows] == ["1", "2", "3"] and float(rows[0]["recall"]) == pytest.approx(0.75)
    matrix = list(csv.reader(result.confusion_csv.open()))
    assert matrix[0][1:] == ["1", "2", "3", "other"] and matrix[1][1:] == ["3", "1", "0", "0"]
    assert "Overall accuracy" in result.html.read_text()


def test_polygon_reference_with_class_field(tmp_path: Path) -> None:
    cls = _classified(tmp_path)  # origin (500000, 5000000), 1 m cells, 4 x 3
    x0, y0 = 500000.0, 5000000.0
    polys = [shapely.box(x0, y0 - 2, x0 + 2, y0), shapely.box(x0 + 2, y0 - 3, x0 + 4, y0 - 1)]
    ref = write_vector(tmp_path / "ref.gpkg", polys, {"classvalue": np.array([1, 3], dtype=np.int32)}, "EPSG:32633")
    result = assess_accuracy(AccuracyConfig(cls, ref, tmp_path / "a.json", class_field="classvalue"))
    m = result.metrics
    # polygon 1 covers the 2x2 top-left (all predicted 1); polygon 3 covers cols 2-3 of rows 1-2:
    # predictions 2, 2, nodata, 2 -> 3 evaluated, all wrong.
    assert m.evaluated_pixels == 7
    assert m.overall_accuracy == pytest.approx(4 / 7)
    assert m.per_class[3].recall == pytest.approx(0.0) and m.per_class[1].precision == pytest.approx(1.0)


def test_polygons_in_another_crs_are_reprojected(tmp_path: Path) -> None:
    from rasterio.warp import transform_geom

    cls = _classified(tmp_path)
    x0, y0 = 500000.0, 5000000.0
    poly = shapely.box(x0, y0 - 2, x0 + 2, y0).buffer(-0.1)
    geo = shapely.geometry.shape(transform_geom("EPSG:32633", "EPSG:4326", shapely.geometry.mapping(poly)))
    ref = write_vector(tmp_path / "ref.geojson", [geo], {"c": np.array([1])}, "EPSG:4326")
    m = assess_accuracy(AccuracyConfig(cls, ref, tmp_path / "a.json", class_field="c")).metrics
    assert m.evaluated_pixels == 4 and m.overall_accuracy == pytest.approx(1.0)


def test_missing_class_field_is_a_clear_error(tmp_path: Path) -> None:
    cls = _classified(tmp_path)
    ref = write_vector(tmp_path / "ref.gpkg", [shapely.box(0, 0, 1, 1)], {"kind": np.array([1])}, "EPSG:32633")
    with pytest.raises(LabelError, match="no field 'classvalue'; its fields are kind"):
        assess_accuracy(AccuracyConfig(cls, ref, tmp_path / "a.json", class_field="classvalue"))
    with pytest.raises(LabelError, match="no pixel"):
        assess_accuracy(AccuracyConfig(cls, ref, tmp_path / "b.json", class_field="kind"))
    assert not (tmp_path / "a.json").exists()
