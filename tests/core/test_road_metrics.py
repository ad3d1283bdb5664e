"""Road metrics with hand-built graphs whose answers are computed by hand, and the evaluation report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import LineString, Polygon

from core.errors import ConfigError, LabelError
from core.road_metrics import (
    REPORT_KEYS,
    AplsConfig,
    apls,
    evaluate_roads,
    graph_from_lines,
    pixel_metrics,
    relaxed_metrics,
    with_control_points,
)
from core.vectors import write_vector

ROAD = LineString([(0, 0), (100, 0)])  # 100 m: control nodes A (0 m), M (50 m), B (100 m)


def test_control_points_follow_the_reference_spacing() -> None:
    cfg = AplsConfig()
    # 100 m: ceil(100 / 50) - 1 = 1 interior point; 120 m: 2 points at 40 and 80 m; 40 m: the midpoint;
    # 30 m (< 0.75 x 50 m): none.
    for length, expected in ((100, [50.0]), (120, [40.0, 80.0]), (40, [20.0]), (30, [])):
        g = with_control_points(graph_from_lines([LineString([(0, 0), (length, 0)])]), cfg)
        assert sorted(g.xy[2:, 0].tolist()) == pytest.approx(expected)
        assert sum(line.length for _, _, line in g.edges) == pytest.approx(length)


def test_identical_networks_score_one() -> None:
    grid = [LineString([(0, 0), (150, 0)]), LineString([(150, 0), (300, 0)]),
            LineString([(150, -100), (150, 0)]), LineString([(150, 0), (150, 120)])]
    g = graph_from_lines(grid)
    result = apls(g, g)
    assert result.apls == pytest.approx(1.0, abs=1e-9)
    assert result.apls_gt_to_prop == pytest.approx(1.0, abs=1e-9)
    assert result.paths_gt_to_prop > 50


def test_cut_road_lowers_apls_by_the_hand_computed_amount() -> None:
    # Ground truth: one 100 m road, control nodes A(0), M(50), B(100).
    # Proposal: the road cut between 70 and 80 m -> pieces [0, 70] (control node at 35) and [80, 100]
    # (20 m < 37.5 m: no control node). Proposal nodes P0, P35, P70, P80, P100.
    #
    # gt -> prop: A and B snap onto the proposal's ends, M onto the first piece at 50 m.
    #   A-M: 50 vs 50 -> 0;  A-B: no path -> 1;  M-A: 0;  M-B: 1;  B-A: 1;  B-M: 1   => C = 1 - 4/6 = 1/3
    # prop -> gt: every proposal node snaps onto the gt road at its own position; proposal paths exist
    #   only within a piece (P0-P35, P0-P70, P35-P70, P80-P100, both ways: 8 paths), all with the same
    #   length on the ground truth                                                   => C = 1
    # APLS = harmonic mean(1/3, 1) = 2 / (3 + 1) = 0.5
    gt = graph_from_lines([ROAD])
    prop = graph_from_lines([LineString([(0, 0), (70, 0)]), LineString([(80, 0), (100, 0)])])
    result = apls(gt, prop)
    assert result.apls_gt_to_prop == pytest.approx(1 / 3)
    assert result.apls_prop_to_gt == pytest.approx(1.0)
    assert result.apls == pytest.approx(0.5)
    assert (result.paths_gt_to_prop, result.paths_prop_to_gt) == (6, 8)


def test_half_road_missing() -> None:
    # Proposal covers [0, 50] only (40-50 m edge: midpoint at 25). gt -> prop: B is 50 m away -> unsnapped.
    #   A-M 0, A-B 1, M-A 0, M-B 1, and B (unsnapped start) counts 1 for each of its 2 ends => C = 1/3.
    # prop -> gt: the 6 paths between P0, P25, P50 are exact                               => C = 1.
    result = apls(graph_from_lines([ROAD]), graph_from_lines([LineString([(0, 0), (50, 0)])]))
    assert result.apls_gt_to_prop == pytest.approx(1 / 3)
    assert result.apls_prop_to_gt == pytest.approx(1.0)
    assert result.apls == pytest.approx(0.5)


def test_snapping_distance_is_four_metres() -> None:
    # A parallel proposal 3 m away snaps everywhere (same path lengths): 1.0. At 5 m nothing snaps: 0.
    near = apls(graph_from_lines([ROAD]), graph_from_lines([LineString([(0, 3), (100, 3)])]))
    far = apls(graph_from_lines([ROAD]), graph_from_lines([LineString([(0, 5), (100, 5)])]))
    assert near.apls == pytest.approx(1.0)
    assert far.apls == 0.0 and far.apls_gt_to_prop == 0.0
    looser = apls(graph_from_lines([ROAD]), graph_from_lines([LineString([(0, 5), (100, 5)])]),
                  AplsConfig(snap_distance_m=6.0))
    assert looser.apls == pytest.approx(1.0)


def test_detour_penalty_is_relative_length_difference() -> None:
    # Ground truth: 40 m straight (control node at its midpoint, 20 m). Proposal: same end points but a
    # 60 m detour (0,0)-(0,10)-(40,10)-(40,0): the ends snap (coincident), the midpoint (20, 0) is 10 m
    # from the detour -> unsnapped. gt -> prop, pairs with L >= 10 m:
    #   A-B: |40 - 60| / 40 = 0.5 (twice, both directions); A-M, B-M: M unsnapped -> 1 (x2);
    #   M as a start (unsnapped): 1 for its 2 ends.  6 pairs, sum = 0.5 + 0.5 + 4 => C = 1 - 5/6 = 1/6.
    gt = graph_from_lines([LineString([(0, 0), (40, 0)])])
    prop = graph_from_lines([LineString([(0, 0), (0, 10), (40, 10), (40, 0)])])
    result = apls(gt, prop)
    assert result.apls_gt_to_prop == pytest.approx(1 / 6)


def test_empty_proposal_scores_zero() -> None:
    result = apls(graph_from_lines([ROAD]), graph_from_lines([]))
    assert (result.apls, result.apls_gt_to_prop, result.apls_prop_to_gt) == (0.0, 0.0, 0.0)


def test_lines_connect_at_shared_vertices_and_dangling_ends() -> None:
    # A T-junction whose side street ends 1 mm off the main road is connected; a bridge crossing is not.
    g = graph_from_lines([LineString([(0, 0), (100, 0)]), LineString([(50, 0.001), (50, 60)])])
    assert g.node_count == 4 and len(g.edges) == 3
    bridge = graph_from_lines([LineString([(0, 0), (100, 0)]), LineString([(50, -30), (50, 30)])])
    assert bridge.node_count == 4 and len(bridge.edges) == 2


def test_relaxed_metrics_by_hand() -> None:
    gt = [LineString([(0, 0), (100, 0)])]
    prop = [LineString([(0, 2), (50, 2)]), LineString([(50, 10), (100, 10)])]
    m = relaxed_metrics(gt, prop, 3.0)
    # Precision: the 50 m at 2 m offset is within 3 m, the other 50 m is not -> 0.5.
    assert m["relaxed_precision"] == pytest.approx(0.5)
    # Recall: gt within 3 m of the near piece: x in [-sqrt(5), 50 + sqrt(5)] -> 52.24 m of 100 (round cap).
    assert m["relaxed_recall"] == pytest.approx((50 + 5 ** 0.5) / 100, abs=2e-3)
    assert m["relaxed_f1"] == pytest.approx(2 * 0.5 * 0.5224 / (0.5 + 0.5224), abs=2e-3)
    assert relaxed_metrics(gt, [], 3.0)["relaxed_f1"] == 0.0


def test_pixel_metrics_by_hand() -> None:
    pred = np.zeros((4, 4), bool)
    ref = np.zeros((4, 4), bool)
    pred[0, :3] = True  # 3 px
    ref[0, 1:] = True  # 3 px, 2 shared
    m = pixel_metrics(pred, ref)
    assert (m["pixel_tp"], m["pixel_fp"], m["pixel_fn"]) == (2, 1, 1)
    assert m["pixel_iou"] == pytest.approx(0.5) and m["pixel_precision"] == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match="shape"):
        pixel_metrics(pred, ref[:3])


def _write_lines(path: Path, lines: list[LineString], crs: str) -> Path:
    write_vector(path, lines, {"id": np.arange(len(lines), dtype=np.int32)}, crs=crs, geometry_type="LineString")
    return path


def test_evaluate_roads_writes_json_csv_png(tmp_path: Path) -> None:
    import rasterio

    crs = "EPSG:32633"
    x0, y0 = 500_000.0, 5_200_000.0
    ref = _write_lines(tmp_path / "ref.gpkg", [LineString([(x0, y0), (x0 + 100, y0)])], crs)
    pred = _write_lines(tmp_path / "pred.gpkg", [LineString([(x0, y0), (x0 + 70, y0)]),
                                                  LineString([(x0 + 80, y0), (x0 + 100, y0)])], crs)
    report = evaluate_roads(pred, ref, tmp_path / "out" / "report.json")
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    for key in REPORT_KEYS:
        assert key in saved
    assert saved["apls"] == pytest.approx(0.5) and report["apls"] == saved["apls"]
    assert saved["relaxed_precision"] == pytest.approx(1.0)
    assert saved["relaxed_recall"] == pytest.approx(0.9, abs=0.07)  # the 10 m gap, less the 3 m tolerance
    params = saved["parameters"]
    assert (params["control_point_spacing_m"], params["snap_distance_m"], params["min_path_length_m"]) == (50, 4, 10)
    assert params["metric_crs"] == "EPSG:32633"
    with open(tmp_path / "out" / "report.csv", newline="") as fh:
        rows = {r["metric"]: r["value"] for r in csv.DictReader(fh)}
    assert float(rows["apls"]) == pytest.approx(0.5) and rows["parameter:snap_distance_m"] == "4.0"
    with rasterio.open(tmp_path / "out" / "report.png") as png:
        img = png.read()
    assert img.shape[0] == 3
    colours = {tuple(c) for c in img.reshape(3, -1).T.tolist()}
    assert (255, 255, 255) in colours  # overlap
    assert (40, 120, 255) in colours  # reference only (the gap)


def test_evaluate_reprojects_geographic_layers(tmp_path: Path) -> None:
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape

    utm = [LineString([(600_000, 4_000_000), (600_300, 4_000_000)]), LineString([(600_150, 4_000_000), (600_150, 4_000_200)])]
    geo = [shape(transform_geom("EPSG:32611", "EPSG:4326", mapping(g))) for g in utm]
    ref = _write_lines(tmp_path / "ref.geojson", geo, "EPSG:4326")
    pred = _write_lines(tmp_path / "pred.gpkg", utm, "EPSG:32611")
    report = evaluate_roads(pred, ref, tmp_path / "r.json")
    assert report["parameters"]["metric_crs"] == "EPSG:32611"
    assert report["reference_length_m"] == pytest.approx(500.0, rel=1e-3)
    assert report["apls"] > 0.99 and report["relaxed_f1"] > 0.99


def test_evaluate_refuses_polygons_and_empty_reference(tmp_path: Path) -> None:
    crs = "EPSG:32633"
    poly = tmp_path / "poly.gpkg"
    write_vector(poly, [Polygon([(0, 0), (10, 0), (10, 10)])], {"id": np.array([1], np.int32)}, crs=crs)
    lines = _write_lines(tmp_path / "l.gpkg", [LineString([(0, 0), (100, 0)])], crs)
    with pytest.raises(LabelError, match="lines"):
        evaluate_roads(lines, poly, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_evaluate_empty_predicted_layer_scores_zero(tmp_path: Path) -> None:
    ref = _write_lines(tmp_path / "ref.gpkg", [LineString([(500_000, 5_200_000), (500_100, 5_200_000)])], "EPSG:32633")
    empty = tmp_path / "empty.gpkg"
    write_vector(empty, [], {"id": np.array([], np.int32)}, crs="EPSG:32633", geometry_type="LineString")
    report = evaluate_roads(empty, ref, tmp_path / "r.json")
    assert (report["apls"], report["relaxed_f1"], report["pixel_iou"]) == (0.0, 0.0, 0.0)
    assert report["proposal_lines"] == 0 and (tmp_path / "r.png").exists()
