"""Window arithmetic for padded, tiled inference: where tiles go, what they read, how they blend.

Pure numpy, no I/O, so the guarantees the inference relies on can be property-tested on their own:

* every tile has the same shape (``tile_size_px`` square), so tiles can be batched;
* the *valid* part of a tile is its centre, ``padding_px`` away from every tile edge, so a prediction
  is only ever kept where the network saw at least ``padding_px`` pixels of context (real pixels, or
  reflections of them at the raster edges: the same thing a whole-image prediction would see);
* per axis, the normalised blend weights of all tiles covering a position sum to exactly one
  (``centre`` crop: one tile with weight one; ``weighted``: linear ramps over the overlap);
* the output is cut into *chunks* that partition the raster, so every output pixel is written
  exactly once, and a chunk is finished (and can be written and forgotten) as soon as the tiles
  that touch it are predicted. Memory is bounded by the chunk and the batch, not the raster.

Coordinates are in pixels of the output grid; axis arithmetic is done per axis (rows, columns) with
the same :class:`AxisTiling` and combined by outer products, which keeps every rule one-dimensional.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np

from .errors import ConfigError

BLEND_MODES = ("centre", "weighted")


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Map integer positions onto ``[0, size)`` by mirror reflection without repeating the edge.

    The same rule as ``numpy.pad(mode="reflect")`` (``... 2 1 | 0 1 2 | 1 0 ...``), applied
    periodically so that any distance outside works, even for rasters smaller than the padding.
    """
    idx = np.asarray(index, dtype=np.int64)
    if size <= 1:
        return np.zeros_like(idx)
    period = 2 * size - 2
    m = np.mod(idx, period)
    return np.where(m < size, m, period - m)


@dataclasses.dataclass(frozen=True)
class AxisTiling:
    """Tiles along one axis of length ``size_px``.

    Attributes:
        size_px: length of the axis (raster height or width in output pixels).
        tile_size_px: length of every tile (what the network sees).
        padding_px: context margin on each side of a tile whose prediction is never kept.
        blend: ``centre`` (valid parts abut, stride = valid length) or ``weighted`` (valid parts
            overlap by half, stride = half the valid length, linear ramp weights).
    """

    size_px: int
    tile_size_px: int
    padding_px: int
    blend: str = "centre"

    def __post_init__(self) -> None:
        if self.size_px < 1:
            raise ConfigError(f"cannot tile an axis of {self.size_px} pixels; the raster or extent is empty")
        if self.blend not in BLEND_MODES:
            raise ConfigError(f"unknown blend mode {self.blend!r}; choose one of {', '.join(BLEND_MODES)}")
        if self.padding_px < 0:
            raise ConfigError(f"padding must be 0 or more pixels, got {self.padding_px}")
        minimum = 2 * self.padding_px + (2 if self.blend == "weighted" else 1)
        if self.tile_size_px < minimum:
            raise ConfigError(
                f"tile size {self.tile_size_px} px leaves no valid centre with padding {self.padding_px} px "
                f"and blend {self.blend!r}; use a tile size of at least {minimum} px or a smaller padding"
            )

    @property
    def valid_px(self) -> int:
        """Length of the part of a tile whose prediction is used."""
        return self.tile_size_px - 2 * self.padding_px

    @property
    def stride_px(self) -> int:
        return self.valid_px if self.blend == "centre" else max(1, self.valid_px // 2)

    @property
    def count(self) -> int:
        """Number of tiles: enough for the valid parts to cover the whole axis."""
        if self.size_px <= self.valid_px:
            return 1
        return math.ceil((self.size_px - self.valid_px) / self.stride_px) + 1

    def valid_start(self, k: int) -> int:
        """Start of tile ``k``'s valid part. The last tile is pulled back to end at the axis end, so
        it holds as much real data as possible; in centre mode its valid part is then trimmed to
        what the previous tiles left (see :meth:`valid_range`)."""
        start = k * self.stride_px
        if k == self.count - 1 and k > 0:
            start = min(start, max(0, self.size_px - self.valid_px))
        return start

    def tile_start(self, k: int) -> int:
        """First pixel (may be negative: reflected) that tile ``k`` reads."""
        return self.valid_start(k) - self.padding_px

    def valid_range(self, k: int) -> tuple[int, int]:
        """Pixels ``[a, b)`` of the axis where tile ``k`` contributes (positive weight)."""
        start = self.valid_start(k)
        end = min(self.size_px, start + self.valid_px)
        if self.blend == "centre" and k > 0:
            # Centre crop: valid parts partition the axis; the pulled-back last tile keeps only its tail.
            start = max(start, (k - 1) * self.stride_px + self.valid_px)
        return start, end

    def read_indices(self, k: int) -> np.ndarray:
        """Source pixel of every tile position (``tile_size_px`` values), reflected at the edges."""
        positions = np.arange(self.tile_start(k), self.tile_start(k) + self.tile_size_px)
        return reflect_index(positions, self.size_px)

    def raw_weight(self, k: int) -> np.ndarray:
        """Unnormalised weight of tile ``k`` at each of its positions (zero outside its valid range)."""
        w = np.zeros(self.tile_size_px, dtype=np.float64)
        a, b = self.valid_range(k)
        t0 = self.tile_start(k)
        if self.blend == "centre":
            w[a - t0:b - t0] = 1.0
            return w
        # Linear ramp over the valid part (highest in its middle): neighbours' ramps are complementary.
        v = self.valid_px
        s0 = self.valid_start(k)
        x = np.arange(v, dtype=np.float64) + 0.5
        ramp = np.minimum(x, v - x) / (v / 2.0)
        w[s0 - t0:s0 - t0 + v] = ramp
        lo, hi = a - t0, b - t0
        w[:lo] = 0.0
        w[hi:] = 0.0
        return w

    def weights(self) -> list[np.ndarray]:
        """Normalised weights of every tile: at each axis position they sum to one over all tiles."""
        raws = [self.raw_weight(k) for k in range(self.count)]
        total = np.zeros(self.size_px, dtype=np.float64)
        for k, raw in enumerate(raws):
            t0 = self.tile_start(k)
            lo, hi = max(0, t0), min(self.size_px, t0 + self.tile_size_px)
            total[lo:hi] += raw[lo - t0:hi - t0]
        out = []
        for k, raw in enumerate(raws):
            t0 = self.tile_start(k)
            w = np.zeros_like(raw)
            lo, hi = max(0, t0), min(self.size_px, t0 + self.tile_size_px)
            seg = raw[lo - t0:hi - t0]
            w[lo - t0:hi - t0] = np.where(seg > 0, seg / np.where(total[lo:hi] > 0, total[lo:hi], 1.0), 0.0)
            out.append(w)
        return out

    def tiles_touching(self, a: int, b: int) -> list[int]:
        """Indices of tiles whose valid range intersects ``[a, b)``."""
        result = []
        for k in range(self.count):
            va, vb = self.valid_range(k)
            if va < b and vb > a:
                result.append(k)
        return result


@dataclasses.dataclass(frozen=True)
class Chunk:
    """A rectangle of the output ``[row0, row1) x [col0, col1)`` and the tiles that contribute to it."""

    index: int
    row0: int
    row1: int
    col0: int
    col1: int
    tiles: tuple[tuple[int, int], ...]

    @property
    def shape(self) -> tuple[int, int]:
        return self.row1 - self.row0, self.col1 - self.col0


@dataclasses.dataclass(frozen=True)
class TileGrid:
    """Tiles over a ``height_px`` x ``width_px`` raster and the chunks the output is written in."""

    height_px: int
    width_px: int
    tile_size_px: int
    padding_px: int
    blend: str = "centre"
    chunk_tiles: int = 8

    def __post_init__(self) -> None:
        if self.chunk_tiles < 1:
            raise ConfigError(f"chunk_tiles must be at least 1, got {self.chunk_tiles}")
        # Validate both axes now, so a bad combination fails before any work starts.
        _ = (self.rows, self.cols)

    @property
    def rows(self) -> AxisTiling:
        return AxisTiling(self.height_px, self.tile_size_px, self.padding_px, self.blend)

    @property
    def cols(self) -> AxisTiling:
        return AxisTiling(self.width_px, self.tile_size_px, self.padding_px, self.blend)

    @property
    def tile_count(self) -> int:
        return self.rows.count * self.cols.count

    def _axis_chunks(self, axis: AxisTiling) -> list[tuple[int, int]]:
        """Chunk boundaries along an axis: groups of ``chunk_tiles`` centre-mode strides.

        The boundaries follow the valid ranges in centre mode (so no tile is predicted twice
        there); in weighted mode a tile straddling a boundary is predicted for both chunks.
        """
        step = axis.stride_px * self.chunk_tiles
        bounds = [*range(0, axis.size_px, step), axis.size_px]
        return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]

    def chunks(self) -> Iterator[Chunk]:
        rows, cols = self.rows, self.cols
        index = 0
        for r0, r1 in self._axis_chunks(rows):
            row_tiles = rows.tiles_touching(r0, r1)
            for c0, c1 in self._axis_chunks(cols):
                col_tiles = cols.tiles_touching(c0, c1)
                yield Chunk(index, r0, r1, c0, c1, tuple((i, j) for i in row_tiles for j in col_tiles))
                index += 1

    def chunk_count(self) -> int:
        return len(self._axis_chunks(self.rows)) * len(self._axis_chunks(self.cols))

    def predicted_tile_count(self) -> int:
        """Tiles predicted in all (more than :attr:`tile_count` in weighted mode: shared tiles)."""
        return sum(len(c.tiles) for c in self.chunks())
