"""Road network metrics: APLS, relaxed precision/recall/F1 and pixel IoU/precision/recall.

APLS follows the SpaceNet-3 definition and the defaults of CosmiQ's reference code (apls.py), so the
numbers compare with the literature (see DESIGN.md, "Metric conventions"):

- both networks become length-weighted graphs in a metric projection (a geographic CRS is projected
  to the UTM zone of the data's centre); lines connect where they share a vertex;
- control points are inserted along every edge every ``control_point_spacing_m`` (50 m): edges
  shorter than 0.75 x the spacing get none, edges up to the spacing get their midpoint, longer ones
  ``ceil(L / spacing) - 1`` evenly spaced points;
- every control node of one graph is snapped onto the nearest edge of the *other* graph (without its
  control points) if it lies within ``snap_distance_m`` (4 m), splitting that edge;
- for every pair of control nodes (a, b) joined by a path in the first graph, with a path length
  L >= ``min_path_length_m`` (10 m), the penalty is min(1, |L - L'| / L), where L' is the length of the
  shortest path between the snapped nodes in the other graph; a node that could not be snapped or a
  missing path counts 1 (a node that could not be snapped counts 1 for all its pairs, as in the
  reference code);
- the score of a direction is 1 - mean penalty; APLS is the harmonic mean of the two directions
  (ground truth onto proposal, proposal onto ground truth), 0 if either is 0 or a graph is empty.

The reference code's only speed-up that changes results (looking for the nearest edge only among the
edges of the 20 nearest nodes in graphs of more than 1000 nodes) is not copied: the nearest edge is
found exactly. The straight-edge filter ``is_curved_eps`` is off (control points on every edge), as
the SpaceNet-3 paper describes the metric.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import StepConfig, require
from .errors import ConfigError, LabelError
from .outputs import atomic_outputs
from .progress import Feedback, NullFeedback, check_canceled

#: Keys of the evaluation report that other steps and users rely on.
REPORT_KEYS = ("apls", "apls_gt_to_prop", "apls_prop_to_gt", "relaxed_precision", "relaxed_recall", "relaxed_f1")


@dataclasses.dataclass(frozen=True)
class AplsConfig(StepConfig):
    """APLS parameters; the defaults are SpaceNet-3's (CosmiQ apls.py) and should stay the defaults."""

    control_point_spacing_m: float = 50.0
    snap_distance_m: float = 4.0
    min_path_length_m: float = 10.0
    min_edge_fraction_for_midpoint: float = 0.75

    def validate(self) -> None:
        require(self.control_point_spacing_m > 0, f"control_point_spacing_m must be > 0, got {self.control_point_spacing_m}")
        require(self.snap_distance_m >= 0, f"snap_distance_m must be >= 0, got {self.snap_distance_m}")
        require(self.min_path_length_m >= 0, f"min_path_length_m must be >= 0, got {self.min_path_length_m}")


@dataclasses.dataclass
class MetricGraph:
    """A road graph in metres: node positions (n, 2) and edges (u, v, LineString from u to v)."""

    xy: np.ndarray
    edges: list[tuple[int, int, Any]]

    @property
    def node_count(self) -> int:
        return int(len(self.xy))

    def total_length(self) -> float:
        return float(sum(line.length for _, _, line in self.edges))


@dataclasses.dataclass(frozen=True)
class AplsResult:
    """APLS in both directions and combined, with how many paths each direction compared."""

    apls: float
    apls_gt_to_prop: float
    apls_prop_to_gt: float
    paths_gt_to_prop: int
    paths_prop_to_gt: int
    control_points_gt: int
    control_points_prop: int


# --------------------------------------------------------------------------- graphs from lines


def _join_dangling_ends(parts: list[np.ndarray], tolerance_m: float) -> list[np.ndarray]:
    """Give a line a vertex where another line's end touches it within ``tolerance_m`` (a T-junction).

    Data drawn or generated without snapping often ends a side street a millimetre off the main
    road; by the shared-vertex rule alone that street would not be connected. The end is moved onto
    the line and the line gets that vertex, so both share it. Lines that cross (bridges) are untouched.
    """
    import shapely

    lines = [shapely.linestrings(p) for p in parts]
    tree = shapely.STRtree(lines)
    inserts: dict[int, list[tuple[float, tuple[float, float]]]] = {}
    parts = [p.copy() for p in parts]
    for i, coords in enumerate(parts):
        for end in (0, len(coords) - 1):
            pt = shapely.points(coords[end])
            for j in tree.query(pt, predicate="dwithin", distance=tolerance_m).tolist():
                if j == i:
                    continue
                other = parts[j]
                gaps = np.hypot(*(other - coords[end]).T)
                k = int(np.argmin(gaps))
                if gaps[k] <= tolerance_m:
                    parts[i][end] = other[k]  # on (or next to) a vertex of that line: share it exactly
                    break
                pos = float(lines[j].project(pt))
                q = lines[j].interpolate(pos)
                inserts.setdefault(j, []).append((pos, (q.x, q.y)))
                parts[i][end] = (q.x, q.y)
                break
    for j, items in inserts.items():
        coords = parts[j]
        cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(coords, axis=0).T))])
        new = list(map(tuple, coords))
        for pos, xy in sorted(items, reverse=True):
            k = int(np.searchsorted(cum, pos, side="right"))
            k = min(max(k, 1), len(coords) - 1)
            new.insert(k, xy)
        parts[j] = np.asarray(new)
    return parts


def graph_from_lines(lines: Sequence[Any], vertex_tolerance_m: float = 0.001,
                     join_tolerance_m: float = 0.05) -> MetricGraph:
    """Build a graph from LineStrings (metric coordinates): lines connect where they share a vertex.

    As in the reference code (which builds graphs the osmnx way), a node sits at every line end and
    at every vertex shared by two or more lines (or visited twice by one line); lines that merely
    cross without a shared vertex (bridges, overpasses) stay unconnected. Vertices closer than
    ``vertex_tolerance_m`` are the same vertex, and a line end within ``join_tolerance_m`` of another
    line is joined to it (the 5 cm default is the reference code's own "coincident" buffer).
    """
    from shapely.geometry import LineString

    parts: list[np.ndarray] = []
    for geom in lines:
        if geom is None or geom.is_empty:
            continue
        for g in getattr(geom, "geoms", [geom]):
            coords = np.asarray(g.coords, dtype=np.float64)[:, :2]
            if len(coords) >= 2:
                parts.append(coords)
    if not parts:
        return MetricGraph(np.zeros((0, 2)), [])
    if join_tolerance_m > 0:
        parts = _join_dangling_ends(parts, join_tolerance_m)
    allc = np.concatenate(parts)
    keys = np.round(allc / vertex_tolerance_m).astype(np.int64)
    uniq, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    is_node = counts > 1
    offsets = np.cumsum([0] + [len(p) for p in parts])
    for i in range(len(parts)):
        is_node[inverse[offsets[i]]] = True
        is_node[inverse[offsets[i + 1] - 1]] = True
    node_index = np.full(len(uniq), -1, dtype=np.int64)
    node_vertices = np.flatnonzero(is_node)
    node_index[node_vertices] = np.arange(node_vertices.size)
    xy = np.zeros((node_vertices.size, 2))
    # Node position: the first occurrence of the vertex.
    first = np.full(len(uniq), -1, dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(allc))[::-1]
    xy[:] = allc[first[node_vertices]]
    edges: list[tuple[int, int, Any]] = []
    for i, coords in enumerate(parts):
        vids = inverse[offsets[i]: offsets[i + 1]]
        cut = [k for k in range(len(vids)) if is_node[vids[k]]]
        for s, e in zip(cut[:-1], cut[1:]):
            seg = coords[s: e + 1].copy()
            seg[0], seg[-1] = xy[node_index[vids[s]]], xy[node_index[vids[e]]]
            line = LineString(seg)
            if line.length <= 0:
                continue
            edges.append((int(node_index[vids[s]]), int(node_index[vids[e]]), line))
    return MetricGraph(xy, edges)


def with_control_points(graph: MetricGraph, cfg: AplsConfig) -> MetricGraph:
    """The graph with control nodes inserted along its edges (reference ``create_graph_midpoints``)."""
    from shapely.geometry import LineString
    from shapely.ops import substring

    xy = [tuple(p) for p in graph.xy]
    edges: list[tuple[int, int, Any]] = []
    delta = cfg.control_point_spacing_m
    for u, v, line in graph.edges:
        length = line.length
        if length < cfg.min_edge_fraction_for_midpoint * delta:
            edges.append((u, v, line))
            continue
        if length <= delta:
            dists = [0.5 * length]
        else:
            npoints = len(np.arange(0, length, delta)) + 1
            dists = list(np.linspace(0, length, npoints)[1:-1])
        chain = [u]
        for d in dists:
            p = line.interpolate(d)
            xy.append((p.x, p.y))
            chain.append(len(xy) - 1)
        chain.append(v)
        cuts = [0.0, *dists, length]
        for k in range(len(chain) - 1):
            piece = substring(line, cuts[k], cuts[k + 1])
            if not isinstance(piece, LineString):
                piece = LineString([xy[chain[k]], xy[chain[k + 1]]])
            edges.append((chain[k], chain[k + 1], piece))
    return MetricGraph(np.asarray(xy, dtype=np.float64).reshape(-1, 2), edges)


def _snap_into(graph: MetricGraph, points: np.ndarray, max_dist: float) -> tuple[
        list[tuple[int, int, float]], np.ndarray, np.ndarray]:
    """Insert ``points`` onto their nearest edges of ``graph`` within ``max_dist``.

    Returns the weighted edge list (i, j, length) of the augmented graph, whose nodes are the graph's
    nodes followed by one node per snapped point, and for every point its node index (-1 if it was
    farther than ``max_dist`` from every edge).
    """
    import shapely

    n = graph.node_count
    weighted: list[tuple[int, int, float]] = []
    point_node = np.full(len(points), -1, dtype=np.int64)
    if not graph.edges or len(points) == 0:
        weighted = [(u, v, line.length) for u, v, line in graph.edges]
        return weighted, point_node, graph.xy
    lines = [line for _, _, line in graph.edges]
    tree = shapely.STRtree(lines)
    geoms = shapely.points(points)
    hit_pt, hit_edge = tree.query_nearest(geoms, max_distance=max_dist if max_dist > 0 else 1e-9,
                                          all_matches=False)
    inserted: dict[int, list[tuple[float, int]]] = {}
    new_xy = [graph.xy]
    next_id = n
    for pi, ei in zip(hit_pt.tolist(), hit_edge.tolist()):
        line = lines[ei]
        if line.distance(geoms[pi]) > max_dist:
            continue
        pos = float(line.project(geoms[pi]))
        p = line.interpolate(pos)
        new_xy.append(np.array([[p.x, p.y]]))
        inserted.setdefault(ei, []).append((pos, next_id))
        point_node[pi] = next_id
        next_id += 1
    for ei, (u, v, line) in enumerate(graph.edges):
        if ei not in inserted:
            weighted.append((u, v, line.length))
            continue
        chain = [(0.0, u), *sorted(inserted[ei]), (line.length, v)]
        for (p0, a), (p1, b) in zip(chain[:-1], chain[1:]):
            weighted.append((a, b, p1 - p0))
    return weighted, point_node, np.concatenate(new_xy)


def _distance_matrix(n: int, weighted: list[tuple[int, int, float]], sources: np.ndarray) -> np.ndarray:
    """Shortest path lengths from ``sources`` to every node (inf where there is no path)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    if n == 0 or len(sources) == 0:
        return np.full((len(sources), n), np.inf)
    best: dict[tuple[int, int], float] = {}
    for a, b, w in weighted:
        if a == b:
            continue
        key = (a, b) if a < b else (b, a)
        w = max(float(w), 1e-9)  # csgraph ignores explicit zeros; a coincident snap is a 1 nm edge
        if w < best.get(key, math.inf):
            best[key] = w
    if not best:
        out = np.full((len(sources), n), np.inf)
        out[np.arange(len(sources)), sources] = 0.0
        return out
    ij = np.array(list(best.keys()), dtype=np.int64)
    weights = np.array(list(best.values()))
    mat = csr_matrix((weights, (ij[:, 0], ij[:, 1])), shape=(n, n))
    return np.asarray(dijkstra(mat, directed=False, indices=sources))


def _one_direction(truth: MetricGraph, other: MetricGraph, cfg: AplsConfig,
                   feedback: Feedback) -> tuple[float, int, int]:
    """Score of ``truth`` (with control points) snapped onto ``other`` (the reference's path_sim_metric)."""
    truth_cp = with_control_points(truth, cfg)
    n = truth_cp.node_count
    if n == 0 or not truth_cp.edges:
        return 0.0, 0, n
    native_w = [(u, v, line.length) for u, v, line in truth_cp.edges]
    prime_w, snapped, prime_xy = _snap_into(other, truth_cp.xy, cfg.snap_distance_m)
    diffs_sum, count = 0.0, 0
    chunk = 512
    for s0 in range(0, n, chunk):
        check_canceled(feedback, "APLS")
        starts = np.arange(s0, min(n, s0 + chunk))
        d_native = _distance_matrix(n, native_w, starts)
        ok_start = snapped[starts] >= 0
        d_prime = np.full((len(starts), n), np.inf)
        if ok_start.any():
            rows = _distance_matrix(len(prime_xy), prime_w, snapped[starts[ok_start]])
            ends_ok = snapped >= 0
            sub = np.full((rows.shape[0], n), np.inf)
            sub[:, ends_ok] = rows[:, snapped[ends_ok]]
            d_prime[ok_start] = sub
        for k, s in enumerate(starts.tolist()):
            reach = np.isfinite(d_native[k])
            reach[s] = False
            if not ok_start[k]:
                # Reference CASE 1: a start node that could not be snapped scores 1 for every
                # reachable end node, whatever the path length.
                m = int(reach.sum())
                diffs_sum += m
                count += m
                continue
            lg = d_native[k][reach]
            lp = d_prime[k][reach]
            keep = lg >= cfg.min_path_length_m
            lg, lp = lg[keep], lp[keep]
            diff = np.where(np.isfinite(lp), np.minimum(1.0, np.abs(lg - lp) / np.maximum(lg, 1e-12)), 1.0)
            diff = np.where(lg > 0, diff, 0.0)
            diffs_sum += float(diff.sum())
            count += int(diff.size)
    if count == 0:
        return 0.0, 0, n
    return 1.0 - diffs_sum / count, count, n


def apls(ground_truth: MetricGraph, proposal: MetricGraph, config: AplsConfig | None = None,
         feedback: Feedback | None = None) -> AplsResult:
    """APLS of a proposal against ground truth (both graphs in the same metric CRS)."""
    cfg = config or AplsConfig()
    fb = feedback or NullFeedback()
    if not ground_truth.edges or not proposal.edges:
        return AplsResult(0.0, 0.0, 0.0, 0, 0, with_control_points(ground_truth, cfg).node_count,
                          with_control_points(proposal, cfg).node_count)
    c_gt, n_gt, cp_gt = _one_direction(ground_truth, proposal, cfg, fb)
    c_prop, n_prop, cp_prop = _one_direction(proposal, ground_truth, cfg, fb)
    if c_gt <= 0 or c_prop <= 0 or math.isnan(c_gt) or math.isnan(c_prop):
        total = 0.0
    else:
        total = 2.0 / (1.0 / c_gt + 1.0 / c_prop)
    return AplsResult(total, c_gt, c_prop, n_gt, n_prop, cp_gt, cp_prop)


# --------------------------------------------------------------------------- relaxed and pixel metrics


def relaxed_metrics(ground_truth: Sequence[Any], proposal: Sequence[Any], tolerance_m: float) -> dict[str, float]:
    """Length-based relaxed precision/recall/F1 (lines in one metric CRS).

    Precision: the share of proposal length within ``tolerance_m`` of the ground truth; recall: the
    share of ground-truth length within ``tolerance_m`` of the proposal (Wiedemann's correctness and
    completeness; the vector form of the relaxed pixel measures of Mnih & Hinton).
    """
    import shapely

    gt = shapely.union_all(list(ground_truth)) if len(ground_truth) else None
    prop = shapely.union_all(list(proposal)) if len(proposal) else None
    gt_len = gt.length if gt is not None else 0.0
    prop_len = prop.length if prop is not None else 0.0
    if gt is None or prop is None or gt_len == 0 or prop_len == 0:
        precision = 0.0
        recall = 0.0
    else:
        precision = float(prop.intersection(gt.buffer(tolerance_m)).length / prop_len)
        recall = float(gt.intersection(prop.buffer(tolerance_m)).length / gt_len)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"relaxed_precision": precision, "relaxed_recall": recall, "relaxed_f1": f1,
            "reference_length_m": float(gt_len), "proposal_length_m": float(prop_len)}


def pixel_metrics(predicted: np.ndarray, reference: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """IoU, precision and recall of two boolean road masks on the same grid (``valid`` limits the pixels)."""
    if predicted.shape != reference.shape:
        raise ConfigError(f"the masks differ in shape: {predicted.shape} vs {reference.shape}; put them on one grid")
    p, r = predicted.astype(bool), reference.astype(bool)
    if valid is not None:
        p, r = p & valid, r & valid
    tp = int(np.count_nonzero(p & r))
    fp = int(np.count_nonzero(p & ~r))
    fn = int(np.count_nonzero(~p & r))
    return {
        "pixel_iou": tp / (tp + fp + fn) if tp + fp + fn else 0.0,
        "pixel_precision": tp / (tp + fp) if tp + fp else 0.0,
        "pixel_recall": tp / (tp + fn) if tp + fn else 0.0,
        "pixel_tp": tp, "pixel_fp": fp, "pixel_fn": fn,
    }


# --------------------------------------------------------------------------- evaluation of two layers


@dataclasses.dataclass(frozen=True)
class EvaluateRoadsConfig(StepConfig):
    """Parameters of :func:`evaluate_roads`."""

    tolerance_m: float = 3.0
    apls: AplsConfig = dataclasses.field(default_factory=AplsConfig)
    road_half_width_m: float = 2.0
    pixel_size_m: float = 0.5
    max_pixels: int = 16_000_000

    def validate(self) -> None:
        require(self.tolerance_m > 0, f"tolerance_m must be > 0 metres, got {self.tolerance_m}")
        require(self.road_half_width_m > 0, f"road_half_width_m must be > 0, got {self.road_half_width_m}")
        require(self.pixel_size_m > 0, f"pixel_size_m must be > 0, got {self.pixel_size_m}")


def metric_crs_for(crs: Any, bounds: tuple[float, float, float, float]) -> Any:
    """The CRS to measure in: the CRS itself when projected, else the UTM zone of the bounds' centre."""
    from rasterio.crs import CRS
    from rasterio.warp import transform as warp_transform

    if crs is None:
        raise LabelError("a road layer has no CRS; assign one so lengths can be measured in metres")
    crs = CRS.from_user_input(crs)
    if not crs.is_geographic:
        return crs
    cx, cy = (bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2
    lon, lat = warp_transform(crs, "EPSG:4326", [cx], [cy])
    zone = int((lon[0] + 180) // 6) % 60 + 1
    return CRS.from_epsg((32600 if lat[0] >= 0 else 32700) + zone)


def _to_metric(geoms: Sequence[Any], src_crs: Any, dst_crs: Any) -> list[Any]:
    """Reproject geometries to ``dst_crs`` and scale to metres if its unit is not the metre."""
    import shapely
    from rasterio.crs import CRS
    from rasterio.warp import transform as warp_transform

    src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    factor = 1.0 if dst.is_geographic else float(dst.linear_units_factor[1])
    out: list[Any] = []
    for g in geoms:
        coords = np.asarray(shapely.get_coordinates(g))
        if src != dst:
            xs, ys = warp_transform(src, dst, coords[:, 0].tolist(), coords[:, 1].tolist())
            coords = np.column_stack([xs, ys])
        out.append(shapely.set_coordinates(shapely.force_2d(g), coords * factor))
    return out


def _line_parts(geoms: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for g in geoms:
        if g is None or g.is_empty:
            continue
        if g.geom_type in ("LineString", "MultiLineString"):
            out.extend(getattr(g, "geoms", [g]))
        elif g.geom_type in ("Polygon", "MultiPolygon"):
            raise LabelError("road layers for evaluation must be lines (centerlines); got polygons. "
                             "Vectorize road masks first (roadlandcover:vectorizeroads)")
    return out


def _rasterize_pair(gt: list[Any], prop: list[Any], cfg: EvaluateRoadsConfig) -> tuple[
        np.ndarray, np.ndarray, Any, float]:
    """Both networks buffered by the road half-width, burnt onto one grid over their joint extent."""
    import shapely
    from rasterio.features import rasterize
    from rasterio.transform import from_origin

    allg = shapely.union_all(gt + prop)
    minx, miny, maxx, maxy = allg.bounds
    pad = cfg.road_half_width_m + cfg.tolerance_m
    minx, miny, maxx, maxy = minx - pad, miny - pad, maxx + pad, maxy + pad
    cell = cfg.pixel_size_m
    while math.ceil((maxx - minx) / cell) * math.ceil((maxy - miny) / cell) > cfg.max_pixels:
        cell *= 1.5
    w, h = math.ceil((maxx - minx) / cell), math.ceil((maxy - miny) / cell)
    transform = from_origin(minx, maxy, cell, cell)

    def burn(lines: list[Any]) -> np.ndarray:
        if not lines:
            return np.zeros((h, w), bool)
        poly = shapely.union_all(lines).buffer(cfg.road_half_width_m)
        burnt = rasterize([(poly, 1)], out_shape=(h, w), transform=transform, dtype="uint8")
        return np.asarray(burnt, dtype=bool)

    return burn(gt), burn(prop), transform, cell


def _write_overlay_png(path: Path, ref_mask: np.ndarray, prop_mask: np.ndarray, max_side_px: int = 1600) -> None:
    """PNG of the reference (blue) and the proposal (orange) drawn over each other; overlap is white."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    step = max(1, math.ceil(max(ref_mask.shape) / max_side_px))
    r, p = ref_mask[::step, ::step], prop_mask[::step, ::step]
    rgb = np.full((3, *r.shape), 24, dtype=np.uint8)
    rgb[:, r & ~p] = np.array([[40], [120], [255]], dtype=np.uint8)
    rgb[:, p & ~r] = np.array([[255], [150], [0]], dtype=np.uint8)
    rgb[:, p & r] = 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG", width=rgb.shape[2], height=rgb.shape[1], count=3,
                           dtype="uint8") as dst:
            dst.write(rgb)


def evaluate_roads(
    predicted: str | Path,
    reference: str | Path,
    output_report: str | Path,
    config: EvaluateRoadsConfig | None = None,
    feedback: Feedback | None = None,
    predicted_layer: str | None = None,
    reference_layer: str | None = None,
) -> dict[str, Any]:
    """Compare predicted road lines with reference lines; write JSON, CSV and an overlay PNG.

    The JSON (``output_report``) holds ``apls``, ``apls_gt_to_prop``, ``apls_prop_to_gt``,
    ``relaxed_precision``, ``relaxed_recall``, ``relaxed_f1``, pixel IoU/precision/recall of the two
    networks buffered by ``road_half_width_m`` (SpaceNet's 2 m), lengths, counts and every parameter.
    The CSV (same name, ``.csv``) has one ``metric,value`` row per number; the PNG (``.png``) shows
    the reference in blue and the proposal in orange (white where they overlap).

    Returns:
        The report dict.
    """
    from .vectors import read_vector

    cfg = config or EvaluateRoadsConfig()
    fb = feedback or NullFeedback()
    pred_v = read_vector(predicted, predicted_layer)
    ref_v = read_vector(reference, reference_layer)
    ref_lines = _line_parts(ref_v.geometries)
    pred_lines = _line_parts(pred_v.geometries)
    if not ref_lines:
        raise LabelError(f"the reference {reference} has no line features; choose the reference road centerlines")
    import shapely

    ref_bounds = shapely.union_all(ref_lines).bounds
    metric_crs = metric_crs_for(ref_v.crs, ref_bounds)
    if pred_lines and pred_v.crs is None:
        raise LabelError(f"the predicted layer {predicted} has no CRS; assign one and run again")
    gt_m = _to_metric(ref_lines, ref_v.crs, metric_crs)
    prop_m = _to_metric(pred_lines, pred_v.crs, metric_crs) if pred_lines else []
    fb.info(f"evaluating {len(prop_m)} predicted against {len(gt_m)} reference lines in {metric_crs}")
    fb.set_progress(5)
    result = apls(graph_from_lines(gt_m), graph_from_lines(prop_m), cfg.apls, fb)
    fb.set_progress(70)
    check_canceled(fb, "road evaluation")
    relaxed = relaxed_metrics(gt_m, prop_m, cfg.tolerance_m)
    ref_mask, prop_mask, _transform, cell = _rasterize_pair(gt_m, prop_m, cfg)
    pix = pixel_metrics(prop_mask, ref_mask)
    fb.set_progress(85)
    report: dict[str, Any] = {
        "apls": result.apls,
        "apls_gt_to_prop": result.apls_gt_to_prop,
        "apls_prop_to_gt": result.apls_prop_to_gt,
        **{k: relaxed[k] for k in ("relaxed_precision", "relaxed_recall", "relaxed_f1")},
        "pixel_iou": pix["pixel_iou"], "pixel_precision": pix["pixel_precision"], "pixel_recall": pix["pixel_recall"],
        "reference_length_m": relaxed["reference_length_m"], "proposal_length_m": relaxed["proposal_length_m"],
        "reference_lines": len(gt_m), "proposal_lines": len(prop_m),
        "apls_paths_gt_to_prop": result.paths_gt_to_prop, "apls_paths_prop_to_gt": result.paths_prop_to_gt,
        "control_points_gt": result.control_points_gt, "control_points_prop": result.control_points_prop,
        "parameters": {
            "apls_definition": "SpaceNet-3 (CosmiQ apls.py defaults)",
            "control_point_spacing_m": cfg.apls.control_point_spacing_m,
            "snap_distance_m": cfg.apls.snap_distance_m,
            "min_path_length_m": cfg.apls.min_path_length_m,
            "penalty": "min(1, |L - L'| / L); missing path or unsnapped node = 1",
            "combination": "harmonic mean of gt->prop and prop->gt",
            "tolerance_m": cfg.tolerance_m,
            "pixel_road_half_width_m": cfg.road_half_width_m,
            "pixel_size_m": cell,
            "metric_crs": str(metric_crs),
        },
        "predicted": str(predicted), "reference": str(reference),
    }
    out = Path(output_report)
    csv_path, png_path = out.with_suffix(".csv"), out.with_suffix(".png")
    # One report in three files: none is put in place unless all three were written.
    with atomic_outputs(png_path, csv_path, out) as (png_tmp, csv_tmp, json_tmp):
        _write_overlay_png(png_tmp, ref_mask, prop_mask)
        with open(csv_tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["metric", "value"])
            for key, value in report.items():
                if isinstance(value, (int, float)):
                    writer.writerow([key, value])
            for key, value in report["parameters"].items():
                writer.writerow([f"parameter:{key}", value])
        json_tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    fb.set_progress(100)
    fb.info(format_report(report))
    return report


def format_report(report: dict[str, Any]) -> str:
    """Human-readable summary with the APLS parameters (printed in every report)."""
    p = report["parameters"]
    return (
        f"APLS {report['apls']:.4f} (gt->prop {report['apls_gt_to_prop']:.4f}, prop->gt {report['apls_prop_to_gt']:.4f}); "
        f"relaxed P/R/F1 {report['relaxed_precision']:.4f}/{report['relaxed_recall']:.4f}/{report['relaxed_f1']:.4f} "
        f"at {p['tolerance_m']} m; pixel IoU {report['pixel_iou']:.4f}. APLS parameters: {p['apls_definition']}, "
        f"control points every {p['control_point_spacing_m']} m, snapping {p['snap_distance_m']} m, "
        f"paths >= {p['min_path_length_m']} m, {p['penalty']}, {p['combination']}."
    )
