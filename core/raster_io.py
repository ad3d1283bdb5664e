"""Windowed raster reads onto an arbitrary chip grid (shift, cell size, rotation) without reading the whole raster.

Export reads each chip, inference reads each tile: both ask for "the pixels of this raster on that grid"
(an affine transform and a shape), which may be the raster's own grid shifted by whole pixels (the fast
path: one windowed read, padded where the grid leaves the raster), a different cell size, or a rotated
grid (a small windowed read around the chip, then GDAL's warper). Memory is bounded by the chip, never
by the raster, and pixels outside the raster come back as invalid.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.windows import Window

from .errors import ConfigError, RasterReadError

#: Resampling names accepted by :func:`resampling_from_name` (image data; labels always use nearest).
RESAMPLING_NAMES: tuple[str, ...] = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average")

#: GDAL block cache for windowed reads, in MB. A fixed, small cache keeps peak memory independent of the
#: raster size (GDAL's default is 5 % of RAM, which a large raster fills with blocks it will not reread).
GDAL_CACHE_MB = 64


def resampling_from_name(name: str) -> Resampling:
    """The rasterio resampling for a name, with an error listing the valid names."""
    if name not in RESAMPLING_NAMES:
        raise ConfigError(f"unknown resampling {name!r}; use one of: {', '.join(RESAMPLING_NAMES)}")
    return Resampling[name]


def raster_env() -> Any:
    """A ``rasterio.Env`` with a bounded block cache; wrap long windowed loops in it."""
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


def open_raster(path: str | Path) -> Any:
    """Open a raster for reading, turning GDAL's errors into :class:`RasterReadError` with a hint."""
    try:
        return rasterio.open(str(path))
    except Exception as exc:  # rasterio raises RasterioIOError, but drivers may raise others
        raise RasterReadError(
            f"cannot open raster {path}: {exc}; check that the file exists and is a raster format GDAL reads"
        ) from exc


def alpha_band(src: Any) -> int | None:
    """1-based index of the alpha band (RGBA imagery), or None."""
    for i, ci in enumerate(src.colorinterp, start=1):
        if ci == ColorInterp.alpha:
            return i
    return None


def band_names(src: Any) -> list[str]:
    """Band names from the raster's descriptions or colour interpretation, else ``band N``."""
    names = []
    for i in range(1, src.count + 1):
        desc = src.descriptions[i - 1] if src.descriptions else None
        ci = src.colorinterp[i - 1]
        if desc:
            names.append(str(desc))
        elif ci in (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha):
            names.append(ci.name)
        else:
            names.append(f"band {i}")
    return names


def default_bands(src: Any) -> tuple[int, ...]:
    """All bands except an alpha band (alpha becomes the validity mask instead)."""
    alpha = alpha_band(src)
    return tuple(i for i in range(1, src.count + 1) if i != alpha)


@dataclasses.dataclass(frozen=True)
class Grid:
    """A chip grid: ``transform`` maps (col, row) of the chip to map coordinates; shape is (height, width)."""

    transform: Affine
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def corners(self) -> list[tuple[float, float]]:
        """The four corners in map coordinates (closed ring order, not closed)."""
        t = self.transform
        return [t @ (0, 0), t @ (self.width, 0), t @ (self.width, self.height), t @ (0, self.height)]

    def bounds(self) -> tuple[float, float, float, float]:
        xs, ys = zip(*self.corners())
        return min(xs), min(ys), max(xs), max(ys)


def rotated_grid(grid: Grid, angle_deg: float) -> Grid:
    """The same chip rotated by ``angle_deg`` (counter-clockwise on the map) about its centre."""
    if angle_deg % 360 == 0:
        return grid
    cx, cy = grid.transform @ (grid.width / 2.0, grid.height / 2.0)
    rot = Affine.translation(cx, cy) @ Affine.rotation(angle_deg) @ Affine.translation(-cx, -cy)
    return Grid(rot @ grid.transform, grid.width, grid.height)


def _integer_offset(src_transform: Affine, grid: Grid) -> tuple[int, int] | None:
    """(col, row) offset when the grid is the raster's own grid shifted by whole pixels, else None."""
    s, g = src_transform, grid.transform
    if not (math.isclose(s.a, g.a, rel_tol=1e-9) and math.isclose(s.e, g.e, rel_tol=1e-9)
            and s.b == 0 and s.d == 0 and g.b == 0 and g.d == 0):
        return None
    col, row = (g.c - s.c) / s.a, (g.f - s.f) / s.e  # ~s @ (g.c, g.f) without the inverse: 0.2 vs 4.7 us per chip
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(col)), int(round(row))


def invalid_mask(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """Pixels where every band is nodata (or NaN): GDAL's per-dataset mask semantics."""
    has_nodata = nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata))
    is_float = data.dtype.kind == "f"
    if not has_nodata and not is_float:
        return np.zeros(data.shape[1:], dtype=bool)  # integer data without nodata: nothing is invalid
    bad = np.ones(data.shape[1:], dtype=bool)
    for band in data:
        b = band == nodata if has_nodata else np.zeros(band.shape, dtype=bool)
        if is_float:
            b |= np.isnan(band)
        bad &= b
        if not bad.any():
            break
    return bad


def read_grid(src: Any, bands: tuple[int, ...], grid: Grid, resampling: Resampling = Resampling.bilinear,
              fill: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``bands`` of ``src`` on ``grid``; returns (data (bands, h, w), invalid mask (h, w)).

    Invalid pixels are those outside the raster, nodata in every band, or transparent in the alpha band.
    They hold ``fill`` (default: the raster's nodata, else 0) in ``data``.
    """
    nodata = src.nodata
    fill_value = fill if fill is not None else (nodata if nodata is not None else 0)
    alpha = alpha_band(src)
    read_bands = list(bands) + ([alpha] if alpha is not None and alpha not in bands else [])
    dtype = np.dtype(src.dtypes[bands[0] - 1])
    offset = _integer_offset(src.transform, grid)
    if offset is not None:
        data, outside = _read_shifted(src, read_bands, grid, offset, fill_value, dtype)
    else:
        data, outside = _read_warped(src, read_bands, grid, resampling, fill_value, dtype)
    if alpha is not None:
        a = data[read_bands.index(alpha)]
        transparent = a == 0
        keep = [read_bands.index(b) for b in bands]
        # RGBA read as bands 1-3 + alpha: the first bands of a C-ordered array are a contiguous view, no copy.
        data = data[: len(keep)] if keep == list(range(len(keep))) else data[keep]
        invalid = outside | transparent
    else:
        invalid = outside | invalid_mask(data, nodata)
    if invalid.any():
        np.copyto(data, np.asarray(fill_value).astype(dtype), where=invalid)  # all bands: 2x data[:, invalid]'s speed
    return data, invalid


def _read_shifted(src: Any, bands: list[int], grid: Grid, offset: tuple[int, int], fill: float,
                  dtype: np.dtype[Any]) -> tuple[np.ndarray, np.ndarray]:
    col, row = offset
    if col >= 0 and row >= 0 and col + grid.width <= src.width and row + grid.height <= src.height:
        # Inside the raster (the usual chip): one windowed read, in the band-interleaved layout of the chips.
        window = Window(col, row, grid.width, grid.height)
        try:
            data = src.read(bands, window=window)
        except Exception as exc:
            raise RasterReadError(f"cannot read {src.name} at window {window}: {exc}") from exc
        return data, np.zeros(grid.shape, dtype=bool)
    data = np.full((len(bands), grid.height, grid.width), fill, dtype=dtype)
    outside = np.ones(grid.shape, dtype=bool)
    c0, r0 = max(col, 0), max(row, 0)
    c1, r1 = min(col + grid.width, src.width), min(row + grid.height, src.height)
    if c1 > c0 and r1 > r0:
        try:
            block = src.read(bands, window=Window(c0, r0, c1 - c0, r1 - r0))
        except Exception as exc:
            raise RasterReadError(f"cannot read {src.name} at window {c0},{r0} {c1 - c0}x{r1 - r0}: {exc}") from exc
        data[:, r0 - row:r1 - row, c0 - col:c1 - col] = block
        outside[r0 - row:r1 - row, c0 - col:c1 - col] = False
    return data, outside


def _read_warped(src: Any, bands: list[int], grid: Grid, resampling: Resampling, fill: float,
                 dtype: np.dtype[Any]) -> tuple[np.ndarray, np.ndarray]:
    from rasterio.warp import reproject

    # Source window around the chip's footprint, with a margin for the resampling kernel.
    inv = ~src.transform
    cols, rows = zip(*[inv @ xy for xy in grid.corners()])
    margin = 3
    c0 = max(int(math.floor(min(cols))) - margin, 0)
    r0 = max(int(math.floor(min(rows))) - margin, 0)
    c1 = min(int(math.ceil(max(cols))) + margin, src.width)
    r1 = min(int(math.ceil(max(rows))) + margin, src.height)
    data = np.full((len(bands), grid.height, grid.width), fill, dtype=dtype)
    if c1 <= c0 or r1 <= r0:
        return data, np.ones(grid.shape, dtype=bool)
    window = Window(c0, r0, c1 - c0, r1 - r0)
    try:
        block = src.read(bands, window=window)
    except Exception as exc:
        raise RasterReadError(f"cannot read {src.name} at window {window}: {exc}") from exc
    win_transform = src.window_transform(window)
    # Coverage: warp a ones-array with nearest so "outside" is exact, whatever the data resampling.
    ones = np.ones(block.shape[1:], dtype=np.uint8)
    covered = np.zeros(grid.shape, dtype=np.uint8)
    reproject(ones, covered, src_transform=win_transform, src_crs=src.crs, dst_transform=grid.transform,
              dst_crs=src.crs, resampling=Resampling.nearest, src_nodata=None, dst_nodata=0)
    src_nodata = src.nodata
    reproject(block, data, src_transform=win_transform, src_crs=src.crs, dst_transform=grid.transform,
              dst_crs=src.crs, resampling=resampling, src_nodata=src_nodata,
              dst_nodata=fill if src_nodata is not None else None, init_dest_nodata=False)
    return data, covered == 0


def raw_window_read(src: Any, bands: tuple[int, ...], col: int, row: int, width: int, height: int) -> np.ndarray:
    """A plain windowed read (the benchmark's baseline for what a chip read costs at minimum)."""
    data: np.ndarray = src.read(list(bands), window=Window(col, row, width, height))
    return data
