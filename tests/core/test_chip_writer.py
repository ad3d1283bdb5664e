"""TiffChipWriter: chips written from patched GDAL templates read back exactly as GDAL's own chips."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from core.chip_writer import TiffChipWriter, write_with_gdal
from core.raster_io import Grid, rotated_grid


@pytest.mark.parametrize(
    ("shape", "dtype", "nodata", "crs", "angle"),
    [
        ((4, 64, 48), "uint8", None, "EPSG:32633", 0.0),
        ((1, 64, 64), "uint8", None, "EPSG:32633", 30.0),
        ((3, 40, 40), "uint16", 0, "EPSG:4326", 0.0),
        ((2, 32, 32), "int16", -9999, "EPSG:3857", 45.0),
        ((1, 32, 32), "float32", float("nan"), "EPSG:32633", 0.0),
        ((6, 16, 16), "float32", -1.5, "EPSG:32633", 0.0),  # > 4 bands: band interleave
    ],
)
def test_fast_chips_equal_gdal_chips(tmp_path, shape, dtype, nodata, crs, angle):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    writer = TiffChipWriter(rasterio.crs.CRS.from_user_input(crs))
    for k in range(2):  # the second chip goes through the cached template
        grid = rotated_grid(Grid(Affine(0.5, 0, 500000.25 + 17 * k, 0, -0.5, 5200000.75 - 9 * k), shape[2], shape[1]),
                            angle)
        data = (rng.uniform(-50, 50, shape) if dtype.startswith("float") else rng.integers(1, 200, shape)).astype(dtype)
        data[:, : shape[1] // 2] = 0  # an all-zero half: GDAL may place such strips last, pixels must not change
        fast, ref = tmp_path / f"fast{k}.tif", tmp_path / f"ref{k}.tif"
        writer.write(fast, data, grid.transform, nodata)
        write_with_gdal(ref, data, grid.transform, writer.crs, nodata)
        assert writer.template(data.shape, dtype, grid.transform, nodata) is not None
        with rasterio.open(fast) as a, rasterio.open(ref) as b:
            assert a.profile == b.profile or {**a.profile, "nodata": None} == {**b.profile, "nodata": None}
            assert a.transform == grid.transform
            assert a.crs == b.crs
            assert a.colorinterp == b.colorinterp
            np.testing.assert_array_equal(a.read(), data)
            np.testing.assert_array_equal(a.read(), b.read())
        assert fast.stat().st_size == ref.stat().st_size


def test_fast_chip_bytes_equal_gdal_without_empty_strips(tmp_path):  # type: ignore[no-untyped-def]
    data = np.random.default_rng(0).integers(1, 255, (4, 64, 64)).astype("uint8")
    t = Affine(0.5, 0, 500123.5, 0, -0.5, 5200321.0)
    writer = TiffChipWriter(rasterio.crs.CRS.from_epsg(32633))
    writer.write(tmp_path / "a.tif", data, t)
    write_with_gdal(tmp_path / "b.tif", data, t, writer.crs, None)
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


def test_slow_path_when_disabled(tmp_path):  # type: ignore[no-untyped-def]
    writer = TiffChipWriter(rasterio.crs.CRS.from_epsg(32633), fast=False)
    data = np.ones((1, 16, 16), dtype="uint8")
    t = Affine(1, 0, 0, 0, -1, 16)
    assert writer.template(data.shape, "uint8", t, None) is None
    writer.write(tmp_path / "a.tif", data, t)
    with rasterio.open(tmp_path / "a.tif") as src:
        np.testing.assert_array_equal(src.read(), data)
        assert src.transform == t


@pytest.mark.parametrize(("crs", "angle"), [("EPSG:32633", 0.0), ("EPSG:4326", 0.0), ("EPSG:3857", 30.0)])
def test_compressed_label_chips_read_back_as_gdal_writes_them(tmp_path, crs, angle):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    writer = TiffChipWriter(rasterio.crs.CRS.from_user_input(crs))
    for k in range(3):
        grid = rotated_grid(Grid(Affine(0.5, 0, 500000.25 + 31 * k, 0, -0.5, 5200000.75 - 7 * k), 96, 80), angle)
        data = np.zeros((1, 80, 96), dtype="uint8")
        data[0, 10 * k:, 20:] = k + 1
        data[0, :, 5 + k] = rng.integers(0, 9, 80)  # a noisy column
        fast, ref = tmp_path / f"fast{k}.tif", tmp_path / f"ref{k}.tif"
        writer.write(fast, data, grid.transform, None, compress=True)
        write_with_gdal(ref, data, grid.transform, writer.crs, None, compress=True)
        assert writer.template(data.shape, "uint8", grid.transform, None, True) is not None
        with rasterio.open(fast) as a, rasterio.open(ref) as b:
            assert a.profile == b.profile and a.compression.value == "DEFLATE"
            assert a.transform == grid.transform and a.crs == b.crs and a.colorinterp == b.colorinterp
            np.testing.assert_array_equal(a.read(), data)
        assert fast.stat().st_size < data.nbytes / 4


def test_compress_is_ignored_for_many_bands(tmp_path):  # type: ignore[no-untyped-def]
    writer = TiffChipWriter(rasterio.crs.CRS.from_epsg(32633))
    data = np.ones((3, 16, 16), dtype="uint8")
    writer.write(tmp_path / "a.tif", data, Affine(1, 0, 0, 0, -1, 16), compress=True)
    with rasterio.open(tmp_path / "a.tif") as src:
        assert src.compression is None
        np.testing.assert_array_equal(src.read(), data)
