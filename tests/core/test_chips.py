"""Export of training chips through core: the training-folder contract, labels, grid, nodata, formats."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from core.chips import ExportConfig, export_training_data, iter_chip_pairs
from core.errors import CanceledError, ConfigError, LabelError
from core.progress import NullFeedback
from core.vectors import write_vector

CRS = "EPSG:32633"


def make_raster(path: Path, size: int = 64, count: int = 3, dtype: str = "uint8", nodata: Any = None,
                cell: float = 1.0, crs: str = CRS, origin: tuple[float, float] = (500000.0, 5200000.0),
                fill: Any = None) -> Path:
    rng = np.random.default_rng(0)
    if fill is None:
        data = (rng.random((count, size, size)) * 200 + 10).astype(dtype)
    else:
        data = np.full((count, size, size), fill, dtype=dtype)
    # A gradient in band 1 lets tests check which window a chip came from.
    data[0] = (np.arange(size)[None, :] % 200 + 1).astype(dtype)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": count, "dtype": dtype, "crs": crs,
               "transform": Affine(cell, 0, origin[0], 0, -cell, origin[1])}
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def squares(path: Path, origin: tuple[float, float] = (500000.0, 5200000.0), crs: str = CRS,
            values: tuple[Any, ...] = (1, 2), field: str = "classvalue") -> Path:
    x0, y0 = origin
    geoms = [shapely.box(x0 + 0, y0 - 32, x0 + 32, y0), shapely.box(x0 + 32, y0 - 64, x0 + 64, y0 - 32)]
    write_vector(path, geoms[: len(values)], {field: np.array(values, dtype=object if isinstance(values[0], str)
                                                                 else np.int32)}, crs=crs, layer="labels")
    return path


def read(path: Path) -> tuple[np.ndarray, Any]:
    with rasterio.open(path) as src:
        return src.read(), src.profile


class CancelAfter(NullFeedback):
    def __init__(self, n: int) -> None:
        self.n = n

    def is_canceled(self) -> bool:
        self.n -= 1
        return self.n < 0


def test_folder_contract_and_georeferencing(tmp_path: Path) -> None:
    raster = make_raster(tmp_path / "r.tif")
    labels = squares(tmp_path / "l.gpkg")
    out = tmp_path / "out"
    res = export_training_data(ExportConfig(str(raster), str(labels), str(out), tile_size_px=(32, 32),
                                            stride_px=(32, 32), only_tiles_with_features=False))
    assert res.chip_count == 4 and res.class_pixels == {1: 1024, 2: 1024}
    desc = json.loads((out / "dataset.json").read_text())
    for key in ("format", "version", "task", "label_mode", "ignore_value", "classes", "bands", "image_dtype",
                "image_nodata", "stretch", "cell_size", "cell_size_units", "crs", "tile_size_px", "stride_px",
                "chip_format", "chip_count", "orientation", "speed_bins", "source", "parameters", "created",
                "software"):
        assert key in desc, key
    assert desc["format"] == "road-landcover-chips" and desc["version"] == 1 and desc["task"] == "landcover"
    assert desc["ignore_value"] == 0 and desc["crs"] == CRS and desc["cell_size"] == [1.0, 1.0]
    assert desc["cell_size_units"] == "metre" and desc["chip_count"] == 4
    assert [c["value"] for c in desc["classes"]] == [1, 2] and desc["classes"][0]["pixels"] == 1024
    assert desc["orientation"] is None and desc["speed_bins"] is None
    assert len(desc["bands"]) == 3 and desc["bands"][0]["index"] == 1
    for f in ("chips.csv", "chip_footprints.gpkg", "preview.png"):
        assert (out / f).exists()
    with open(out / "chips.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["file", "minx", "miny", "maxx", "maxy", "rotation_deg", "nodata_fraction",
                             "class_1", "class_2"]
    # Top-left chip: class 1 everywhere, exact bounds, transform of the chip = raster window transform.
    first = rows[0]
    assert first["file"] == "000000.tif" and int(first["class_1"]) == 1024 and int(first["class_2"]) == 0
    assert float(first["minx"]) == 500000.0 and float(first["maxy"]) == 5200000.0
    img, prof = read(out / "images" / "000000.tif")
    lab, lprof = read(out / "labels" / "000000.tif")
    assert img.shape == (3, 32, 32) and lab.dtype == np.uint8 and lab.shape == (1, 32, 32)
    assert prof.get("compress") is None and lprof["compress"] == "deflate"  # labels: one DEFLATE strip
    assert prof["transform"] == Affine(1, 0, 500000, 0, -1, 5200000) == lprof["transform"]
    assert prof["crs"].to_epsg() == 32633
    with rasterio.open(raster) as src:
        np.testing.assert_array_equal(img, src.read(window=((0, 32), (0, 32))))
    # Bottom-right chip is class 2; the two other chips have no labels but lie within the squares' grid.
    last = next(r for r in rows if float(r["minx"]) == 500032.0 and float(r["maxy"]) == 5199968.0)
    assert int(last["class_2"]) == 1024
    import pyogrio

    info = pyogrio.read_info(out / "chip_footprints.gpkg", layer="chips")
    assert info["features"] == 4 and "class_1" in list(info["fields"])
    assert len(list(iter_chip_pairs(out))) == 4


def test_only_tiles_with_features_and_all_tiles(tmp_path: Path) -> None:
    raster = make_raster(tmp_path / "r.tif", size=96)
    labels = squares(tmp_path / "l.gpkg")
    a = export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "a"), tile_size_px=(32, 32),
                                          stride_px=(32, 32)))
    b = export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "b"), tile_size_px=(32, 32),
                                          stride_px=(32, 32), only_tiles_with_features=False))
    assert a.chip_count == 2 and b.chip_count == 9


def test_sparse_labels_class_zero_is_ignored(tmp_path: Path) -> None:
    raster = make_raster(tmp_path / "r.tif")
    labels = squares(tmp_path / "l.gpkg", values=(0, 3))
    res = export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "o"), tile_size_px=(32, 32),
                                            stride_px=(32, 32)))
    assert res.class_pixels == {3: 1024}
    desc = json.loads((tmp_path / "o" / "dataset.json").read_text())
    assert [c["value"] for c in desc["classes"]] == [3]


def test_clear_label_errors(tmp_path: Path) -> None:
    raster = make_raster(tmp_path / "r.tif")
    cfg = dict(tile_size_px=(32, 32), stride_px=(32, 32))
    with pytest.raises(LabelError, match="no field 'nope'"):
        export_training_data(ExportConfig(str(raster), str(squares(tmp_path / "a.gpkg")), str(tmp_path / "o1"),
                                          class_field="nope", **cfg))
    with pytest.raises(LabelError, match=r"non-integer values \(e.g. 1.5\)"):
        export_training_data(ExportConfig(str(raster), str(squares(tmp_path / "b.gpkg", values=("1.5", "2"))),
                                          str(tmp_path / "o2"), **cfg))
    with pytest.raises(LabelError, match="outside 0-254"):
        export_training_data(ExportConfig(str(raster), str(squares(tmp_path / "c.gpkg", values=(1, 300))),
                                          str(tmp_path / "o3"), **cfg))
    far = squares(tmp_path / "d.gpkg", origin=(700000.0, 5200000.0))
    with pytest.raises(LabelError, match="no feature inside the raster extent"):
        export_training_data(ExportConfig(str(raster), str(far), str(tmp_path / "o4"), **cfg))
    write_vector(tmp_path / "e.gpkg", [], {}, crs=CRS, layer="labels", geometry_type="Polygon")
    with pytest.raises(LabelError, match="empty"):
        export_training_data(ExportConfig(str(raster), str(tmp_path / "e.gpkg"), str(tmp_path / "o5"), **cfg))
    for i in range(1, 6):
        assert not (tmp_path / f"o{i}").exists()


def test_text_digits_class_field_and_default_class(tmp_path: Path) -> None:
    raster = make_raster(tmp_path / "r.tif")
    labels = squares(tmp_path / "l.gpkg", values=("4", "5"), field="Cinq")
    res = export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "o"), class_field="cinq",
                                            tile_size_px=(32, 32), stride_px=(32, 32)))
    assert res.class_pixels == {4: 1024, 5: 1024}
    other = squares(tmp_path / "m.gpkg", field="foo")
    res = export_training_data(ExportConfig(str(raster), str(other), str(tmp_path / "p"), tile_size_px=(32, 32),
                                            stride_px=(32, 32)))
    assert res.class_pixels == {1: 2048}


def test_labels_in_another_crs_are_reprojected(tmp_path: Path) -> None:
    raster = make_raster(tmp_path / "r.tif")
    from core.rasterize_labels import transform_geometries

    box = shapely.box(500000, 5199968, 500032, 5200000)
    geo = transform_geometries([box], CRS, "EPSG:4326")
    write_vector(tmp_path / "l.gpkg", geo, {"classvalue": np.array([7], dtype=np.int32)}, crs="EPSG:4326")
    res = export_training_data(ExportConfig(str(raster), str(tmp_path / "l.gpkg"), str(tmp_path / "o"),
                                            tile_size_px=(32, 32), stride_px=(32, 32)))
    assert res.class_pixels[7] == pytest.approx(1024, abs=40)


def test_image_nodata_skips_and_ignores(tmp_path: Path) -> None:
    path = make_raster(tmp_path / "r.tif", dtype="int16", nodata=-9999)
    with rasterio.open(path, "r+") as dst:
        data = dst.read()
        data[:, :8, :] = -9999  # 25 % of the top-left chip
        data[:, 32:, 32:] = -9999  # the whole bottom-right chip
        dst.write(data)
    labels = squares(tmp_path / "l.gpkg")
    res = export_training_data(ExportConfig(str(path), str(labels), str(tmp_path / "o"), tile_size_px=(32, 32),
                                            stride_px=(32, 32), max_nodata_percent=30))
    assert res.chip_count == 1 and res.skipped["nodata"] == 1
    lab, _ = read(tmp_path / "o" / "labels" / "000000.tif")
    _img, prof = read(tmp_path / "o" / "images" / "000000.tif")
    assert prof["dtype"] == "int16" and prof["nodata"] == -9999
    assert (lab[0, :8] == 0).all() and (lab[0, 8:] == 1).all()
    desc = json.loads((tmp_path / "o" / "dataset.json").read_text())
    assert desc["image_nodata"] == -9999 and desc["image_dtype"] == "int16"
    assert desc["bands"][1]["min"] > -9999  # statistics over valid pixels only


def test_stretch_percentile_and_formats(tmp_path: Path) -> None:
    raster = make_raster(tmp_path / "r.tif", dtype="uint16", count=4)
    labels = squares(tmp_path / "l.gpkg")
    base = dict(tile_size_px=(32, 32), stride_px=(32, 32))
    with pytest.raises(ConfigError, match="JPEG chips hold 1 or 3 bands"):
        export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "j"), chip_format="jpg", **base))
    png = export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "p"), chip_format="png",
                                            **base))
    img, prof = read(tmp_path / "p" / "images" / "000000.png")
    assert prof["driver"] == "PNG" and img.dtype == np.uint16 and img.shape[0] == 4 and png.chip_count == 2
    export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "s"), chip_format="jpg",
                                      bands=(3, 2, 1), stretch="percentile", **base))
    desc = json.loads((tmp_path / "s" / "dataset.json").read_text())
    assert desc["image_dtype"] == "uint8" and desc["stretch"]["method"] == "percentile"
    assert len(desc["stretch"]["low"]) == 3 and desc["stretch"]["low"][2] < desc["stretch"]["high"][2]
    assert [b["index"] for b in desc["bands"]] == [3, 2, 1] and desc["bands"][0]["max"] <= 255
    img, prof = read(tmp_path / "s" / "images" / "000000.jpg")
    _lab, lprof = read(tmp_path / "s" / "labels" / "000000.png")
    assert prof["driver"] == "JPEG" and img.shape[0] == 3 and lprof["driver"] == "PNG"
    assert lprof["transform"].c == 500000.0  # georeferenced through a world file / aux.xml
    assert desc["label_format"] == "png"
    with pytest.raises(ConfigError, match="band 9 does not exist"):
        export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "b"), bands=(9,), **base))


def test_float_and_many_bands_survive_in_tiff(tmp_path: Path) -> None:
    raster = make_raster(tmp_path / "r.tif", dtype="float32", count=12)
    res = export_training_data(ExportConfig(str(raster), str(squares(tmp_path / "l.gpkg")), str(tmp_path / "o"),
                                            tile_size_px=(32, 32), stride_px=(32, 32)))
    img, _prof = read(tmp_path / "o" / "images" / "000000.tif")
    assert img.dtype == np.float32 and img.shape[0] == 12 and res.chip_count == 2


def test_cell_size_resamples_image_and_labels(tmp_path: Path) -> None:
    raster = make_raster(tmp_path / "r.tif")
    res = export_training_data(ExportConfig(str(raster), str(squares(tmp_path / "l.gpkg")), str(tmp_path / "o"),
                                            tile_size_px=(16, 16), stride_px=(16, 16), cell_size=(2.0, 2.0)))
    assert res.chip_count == 2 and res.class_pixels == {1: 256, 2: 256}
    img, prof = read(tmp_path / "o" / "images" / "000000.tif")
    assert prof["transform"].a == 2.0 and img.shape == (3, 16, 16)
    # Band 1 is a gradient equal to col + 1: bilinear at 2 m gives the mean of two neighbours.
    assert abs(float(img[0, 5, 5]) - 11.5) <= 1.0


def test_extent_mask_and_rotation(tmp_path: Path) -> None:
    raster = make_raster(tmp_path / "r.tif", size=128)
    x0, y0 = 500000.0, 5200000.0
    write_vector(tmp_path / "l.gpkg", [shapely.box(x0, y0 - 128, x0 + 128, y0)], {"value": np.array([2])},
                 crs=CRS)
    ext = export_training_data(ExportConfig(str(raster), str(tmp_path / "l.gpkg"), str(tmp_path / "e"),
                                            tile_size_px=(32, 32), stride_px=(32, 32),
                                            extent=(x0, y0 - 64, x0 + 64, y0)))
    assert ext.chip_count == 4
    write_vector(tmp_path / "m.gpkg", [shapely.box(x0, y0 - 40, x0 + 70, y0)], {"id": np.array([1])}, crs=CRS)
    mask = export_training_data(ExportConfig(str(raster), str(tmp_path / "l.gpkg"), str(tmp_path / "m"),
                                             tile_size_px=(32, 32), stride_px=(32, 32),
                                             mask_polygons=str(tmp_path / "m.gpkg")))
    assert mask.chip_count == 2 and mask.skipped["outside_mask"] == 14
    rot = export_training_data(ExportConfig(str(raster), str(tmp_path / "l.gpkg"), str(tmp_path / "r"),
                                            tile_size_px=(32, 32), stride_px=(32, 32), rotation_deg=45,
                                            max_nodata_percent=100))
    assert rot.chip_count == 16 * 8
    with open(tmp_path / "r" / "chips.csv") as fh:
        rows = list(csv.DictReader(fh))
    corner = next(r for r in rows if float(r["rotation_deg"]) == 45.0)  # top-left chip rotated: corners outside
    assert 0.05 < float(corner["nodata_fraction"]) < 0.2
    stem = corner["file"][:-4]
    lab, prof = read(tmp_path / "r" / "labels" / f"{stem}.tif")
    assert prof["transform"].b != 0  # a rotated, georeferenced grid
    assert (lab == 0).sum() == pytest.approx(float(corner["nodata_fraction"]) * 1024, abs=1)
    with pytest.raises(ConfigError, match="does not overlap"):
        export_training_data(ExportConfig(str(raster), str(tmp_path / "l.gpkg"), str(tmp_path / "x"),
                                          extent=(0, 0, 10, 10)))


def test_raster_labels_with_colour_table(tmp_path: Path) -> None:
    raster = make_raster(tmp_path / "r.tif")
    lab = np.zeros((64, 64), dtype=np.uint8)
    lab[:32, :32] = 3
    lab[32:, 32:] = 9
    prof = {"driver": "GTiff", "width": 64, "height": 64, "count": 1, "dtype": "uint8", "crs": CRS,
            "transform": Affine(1, 0, 500000, 0, -1, 5200000)}
    with rasterio.open(tmp_path / "c.tif", "w", **prof) as dst:
        dst.write(lab, 1)
        dst.write_colormap(1, {3: (255, 0, 0, 255), 9: (0, 0, 255, 255)})
    res = export_training_data(ExportConfig(str(raster), str(tmp_path / "c.tif"), str(tmp_path / "o"),
                                            tile_size_px=(32, 32), stride_px=(32, 32),
                                            class_names={3: "roofs"}))
    assert res.class_pixels == {3: 1024, 9: 1024} and res.chip_count == 2
    desc = json.loads((tmp_path / "o" / "dataset.json").read_text())
    assert desc["classes"][0] == {"value": 3, "name": "roofs", "color": "#ff0000", "pixels": 1024}
    assert desc["source"]["label_kind"] == "raster"


def test_cancel_leaves_no_folder(tmp_path: Path) -> None:
    raster = make_raster(tmp_path / "r.tif")
    with pytest.raises(CanceledError):
        export_training_data(ExportConfig(str(raster), str(squares(tmp_path / "l.gpkg")), str(tmp_path / "o"),
                                          tile_size_px=(16, 16), stride_px=(16, 16)), CancelAfter(3))
    assert list(tmp_path.iterdir()) == [tmp_path / "l.gpkg", tmp_path / "r.tif"] or not (tmp_path / "o").exists()
    assert not any(p.name.startswith(".o") for p in tmp_path.iterdir())
    import threading

    assert not [t for t in threading.enumerate() if t.name == "chip-reader" or t.name.startswith("chip-io")]


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="label_mode"):
        ExportConfig("a", "b", "c", label_mode="nope")
    with pytest.raises(ConfigError, match="speed_field"):
        ExportConfig("a", "b", "c", label_mode="road_speed_bins")
    with pytest.raises(ConfigError, match="orientation"):
        ExportConfig("a", "b", "c", orientation=True)


def test_sample_scene_landcover(sample_scene: Any, tmp_path: Path) -> None:
    res = export_training_data(ExportConfig(str(sample_scene.image), str(sample_scene.landcover_polygons),
                                            str(tmp_path / "o"), tile_size_px=(128, 128), stride_px=(128, 128)))
    assert res.chip_count >= 12
    # The exported labels agree with the scene's own class raster on the same grid.
    agree = total = 0
    with rasterio.open(sample_scene.class_raster) as ref:
        for _img_path, lab_path in iter_chip_pairs(tmp_path / "o"):
            lab, prof = read(lab_path)
            win = rasterio.windows.from_bounds(*rasterio.transform.array_bounds(128, 128, prof["transform"]),
                                               ref.transform)
            r = ref.read(1, window=win.round_offsets().round_lengths())
            valid = (lab[0] > 0) & (r > 0)
            agree += int((lab[0][valid] == r[valid]).sum())
            total += int(valid.sum())
    assert agree / total > 0.97


def test_four_band_chips_have_no_alpha_band(sample_scene, tmp_path):  # type: ignore[no-untyped-def]
    """A NIR band must stay a data band in the chips (GDAL would tag the 4th 8-bit band as alpha)."""
    import rasterio

    from core.chips import ExportConfig, export_training_data
    from core.raster_io import default_bands

    res = export_training_data(ExportConfig(str(sample_scene.image), str(sample_scene.landcover_polygons),
                                            str(tmp_path / "c"), tile_size_px=(128, 128), stride_px=(128, 128)))
    first = sorted((res.folder / "images").iterdir())[0]
    with rasterio.open(first) as src:
        assert src.count == 4
        assert rasterio.enums.ColorInterp.alpha not in src.colorinterp
        assert default_bands(src) == (1, 2, 3, 4)


def test_class_names_in_the_class_field_are_numbered_alphabetically(tmp_path: Path) -> None:
    """Real label sets often hold names ("forest") instead of numbers: classes 1..N in name order."""
    raster = make_raster(tmp_path / "r.tif")
    labels = squares(tmp_path / "t.gpkg", values=("water", "Forest"))
    warnings: list[str] = []

    class Fb(NullFeedback):
        def warning(self, message: str) -> None:
            warnings.append(message)

    res = export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "o"), class_field="classvalue",
                                            tile_size_px=(32, 32), stride_px=(32, 32)), Fb())
    desc = json.loads((tmp_path / "o" / "dataset.json").read_text())
    assert [(c["value"], c["name"]) for c in desc["classes"]] == [(1, "Forest"), (2, "water")]
    assert res.class_pixels == {1: 1024, 2: 1024}
    assert any("numbered alphabetically: 1 Forest, 2 water" in w for w in warnings), warnings


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_band_statistics_equal_the_chips_own(tmp_path: Path, dtype: str) -> None:
    """dataset.json statistics (accumulated on the writer thread) equal those of all chips."""
    raster = make_raster(tmp_path / "r.tif", size=96, dtype=dtype)
    out = tmp_path / "o"
    export_training_data(ExportConfig(str(raster), str(squares(tmp_path / "l.gpkg")), str(out),
                                      tile_size_px=(32, 32), stride_px=(16, 16), only_tiles_with_features=False))
    desc = json.loads((out / "dataset.json").read_text())
    chips = np.stack([read(p)[0] for p in sorted((out / "images").glob("*.tif"))])  # (n, bands, h, w)
    values = chips.transpose(1, 0, 2, 3).reshape(chips.shape[1], -1).astype(np.float64)
    assert desc["chip_count"] == chips.shape[0] == 25
    for band, stats in zip(values, desc["bands"]):
        assert stats["count"] == band.size
        assert stats["min"] == pytest.approx(band.min()) and stats["max"] == pytest.approx(band.max())
        assert stats["mean"] == pytest.approx(band.mean(), abs=1e-5)  # dataset.json keeps 6 decimals
        assert stats["std"] == pytest.approx(band.std(), abs=1e-5)
        if dtype == "uint8":  # exact histogram: exact percentiles
            cdf = np.cumsum(np.bincount(band.astype(np.int64), minlength=256)) / band.size
            assert stats["p2"] == float(np.searchsorted(cdf, 0.02))
            assert stats["p98"] == float(np.searchsorted(cdf, 0.98))
        else:  # sampled percentiles: within the distribution's 1-4 % / 96-99.5 % quantiles
            lo, hi = np.quantile(band, [0.01, 0.04]), np.quantile(band, [0.96, 0.995])
            assert lo[0] <= stats["p2"] <= lo[1] and hi[0] <= stats["p98"] <= hi[1]


def test_byte_histogram_is_exact_for_any_layout() -> None:
    from core.chips import _byte_histogram

    rng = np.random.default_rng(4)
    for shape in ((256, 256), (1, 7), (33, 5)):
        a = rng.integers(0, 256, shape).astype(np.uint8)
        for view in (a, a[:, ::2], a.T):  # contiguous, strided, transposed
            np.testing.assert_array_equal(_byte_histogram(view), np.bincount(view.ravel(), minlength=256))
    const = np.full((16, 16), 7, np.uint8)
    np.testing.assert_array_equal(_byte_histogram(const), np.bincount(const.ravel(), minlength=256))


def test_byte_histogram_counts_only_the_valid_pixels() -> None:
    """The masked histogram (band statistics of chips with nodata or transparent pixels) is exact."""
    from core.chips import _byte_histogram

    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (64, 48)).astype(np.uint8)
    for valid in (rng.random(a.shape) > 0.3, np.zeros(a.shape, bool), np.ones(a.shape, bool)):
        for view, mask in ((a, valid), (a[:, ::2], valid[:, ::2]), (a.T, valid.T)):
            np.testing.assert_array_equal(_byte_histogram(view, mask), np.bincount(view[mask], minlength=256))
    wide = rng.integers(0, 256, (8, 8)).astype(np.uint16)  # not 8-bit: the numpy path, same answer
    mask = rng.random(wide.shape) > 0.5
    np.testing.assert_array_equal(_byte_histogram(wide, mask), np.bincount(wide[mask], minlength=256)[:256])
    from core.chips import _chip_histograms  # all bands of a chip at once (the reader thread's statistics)

    chip = rng.integers(0, 256, (3, 20, 30)).astype(np.uint8)
    valid = rng.random(chip.shape[1:]) > 0.4
    for m in (None, valid):
        want = np.stack([np.bincount(b.ravel() if m is None else b[m], minlength=256) for b in chip])
        np.testing.assert_array_equal(_chip_histograms(chip, m), want)


def test_band_statistics_leave_out_nodata_pixels(tmp_path: Path) -> None:
    """8-bit chips with nodata: the exact (masked) histograms count only the valid pixels of every chip."""
    path = make_raster(tmp_path / "r.tif", size=64, nodata=0)
    with rasterio.open(path, "r+") as dst:
        data = dst.read()
        data[:, 5:20, 3:40] = 0  # nodata in every band: invalid pixels in a few chips
        dst.write(data)
    out = tmp_path / "o"
    export_training_data(ExportConfig(str(path), str(squares(tmp_path / "l.gpkg")), str(out), tile_size_px=(32, 32),
                                      stride_px=(16, 16), only_tiles_with_features=False, max_nodata_percent=100))
    desc = json.loads((out / "dataset.json").read_text())
    chips = np.stack([read(p)[0] for p in sorted((out / "images").glob("*.tif"))])
    valid = (chips != 0).any(axis=1)  # (n, h, w)
    assert 0 < (~valid).sum() < valid.size
    for b, stats in enumerate(desc["bands"]):
        band = chips[:, b][valid]
        assert stats["count"] == band.size
        assert (stats["min"], stats["max"]) == (float(band.min()), float(band.max()))
        assert stats["mean"] == pytest.approx(band.mean(), abs=1e-5)


def test_direct_and_normal_writes_give_the_same_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Image chips written past the page cache (where the file system allows) are the same bytes."""
    raster = make_raster(tmp_path / "r.tif", size=300, count=4)  # 128 px chips of 4 bands: 64 KB, direct-sized
    labels = squares(tmp_path / "l.gpkg")
    folders = {}
    for mode in ("on", "off"):
        monkeypatch.setenv("RLC_DIRECT_IO", mode)
        folders[mode] = out = tmp_path / f"o_{mode}"
        export_training_data(ExportConfig(str(raster), str(labels), str(out), tile_size_px=(128, 128),
                                          stride_px=(64, 64), only_tiles_with_features=False))
    names = sorted(p.relative_to(folders["on"]) for p in folders["on"].rglob("*.tif"))
    assert len(names) == 2 * 16 and names == sorted(p.relative_to(folders["off"]) for p in folders["off"].rglob("*.tif"))
    for name in names:
        assert (folders["on"] / name).read_bytes() == (folders["off"] / name).read_bytes(), name


def test_a_read_error_on_the_reader_thread_fails_the_export_cleanly(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Chips are read ahead on a thread: its error reaches the caller, the thread ends, no folder is left."""
    import threading

    import core.raster_io
    from core.errors import RasterReadError

    real = core.raster_io.read_grid
    calls = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 5:
            raise RasterReadError("cannot read r.tif at window 5: simulated bad block")
        return real(*args, **kwargs)

    monkeypatch.setattr(core.raster_io, "read_grid", failing)
    raster = make_raster(tmp_path / "r.tif")
    with pytest.raises(RasterReadError, match="simulated bad block"):
        export_training_data(ExportConfig(str(raster), str(squares(tmp_path / "l.gpkg")), str(tmp_path / "o"),
                                          tile_size_px=(16, 16), stride_px=(8, 8)))
    assert not (tmp_path / "o").exists() and not any(p.name.startswith(".o") for p in tmp_path.iterdir())
    assert not [t for t in threading.enumerate() if t.name == "chip-reader"]


@pytest.mark.parametrize("count", [1, 3, 8, 17, 400, 1001])
def test_preview_sampler_shows_the_first_chip_at_or_after_evenly_spread_targets(count: int, tmp_path: Path) -> None:
    """preview.png's chips are known to whoever makes them: no chip is read back, only n decimated ones kept."""
    from core.chips import _PreviewSampler

    n = 4
    sampler = _PreviewSampler(n, (256, 256), count)
    assert len(sampler.targets) == min(n, count) and sampler.targets == sorted(sampler.targets)
    if count >= 400:
        assert np.ptp(np.diff(sampler.targets)) <= 1 and sampler.targets[0] == 1 + count // 8  # middles of n parts
    kept = [k for k in range(1, count + 1) if count < 4 or k % 3]  # every third candidate skipped
    after = 0
    for k in kept:
        image, label = np.full((5, 256, 256), k % 250, dtype=np.uint16), np.full((256, 256), k % 250, dtype=np.uint8)
        sampler.offer(k, sampler.decimate(image, label) if sampler.wanted(k, after) else None, f"{k:06d}")
        after = k
    missing = tmp_path / "missing.tif"  # reading it would fail
    picks = sampler.picks(lambda stem: (missing, missing))
    expected = sorted({min([k for k in kept if k >= t] or [kept[-1]]) for t in sampler.targets})
    assert [int(lab[0, 0]) for _, lab in picks] == [k % 250 for k in expected]
    assert all(img.shape == (3, 128, 128) and lab.shape == (128, 128) for img, lab in picks)  # decimated


def test_preview_sampler_reads_a_pick_its_maker_could_not_know(tmp_path: Path) -> None:
    """A worker's block whose chips after a target were all skipped: the pick is a later block's first chip,
    whose maker kept no pixels, so it is read from its files (and decimated like the others)."""
    from core.chips import _PreviewSampler

    sampler = _PreviewSampler(2, (64, 64), 32, tile_px=32)
    assert sampler.targets == [9, 25]
    image = make_raster(tmp_path / "i.tif", size=64, count=4)
    label = tmp_path / "l.tif"
    with rasterio.open(image) as src:
        profile = {**src.profile, "count": 1}
        img = src.read()
    lab = (np.arange(64 * 64).reshape(64, 64) % 7).astype(np.uint8)
    with rasterio.open(label, "w", **{**profile, "dtype": "uint8"}) as dst:
        dst.write(lab, 1)
    # Block 0 (candidates 1-16) exported 1-8 only; block 1 starts at 17: its maker was told after=16.
    for k in range(1, 9):
        sampler.offer(k, None, f"{k:06d}")
    assert not sampler.wanted(17, after=16)
    sampler.offer(17, None, "000017")
    assert sampler.wanted(26, after=24)
    sampler.offer(26, sampler.decimate(img, lab), "000026")
    files = {"000017": (image, label)}  # only the one pick without pixels is read
    (a_img, a_lab), (b_img, b_lab) = sampler.picks(files.__getitem__)
    assert np.array_equal(a_img, img[:3, ::2, ::2]) and np.array_equal(a_lab, lab[::2, ::2])
    assert np.array_equal(b_img, a_img) and np.array_equal(b_lab, a_lab)


def test_a_write_error_on_the_io_threads_fails_the_export_cleanly(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Files are written on I/O threads: a full disk there reaches the caller, and no folder is left."""
    import errno
    import threading

    import core.direct_io

    real = core.direct_io.write_buffered
    calls = []

    def full_disk(path: Any, parts: Any) -> None:
        calls.append(path)
        if len(calls) >= 7:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, parts)

    monkeypatch.setattr(core.direct_io, "write_buffered", full_disk)
    monkeypatch.setenv("RLC_DIRECT_IO", "off")
    raster = make_raster(tmp_path / "r.tif")
    with pytest.raises(OSError, match="No space left"):
        export_training_data(ExportConfig(str(raster), str(squares(tmp_path / "l.gpkg")), str(tmp_path / "o"),
                                          tile_size_px=(16, 16), stride_px=(8, 8)))
    assert not (tmp_path / "o").exists() and not any(p.name.startswith(".o") for p in tmp_path.iterdir())
    assert not [t for t in threading.enumerate() if t.name.startswith("chip-io")]


def test_preview_png_reads_back_exactly_and_compresses_only_what_pays(tmp_path: Path) -> None:
    """Our own PNG encoder (no row filters): GDAL reads the pixels back; smooth sheets are deflated, noise stored."""
    from core.chips import _png_bytes

    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (3, 37, 53), dtype=np.uint8)
    smooth = np.broadcast_to((np.arange(53) // 4).astype(np.uint8), (3, 37, 53)).copy()
    for name, rgb in (("noise", noise), ("smooth", smooth)):
        data = _png_bytes(rgb)
        (tmp_path / f"{name}.png").write_bytes(data)
        with rasterio.open(tmp_path / f"{name}.png") as ds:
            assert ds.driver == "PNG" and ds.count == 3 and ds.dtypes[0] == "uint8"
            assert np.array_equal(ds.read(), rgb)
    raw = 37 * (1 + 3 * 53)
    assert len(_png_bytes(smooth)) < raw // 10
    assert raw < len(_png_bytes(noise)) < raw + 200  # stored: the rows plus zlib's and PNG's framing
