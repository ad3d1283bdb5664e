"""Road probability or mask raster -> clean, connected road centerlines (GeoPackage lines + nodes).

The steps, with every distance given in metres and converted with the raster's cell size (for a
geographic CRS, the size of a cell in metres at the raster's centre latitude):

1. threshold the band (``value >= threshold``; nodata is never road);
2. remove blobs smaller than ``min_blob_area_m2`` and fill holes smaller than ``max_hole_area_m2``
   (cars and tree shadows punch holes in road surfaces; without filling, every hole becomes a loop);
3. skeletonize (scikit-image) and turn the skeleton into a graph (:mod:`core.road_graph`);
4. prune spurs shorter than ``min_spur_m`` (the hairs a skeleton grows towards road edges);
5. close gaps of at most ``max_gap_m`` between dead ends that point at each other within
   ``max_gap_angle_deg`` (occlusions by trees, bridges, shadows);
6. remove connected pieces shorter than ``min_component_m`` in total;
7. simplify each line with a tolerance of ``simplify_m``.

Rasters larger than memory are read in blocks of ``block_size_px`` with an overlap; each block's
skeleton is turned into a graph whose seam pixels are nodes keyed by their global pixel position,
and the blocks are stitched by those keys before steps 4-7, so a road crossing a block edge comes
out as one continuous line. Memory depends on the block size and the length of the road network,
not on the raster size.

Lines are written in the raster's CRS with ``edge_id``, ``from_node``, ``to_node``, ``length_m``
(geodesic for a geographic CRS); nodes with ``node_id``, ``degree`` and ``kind`` (end, junction).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from .config import StepConfig, require
from .errors import ConfigError, OutputError, RasterReadError
from .progress import Feedback, NullFeedback, SubFeedback, check_canceled
from .road_graph import PixelGraph, RoadGraph, skeleton_to_graph, stitch

LINES_LAYER = "road_lines"
NODES_LAYER = "road_nodes"


@dataclasses.dataclass(frozen=True)
class VectorizeConfig(StepConfig):
    """Parameters of :func:`vectorize_roads` (distances in metres, areas in square metres)."""

    threshold: float = 0.5
    min_spur_m: float = 10.0
    max_gap_m: float = 15.0
    max_gap_angle_deg: float = 30.0
    min_component_m: float = 25.0
    simplify_m: float = 1.0
    min_blob_area_m2: float = 20.0
    max_hole_area_m2: float = 20.0
    band: int = 1
    block_size_px: int = 4096
    overlap_px: int | None = None

    def validate(self) -> None:
        for name in ("min_spur_m", "max_gap_m", "min_component_m", "simplify_m", "min_blob_area_m2",
                     "max_hole_area_m2"):
            value = getattr(self, name)
            require(math.isfinite(value) and value >= 0, f"{name} must be 0 or more (metres), got {value}")
        require(math.isfinite(self.threshold), f"threshold must be a number, got {self.threshold}")
        require(0 <= self.max_gap_angle_deg <= 90,
                f"max_gap_angle_deg must be 0-90 degrees, got {self.max_gap_angle_deg}")
        require(self.band >= 1, f"band must be 1 or more, got {self.band}")
        require(256 <= self.block_size_px <= 65536,
                f"block_size_px must be 256-65536 pixels, got {self.block_size_px}")
        require(self.overlap_px is None or 2 <= self.overlap_px <= self.block_size_px // 2,
                f"overlap_px must be 2 to half the block size, got {self.overlap_px}")


@dataclasses.dataclass(frozen=True)
class VectorizeResult:
    """What :func:`vectorize_roads` wrote and found."""

    lines: Path
    nodes: Path
    edge_count: int
    node_count: int
    junction_count: int
    end_count: int
    total_length_m: float
    cell_size_m: tuple[float, float]
    blocks: int
    seconds: float
    stats: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lines"], d["nodes"] = str(self.lines), str(self.nodes)
        return d


# --------------------------------------------------------------------------- CRS helpers


def metres_per_degree(lat_deg: float | np.ndarray) -> tuple[Any, Any]:
    """Length in metres of one degree of longitude and of latitude at a latitude (WGS84 ellipsoid)."""
    phi = np.radians(lat_deg)
    lat_m = 111132.92 - 559.82 * np.cos(2 * phi) + 1.175 * np.cos(4 * phi) - 0.0023 * np.cos(6 * phi)
    lon_m = 111412.84 * np.cos(phi) - 93.5 * np.cos(3 * phi) + 0.118 * np.cos(5 * phi)
    return lon_m, lat_m


def cell_size_metres(crs: Any, transform: Any, height: int) -> tuple[float, float]:
    """(dx, dy) of one cell in metres: map units times the unit's size, or degrees at the centre latitude."""
    if crs is None:
        raise RasterReadError("the road raster has no CRS, so distances in metres cannot be converted to pixels; "
                              "assign its CRS (Raster > Projections > Assign Projection) and run again")
    if transform.b != 0 or transform.d != 0:
        raise RasterReadError("the road raster is rotated (its geotransform has rotation terms); "
                              "warp it to a north-up grid first (gdalwarp)")
    dx, dy = abs(transform.a), abs(transform.e)
    if crs.is_geographic:
        lat = transform.f + transform.e * height / 2
        lon_m, lat_m = metres_per_degree(lat)
        return float(dx * lon_m), float(dy * lat_m)
    factor = float(crs.linear_units_factor[1])
    return dx * factor, dy * factor


def line_lengths_m(lines_xy: list[np.ndarray], crs: Any) -> np.ndarray:
    """Length in metres of polylines given in ``crs`` coordinates (ellipsoidal for geographic CRSs)."""
    out = np.zeros(len(lines_xy))
    geographic = crs.is_geographic
    factor = 1.0 if geographic else float(crs.linear_units_factor[1])
    for i, xy in enumerate(lines_xy):
        d = np.diff(xy, axis=0)
        if geographic:
            mid_lat = (xy[1:, 1] + xy[:-1, 1]) / 2
            lon_m, lat_m = metres_per_degree(mid_lat)
            out[i] = float(np.hypot(d[:, 0] * lon_m, d[:, 1] * lat_m).sum())
        else:
            out[i] = float(np.hypot(d[:, 0], d[:, 1]).sum()) * factor
    return out


# --------------------------------------------------------------------------- blocks


def _block_starts(size: int, block: int) -> list[int]:
    return list(range(0, size, block))


_EIGHT = np.ones((3, 3), dtype=bool)
_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
# Above this many components, one vectorized pass over the label image is cheaper than a loop over boxes.
_MANY_COMPONENTS = 20_000


def _set_small_components(labelled: np.ndarray, min_px: int, structure: np.ndarray, target: np.ndarray,
                          value: bool) -> None:
    """Set ``target`` to ``value`` on the connected components of ``labelled`` with fewer than ``min_px`` pixels.

    The same result as scikit-image's ``remove_small_objects`` (or ``remove_small_holes`` on the
    complement), but much cheaper on large, sparse blocks: a connected set of n pixels spans at most
    n rows and n columns, so only components whose bounding box is under ``min_px`` both ways can be
    small, and those are counted inside their own boxes. No full-size size lookup (``sizes[labels]``)
    is made unless the block has very many components.
    """
    from scipy import ndimage

    labels, count = ndimage.label(labelled, structure=structure)
    if count == 0:
        return
    if count > _MANY_COMPONENTS:
        sizes = np.bincount(labels.ravel())
        small = sizes < min_px
        small[0] = False
        if small.any():
            target[small[labels]] = value
        return
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or box[0].stop - box[0].start >= min_px or box[1].stop - box[1].start >= min_px:
            continue
        pixels = labels[box] == k
        if np.count_nonzero(pixels) < min_px:
            target[box][pixels] = value


#: Tiles of :func:`skeletonize_tiled` and their least context. 96 px of context reproduced the whole-array
#: skeleton bit for bit on every mask tried (the benchmark's 67 Mpix city grid with blobs and 45-degree
#: avenues, the sample scene, SpaceNet); 64 px changed 5 pixels of one 4096 px block, 40 px a few per block.
SKELETON_TILE_PX = 768
SKELETON_HALO_PX = 96


def skeletonize_tiled(mask: np.ndarray, tile: int = SKELETON_TILE_PX, halo: int = SKELETON_HALO_PX) -> np.ndarray:
    """Zhang-Suen skeleton of ``mask`` computed tile by tile, each tile thinned with ``halo`` px of context.

    Why: thinning repeats passes over its whole input until nothing changes, so one wide blob anywhere in a
    4096 px block made every pixel of the block pay for its many passes. Thinning is local (a pixel's fate
    depends on the mask within a few road widths), so each tile stops when its own roads are thin, and its
    data stays in the CPU cache: about 1.45x faster on the benchmark's city grid. It is the assumption the
    blocks of :func:`build_road_graph` make at their seams, with a wider margin; tiles without a road pixel
    are skipped. Not exact in theory (thinning effects can travel far inside very wide blobs), exact in
    practice on road masks: tests compare it with the whole-array skeleton on real and synthetic masks.
    """
    from skimage.morphology import skeletonize

    H, W = mask.shape
    if max(H, W) <= tile + halo:
        return np.asarray(skeletonize(mask), dtype=bool)  # type: ignore[no-untyped-call]
    out = np.zeros(mask.shape, dtype=bool)
    for r in range(0, H, tile):
        for c in range(0, W, tile):
            r1, c1 = min(H, r + tile), min(W, c + tile)
            if not mask[r:r1, c:c1].any():
                continue
            pr0, pc0 = max(0, r - halo), max(0, c - halo)
            pr1, pc1 = min(H, r1 + halo), min(W, c1 + halo)
            thin = skeletonize(mask[pr0:pr1, pc0:pc1])  # type: ignore[no-untyped-call]
            out[r:r1, c:c1] = thin[r - pr0:r1 - pr0, c - pc0:c1 - pc0]
    return out


def _road_mask(data: np.ndarray, valid: np.ndarray | None, cfg: VectorizeConfig, cell_area_m2: float) -> np.ndarray:
    """Threshold, then remove small blobs (8-connected) and fill small holes (4-connected background)."""
    if np.issubdtype(data.dtype, np.integer):
        # Compare integers with integers: no float copy of the block (same result as data >= threshold).
        info = np.iinfo(data.dtype)
        level = math.ceil(cfg.threshold)
        mask = data >= level if level > info.min else np.ones(data.shape, bool)
        if level > info.max:
            mask[:] = False
    else:
        mask = data >= cfg.threshold
    if valid is not None:
        mask &= valid
    blob_px = int(round(cfg.min_blob_area_m2 / cell_area_m2))
    hole_px = int(round(cfg.max_hole_area_m2 / cell_area_m2))
    if blob_px > 1 and mask.any():
        _set_small_components(mask, blob_px, _EIGHT, mask, False)
    if hole_px > 1 and mask.any():
        _set_small_components(~mask, hole_px, _FOUR, mask, True)
        if valid is not None:
            mask &= valid
    return np.asarray(mask, dtype=bool)


def _block_graph(src: Any, cfg: VectorizeConfig, r0: int, c0: int, r1: int, c1: int, overlap: int,
                 cell_area_m2: float) -> PixelGraph:
    """Skeleton graph of the core window [r0:r1, c0:c1], read with ``overlap`` pixels of context."""
    from rasterio.enums import MaskFlags
    from rasterio.windows import Window

    H, W = src.height, src.width
    pr0, pc0 = max(0, r0 - overlap), max(0, c0 - overlap)
    pr1, pc1 = min(H, r1 + overlap), min(W, c1 + overlap)
    window = Window(pc0, pr0, pc1 - pc0, pr1 - pr0)
    data = src.read(cfg.band, window=window)
    valid: np.ndarray | None = None
    if MaskFlags.all_valid not in src.mask_flag_enums[cfg.band - 1]:
        valid = src.read_masks(cfg.band, window=window) > 0
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        valid = finite if valid is None else valid & finite
    mask = _road_mask(data, valid, cfg, cell_area_m2)
    if not mask.any():
        return PixelGraph({}, [])
    # Mirror the mask across the raster's own edges, so that a road leaving the raster is thinned as if
    # it went on: its centerline then reaches the edge instead of stopping half a road width short
    # (which would cost APLS control points at every edge crossing). Seams inside the raster already
    # have real context from the overlap.
    pads = ((overlap - (r0 - pr0), overlap - (pr1 - r1)), (overlap - (c0 - pc0), overlap - (pc1 - c1)))
    halo = max(SKELETON_HALO_PX, overlap)
    if any(v > 0 for pair in pads for v in pair):
        padded = np.pad(mask, pads, mode="symmetric")
        thin = skeletonize_tiled(padded, halo=halo)
        skel = thin[pads[0][0]: pads[0][0] + mask.shape[0], pads[1][0]: pads[1][0] + mask.shape[1]].astype(bool)
    else:
        skel = skeletonize_tiled(mask, halo=halo)
    # The core plus a one-pixel ring (where the raster has one) is what the graph is built from.
    er0, ec0 = max(0, r0 - 1), max(0, c0 - 1)
    er1, ec1 = min(H, r1 + 1), min(W, c1 + 1)
    sub = skel[er0 - pr0: er1 - pr0, ec0 - pc0: ec1 - pc0]
    owned = np.zeros(sub.shape, dtype=bool)
    owned[r0 - er0: r1 - er0, c0 - ec0: c1 - ec0] = True
    forced = ~owned
    # Core pixels along a seam with a neighbouring block are forced nodes too (keys shared with it).
    if r0 > 0:
        forced[r0 - er0, :] = True
    if r1 < H:
        forced[r1 - 1 - er0, :] = True
    if c0 > 0:
        forced[:, c0 - ec0] = True
    if c1 < W:
        forced[:, c1 - 1 - ec0] = True
    return skeleton_to_graph(sub, er0, ec0, W, forced=forced, owned=owned)


def build_road_graph(
    raster_path: str | Path,
    config: VectorizeConfig | None = None,
    feedback: Feedback | None = None,
) -> tuple[RoadGraph, dict[str, Any]]:
    """Read the raster block by block and return the cleaned graph (local metres) and facts about it.

    The facts dict holds ``crs``, ``transform``, ``cell_size_m`` (dx, dy), ``blocks`` and ``stats``
    (counts of what each clean-up step did).
    """
    import rasterio

    cfg = config or VectorizeConfig()
    fb = feedback or NullFeedback()
    # Every block is read once, so GDAL's block cache (5 % of RAM by default) would only grow with the
    # raster size without saving a read: keep it small so memory follows the block size.
    env = rasterio.Env(GDAL_CACHEMAX=64)
    env.__enter__()
    try:
        src = rasterio.open(str(raster_path))
    except Exception as exc:
        env.__exit__(None, None, None)
        raise RasterReadError(f"cannot open the road raster {raster_path}: {exc}; check the path and format") from exc
    with env, src:
        if cfg.band > src.count:
            raise ConfigError(f"band {cfg.band} does not exist: {raster_path} has {src.count} band(s)")
        dx_m, dy_m = cell_size_metres(src.crs, src.transform, src.height)
        cell_m = math.sqrt(dx_m * dy_m)
        overlap = cfg.overlap_px if cfg.overlap_px is not None else int(min(256, max(16, math.ceil(20.0 / cell_m))))
        H, W = src.height, src.width
        rows, cols = _block_starts(H, cfg.block_size_px), _block_starts(W, cfg.block_size_px)
        fb.info(f"vectorizing {W} x {H} px, cell {dx_m:.3g} x {dy_m:.3g} m, {len(rows) * len(cols)} block(s) of "
                f"{cfg.block_size_px} px with {overlap} px overlap")
        blocks: list[PixelGraph] = []
        total = len(rows) * len(cols)
        for i, r0 in enumerate(rows):
            for j, c0 in enumerate(cols):
                check_canceled(fb, "road vectorization")
                r1, c1 = min(H, r0 + cfg.block_size_px), min(W, c0 + cfg.block_size_px)
                blocks.append(_block_graph(src, cfg, r0, c0, r1, c1, overlap, dx_m * dy_m))
                fb.set_progress(80.0 * (i * len(cols) + j + 1) / total)
        facts: dict[str, Any] = {"crs": src.crs, "transform": src.transform, "cell_size_m": (dx_m, dy_m),
                                 "blocks": total, "width": W, "height": H}
    graph = stitch(blocks, (dx_m, dy_m))
    del blocks
    stats = {"skeleton_edges": len(graph.edges)}
    graph.merge_degree_two()
    stats["spurs_pruned"] = graph.prune_spurs(cfg.min_spur_m)
    stats["gaps_closed"] = graph.close_gaps(cfg.max_gap_m, cfg.max_gap_angle_deg, lookback_m=max(3.0, 4 * cell_m))
    stats["components_removed"] = graph.remove_small_components(cfg.min_component_m)
    graph.remove_isolated_nodes()
    graph.merge_degree_two()
    graph.simplify(cfg.simplify_m)
    graph.snap_ends_to_nodes()
    facts["stats"] = stats
    fb.set_progress(90)
    return graph, facts


def graph_to_map(graph: RoadGraph, transform: Any, cell_xy_m: tuple[float, float]) -> tuple[
        list[int], dict[int, int], list[np.ndarray], np.ndarray]:
    """Node renumbering (1..n), edge ids, and edge polylines in map coordinates (pixel centres)."""
    dx, dy = cell_xy_m
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    node_ids = {n: i + 1 for i, n in enumerate(sorted(graph.pos))}
    lines = []
    for edge in graph.edges.values():
        col = edge.coords[:, 0] / dx
        row = edge.coords[:, 1] / dy
        lines.append(np.column_stack([a * col + b * row + c, d * col + e * row + f]))
    node_xy = np.array([graph.pos[n] for n in sorted(graph.pos)]).reshape(-1, 2)
    col, row = node_xy[:, 0] / dx, node_xy[:, 1] / dy
    node_map = np.column_stack([a * col + b * row + c, d * col + e * row + f])
    return sorted(graph.pos), node_ids, lines, node_map


LINES_QML = """<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22" styleCategories="Symbology">
  <renderer-v2 type="singleSymbol" forceraster="0" symbollevels="0" enableorderby="0">
    <symbols>
      <symbol type="line" name="0" alpha="1" force_rhr="0" clip_to_extent="1">
        <layer class="SimpleLine" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option type="QString" name="line_color" value="35,35,35,255"/>
            <Option type="QString" name="line_width" value="1.4"/>
            <Option type="QString" name="line_width_unit" value="MM"/>
            <Option type="QString" name="capstyle" value="round"/>
            <Option type="QString" name="joinstyle" value="round"/>
          </Option>
        </layer>
        <layer class="SimpleLine" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option type="QString" name="line_color" value="255,196,0,255"/>
            <Option type="QString" name="line_width" value="0.8"/>
            <Option type="QString" name="line_width_unit" value="MM"/>
            <Option type="QString" name="capstyle" value="round"/>
            <Option type="QString" name="joinstyle" value="round"/>
          </Option>
        </layer>
      </symbol>
    </symbols>
  </renderer-v2>
</qgis>
"""


def _marker(name: str, color: str, size: str) -> str:
    return (f'      <symbol type="marker" name="{name}" alpha="1" force_rhr="0" clip_to_extent="1">\n'
            f'        <layer class="SimpleMarker" enabled="1" pass="0" locked="0">\n'
            f'          <Option type="Map"><Option type="QString" name="color" value="{color}"/>'
            f'<Option type="QString" name="name" value="circle"/><Option type="QString" name="size" value="{size}"/>'
            f'<Option type="QString" name="outline_color" value="35,35,35,255"/></Option>\n'
            f'        </layer>\n      </symbol>')


NODES_QML = f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22" styleCategories="Symbology">
  <renderer-v2 type="categorizedSymbol" attr="kind" forceraster="0" symbollevels="0" enableorderby="0">
    <categories>
      <category render="true" symbol="0" value="junction" label="junction"/>
      <category render="true" symbol="1" value="end" label="dead end"/>
    </categories>
    <symbols>
{_marker("0", "227,26,28,255", "2.4")}
{_marker("1", "31,120,180,255", "1.6")}
    </symbols>
  </renderer-v2>
</qgis>
"""


def write_road_layers(graph: RoadGraph, facts: dict[str, Any], lines_path: str | Path, nodes_path: str | Path,
                      overwrite: bool = True) -> tuple[int, int, int, int, float]:
    """Write the lines and nodes layers (format from the extension) with ``.qml`` styles beside them."""
    import shapely

    from .outputs import atomic_outputs
    from .vectors import write_vector

    crs = facts["crs"]
    nodes_sorted, node_ids, lines_xy, node_map = graph_to_map(graph, facts["transform"], facts["cell_size_m"])
    lengths = line_lengths_m(lines_xy, crs)
    edges = list(graph.edges.values())
    crs_text = crs.to_wkt()
    degrees = np.array([graph.degree(n) for n in nodes_sorted], dtype=np.int32)
    kinds = np.array(["end" if d == 1 else "junction" if d >= 3 else "loop" for d in degrees.tolist()], dtype=object)
    # Lines and nodes are one result: neither is put in place unless both were written.
    with atomic_outputs(lines_path, nodes_path, overwrite=overwrite) as (lines_tmp, nodes_tmp):
        write_vector(
            lines_tmp, [shapely.linestrings(xy) for xy in lines_xy],
            {"edge_id": np.arange(1, len(edges) + 1, dtype=np.int32),
             "from_node": np.array([node_ids[e.u] for e in edges], dtype=np.int32),
             "to_node": np.array([node_ids[e.v] for e in edges], dtype=np.int32),
             "length_m": np.round(lengths, 3)},
            crs=crs_text, layer=LINES_LAYER, geometry_type="LineString",
        )
        write_vector(
            nodes_tmp, list(shapely.points(node_map)) if len(node_map) else [],
            {"node_id": np.arange(1, len(nodes_sorted) + 1, dtype=np.int32), "degree": degrees, "kind": kinds},
            crs=crs_text, layer=NODES_LAYER, geometry_type="Point",
        )
    Path(lines_path).with_suffix(".qml").write_text(LINES_QML, encoding="utf-8")
    Path(nodes_path).with_suffix(".qml").write_text(NODES_QML, encoding="utf-8")
    return (len(edges), len(nodes_sorted), int((degrees >= 3).sum()), int((degrees == 1).sum()),
            float(lengths.sum()))


def vectorize_roads(
    raster_path: str | Path,
    lines_path: str | Path,
    nodes_path: str | Path,
    config: VectorizeConfig | None = None,
    feedback: Feedback | None = None,
    overwrite: bool = True,
) -> VectorizeResult:
    """Vectorize a road probability or mask raster into centerlines and nodes (see the module doc).

    Args:
        raster_path: single- or multi-band raster; ``config.band`` holds road probability or a 0/1
            (or 0/255) mask.
        lines_path: output for the lines (GeoPackage recommended; layer ``road_lines``).
        nodes_path: output for the nodes (layer ``road_nodes``); must differ from ``lines_path``.
        config: parameters; defaults suit 0.3-1 m imagery.
        feedback: progress, cancel and messages.
        overwrite: replace existing outputs.

    Returns:
        A :class:`VectorizeResult` with counts and total length.
    """
    cfg = config or VectorizeConfig()
    fb = feedback or NullFeedback()
    t0 = time.perf_counter()
    lines_path, nodes_path = Path(lines_path), Path(nodes_path)
    if lines_path.resolve() == nodes_path.resolve():
        raise ConfigError(f"the lines and nodes outputs are the same file ({lines_path}); give the nodes another name")
    for p in (lines_path, nodes_path):
        if str(p).startswith("memory:") or p.suffix.lower() not in (".gpkg", ".shp", ".geojson", ".json", ".fgb"):
            raise OutputError(f"cannot write {p}: choose a GeoPackage (.gpkg) file (or .shp/.geojson/.fgb)")
    graph, facts = build_road_graph(raster_path, cfg, SubFeedback(fb, 0, 90))
    check_canceled(fb, "road vectorization")
    n_edges, n_nodes, n_junctions, n_ends, total = write_road_layers(graph, facts, lines_path, nodes_path, overwrite)
    result = VectorizeResult(
        lines=lines_path, nodes=nodes_path, edge_count=n_edges, node_count=n_nodes, junction_count=n_junctions,
        end_count=n_ends, total_length_m=round(total, 3), cell_size_m=tuple(facts["cell_size_m"]),
        blocks=int(facts["blocks"]), seconds=round(time.perf_counter() - t0, 3), stats=dict(facts["stats"]),
    )
    try:
        lines_path.with_name(lines_path.stem + ".vectorize.json").write_text(json.dumps(
            {"step": "vectorize_roads", "input": str(raster_path), "config": cfg.to_dict(), "result": result.to_dict()},
            indent=2) + "\n", encoding="utf-8")
    except OSError as exc:  # the layers are written; a missing sidecar is not worth failing for
        fb.warning(f"could not write the settings sidecar: {exc}")
    fb.set_progress(100)
    fb.info(f"{n_edges} road lines ({total / 1000:.2f} km), {n_junctions} junctions, {n_ends} dead ends; "
            f"spurs pruned {result.stats['spurs_pruned']}, gaps closed {result.stats['gaps_closed']}, "
            f"small pieces removed {result.stats['components_removed']}")
    return result


def extract_roads(
    raster_path: str | Path,
    model: str | Path,
    probability_path: str | Path,
    lines_path: str | Path,
    nodes_path: str | Path,
    config: VectorizeConfig | None = None,
    cell_size_m: float | None = None,
    padding_px: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    feedback: Feedback | None = None,
    extent: tuple[float, float, float, float] | None = None,
) -> VectorizeResult:
    """Imagery + road model package -> road probability raster -> centerlines, in one step.

    Runs :func:`core.inference.classify_pixels` with the package (it must be a road model: one road
    probability band, 0-1, nodata -1) and vectorizes the probability with :func:`vectorize_roads`.
    The classified mask that inference also writes is kept beside the probability
    (``<probability>_mask.tif``). ``extent`` (raster CRS) limits the work to part of the raster.
    """
    from .errors import ModelPackageError
    from .inference import ClassifyConfig, classify_pixels
    from .model_package import read_definition

    fb = feedback or NullFeedback()
    if Path(model).suffix.lower() == ".zip" and Path(model).is_file():
        import zipfile

        try:
            with zipfile.ZipFile(model) as zf:
                names = [n for n in zf.namelist() if n.endswith("model.json")]
                task = json.loads(zf.read(names[0])).get("task") if len(names) == 1 else "roads"
        except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
            raise ModelPackageError(f"{model} is not a readable zip file (truncated or corrupt: {exc}); re-export or "
                                    "re-download the model package") from exc
    elif Path(model).suffix.lower() == ".zip":
        raise ModelPackageError(f"model package {model} does not exist; pass the folder or zip written by training")
    else:
        task = read_definition(model).get("task")
    if task != "roads":
        raise ModelPackageError(f"{model} is a {task!r} model, not a road model; use a model trained on road "
                                "labels (task 'roads'), or Classify Pixels for land-cover models")
    prob = Path(probability_path)
    classify = ClassifyConfig(
        input_raster=Path(raster_path), model=Path(model),
        output_classified=prob.with_name(prob.stem + "_mask.tif"), output_probability=prob,
        cell_size_m=cell_size_m, padding_px=padding_px, batch_size=batch_size, device=device, extent=extent,
    )
    classified = classify_pixels(classify, SubFeedback(fb, 0, 70))
    if classified.output_probability is None:
        raise OutputError("inference wrote no road probability raster; check that the model is a road model")
    check_canceled(fb, "road extraction")
    return vectorize_roads(classified.output_probability, lines_path, nodes_path, config, SubFeedback(fb, 70, 100))
