"""Road vectorization: skeleton graph, clean-up steps, block stitching, CRS handling, real data."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import ConfigError, OutputError, RasterReadError
from core.road_graph import skeleton_to_graph
from core.roads import VectorizeConfig, cell_size_metres, vectorize_roads
from core.vectors import read_vector

CRS = "EPSG:32633"
X0, Y0 = 500_000.0, 5_200_000.0


def write_raster(path: Path, data: np.ndarray, cell: float = 0.5, crs: str | None = CRS,
                 x0: float = X0, y0: float = Y0, nodata: float | None = None) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=crs, transform=from_origin(x0, y0, cell, cell), nodata=nodata) as dst:
        dst.write(data, 1)
    return path


def draw(shape: tuple[int, int], lines: list[list[tuple[float, float]]], half_width_px: float) -> np.ndarray:
    """Rasterize polylines given in (col, row) pixel coordinates with a half-width in pixels."""
    from rasterio.features import rasterize
    from rasterio.transform import Affine
    from shapely.geometry import LineString

    polys = [(LineString(line).buffer(half_width_px, cap_style=2), 1) for line in lines]
    return np.asarray(rasterize(polys, out_shape=shape, transform=Affine.identity(), dtype="uint8"))


def run(tmp_path: Path, data: np.ndarray, name: str = "r", **cfg: Any) -> tuple[Any, Any, Any]:
    raster = write_raster(tmp_path / f"{name}.tif", data, **{k: cfg.pop(k) for k in ("cell", "crs", "x0", "y0", "nodata")
                                                            if k in cfg})
    result = vectorize_roads(raster, tmp_path / f"{name}_lines.gpkg", tmp_path / f"{name}_nodes.gpkg",
                             VectorizeConfig(**cfg))
    return result, read_vector(result.lines), read_vector(result.nodes)


# --------------------------------------------------------------------------- graph of a skeleton


def test_plus_shaped_skeleton_has_one_junction_and_four_ends() -> None:
    skel = np.zeros((21, 21), bool)
    skel[10, 2:19] = True
    skel[2:19, 10] = True
    g = skeleton_to_graph(skel)
    assert len(g.edges) == 4
    degrees: dict[int, int] = {}
    for e in g.edges:
        degrees[e.u] = degrees.get(e.u, 0) + 1
        degrees[e.v] = degrees.get(e.v, 0) + 1
    assert sorted(degrees.values()) == [1, 1, 1, 1, 4]
    centre = 10 * 21 + 10
    assert degrees[centre] == 4 and g.nodes[centre] == (10.0, 10.0)


def test_staircase_diagonal_is_one_edge_not_a_chain_of_junctions() -> None:
    skel = np.zeros((12, 12), bool)
    for i in range(10):  # an 8-connected staircase: (i, i) and (i, i+1)
        skel[i, i] = skel[i, i + 1] = True
    g = skeleton_to_graph(skel)
    assert len(g.edges) == 1
    assert len(g.edges[0].path) == 20


def test_closed_loop_without_junction_is_kept() -> None:
    skel = np.zeros((20, 20), bool)
    skel[3, 3:15] = skel[14, 3:15] = True
    skel[3:15, 3] = skel[3:15, 14] = True
    g = skeleton_to_graph(skel)
    assert len(g.edges) == 1
    e = g.edges[0]
    assert e.u == e.v and len(e.path) == int(skel.sum()) + 1


def _skeleton_partition_ok(skel: np.ndarray) -> None:
    g = skeleton_to_graph(skel)
    interior = np.concatenate([e.path[1:-1] for e in g.edges]) if g.edges else np.zeros((0, 2), np.int64)
    interior_keys = interior[:, 0] * skel.shape[1] + interior[:, 1]
    node_keys = g.node_pixels[:, 0] * skel.shape[1] + g.node_pixels[:, 1]
    all_keys = np.concatenate([interior_keys, node_keys])
    # Every skeleton pixel is in exactly one place: one node or the interior of one edge.
    assert len(np.unique(all_keys)) == len(all_keys)
    assert set(all_keys.tolist()) == set(np.flatnonzero(skel.ravel()).tolist())
    # Edges end in nodes, and consecutive path pixels are 8-neighbours.
    node_set = set(node_keys.tolist())
    for e in g.edges:
        assert {int(e.path[0, 0] * skel.shape[1] + e.path[0, 1]), int(e.path[-1, 0] * skel.shape[1] + e.path[-1, 1])} <= node_set
        step = np.abs(np.diff(e.path, axis=0))
        assert step.max() <= 1 and (step.sum(axis=1) >= 1).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**31 - 1), st.floats(0.3, 0.7))
def test_every_skeleton_pixel_is_in_exactly_one_edge_or_node(seed: int, density: float) -> None:
    from scipy import ndimage
    from skimage.morphology import skeletonize

    rng = np.random.default_rng(seed)
    blobs = ndimage.gaussian_filter(rng.random((48, 48)), 2.0)
    mask = blobs > np.quantile(blobs, 1 - density)
    _skeleton_partition_ok(skeletonize(mask))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_partition_holds_for_arbitrary_pixel_sets(seed: int) -> None:
    rng = np.random.default_rng(seed)
    _skeleton_partition_ok(rng.random((24, 24)) < 0.35)


# --------------------------------------------------------------------------- vectorize_roads


def test_straight_road_gives_one_georeferenced_line(tmp_path: Path) -> None:
    data = draw((100, 300), [[(20, 50), (280, 50)]], 6)
    result, lines, nodes = run(tmp_path, data)
    assert result.edge_count == 1 and result.end_count == 2 and result.junction_count == 0
    assert lines.crs is not None and "32633" in lines.crs
    assert set(lines.attributes) >= {"edge_id", "from_node", "to_node", "length_m"}
    line = lines.geometries[0]
    minx, miny, maxx, maxy = line.bounds
    # The road's axis is y = 50 px (the edge between rows 49 and 50); the skeleton runs on the centres
    # of rows 49 or 50, i.e. 49.5 or 50.5 px below the top edge (pixel centres, not corners).
    assert Y0 - 50.5 * 0.5 - 1e-6 <= miny <= maxy <= Y0 - 49.5 * 0.5 + 1e-6
    assert X0 + 10 < minx < X0 + 16 and X0 + 134 < maxx < X0 + 141
    assert lines.attributes["length_m"][0] == pytest.approx(line.length, rel=1e-6)
    assert sorted(nodes.attributes["degree"].tolist()) == [1, 1]
    assert set(nodes.attributes["kind"].tolist()) == {"end"}
    assert {int(lines.attributes["from_node"][0]), int(lines.attributes["to_node"][0])} == {1, 2}
    assert (tmp_path / "r_lines.qml").exists() and (tmp_path / "r_nodes.qml").exists()
    settings_json = json.loads((tmp_path / "r_lines.vectorize.json").read_text())
    assert settings_json["config"]["min_spur_m"] == 10.0


def test_crossing_gives_junction_of_degree_four(tmp_path: Path) -> None:
    data = draw((300, 300), [[(10, 150), (290, 150)], [(150, 10), (150, 290)]], 7)
    result, lines, nodes = run(tmp_path, data)
    assert result.edge_count == 4 and result.junction_count == 1 and result.end_count == 4
    junction = int(np.flatnonzero(nodes.attributes["degree"] == 4)[0])
    pt = nodes.geometries[junction]
    assert pt.x == pytest.approx(X0 + 150 * 0.5, abs=1.0) and pt.y == pytest.approx(Y0 - 150 * 0.5, abs=1.0)
    # Lines meet exactly at the junction point (the network is topologically connected).
    ends = [g.coords[0] for g in lines.geometries] + [g.coords[-1] for g in lines.geometries]
    assert sum(1 for c in ends if c == (pt.x, pt.y)) == 4


def test_short_spur_is_pruned_and_long_branch_kept(tmp_path: Path) -> None:
    # A 5 m stub (10 px) and a 30 m branch (60 px) off a long road at 0.5 m.
    data = draw((200, 400), [[(10, 100), (390, 100)], [(120, 100), (120, 90)], [(280, 100), (280, 40)]], 3)
    result, _lines, _nodes = run(tmp_path, data, min_spur_m=8.0)
    assert result.stats["spurs_pruned"] >= 1
    assert result.junction_count == 1 and result.edge_count == 3
    kept = run(tmp_path, data, name="nospur", min_spur_m=0.0)[0]
    assert kept.junction_count == 2 and kept.edge_count == 5


def test_aligned_gap_is_closed_and_misaligned_is_not(tmp_path: Path) -> None:
    aligned = draw((100, 400), [[(10, 50), (190, 50)], [(202, 50), (390, 50)]], 3)  # 6 m gap
    result, lines, _ = run(tmp_path, aligned, name="a", max_gap_m=10.0)
    assert result.stats["gaps_closed"] == 1 and result.edge_count == 1
    assert lines.attributes["length_m"][0] == pytest.approx(188.5, abs=2.0)
    too_far = run(tmp_path, aligned, name="b", max_gap_m=4.0)[0]
    assert too_far.stats["gaps_closed"] == 0 and too_far.edge_count == 2
    offset = draw((100, 400), [[(10, 30), (190, 30)], [(202, 60), (390, 60)]], 3)  # ends 16 m apart sideways
    misaligned = run(tmp_path, offset, name="c", max_gap_m=20.0, max_gap_angle_deg=30.0)[0]
    assert misaligned.stats["gaps_closed"] == 0 and misaligned.edge_count == 2


def test_short_isolated_piece_is_removed(tmp_path: Path) -> None:
    data = draw((100, 400), [[(10, 30), (390, 30)], [(100, 80), (130, 80)]], 3)  # 15 m piece
    result = run(tmp_path, data, min_component_m=25.0)[0]
    assert result.edge_count == 1 and result.stats["components_removed"] == 1
    assert run(tmp_path, data, name="keep", min_component_m=5.0)[0].edge_count == 2


def test_small_hole_does_not_make_a_loop(tmp_path: Path) -> None:
    data = draw((100, 300), [[(10, 50), (290, 50)]], 8)
    data[47:53, 140:146] = 0  # a car: 3 x 3 m
    result = run(tmp_path, data)[0]
    assert result.edge_count == 1 and result.junction_count == 0
    loop = run(tmp_path, data, name="hole", max_hole_area_m2=1.0)[0]
    assert loop.junction_count == 2


def test_probability_raster_threshold_and_nodata(tmp_path: Path) -> None:
    prob = draw((100, 300), [[(10, 50), (290, 50)]], 6).astype(np.float32) * 0.8 + 0.1
    prob[:, 200:] = np.nan  # no data on the right
    result, lines, _ = run(tmp_path, prob, threshold=0.5)
    assert result.edge_count == 1
    assert lines.geometries[0].bounds[2] < X0 + 200 * 0.5
    assert run(tmp_path, prob, name="high", threshold=0.95)[0].edge_count == 0


def test_road_across_block_seams_is_one_continuous_line(tmp_path: Path) -> None:
    # A curving road crossing several 256 px block seams (and a block corner), plus a junction on a seam.
    t = np.linspace(0, 1, 200)
    curve = list(zip(20 + 700 * t, 60 + 600 * t + 80 * np.sin(6 * t)))
    branch = [(256, 20), (256, 240)]  # runs along a vertical seam
    data = draw((720, 760), [curve, branch], 5)
    whole, lines_whole, _ = run(tmp_path, data, name="whole", block_size_px=4096)
    blocked, lines_blocked, _ = run(tmp_path, data, name="blocked", block_size_px=256, overlap_px=32)
    assert blocked.blocks == 9 and whole.blocks == 1
    assert blocked.edge_count == whole.edge_count
    assert blocked.junction_count == whole.junction_count
    assert blocked.total_length_m == pytest.approx(whole.total_length_m, rel=1e-3)
    import shapely

    curve_m = shapely.LineString(curve).length * 0.5
    for lines in (lines_whole, lines_blocked):
        longest = max(lines.geometries, key=lambda g: g.length)
        assert longest.length == pytest.approx(curve_m, rel=0.03)  # the curve is one line, not pieces
        branch_lines = [g for g in lines.geometries if g.length < 0.5 * curve_m]
        assert len(branch_lines) == 1 and branch_lines[0].length == pytest.approx(220 * 0.5, abs=6)
    hd = shapely.hausdorff_distance(shapely.union_all(lines_blocked.geometries), shapely.union_all(lines_whole.geometries))
    assert hd < 1.0


def test_geographic_crs_converts_metres(tmp_path: Path) -> None:
    # 0.5 m cells at 36 deg N expressed in degrees; a 5 m stub must still be pruned as a spur of < 8 m.
    lon_m = 111412.84 * math.cos(math.radians(36)) - 93.5 * math.cos(math.radians(108))
    cell_deg = 0.5 / lon_m
    data = draw((200, 400), [[(10, 100), (390, 100)], [(120, 100), (120, 90)]], 3)
    raster = write_raster(tmp_path / "geo.tif", data, cell=cell_deg, crs="EPSG:4326", x0=-115.2, y0=36.0)
    result = vectorize_roads(raster, tmp_path / "geo_l.gpkg", tmp_path / "geo_n.gpkg", VectorizeConfig(min_spur_m=8.0))
    assert result.edge_count == 1
    dx, dy = result.cell_size_m
    assert dx == pytest.approx(0.5, rel=0.01) and dy == pytest.approx(cell_deg * 110_950, rel=0.01)
    lines = read_vector(result.lines)
    assert "4326" in (lines.crs or "")
    assert lines.attributes["length_m"][0] == pytest.approx(190.0, abs=3.0)


def test_cell_size_metres_for_feet() -> None:
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    dx, _dy = cell_size_metres(CRS.from_epsg(2263), from_origin(0, 0, 2.0, 2.0), 10)  # NY State Plane, US ft
    assert dx == pytest.approx(2.0 * 0.3048006, rel=1e-5)


def test_clear_errors(tmp_path: Path) -> None:
    data = draw((60, 60), [[(5, 30), (55, 30)]], 3)
    no_crs = write_raster(tmp_path / "nocrs.tif", data, crs=None)
    with pytest.raises(RasterReadError, match="no CRS"):
        vectorize_roads(no_crs, tmp_path / "a.gpkg", tmp_path / "b.gpkg")
    ok = write_raster(tmp_path / "ok.tif", data)
    with pytest.raises(ConfigError, match="band 2 does not exist"):
        vectorize_roads(ok, tmp_path / "a.gpkg", tmp_path / "b.gpkg", VectorizeConfig(band=2))
    with pytest.raises(ConfigError, match="same file"):
        vectorize_roads(ok, tmp_path / "a.gpkg", tmp_path / "a.gpkg")
    with pytest.raises(OutputError, match="GeoPackage"):
        vectorize_roads(ok, tmp_path / "a.tif", tmp_path / "b.gpkg")
    with pytest.raises(ConfigError, match="min_spur_m"):
        VectorizeConfig(min_spur_m=-1)
    with pytest.raises(RasterReadError, match="cannot open"):
        vectorize_roads(tmp_path / "missing.tif", tmp_path / "a.gpkg", tmp_path / "b.gpkg")
    assert not (tmp_path / "a.gpkg").exists()


# --------------------------------------------------------------------------- real and sample data


def test_sample_scene_round_trip(sample_scene: Any, tmp_path: Path) -> None:
    from core.road_metrics import evaluate_roads

    # The scene's residential streets end 7-10 m past the last crossing: keep such stubs (MIN_SPUR_M 5).
    result = vectorize_roads(sample_scene.road_mask, tmp_path / "l.gpkg", tmp_path / "n.gpkg",
                             VectorizeConfig(min_spur_m=5.0))
    ref = read_vector(sample_scene.road_centerlines)
    ref_len = sum(g.length for g in ref.geometries)
    assert result.total_length_m == pytest.approx(ref_len, rel=0.03)
    report = evaluate_roads(result.lines, sample_scene.road_centerlines, tmp_path / "rep.json")
    assert report["apls"] > 0.95
    assert report["relaxed_f1"] > 0.99
    assert result.junction_count >= 15  # crossings and T-junctions of the grid and the main roads


def rasterize_spacenet(shared: Path, out: Path) -> Path:
    """SpaceNet centerlines (EPSG:4326) -> 0/1 mask on the chip's grid, 2 m half-width buffered in UTM."""
    import rasterio
    import shapely
    from rasterio.features import rasterize

    from core.road_metrics import _to_metric, metric_crs_for

    folder = shared / "roads" / "spacenet_vegas_pan16"
    v = read_vector(folder / "sample_roads_for_masking.geojson")
    utm = metric_crs_for(v.crs, shapely.union_all(v.geometries).bounds)
    surface = shapely.union_all(_to_metric(v.geometries, v.crs, utm)).buffer(2.0)
    surface_geo = _to_metric([surface], utm, v.crs)[0]
    with rasterio.open(folder / "road_mask_input.tif") as src:
        mask = rasterize([(surface_geo, 1)], out_shape=src.shape, transform=src.transform, dtype="uint8")
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform}
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(mask, 1)
    return out


def test_spacenet_round_trip_is_near_perfect(shared_data: Path, tmp_path: Path) -> None:
    import rasterio

    from core.road_metrics import evaluate_roads

    folder = shared_data / "roads" / "spacenet_vegas_pan16"
    mask_path = rasterize_spacenet(shared_data, tmp_path / "mask.tif")
    with rasterio.open(mask_path) as a, rasterio.open(folder / "sample_road_raster_mask.tif") as b:
        mine, theirs = a.read(1) > 0, b.read(1) > 0
    # Our 2 m UTM buffer reproduces the SpaceNet/solaris reference mask.
    assert (mine & theirs).sum() / (mine | theirs).sum() > 0.99
    reference = folder / "sample_roads_for_masking.geojson"
    reports = []
    for block in (4096, 300):
        result = vectorize_roads(mask_path, tmp_path / f"l{block}.gpkg", tmp_path / f"n{block}.gpkg",
                                 VectorizeConfig(block_size_px=block))
        reports.append(evaluate_roads(result.lines, reference, tmp_path / f"rep{block}.json"))
    for report in reports:
        assert report["apls"] > 0.98
        assert report["relaxed_precision"] > 0.99 and report["relaxed_recall"] > 0.99
        assert report["parameters"]["snap_distance_m"] == 4.0
        assert report["parameters"]["metric_crs"] == "EPSG:32611"
    assert reports[1]["apls"] == pytest.approx(reports[0]["apls"], abs=0.01)
