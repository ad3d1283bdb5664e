"""Window arithmetic of tiled inference: property tests (coverage, weights, reflection, chunks)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ConfigError
from core.tiling import AxisTiling, TileGrid, reflect_index


@st.composite
def axes(draw: st.DrawFn) -> AxisTiling:
    blend = draw(st.sampled_from(["centre", "weighted"]))
    padding = draw(st.integers(0, 12))
    tile = draw(st.integers(2 * padding + (2 if blend == "weighted" else 1), 2 * padding + 40))
    size = draw(st.integers(1, 300))
    return AxisTiling(size, tile, padding, blend)


@settings(max_examples=300, deadline=None)
@given(axes())
def test_axis_weights_sum_to_one_and_cover_every_pixel(axis: AxisTiling) -> None:
    total = np.zeros(axis.size_px)
    for k, w in enumerate(axis.weights()):
        assert w.shape == (axis.tile_size_px,)
        assert (w >= 0).all()
        t0 = axis.tile_start(k)
        a, b = axis.valid_range(k)
        assert 0 <= a < b <= axis.size_px
        # Weight only on the valid range: never within padding_px of the tile edge.
        inside = np.zeros(axis.tile_size_px, dtype=bool)
        inside[a - t0:b - t0] = True
        assert (w[~inside] == 0).all()
        assert a - t0 >= axis.padding_px and t0 + axis.tile_size_px - b >= axis.padding_px
        total[a:b] += w[a - t0:b - t0]
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-12)


@settings(max_examples=300, deadline=None)
@given(axes())
def test_centre_valid_ranges_partition_the_axis(axis: AxisTiling) -> None:
    if axis.blend != "centre":
        return
    count = np.zeros(axis.size_px, dtype=int)
    for k in range(axis.count):
        a, b = axis.valid_range(k)
        count[a:b] += 1
    assert (count == 1).all()


@settings(max_examples=100, deadline=None)
@given(axes(), st.integers(1, 4))
def test_chunks_write_every_pixel_exactly_once(axis: AxisTiling, chunk_tiles: int) -> None:
    axis = AxisTiling(min(axis.size_px, 60), axis.tile_size_px, axis.padding_px, axis.blend)
    other = AxisTiling(max(1, axis.size_px // 3), axis.tile_size_px, axis.padding_px, axis.blend)
    grid = TileGrid(axis.size_px, other.size_px, axis.tile_size_px, axis.padding_px, axis.blend, chunk_tiles)
    written = np.zeros((grid.height_px, grid.width_px), dtype=int)
    rows = [grid.rows.valid_range(i) for i in range(grid.rows.count)]
    cols = [grid.cols.valid_range(j) for j in range(grid.cols.count)]
    for c in grid.chunks():
        written[c.row0:c.row1, c.col0:c.col1] += 1
        # Every tile listed for the chunk contributes to it, and every contributing tile is listed.
        touching_rows = {i for i, (a, b) in enumerate(rows) if a < c.row1 and b > c.row0}
        touching_cols = {j for j, (a, b) in enumerate(cols) if a < c.col1 and b > c.col0}
        assert set(c.tiles) == {(i, j) for i in touching_rows for j in touching_cols}
    assert (written == 1).all()
    if axis.blend == "centre":
        assert grid.predicted_tile_count() == grid.tile_count  # no tile predicted twice


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 20), st.integers(0, 60))
def test_reflect_index_matches_numpy_pad(size: int, pad: int) -> None:
    data = np.arange(size) * 7 + 3
    expected = np.pad(data, pad, mode="reflect") if size > 1 else np.full(size + 2 * pad, data[0])
    got = data[reflect_index(np.arange(-pad, size + pad), size)]
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=200, deadline=None)
@given(axes())
def test_identity_reassembles_axis_exactly_through_reads_and_weights(axis: AxisTiling) -> None:
    """Read each tile through reflect indices, keep it with its weight: the signal comes back."""
    signal = np.random.default_rng(axis.size_px).integers(0, 1000, axis.size_px).astype(np.float64)
    out = np.zeros_like(signal)
    for k, w in enumerate(axis.weights()):
        tile = signal[axis.read_indices(k)]
        t0 = axis.tile_start(k)
        a, b = axis.valid_range(k)
        out[a:b] += tile[a - t0:b - t0] * w[a - t0:b - t0]
    np.testing.assert_allclose(out, signal, rtol=1e-12)


def test_known_layout_centre() -> None:
    axis = AxisTiling(size_px=10, tile_size_px=6, padding_px=1, blend="centre")
    assert axis.stride_px == 4 and axis.count == 3
    assert [axis.valid_range(k) for k in range(3)] == [(0, 4), (4, 8), (8, 10)]
    # The last tile is pulled back so that it reads real pixels: it starts at 10 - 4 - 1 = 5.
    assert axis.tile_start(2) == 5
    assert axis.read_indices(0).tolist() == [1, 0, 1, 2, 3, 4]


def test_known_layout_weighted() -> None:
    axis = AxisTiling(size_px=12, tile_size_px=8, padding_px=2, blend="weighted")
    assert axis.valid_px == 4 and axis.stride_px == 2 and axis.count == 5
    w = axis.weights()
    # Position 3 is covered by tiles 0 (ramp 0.25) and 1 (ramp 0.75): normalised weights 0.25 and 0.75.
    assert w[0][3 - axis.tile_start(0)] == pytest.approx(0.25)
    assert w[1][3 - axis.tile_start(1)] == pytest.approx(0.75)


def test_bad_tile_padding_combination_is_refused() -> None:
    with pytest.raises(ConfigError, match="no valid centre"):
        AxisTiling(100, 8, 4, "centre")
    with pytest.raises(ConfigError, match="unknown blend"):
        AxisTiling(100, 8, 1, "gaussian")
