"""Property tests (hypothesis) that fill the gaps left by tests/core's own property tests.

Already covered elsewhere (not repeated here): 1-D weights summing to one and covering every pixel,
centre valid ranges partitioning an axis, chunks writing every pixel once, reflection = numpy.pad,
identity reassembly along an axis (tests/core/test_tiling.py); the skeleton-to-graph partition on
seeded random masks (tests/core/test_roads.py); cropped thinning (tests/core/test_roads_crop.py).

Added here:

* window arithmetic: tile reads stay inside the raster, tiles are the fewest that cover, valid parts
  keep ``padding_px`` of context, ``tiles_touching`` agrees with the valid ranges;
* blending in 2-D through inference's own accumulator (``ChunkBuffer``/``_add_tile``): weights form a
  partition of unity over the whole raster, centre mode writes every pixel from exactly the one tile
  that owns it; ramps are symmetric and strictly positive on their valid part, normalised weights in
  (0, 1];
* rasterization of labels (``LabelIndex.rasterize``) against a reference mask computed from pixel
  centres (later geometries win; rotated grids; the "polygon covers the chip" shortcut; all-touched
  lies between the centre mask and the touched-pixel mask);
* graph building on hypothesis-drawn pixel sets (shrinks to minimal failing skeletons): every pixel
  in exactly one node or one edge interior, edges 8-connected and ending in nodes.

Sizes are small and ``max_examples`` modest: the whole file runs in a few seconds.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from affine import Affine
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from core.inference import ChunkBuffer, _add_tile
from core.rasterize_labels import LabelIndex
from core.road_graph import skeleton_to_graph
from core.tiling import AxisTiling, TileGrid

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def axes(draw: st.DrawFn, max_size: int = 200) -> AxisTiling:
    blend = draw(st.sampled_from(["centre", "weighted"]))
    padding = draw(st.integers(0, 10))
    tile = draw(st.integers(2 * padding + (2 if blend == "weighted" else 1), 2 * padding + 32))
    return AxisTiling(draw(st.integers(1, max_size)), tile, padding, blend)


@st.composite
def grids(draw: st.DrawFn) -> TileGrid:
    axis = draw(axes(max_size=70))
    width = draw(st.integers(1, 70))
    return TileGrid(axis.size_px, width, axis.tile_size_px, axis.padding_px, axis.blend, draw(st.integers(1, 3)))


# --------------------------------------------------------------------------- window arithmetic


@FAST
@given(axes())
def test_tiles_read_inside_the_raster_and_keep_their_context(axis: AxisTiling) -> None:
    starts = [axis.valid_start(k) for k in range(axis.count)]
    assert starts == sorted(starts) and starts[0] == 0
    for k in range(axis.count):
        idx = axis.read_indices(k)
        assert idx.shape == (axis.tile_size_px,) and idx.min() >= 0 and idx.max() < axis.size_px
        t0 = axis.tile_start(k)
        a, b = axis.valid_range(k)
        # The kept part sees padding_px of context on both sides, and the reads there are the real pixels.
        assert t0 + axis.padding_px <= a < b <= t0 + axis.tile_size_px - axis.padding_px
        np.testing.assert_array_equal(idx[a - t0:b - t0], np.arange(a, b))


@FAST
@given(axes())
def test_tile_count_is_the_fewest_that_cover(axis: AxisTiling) -> None:
    covered = np.zeros(axis.size_px, dtype=bool)
    for k in range(axis.count):
        a, b = axis.valid_range(k)
        covered[a:b] = True
    assert covered.all()
    # One tile fewer (at this stride, valid length and axis length) would leave pixels uncovered.
    if axis.count > 1:
        assert (axis.count - 2) * axis.stride_px + axis.valid_px < axis.size_px


@FAST
@given(axes(), st.data())
def test_tiles_touching_agrees_with_valid_ranges(axis: AxisTiling, data: st.DataObject) -> None:
    a = data.draw(st.integers(0, axis.size_px - 1))
    b = data.draw(st.integers(a + 1, axis.size_px))
    expected = [k for k in range(axis.count) if axis.valid_range(k)[0] < b and axis.valid_range(k)[1] > a]
    assert axis.tiles_touching(a, b) == expected and expected


# --------------------------------------------------------------------------- blending


@FAST
@given(axes())
def test_ramps_are_symmetric_positive_and_weights_in_unit_interval(axis: AxisTiling) -> None:
    for k, w in enumerate(axis.weights()):
        raw = axis.raw_weight(k)
        a, b = axis.valid_range(k)
        t0 = axis.tile_start(k)
        assert (raw[a - t0:b - t0] > 0).all(), "a pixel of the valid range would get no weight"
        assert (w[a - t0:b - t0] > 0).all() and (w <= 1 + 1e-12).all() and (w >= 0).all()
        if axis.blend == "weighted":
            s0 = axis.valid_start(k) - t0
            full = np.zeros(axis.tile_size_px)
            v = axis.valid_px
            x = np.arange(v) + 0.5
            full[s0:s0 + v] = np.minimum(x, v - x)
            np.testing.assert_allclose(full[s0:s0 + v], full[s0:s0 + v][::-1])  # symmetric ramp
            # The tile's raw weight is that ramp (scaled), cut to its valid range.
            np.testing.assert_allclose(raw[a - t0:b - t0], full[a - t0:b - t0] / (v / 2.0))


def _blend(grid: TileGrid, tile_value: object) -> tuple[np.ndarray, np.ndarray]:
    """Blend every tile of ``grid`` through inference's accumulator; tile_value(i, j) gives its constant."""
    wy, wx = grid.rows.weights(), grid.cols.weights()
    out = np.full((grid.height_px, grid.width_px), np.nan, dtype=np.float64)
    writes = np.zeros(out.shape, dtype=np.int64)
    t = grid.tile_size_px
    for chunk in grid.chunks():
        buf = ChunkBuffer(chunk, 1)
        for i, j in chunk.tiles:
            probs = np.full((1, t, t), tile_value(i, j), dtype=np.float32)  # type: ignore[operator]
            _add_tile(buf, grid, wy[i], wx[j], i, j, probs, np.ones((t, t), dtype=bool))
        assert buf.valid.all(), "a chunk pixel got no tile"
        out[chunk.row0:chunk.row1, chunk.col0:chunk.col1] = buf.probs[0]
        writes[chunk.row0:chunk.row1, chunk.col0:chunk.col1] += 1
    assert (writes == 1).all()
    return out, writes


@FAST
@given(grids())
def test_weighted_blend_is_a_partition_of_unity_in_2d(grid: TileGrid) -> None:
    if grid.blend != "weighted":
        grid = TileGrid(grid.height_px, grid.width_px, max(grid.tile_size_px, 2 * grid.padding_px + 2),
                        grid.padding_px, "weighted", grid.chunk_tiles)
    out, _ = _blend(grid, lambda i, j: 1.0)
    np.testing.assert_allclose(out, 1.0, rtol=0, atol=1e-5)


@FAST
@given(grids())
def test_centre_blend_takes_each_pixel_from_the_tile_that_owns_it(grid: TileGrid) -> None:
    if grid.blend != "centre":
        grid = TileGrid(grid.height_px, grid.width_px, grid.tile_size_px, grid.padding_px, "centre", grid.chunk_tiles)
    cols = grid.cols.count
    out, _ = _blend(grid, lambda i, j: float(i * cols + j))
    expected = np.full(out.shape, -1.0)
    for i in range(grid.rows.count):
        a, b = grid.rows.valid_range(i)
        for j in range(cols):
            c, d = grid.cols.valid_range(j)
            assert (expected[a:b, c:d] == -1).all(), "two tiles own one pixel"
            expected[a:b, c:d] = i * cols + j
    np.testing.assert_array_equal(out, expected)


# --------------------------------------------------------------------------- rasterization of labels

X0, Y0, RES = 500_000.0, 5_000_000.0, 0.5
EDGE_OFFSETS = (0.0, 0.25, 0.75)  # pixel fractions: an axis-aligned edge never runs through a pixel centre


@st.composite
def grid_transforms(draw: st.DrawFn, rotated: bool) -> tuple[Affine, tuple[int, int]]:
    shape = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    t = Affine.translation(X0, Y0) @ Affine.scale(RES, -RES)
    if rotated:
        t = t @ Affine.rotation(draw(st.floats(-180, 180)))
    return t, shape


def _centres(transform: Affine, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    xs, ys = transform @ (cols + 0.5, rows + 0.5)
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def _reference(geoms: list[object], values: list[int], transform: Affine, shape: tuple[int, int],
               ) -> tuple[np.ndarray, np.ndarray]:
    """Burn by the pixel-centre rule, later geometries winning; also where a centre is (nearly) on a boundary."""
    xs, ys = _centres(transform, shape)
    out = np.zeros(shape, dtype=np.uint8)
    tie = np.zeros(shape, dtype=bool)
    points = shapely.points(xs, ys)
    for g, v in zip(geoms, values):
        out[shapely.contains_xy(g, xs, ys)] = v
        tie |= shapely.distance(shapely.boundary(g), points) < 1e-6 * RES
    return out, tie


@st.composite
def pixel_rectangles(draw: st.DrawFn, shape: tuple[int, int]) -> shapely.Polygon:
    """Axis-aligned rectangle in map units, edges on pixel edges or quarter pixels, may overhang the chip."""
    h, w = shape
    ci, ri = draw(st.integers(-3, w + 1)), draw(st.integers(-3, h + 1))
    c0, r0 = ci + draw(st.sampled_from(EDGE_OFFSETS)), ri + draw(st.sampled_from(EDGE_OFFSETS))
    c1 = ci + draw(st.integers(1, w + 4)) + draw(st.sampled_from(EDGE_OFFSETS))
    r1 = ri + draw(st.integers(1, h + 4)) + draw(st.sampled_from(EDGE_OFFSETS))
    return shapely.box(X0 + c0 * RES, Y0 - r1 * RES, X0 + c1 * RES, Y0 - r0 * RES)


@FAST
@given(st.data())
def test_rasterized_rectangles_equal_the_pixel_centre_reference(data: st.DataObject) -> None:
    transform, shape = data.draw(grid_transforms(rotated=False))
    geoms = data.draw(st.lists(pixel_rectangles(shape), min_size=1, max_size=6))
    values = data.draw(st.lists(st.integers(1, 254), min_size=len(geoms), max_size=len(geoms)))
    got = LabelIndex(geoms, values).rasterize(transform, shape)
    expected, tie = _reference(geoms, values, transform, shape)
    assert not tie.any()  # quarter-pixel edges: the rule is never ambiguous here, so compare every pixel
    np.testing.assert_array_equal(got, expected)


@st.composite
def star_polygons(draw: st.DrawFn, transform: Affine, shape: tuple[int, int]) -> shapely.Polygon:
    """A simple (star-shaped) polygon around a point of the chip, up to a chip's size across."""
    h, w = shape
    cc, cr = draw(st.floats(-2, w + 2)), draw(st.floats(-2, h + 2))
    n = draw(st.integers(3, 9))
    angles = np.sort(np.asarray(draw(st.lists(st.floats(0, 2 * math.pi, exclude_max=True), min_size=n,
                                              max_size=n, unique=True))))
    assume(np.diff(np.concatenate([angles, angles[:1] + 2 * math.pi])).min() > 0.05)
    radii = np.asarray(draw(st.lists(st.floats(0.3, max(h, w) * 0.8 + 1), min_size=n, max_size=n)))
    cols, rows = cc + radii * np.cos(angles), cr + radii * np.sin(angles)
    xs, ys = transform @ (cols, rows)
    poly = shapely.Polygon(np.column_stack([xs, ys]))
    assume(poly.is_valid and poly.area > 0)
    return poly


@FAST
@given(st.data())
def test_rasterized_polygons_on_rotated_grids_equal_the_pixel_centre_reference(data: st.DataObject) -> None:
    transform, shape = data.draw(grid_transforms(rotated=True))
    geoms = data.draw(st.lists(star_polygons(transform, shape), min_size=1, max_size=4))
    if data.draw(st.booleans()):  # a polygon that covers the whole chip first: the shortcut path
        h, w = shape
        corners = [transform @ (c, r) for c, r in ((-1, -1), (w + 1, -1), (w + 1, h + 1), (-1, h + 1))]
        geoms.insert(data.draw(st.integers(0, len(geoms))), shapely.Polygon(corners))
    values = data.draw(st.lists(st.integers(1, 254), min_size=len(geoms), max_size=len(geoms)))
    got = LabelIndex(geoms, values).rasterize(transform, shape)
    expected, tie = _reference(geoms, values, transform, shape)
    assert tie.mean() < 0.25 or tie.sum() <= 3
    np.testing.assert_array_equal(got[~tie], expected[~tie])


@FAST
@given(st.data())
def test_all_touched_lies_between_centre_mask_and_touched_pixels(data: st.DataObject) -> None:
    transform, shape = data.draw(grid_transforms(rotated=False))
    poly = data.draw(star_polygons(transform, shape))
    got = LabelIndex([poly], [1], all_touched=[True]).rasterize(transform, shape).astype(bool)
    centre, tie = _reference([poly], [1], transform, shape)
    h, w = shape
    touched = np.zeros(shape, dtype=bool)
    grown = poly.buffer(1e-6 * RES)
    for r in range(h):
        for c in range(w):
            cell = shapely.Polygon([transform @ p for p in ((c, r), (c + 1, r), (c + 1, r + 1), (c, r + 1))])
            touched[r, c] = grown.intersects(cell)
    assert not (centre.astype(bool) & ~tie & ~got).any(), "all-touched lost a pixel whose centre is inside"
    assert not (got & ~touched).any(), "all-touched burned a pixel the polygon does not touch"


# --------------------------------------------------------------------------- graph building


def _check_partition(skel: np.ndarray) -> None:
    g = skeleton_to_graph(skel)
    w = skel.shape[1]
    interior = [int(r * w + c) for e in g.edges for r, c in e.path[1:-1].tolist()]
    nodes = [int(r * w + c) for r, c in g.node_pixels[:, :2].tolist()]
    keys = interior + nodes
    assert len(keys) == len(set(keys)), "a skeleton pixel is in two places"
    assert set(keys) == set(np.flatnonzero(skel.ravel()).tolist()), "a skeleton pixel is in no node or edge"
    node_set = set(nodes)
    for e in g.edges:
        ends = {int(e.path[0, 0] * w + e.path[0, 1]), int(e.path[-1, 0] * w + e.path[-1, 1])}
        assert ends <= node_set, "an edge does not end in nodes"
        step = np.abs(np.diff(e.path[:, :2], axis=0))
        assert len(e.path) >= 2 and step.max() <= 1 and (step.sum(axis=1) >= 1).all(), "an edge jumps"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hnp.arrays(np.bool_, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12)))
def test_graph_partition_on_any_pixel_set(skel: np.ndarray) -> None:
    _check_partition(skel)


@FAST
@given(st.integers(0, 2**31 - 1), st.integers(4, 40), st.integers(4, 40))
def test_graph_partition_on_thinned_lines(seed: int, h: int, w: int) -> None:
    """Skeletons of random thick polylines (junctions, loops, lines along the border)."""
    from skimage.draw import line
    from skimage.morphology import dilation, skeletonize

    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), dtype=bool)
    for _ in range(rng.integers(1, 5)):
        r0, r1 = rng.integers(0, h, 2)
        c0, c1 = rng.integers(0, w, 2)
        rr, cc = line(int(r0), int(c0), int(r1), int(c1))
        mask[rr, cc] = True
    mask = dilation(mask, np.ones((3, 3), dtype=bool)) if rng.random() < 0.7 else mask
    _check_partition(skeletonize(mask))
