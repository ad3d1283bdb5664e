"""Polygon scanline fill in numpy, pixel for pixel the same as GDAL's (``rasterio.features.rasterize``).

Why: the chip export burns 1-4 polygons per 256 px chip, and ``rasterio.features.rasterize`` spends most
of its time per call on Python shape checks, GeoJSON conversion and an in-memory GDAL dataset, not on
filling pixels. This module redoes GDAL 3.10's polygon rule (``GDALdllImageFilledPolygon`` in
``alg/llrasterize.cpp``, the one used without ALL_TOUCHED) with whole-array numpy operations:

* each polygon on its own (rasterio burns the parts of a multipolygon one by one), all its rings (exterior
  and holes) together with the even-odd rule;
* row ``y`` samples the line ``y + 0.5``; an edge counts on that row when ``ylo <= y + 0.5 < yhi``
  (endpoints ordered by y), its crossing is ``(dy - dy1) * (dx2 - dx1) / (dy2 - dy1) + dx1`` (that exact
  order of float64 operations, so the result is bit-identical) rounded by ``floor(x + 0.5)``;
* the sorted crossings of a row pair up, each pair ``(a, b)`` filling columns ``a .. b-1``;
* a horizontal edge lying exactly on ``y + 0.5`` also fills ``floor(xmin + 0.5) .. floor(xmax + 0.5) - 1``
  on that row when it runs right to left after GDAL has turned its ring clockwise (GDAL turns every ring,
  holes included, clockwise by ``OGRLineString::isClockwise`` on the coordinates as given, y up).

Filling: each crossing ``x`` looks up the bit-packed row "columns >= x" of a table; a pair's two rows
XORed are its span, the disjoint spans of one row XOR-reduce into the row's coverage, and one unpack gives
the byte masks: a few whole-array calls per chip, whatever the number of spans or polygons.

Anything it is not sure to reproduce (another geometry type, a value GDAL would round or clamp into the
dtype, coordinates near C ``int`` overflow) or that would take much memory makes :func:`burn_polygons`
burn nothing and return False, so the caller goes through GDAL instead. ``tests/core/test_scanline.py``
checks equality with rasterio; ``bench/scanline.py`` measures both. One caveat: a pixel centre lying
exactly on an edge is a tie, and GDAL itself was seen to settle one differently in a process that had done
other work before (same geometry, same call); this module settles ties the same way every time.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import shapely

__all__ = ["burn_polygons"]

# Output dtypes rasterio's rasterize accepts and this module writes exactly like GDAL.
_DTYPES = frozenset(np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                         "float64"))
# GDAL casts the row range and every crossing to a C int; far from that, this module and GDAL agree.
_MAX_COORD = float(2 ** 30)
# Widest raster handled (the crossing table is (W + 1) x W bits: 8 MiB at 8192); wider goes to GDAL.
_MAX_WIDTH = 8192
_POLYGON, _MULTIPOLYGON = 3, 6  # shapely type ids
_ORIENTATION_EPS = 1e-5  # OGR's EPSILON in isClockwise
# Edge crossings handled at once (a few arrays of 8 bytes each); more goes to GDAL.
_MAX_CROSSINGS = 1 << 21
_BITWISE_BLEND_SIZE = 8192  # pixels above which a uint8 mask is blended with bitwise operations


def burn_polygons(out: np.ndarray, geoms_px: Sequence[Any], values: Sequence[float]) -> bool:
    """Burn polygons given in pixel coordinates (col = x, row = y) into ``out`` exactly as GDAL would.

    Geometries burn in order (later ones win), each with its value, using the pixel-centre rule of
    ``rasterio.features.rasterize(..., transform=Affine.identity(), all_touched=False)``. Empty
    geometries are skipped. Returns False, having burned nothing, when a geometry is not a Polygon or
    MultiPolygon, a value does not fit ``out``'s dtype exactly, ``out``'s dtype is not one GDAL burns
    as-is, ``out`` is wider than 8192 columns, coordinates are not finite or beyond 2**30, or the edges
    cross the rows more than 2**21 times (a huge zigzag; memory): the caller then falls back to rasterio.
    """
    if out.ndim != 2 or out.dtype not in _DTYPES or len(geoms_px) != len(values) or out.shape[1] > _MAX_WIDTH:
        return False
    n_geoms = len(geoms_px)
    if not n_geoms:
        return True
    geoms = np.empty(n_geoms, dtype=object)
    geoms[:] = list(geoms_px)
    types = shapely.get_type_id(geoms).tolist()
    polygonal = [t in (_POLYGON, _MULTIPOLYGON) for t in types]
    if not all(p or g.is_empty for p, g in zip(polygonal, geoms)):
        return False
    if _MULTIPOLYGON in types:  # rasterio skips (with a warning) a multipolygon whose first part is empty
        multi = geoms[[t == _MULTIPOLYGON for t in types]]
        if (shapely.is_empty(shapely.get_geometry(multi, 0)) & ~shapely.is_empty(multi)).any():
            return False
    burn = _burn_values(values, out.dtype)
    if burn is None:
        return False
    height, width = out.shape
    if height == 0 or width == 0:
        return True

    parts, part_geom = _parts(geoms, types, polygonal)
    coords, point_ring, ring_part = _ring_coordinates(parts)
    if len(coords) < 2:
        return True
    if not np.abs(coords).max() < _MAX_COORD:  # also catches NaN
        return False

    # Edges join consecutive vertices of a ring (rings are closed, so GDAL's extra closing edge from the
    # last vertex back to the first has length zero and burns nothing).
    same_ring = point_ring[1:] == point_ring[:-1]
    edge_part = ring_part[point_ring[:-1]]
    n_parts = len(parts)
    crossings = _crossing_rows(coords, same_ring, edge_part, n_parts, height, width)
    if crossings is None:
        return False
    row_part, row, packed = crossings
    h_part, h_row, h_a, h_b = _horizontal_spans(coords, point_ring, same_ring, edge_part, height, width)

    part_start = np.searchsorted(part_geom, np.arange(n_geoms + 1))
    bounds_a = np.searchsorted(row_part, part_start)
    bounds = bounds_a.tolist()
    parts_of = part_start.tolist()
    first_row: list[int] = []
    last_row: list[int] = []
    masks = packed
    if len(row):  # first and last row of each geometry, for the usual one part without gaps
        first_row = row[np.minimum(bounds_a[:-1], len(row) - 1)].tolist()
        last_row = row[np.maximum(bounds_a[1:] - 1, 0)].tolist()
        masks = _unpack(packed, width)  # one call for every geometry
    horizontal = list(zip(h_part.tolist(), h_row.tolist(), h_a.tolist(), h_b.tolist()))
    for g in range(n_geoms):
        lo, hi = bounds[g], bounds[g + 1]
        p0, p1 = parts_of[g], parts_of[g + 1]
        if hi > lo:
            if p1 - p0 == 1 and last_row[g] - first_row[g] == hi - lo - 1:
                _apply(out[first_row[g]:last_row[g] + 1], masks[lo:hi], burn[g])
            else:
                first, merged = _merge_rows(row[lo:hi], packed[lo:hi], p1 - p0 > 1)
                _apply(out[first:first + len(merged)], _unpack(merged, width), burn[g])
        for p, y, a, b in horizontal:  # rare: horizontal edges exactly on a row centre
            if p0 <= p < p1:
                out[y, a:b] = burn[g]
    return True


def _parts(geoms: np.ndarray, types: list[int], polygonal: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """The polygons to burn one by one and the index of the geometry each comes from (non-decreasing)."""
    geom_index = np.flatnonzero(polygonal)
    if _MULTIPOLYGON not in types:
        return geoms[geom_index], geom_index
    parts, part_of = shapely.get_parts(geoms[geom_index], return_index=True)
    return parts, geom_index[part_of]


def _ring_coordinates(parts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates of every ring, the ring of each vertex and the part of each ring."""
    n_parts = len(parts)
    holes = shapely.get_num_interior_rings(parts)
    if not holes.any():  # a polygon without holes has the coordinates of its exterior
        coords, point_ring = shapely.get_coordinates(parts, return_index=True)
        return coords, point_ring, np.arange(n_parts)
    hole_part = np.repeat(np.arange(n_parts), holes)
    hole_n = np.arange(len(hole_part)) - np.repeat(np.cumsum(holes) - holes, holes)
    rings = np.concatenate([shapely.get_exterior_ring(parts), shapely.get_interior_ring(parts[hole_part], hole_n)])
    coords, point_ring = shapely.get_coordinates(rings, return_index=True)
    return coords, point_ring, np.concatenate([np.arange(n_parts), hole_part])


def _crossing_rows(coords: np.ndarray, same_ring: np.ndarray, edge_part: np.ndarray, n_parts: int,
                   height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Part, row and bit-packed coverage of every (part, row) with edge crossings, sorted by part then row.

    None when there are more than ``_MAX_CROSSINGS`` crossings (memory: GDAL streams them row by row).

    Row y samples y + 0.5 and counts an edge when ylo <= y + 0.5 < yhi, i.e. rows ceil(ylo - 0.5) up to
    ceil(yhi - 0.5) - 1: subtracting 0.5 is exact for 0.5 <= |y| < 2**52, and below 0.5 only the clamp to
    row 0 matters. Horizontal edges and the step from one ring to the next cross no row.
    """
    # Each edge's endpoints ordered by y as GDAL orders them: (dx1, dy1) is the lower one.
    start, end = coords[:-1], coords[1:]
    up = (start[:, 1] < end[:, 1])[:, None]
    lower = np.where(up, start, end)
    upper = np.where(up, end, start)
    delta = upper - lower  # (dx2 - dx1, dy2 - dy1)
    first = np.ceil(lower[:, 1] - 0.5)
    np.maximum(first, 0.0, out=first)
    count_f = np.ceil(upper[:, 1] - 0.5)  # the row after the last crossed
    np.minimum(count_f, float(height), out=count_f)
    count_f -= first
    count_f *= same_ring
    np.maximum(count_f, 0.0, out=count_f)
    count = count_f.astype(np.int64)
    total = int(count.sum())
    if total > _MAX_CROSSINGS:
        return None
    if not total:
        return (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64),
                np.empty((0, (width + 63) // 64), dtype=np.uint64))

    edge = np.repeat(np.arange(len(count)), count)
    offset = (first - (np.cumsum(count_f) - count_f))[:, None]
    params = np.take(np.concatenate([lower, delta, offset], axis=1), edge, axis=0)
    rows = np.arange(total, dtype=np.float64) + params[:, 4]  # the edge's k-th crossing (counted over all)
    # GDAL: intersect = (dy - dy1) * (dx2 - dx1) / (dy2 - dy1) + dx1, then floor(intersect + 0.5).
    cols = np.floor((rows + 0.5 - params[:, 1]) * params[:, 2] / params[:, 3] + params[:, 0] + 0.5)
    # Clipping to 0..width keeps the order of a row's crossings, and a clipped pair fills the clipped span.
    np.maximum(cols, 0.0, out=cols)
    np.minimum(cols, float(width), out=cols)
    group = rows if n_parts == 1 else rows + np.take(edge_part, edge) * float(height)
    group_i, col_i = np.divmod(np.sort(group * float(width + 1) + cols).astype(np.int64), width + 1)
    # Sorted, the crossings of a row pair up (0, 1), (2, 3), ... (a closed ring crosses a line an even number
    # of times) and each pair covers the columns >= its first and < its second: XOR of two table rows.
    bits = np.take(_ge_table(width), col_i, axis=0)
    packed = bits[0::2] ^ bits[1::2]
    group_i = group_i[0::2]
    if len(group_i) > 1:
        new = np.empty(len(group_i), dtype=bool)
        new[0] = True
        np.not_equal(group_i[1:], group_i[:-1], out=new[1:])
        if not new.all():  # several spans on a row: disjoint, so XOR is their union
            starts = np.flatnonzero(new)
            packed = np.bitwise_xor.reduceat(packed, starts, axis=0)
            group_i = group_i[starts]
    if n_parts == 1:
        return np.zeros(len(group_i), dtype=np.int64), group_i, packed
    part = group_i // height
    return part, group_i - part * height, packed


def _merge_rows(rows: np.ndarray, packed: np.ndarray, several_parts: bool) -> tuple[int, np.ndarray]:
    """First row and packed coverage of every row from there to the last (parts OR-ed, gaps zero)."""
    first, last = int(rows.min()), int(rows.max())
    merged = np.zeros((last - first + 1, packed.shape[1]), dtype=np.uint64)
    if several_parts:  # a row may come from several parts
        np.bitwise_or.at(merged, rows - first, packed)
    else:
        merged[rows - first] = packed
    return first, merged


def _unpack(packed: np.ndarray, width: int) -> np.ndarray:
    """Bit-packed rows to a (rows, width) uint8 mask of 0 and 1."""
    mask: np.ndarray = np.unpackbits(packed.view(np.uint8), axis=1, count=width, bitorder="little")
    return mask


def _apply(target: np.ndarray, mask: np.ndarray, value: Any) -> None:
    """``target[mask == 1] = value`` (``mask`` holds 0 and 1)."""
    if target.dtype == np.uint8 and mask.size > _BITWISE_BLEND_SIZE:  # faster on large areas than copyto
        ones = np.negative(mask)  # 1 -> 0xFF
        target &= ~ones
        target |= ones & value
    else:
        np.copyto(target, value, where=mask.view(bool))


def _horizontal_spans(coords: np.ndarray, point_ring: np.ndarray, same_ring: np.ndarray,
                      edge_part: np.ndarray, height: int,
                      width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Part, row and columns [a, b) of the horizontal edges GDAL fills on their own.

    A horizontal edge lying exactly on a row centre ``y + 0.5`` fills ``floor(xmin + 0.5)`` up to
    ``floor(xmax + 0.5)`` when it runs right to left once GDAL has turned its ring clockwise.
    """
    empty = np.empty(0, dtype=np.int64)
    y = coords[:, 1]
    if not (y - np.floor(y) == 0.5).any():  # no vertex on a row centre: the usual case
        return empty, empty, empty, empty
    x = coords[:, 0]
    flat = np.flatnonzero((y[:-1] == y[1:]) & same_ring & (x[:-1] != x[1:]))
    row = np.floor(y[flat])
    flat = flat[(row + 0.5 == y[flat]) & (row >= 0) & (row < height)]
    if not len(flat):
        return empty, empty, empty, empty
    ring = point_ring[flat].tolist()
    clockwise = {r: _is_clockwise(coords[point_ring == r]) for r in set(ring)}
    right_to_left = x[flat] > x[flat + 1]
    flat = flat[right_to_left == np.array([clockwise[r] for r in ring], dtype=bool)]
    x1, x2 = x[flat], x[flat + 1]
    a = np.clip(np.floor(np.minimum(x1, x2) + 0.5), 0, width).astype(np.int64)
    b = np.clip(np.floor(np.maximum(x1, x2) + 0.5), 0, width).astype(np.int64)
    keep = b > a
    row_i = np.floor(y[flat]).astype(np.int64)
    return edge_part[flat][keep], row_i[keep], a[keep], b[keep]


def _is_clockwise(ring: np.ndarray) -> bool:
    """OGR's ``OGRLineString::isClockwise`` on a closed ring (y up), which GDAL uses to orient rings.

    The turn at the lowest (then rightmost) vertex decides; a repeated pivot, a neighbour within 1e-5 of
    it or a zero turn falls back to the sign of the shoelace sum, added in GDAL's order.
    """
    x: list[float] = ring[:, 0].tolist()
    y: list[float] = ring[:, 1].tolist()
    n = len(x)
    if n < 2:
        return True
    v = 0
    fallback = False
    for i in range(1, n - 1):
        if y[i] < y[v] or (y[i] == y[v] and x[i] > x[v]):
            v, fallback = i, False
        elif y[i] == y[v] and x[i] == x[v]:
            fallback = True  # the pivot appears twice
    prev = v - 1 if v > 0 else n - 2
    nxt = v + 1 if v + 1 < n - 1 else 0
    for k in (prev, nxt):
        if abs(x[k] - x[v]) < _ORIENTATION_EPS and abs(y[k] - y[v]) < _ORIENTATION_EPS:
            fallback = True
    dx0, dy0 = x[prev] - x[v], y[prev] - y[v]
    dx1, dy1 = x[nxt] - x[v], y[nxt] - y[v]
    cross = dx1 * dy0 - dx0 * dy1
    if not fallback and cross != 0.0:
        return cross < 0.0
    total = x[0] * (y[1] - y[n - 1])
    for i in range(1, n - 1):
        total += x[i] * (y[i + 1] - y[i - 1])
    total += x[n - 1] * (y[0] - y[n - 2])
    return total < 0.0


def _burn_values(values: Sequence[float], dtype: np.dtype) -> np.ndarray | None:
    """The values as ``dtype`` when they all convert exactly (GDAL would round or clamp them), else None."""
    try:
        wanted = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if wanted.ndim != 1:
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        converted = wanted.astype(dtype)
        exact = converted.astype(np.float64) == wanted  # False for NaN, out of range or rounded
    return converted if bool(exact.all()) else None


@lru_cache(maxsize=8)
def _ge_table(width: int) -> np.ndarray:
    """Row ``x`` (0..width) holds the bits of "column >= x", packed little-endian into uint64 words."""
    n_words = (width + 63) // 64
    ge = np.arange(n_words * 64)[None, :] >= np.arange(width + 1)[:, None]
    ge[:, width:] = False
    table: np.ndarray = np.packbits(ge, axis=1, bitorder="little").view(np.uint64)
    table.setflags(write=False)
    return table
