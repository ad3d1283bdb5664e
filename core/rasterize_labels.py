"""Vector labels as pixels, one chip at a time: reprojection, repair, metric buffers and a spatial index.

Labels are loaded once (their size depends on the labels, not on the raster), reprojected to the raster's
CRS, repaired, buffered in metres (in a local UTM zone when the CRS is geographic, because a buffer in
degrees is not round and not the right size), and put in a shapely STRtree. Each chip then rasterizes only
the few geometries its footprint touches, in the chip's own pixel space, so rotated chips need nothing
special and memory does not grow with the raster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from affine import Affine

from .errors import LabelError
from .scanline import burn_polygons


def transform_geometries(geoms: Sequence[Any], src_crs: Any, dst_crs: Any) -> list[Any]:
    """Reproject shapely geometries between CRSs (vectorised through ``rasterio.warp.transform``)."""
    from rasterio.crs import CRS
    from rasterio.warp import transform

    src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    if src == dst or not len(geoms):
        return list(geoms)

    def _fn(coords: np.ndarray) -> np.ndarray:
        xs, ys = transform(src, dst, coords[:, 0].tolist(), coords[:, 1].tolist())
        return np.column_stack([xs, ys])

    out: np.ndarray = shapely.transform(np.asarray(list(geoms), dtype=object), _fn)
    return list(out)


def local_metric_crs(geoms: Sequence[Any], crs: Any) -> Any:
    """A metric CRS for buffering: the CRS itself when projected in metres, else the local UTM zone."""
    from rasterio.crs import CRS

    src = CRS.from_user_input(crs)
    if src.is_projected and (src.linear_units or "").lower() in ("metre", "meter", "m", "metres", "meters"):
        return src
    lonlat = transform_geometries([shapely.envelope(shapely.GeometryCollection(list(geoms))).centroid],
                                  src, "EPSG:4326")[0]
    lon, lat = float(lonlat.x), float(lonlat.y)
    zone = min(max(int(math.floor((lon + 180.0) / 6.0)) + 1, 1), 60)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def buffer_metres(geoms: Sequence[Any], crs: Any, buffer_m: float) -> list[Any]:
    """Buffer by ``buffer_m`` metres whatever the CRS (SpaceNet road masks: 2 m half-width, flat caps off)."""
    if not len(geoms):
        return []
    metric = local_metric_crs(geoms, crs)
    projected = transform_geometries(geoms, crs, metric)
    buffered = list(shapely.buffer(np.asarray(projected, dtype=object), buffer_m))
    return transform_geometries(buffered, metric, crs)


def repair(geoms: Sequence[Any]) -> tuple[list[Any], int]:
    """Make geometries valid (2-D); returns them and how many needed repairing."""
    arr = shapely.force_2d(np.asarray(list(geoms), dtype=object))
    invalid = ~shapely.is_valid(arr)
    count = int(invalid.sum())
    if count:
        arr[invalid] = shapely.make_valid(arr[invalid])
    return list(arr), count


class LabelIndex:
    """Geometries with burn values behind an STRtree; rasterizes the ones a chip touches.

    Args:
        geometries: shapely geometries in the raster's CRS (already buffered where needed).
        values: the value to burn for each geometry; later geometries win where they overlap.
        all_touched: per geometry, burn every pixel it touches (small point buffers) instead of
            only pixels whose centre is inside (polygons, road buffers, as SpaceNet does).
    """

    #: Burn pixel-centre polygons with :func:`core.scanline.burn_polygons` (same pixels as GDAL, faster);
    #: False sends everything through ``rasterio.features.rasterize`` (tests compare the two).
    scanline: bool = True

    def __init__(self, geometries: Sequence[Any], values: Sequence[float] | np.ndarray,
                 all_touched: Sequence[bool] | np.ndarray | None = None) -> None:
        self.geometries = np.asarray(list(geometries), dtype=object)
        self.values = np.asarray(list(values))
        self.all_touched = (np.asarray(list(all_touched), dtype=bool) if all_touched is not None
                            else np.zeros(len(self.geometries), dtype=bool))
        self.tree = shapely.STRtree(self.geometries)
        shapely.prepare(self.geometries)  # fast "covers the chip" tests per chip

    def __len__(self) -> int:
        return len(self.geometries)

    def query(self, footprint: Any) -> np.ndarray:
        """Indices (sorted, so overlap order is stable) of geometries intersecting ``footprint``."""
        idx = self.tree.query(footprint, predicate="intersects")
        return np.sort(np.asarray(idx, dtype=np.int64))

    def query_many(self, footprints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`query` for an array of footprints at once: (footprint index, geometry index) pairs, sorted
        by footprint, then geometry (each footprint's geometries as :meth:`query` gives them)."""
        which, idx = self.tree.query(footprints, predicate="intersects")
        order = np.lexsort((idx, which))
        return np.asarray(which[order], dtype=np.int64), np.asarray(idx[order], dtype=np.int64)

    def rasterize(self, transform: Affine, shape: tuple[int, int], fill: int = 0, dtype: str = "uint8",
                  footprint: Any = None, idx: np.ndarray | None = None) -> np.ndarray:
        """Burn the geometries touching the chip onto a (h, w) array of ``dtype``.

        ``idx`` is the chip's :meth:`query` result when the caller already has it. Geometries are burned
        in order (polygons and buffers, then all-touched point buffers on top, later ones winning); a
        geometry that covers the whole chip burns every pixel, so the chip is filled with its value and
        only what is burned after it goes through GDAL's rasterizer (the common land-cover case of a chip
        inside one polygon costs no rasterization at all).
        """
        from rasterio.features import rasterize

        out = np.full(shape, fill, dtype=dtype)
        if footprint is None:
            h, w = shape
            footprint = shapely.Polygon([transform @ (0, 0), transform @ (w, 0), transform @ (w, h),
                                         transform @ (0, h)])
        if idx is None:
            idx = self.query(footprint)
        if not len(idx):
            return out
        touched = self.all_touched[idx]
        order = np.concatenate([idx[~touched], idx[touched]])  # the burn order: later wins
        covers = np.flatnonzero(shapely.contains(self.geometries[order], footprint))
        if len(covers):
            last = int(covers[-1])
            out[...] = np.asarray(float(self.values[order[last]])).astype(dtype)
            order = order[last + 1:]
            if not len(order):
                return out
        pixel = to_pixel_space(self.geometries[order], transform)
        burn_touched = self.all_touched[order]
        for all_touched in (False, True):
            sel = burn_touched == all_touched
            if sel.any():
                keep = ~shapely.is_empty(pixel[sel])
                geoms = pixel[sel][keep]
                if not len(geoms):
                    continue
                vals = [float(v) for v in self.values[order][sel][keep]]
                # Polygons by pixel centre: the numpy scanline fill gives GDAL's pixels without rasterio's
                # per-call cost; it declines (burning nothing) anything it does not reproduce exactly.
                if not all_touched and self.scanline and burn_polygons(out, geoms, vals):
                    continue
                rasterize(list(zip(geoms, vals)), out=out, transform=Affine.identity(), all_touched=all_touched)
        return out


def to_pixel_space(geoms: Any, transform: Affine) -> np.ndarray:
    """Geometries in the pixel coordinates (col, row) of ``transform`` (any affine, rotated included)."""
    inv = ~transform
    result: np.ndarray = shapely.transform(np.asarray(geoms, dtype=object),
                                           lambda c: np.column_stack(inv @ (c[:, 0], c[:, 1])))
    return result


def segment_orientation_bins(lines_px: Sequence[Any], shape: tuple[int, int], bins: int) -> np.ndarray:
    """Orientation bin of the nearest centerline segment for every pixel of a chip.

    ``lines_px`` are line geometries in the chip's pixel space. The angle of each segment is measured in
    the chip's image (columns to the right, rows up), counter-clockwise from the +column axis, modulo
    180 degrees, and binned into ``bins`` equal bins (bin ``k`` covers ``[k, k+1) * 180 / bins`` degrees).
    Every segment is drawn with its bin, then each pixel takes the bin of the nearest drawn pixel
    (Euclidean distance transform), which is the nearest segment up to half a pixel.
    """
    from rasterio.features import rasterize
    from scipy import ndimage

    h, w = shape
    shapes = []
    for line in lines_px:
        for part in getattr(line, "geoms", [line]):
            if part.geom_type not in ("LineString", "LinearRing"):
                continue
            c = np.asarray(part.coords)[:, :2]
            if len(c) < 2:
                continue
            d = np.diff(c, axis=0)
            angle = np.degrees(np.arctan2(-d[:, 1], d[:, 0])) % 180.0
            b = np.minimum((angle / (180.0 / bins)).astype(np.int64), bins - 1)
            for (p, q), k in zip(zip(c[:-1], c[1:]), b):
                if (p != q).any():
                    shapes.append((shapely.LineString([p, q]), int(k) + 1))
    if not shapes:
        return np.full(shape, bins, dtype=np.uint8)
    drawn = rasterize(shapes, out_shape=(h, w), transform=Affine.identity(), all_touched=True, fill=0,
                      dtype="uint16")
    if not drawn.any():
        return np.full(shape, bins, dtype=np.uint8)
    _, (ri, ci) = ndimage.distance_transform_edt(drawn == 0, return_indices=True)
    out: np.ndarray = (drawn[ri, ci].astype(np.int64) - 1).astype(np.uint8)
    return out


def require_labels_inside(geoms: Sequence[Any], bounds: tuple[float, float, float, float], name: str) -> None:
    """Raise a clear :class:`LabelError` when no label geometry intersects the export area."""
    box = shapely.box(*bounds)
    if not any(g.intersects(box) for g in geoms):
        raise LabelError(
            f"the label layer {name} has no feature inside the raster extent {tuple(round(b, 6) for b in bounds)} "
            "(after reprojecting to the raster's CRS); check that the layer covers the raster, its CRS, or the extent"
        )
