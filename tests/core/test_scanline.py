"""core.scanline burns polygons pixel for pixel like GDAL (rasterio.features.rasterize, all_touched=False).

Every comparison is exact equality with rasterio on the same shapes, on random polygons (hypothesis and a
seeded bulk run), adversarial coordinates (vertices on pixel centres and corners, horizontal edges on row
centres in both directions, duplicated vertices, slivers), burn order, dtypes, the cases where the
scanline path must decline, and LabelIndex.rasterize with and without it on the real data.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.features import rasterize

from core.rasterize_labels import LabelIndex, buffer_metres, repair, transform_geometries
from core.scanline import burn_polygons


def _gdal(shape: tuple[int, int], geoms: list[Any], values: list[float], dtype: str = "uint8",
          fill: float = 0) -> np.ndarray:
    out = np.full(shape, fill, dtype=dtype)
    shapes = [(g, v) for g, v in zip(geoms, values) if not g.is_empty]
    if shapes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rasterio warns about degenerate (but burnable) shapes
            rasterize(shapes, out=out, transform=Affine.identity(), all_touched=False)
    return out


def _ours(shape: tuple[int, int], geoms: list[Any], values: list[float], dtype: str = "uint8",
          fill: float = 0) -> np.ndarray:
    out = np.full(shape, fill, dtype=dtype)
    assert burn_polygons(out, geoms, values), "the scanline path declined shapes it should burn"
    return out


def _check(shape: tuple[int, int], geoms: list[Any], values: list[float] | None = None,
           dtype: str = "uint8") -> np.ndarray:
    values = values if values is not None else [float(i + 1) for i in range(len(geoms))]
    expected = _gdal(shape, geoms, values, dtype)
    got = _ours(shape, geoms, values, dtype)
    diff = np.argwhere(got != expected)
    if len(diff):
        # A pixel centre exactly on an edge is a tie, and GDAL itself does not always settle it the same way:
        # in CI, after the demo test had run in the same process, GDAL burned such a pixel that it leaves out
        # in a fresh process (same geometry, same call; the crossing lands within one ulp of the centre).
        # Only such ties may differ.
        boundary = shapely.union_all([g.boundary for g in geoms])
        centres = shapely.points(diff[:, 1] + 0.5, diff[:, 0] + 0.5)
        diff = diff[shapely.distance(centres, boundary) > 1e-9]
    if len(diff):
        raise AssertionError(f"{len(diff)} pixels differ from GDAL, first (row, col) {diff[:5].tolist()}; "
                             f"shape {shape}, geometries {[g.wkt[:300] for g in geoms]}")
    return got


# ---------------------------------------------------------------------------------------------------------
# Random polygons

_coord = st.one_of(
    st.integers(-8, 48).map(float),                 # pixel corners
    st.integers(-8, 48).map(lambda k: k + 0.5),     # pixel centres
    st.integers(-32, 192).map(lambda k: k / 4.0),   # quarter pixels
    st.floats(-10.0, 50.0, allow_nan=False),
)
_ring = st.lists(st.tuples(_coord, _coord), min_size=3, max_size=40)
_polygon = st.builds(lambda shell, holes: shapely.Polygon(shell, holes), _ring, st.lists(_ring, max_size=2))
_geometry = st.one_of(_polygon, st.lists(_polygon, min_size=1, max_size=3).map(shapely.MultiPolygon))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_geometry, min_size=1, max_size=3), st.integers(1, 48), st.integers(1, 48))
def test_hypothesis_polygons_match_gdal(geoms: list[Any], height: int, width: int) -> None:
    _check((height, width), geoms)


def _star(rng: np.random.Generator, cx: float, cy: float, r0: float, r1: float, n: int) -> np.ndarray:
    angle = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = rng.uniform(r0, r1, n)
    return np.column_stack([cx + radius * np.cos(angle), cy + radius * np.sin(angle)])


def _random_ring(rng: np.random.Generator, size: int) -> np.ndarray:
    n = int(rng.integers(3, 41))
    mode = int(rng.integers(0, 8))
    if mode == 0:  # anywhere, partly outside
        return rng.uniform(-0.3 * size, 1.3 * size, (n, 2))
    if mode == 1:  # pixel corners
        return rng.integers(-3, size + 4, (n, 2)).astype(float)
    if mode == 2:  # pixel centres
        return rng.integers(-3, size + 4, (n, 2)) + 0.5
    if mode == 3:  # half pixels
        return rng.integers(-6, 2 * size + 7, (n, 2)) / 2.0
    if mode == 4:  # star inside or across the chip
        return _star(rng, rng.uniform(0, size), rng.uniform(0, size), 1, size, n)
    if mode == 5:  # much larger than the chip
        return _star(rng, size / 2, size / 2, 5 * size, 50 * size, n)
    if mode == 6:  # far coordinates
        return rng.uniform(-1e5, 1e5, (n, 2))
    ring = rng.integers(-3, size + 4, (n, 2)) + 0.5  # pixel centres with repeated vertices
    return np.repeat(ring, rng.integers(1, 3, n), axis=0)


def test_seeded_random_polygons_match_gdal() -> None:
    rng = np.random.default_rng(20260521)
    for _ in range(1000):
        height, width = (int(v) for v in rng.integers(1, 72, 2))
        size = max(height, width)
        geoms: list[Any] = []
        for _ in range(int(rng.integers(1, 4))):
            shell = _random_ring(rng, size)
            holes = []
            if rng.random() < 0.3:  # a shrunk copy, one way round or the other
                centre = shell.mean(axis=0)
                hole = centre + (shell - centre) * 0.4
                holes.append(hole[::-1] if rng.random() < 0.5 else hole)
            if rng.random() < 0.2:
                holes.append(_random_ring(rng, size))
            geom = shapely.Polygon(shell, holes)
            if rng.random() < 0.25:
                geom = shapely.MultiPolygon([geom, shapely.Polygon(_random_ring(rng, size))])
            if rng.random() < 0.25:  # repaired: valid (multi)polygons as the label loader makes them
                geom = shapely.make_valid(shapely.Polygon(shell[:12]))
                geom = shapely.MultiPolygon([p for p in getattr(geom, "geoms", [geom]) if p.geom_type == "Polygon"])
            geoms.append(geom)
        _check((height, width), geoms, [float(v) for v in rng.integers(1, 255, len(geoms))])


# ---------------------------------------------------------------------------------------------------------
# Adversarial coordinates

def _both_ways(coords: list[tuple[float, float]]) -> list[Any]:
    return [shapely.Polygon(coords), shapely.Polygon(coords[::-1])]


@pytest.mark.parametrize("y0,y1", [(2.5, 7.5), (2.0, 7.0), (2.5, 7.0), (2.0, 7.5), (2.25, 7.75)])
@pytest.mark.parametrize("x0,x1", [(1.5, 9.5), (1.0, 9.0), (1.5, 9.0), (-3.0, 14.5), (0.5, 11.5)])
def test_axis_aligned_boxes_on_centres_and_corners(x0: float, x1: float, y0: float, y1: float) -> None:
    for start in range(4):  # every starting vertex, both directions
        corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        corners = corners[start:] + corners[:start]
        for geom in _both_ways(corners):
            _check((10, 11), [geom])


@pytest.mark.parametrize("flat_y", [0.5, 3.5, 5.5, 9.5, 3.0, 4.25])
def test_horizontal_edges_on_row_centres(flat_y: float) -> None:
    # Triangles and a notched shape whose horizontal edges lie on row centres, above and below the
    # rest of the ring, drawn in both directions and with holes: GDAL fills some of these edges on their
    # own depending on the ring's orientation.
    shapes = [
        [(2.5, flat_y), (10.5, flat_y), (6.5, flat_y + 5.0)],
        [(2.5, flat_y), (10.5, flat_y), (6.5, flat_y - 5.0)],
        [(1.5, flat_y), (4.5, flat_y), (4.5, flat_y + 2), (7.5, flat_y + 2), (7.5, flat_y), (11.5, flat_y),
         (11.5, flat_y - 3), (1.5, flat_y - 3)],
    ]
    for coords in shapes:
        for geom in _both_ways(coords):
            _check((12, 13), [geom])
    shell = [(0.5, 0.5), (12.5, 0.5), (12.5, 10.5), (0.5, 10.5)]
    hole = [(3.5, flat_y), (8.5, flat_y), (8.5, flat_y + 2.0), (3.5, flat_y + 2.0)]
    for s in (shell, shell[::-1]):
        for h in (hole, hole[::-1]):
            _check((12, 13), [shapely.Polygon(s, [h])])


def test_duplicated_and_nearly_duplicated_pivots() -> None:
    # OGR's orientation test falls back to the shoelace sum when the lowest-rightmost vertex repeats or
    # has a neighbour within 1e-5; these shapes have a horizontal edge on a row centre so it matters.
    cases = [
        [(2.5, 1.5), (8.5, 1.5), (8.5, 1.5), (5.5, 6.5)],
        [(2.5, 1.5), (8.5, 1.5), (8.5 - 1e-6, 1.5 + 1e-6), (5.5, 6.5)],
        [(2.5, 5.5), (8.5, 5.5), (5.5, 0.5), (5.5, 0.5), (2.5, 5.5)],
        [(2.5, 5.5), (8.5, 5.5), (5.5, 0.5), (5.5 + 1e-6, 0.5), (3.0, 4.5)],
        [(1.5, 2.5), (9.5, 2.5), (1.5, 2.5), (9.5, 2.5)],  # zero area
        [(1.5, 2.5), (9.5, 2.5), (5.5, 2.5)],
    ]
    for coords in cases:
        for geom in _both_ways(coords):
            _check((9, 11), [geom])


def test_slivers_spikes_and_vertical_edges() -> None:
    cases = [
        [(3.5, 0.0), (3.5, 9.0), (3.5000001, 4.0)],        # sliver along a column of centres
        [(3.0, 0.0), (3.0, 9.0), (3.6, 4.5)],              # thin triangle over centres
        [(0.0, 4.5), (9.0, 4.5), (4.5, 4.5000001)],        # sliver along a row of centres
        [(1.0, 1.0), (8.0, 1.0), (8.0, 8.0), (4.5, 8.0), (4.5, 0.2), (4.5, 8.0), (1.0, 8.0)],  # spike
        [(2.5, 0.5), (2.5, 8.5), (6.5, 8.5), (6.5, 0.5)],  # edges through centres
        [(2.0, -5.0), (2.0, 20.0), (7.0, 20.0), (7.0, -5.0)],
    ]
    for coords in cases:
        for geom in _both_ways(coords):
            _check((9, 10), [geom])


def test_huge_polygons_and_far_coordinates() -> None:
    box = shapely.box(-1e8, -1e8, 1e8, 1e8)
    assert (_check((16, 16), [box]) == 1).all()
    tilted = shapely.Polygon([(-9e8, -3e8), (7e8, -8e8), (9e8, 9e8), (-8e8, 6e8)])
    _check((32, 40), [tilted])
    ring = shapely.Polygon(shapely.Point(20, 20).buffer(1e5, 64).exterior.coords,
                           [shapely.Point(20, 20).buffer(15.3, 16).exterior.coords])
    _check((40, 40), [ring])


def test_burn_order_later_geometries_win() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        geoms = [shapely.Polygon(_star(rng, rng.uniform(0, 40), rng.uniform(0, 40), 3, 30, 12)) for _ in range(4)]
        got = _check((40, 40), geoms, [10.0, 20.0, 30.0, 40.0])
        assert set(np.unique(got)) <= {0, 10, 20, 30, 40}
    # Explicitly: two overlapping squares, in both orders.
    a, b = shapely.box(2, 2, 12, 12), shapely.box(6, 6, 16, 16)
    assert _check((20, 20), [a, b], [1.0, 2.0])[8, 8] == 2
    assert _check((20, 20), [b, a], [2.0, 1.0])[8, 8] == 1


@pytest.mark.parametrize("dtype,values", [("uint16", [3.0, 65535.0]), ("int16", [-7.0, 1200.0]),
                                          ("uint32", [4e9, 1.0]), ("int32", [-2e9, 5.0]),
                                          ("float32", [0.25, -3.5]), ("float64", [0.1, 1e300]),
                                          ("int8", [-128.0, 127.0])])
def test_dtypes_and_values(dtype: str, values: list[float]) -> None:
    geoms = [shapely.Polygon([(1.2, 0.7), (14.6, 3.3), (9.1, 12.9)]), shapely.box(5.5, 5.5, 12.0, 14.0)]
    got = _check((16, 16), geoms, values, dtype)
    assert (got == np.asarray(values[1], dtype=dtype)).any()


def test_empty_geometries_are_skipped() -> None:
    geoms = [shapely.Polygon(), shapely.box(1, 1, 5, 5), shapely.MultiPolygon(), shapely.GeometryCollection()]
    out = np.zeros((8, 8), dtype=np.uint8)
    assert burn_polygons(out, geoms, [9.0, 1.0, 9.0, 9.0])
    assert np.array_equal(out, _gdal((8, 8), [shapely.box(1, 1, 5, 5)], [1.0]))
    assert burn_polygons(out, [], [])


@pytest.mark.parametrize("geoms,values,dtype,shape", [
    ([shapely.LineString([(0, 0), (5, 5)])], [1.0], "uint8", (8, 8)),
    ([shapely.box(0, 0, 4, 4), shapely.Point(2, 2)], [1.0, 2.0], "uint8", (8, 8)),
    ([shapely.GeometryCollection([shapely.box(0, 0, 4, 4)])], [1.0], "uint8", (8, 8)),
    ([shapely.from_wkt("MULTIPOLYGON (EMPTY, ((1 1, 5 1, 5 5, 1 1)))")], [1.0], "uint8", (8, 8)),  # rasterio skips
    ([shapely.box(0, 0, 4, 4)], [1.5], "uint8", (8, 8)),          # GDAL would round
    ([shapely.box(0, 0, 4, 4)], [300.0], "uint8", (8, 8)),        # GDAL would clamp
    ([shapely.box(0, 0, 4, 4)], [float("nan")], "float32", (8, 8)),
    ([shapely.box(0, 0, 4, 4)], [0.1], "float32", (8, 8)),        # not exact in float32
    ([shapely.box(0, 0, 4, 4)], [1.0], "bool", (8, 8)),
    ([shapely.box(0, 0, 4, 4)], [1.0], "int64", (8, 8)),
    ([shapely.box(-1e12, 0, 4, 4)], [1.0], "uint8", (8, 8)),     # near C int overflow in GDAL
    ([shapely.box(0, 0, 4, 4)], [1.0], "uint8", (4, 9000)),       # wider than the lookup table
    ([shapely.Polygon([(x, 300.0 * (x % 2) - 20) for x in np.arange(0, 1e5, 0.5)] + [(1e5, 400.0)])],
     [1.0], "uint8", (256, 256)),                                 # ~2.6e7 edge crossings: memory
])
def test_declines_what_it_does_not_reproduce(geoms: list[Any], values: list[float], dtype: str,
                                             shape: tuple[int, int]) -> None:
    out = np.zeros(shape, dtype=dtype)
    assert not burn_polygons(out, geoms, values)
    assert not out.any(), "a declined call must burn nothing"


# ---------------------------------------------------------------------------------------------------------
# LabelIndex.rasterize with and without the scanline path, on the real data

def _chip_transforms(origin: Affine, shape: tuple[int, int], size: int, stride: int) -> list[Affine]:
    """North-up chips over (and past) the raster, the same at half the pixel size, and rotated chips."""
    h, w = shape
    out = []
    for scale in (1.0, 0.5):
        step = origin @ Affine.scale(scale)
        for r in range(-stride, int(h / scale), stride):
            for c in range(-stride, int(w / scale), stride):
                out.append(step @ Affine.translation(c, r))
    centre = origin @ (w / 2, h / 2)
    for angle in (17.0, -90.0, 123.4):
        out.append(Affine.translation(*centre) @ Affine.rotation(angle) @ Affine.scale(origin.a, origin.e)
                   @ Affine.translation(-size / 2, -size / 2))
    return out


def _compare_index(index: LabelIndex, transforms: list[Affine], size: int, monkeypatch: pytest.MonkeyPatch,
                   dtype: str = "uint8") -> int:
    burned = 0
    for t in transforms:
        with monkeypatch.context() as m:
            m.setattr(LabelIndex, "scanline", False)
            expected = index.rasterize(t, (size, size), dtype=dtype)
        got = index.rasterize(t, (size, size), dtype=dtype)
        assert np.array_equal(got, expected), f"chip at {tuple(t)[:6]} differs in {(got != expected).sum()} pixels"
        burned += bool(expected.any())
    return burned


def test_label_index_new_brunswick_polygons(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rasterio

    from core.vectors import read_vector

    d = shared_data / "landcover" / "new_brunswick_0_5m"
    vec = read_vector(d / "BakerLake_2017_clipped.gpkg")
    geoms, _ = repair(vec.geometries)
    with rasterio.open(d / "23322E759967N_clipped_1m_1of2.tif") as src:
        origin, shape, crs = src.transform, src.shape, src.crs
    geoms = transform_geometries(geoms, vec.crs, crs)
    index = LabelIndex(geoms, vec.attributes["Cinqclasses"].astype(np.int64))
    burned = _compare_index(index, _chip_transforms(origin, shape, 256, 64), 256, monkeypatch)
    assert burned >= 10
    # Small chips cut polygon edges everywhere (few chips inside one polygon).
    assert _compare_index(index, _chip_transforms(origin, shape, 48, 40), 48, monkeypatch, "uint16") >= 40


def test_label_index_spacenet_buffered_centerlines(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rasterio

    from core.vectors import read_vector

    d = shared_data / "roads" / "spacenet_vegas_pan16"
    vec = read_vector(d / "sample_roads_for_masking.geojson")
    with rasterio.open(d / "road_mask_input.tif") as src:
        origin, shape, crs = src.transform, src.shape, src.crs
    lines = transform_geometries(vec.geometries, vec.crs, crs)
    index = LabelIndex(buffer_metres(lines, crs, 2.0), np.ones(len(lines)))
    assert _compare_index(index, _chip_transforms(origin, shape, 256, 192), 256, monkeypatch) >= 10


def test_label_index_uses_the_scanline_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import rasterio.features

    index = LabelIndex([shapely.box(2.2, 3.1, 40.7, 20.9), shapely.box(10, 10, 60, 12)], [1, 2])
    expected = index.rasterize(Affine.identity(), (32, 32))

    def _fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("rasterio.features.rasterize called for polygons the scanline path burns")

    monkeypatch.setattr(rasterio.features, "rasterize", _fail)
    got = index.rasterize(Affine.identity(), (32, 32))
    assert np.array_equal(got, expected) and set(np.unique(got)) == {0, 1, 2}
