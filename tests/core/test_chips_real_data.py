"""Export on the real test data in ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from core.chips import ExportConfig, export_training_data
from core.errors import LabelError


def test_spacenet_centerlines_in_degrees_match_reference_mask(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "roads" / "spacenet_vegas_pan16"
    res = export_training_data(ExportConfig(
        str(d / "road_mask_input.tif"), str(d / "sample_roads_for_masking.geojson"), str(tmp_path / "o"),
        label_mode="road_binary", buffer_m=2.0, tile_size_px=(1300, 1300), stride_px=(1300, 1300),
        orientation=True))
    assert res.chip_count == 1
    with rasterio.open(tmp_path / "o" / "labels" / "000000.tif") as s:
        lab = s.read(1)
    with rasterio.open(d / "sample_road_raster_mask.tif") as s:
        ref = s.read(1) > 0
    road = lab == 1
    iou = (road & ref).sum() / (road | ref).sum()
    assert iou > 0.99, iou  # measured 0.99998 (56415 vs 56416 road pixels)
    with rasterio.open(tmp_path / "o" / "orientation" / "000000.tif") as s:
        orient = s.read(1)
    assert set(np.unique(orient[road])) <= set(range(36)) and (orient[~road] == 36).all()
    desc = json.loads((tmp_path / "o" / "dataset.json").read_text())
    assert desc["ignore_value"] == 255 and desc["image_dtype"] == "uint16" and desc["cell_size_units"] == "degree"
    assert desc["orientation"]["bins"] == 36


def test_new_brunswick_polygons_with_class_field(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "landcover" / "new_brunswick_0_5m"
    res = export_training_data(ExportConfig(
        str(d / "23322E759967N_clipped_1m_1of2.tif"), str(d / "BakerLake_2017_clipped.gpkg"), str(tmp_path / "o"),
        class_field="Cinqclasses", class_name_field="Niveau_3", tile_size_px=(128, 128), stride_px=(64, 64)))
    assert res.chip_count >= 6 and set(res.class_pixels) <= {1, 2, 3, 4, 5}
    desc = json.loads((tmp_path / "o" / "dataset.json").read_text())
    names = {c["value"]: c["name"] for c in desc["classes"]}
    assert names[2] == "Hydro"
    with pytest.raises(LabelError, match="outside 0-254"):
        export_training_data(ExportConfig(
            str(d / "23322E759967N_clipped_1m_1of2.tif"), str(d / "BakerLake_2017_clipped.gpkg"),
            str(tmp_path / "q"), class_field="Quatreclasses"))
    # A field of names (Niveau_3: "Forest", "Hydro", ...) is numbered alphabetically, names kept.
    named = export_training_data(ExportConfig(
        str(d / "23322E759967N_clipped_1m_1of2.tif"), str(d / "BakerLake_2017_clipped.gpkg"),
        str(tmp_path / "n"), class_field="Niveau_3"))
    named_classes = json.loads((named.folder / "dataset.json").read_text())["classes"]
    assert [c["name"] for c in named_classes] == sorted((c["name"] for c in named_classes), key=str.lower)
    assert [c["value"] for c in named_classes] == list(range(1, len(named_classes) + 1))


def test_new_brunswick_classified_raster_labels(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "landcover" / "new_brunswick_0_5m"
    res = export_training_data(ExportConfig(
        str(d / "23322E759967N_clipped_1m_1of2.tif"), str(d / "derived" / "BakerLake_5class_label_1of2.tif"),
        str(tmp_path / "o"), tile_size_px=(128, 128), stride_px=(128, 128), only_tiles_with_features=False))
    from core.chips import iter_chip_pairs

    with rasterio.open(d / "derived" / "BakerLake_5class_label_1of2.tif") as s:
        ref = s.read(1)
        ref_transform = s.transform
    assert res.chip_count == 9  # 280 x 341 px: chips at 0, 128 and one flush with each edge (152 / 213)
    for _, lab_path in iter_chip_pairs(tmp_path / "o"):
        with rasterio.open(lab_path) as s:
            col, row = (~ref_transform @ (s.transform.c, s.transform.f))
            window = ref[int(round(row)):int(round(row)) + 128, int(round(col)):int(round(col)) + 128]
            np.testing.assert_array_equal(s.read(1), window)


def test_landsat_uint16_percentile_stretch(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "multispectral" / "landsat8_uint16" / "derived"
    raster = d / "LC08_016037_20170813_B2-B7_900m_stack.tif"
    with rasterio.open(raster) as s:
        bounds = s.bounds
        crs = s.crs.to_string()
    import shapely

    from core.vectors import write_vector

    write_vector(tmp_path / "l.gpkg", [shapely.box(*bounds).buffer(-2000)], {"value": np.array([1])}, crs=crs)
    res = export_training_data(ExportConfig(
        str(raster), str(tmp_path / "l.gpkg"), str(tmp_path / "o"), tile_size_px=(64, 64), stride_px=(64, 64),
        stretch="percentile", chip_format="png", bands=(4, 3, 2), max_nodata_percent=100))
    desc = json.loads((tmp_path / "o" / "dataset.json").read_text())
    assert res.chip_count >= 1 and desc["image_dtype"] == "uint8"
    assert all(lo < hi and hi <= 65535 for lo, hi in zip(desc["stretch"]["low"], desc["stretch"]["high"]))
    assert 20 < desc["bands"][0]["mean"] < 235


def test_int16_nodata_point_labels(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "multispectral" / "landsat8_int16_nodata"
    res = export_training_data(ExportConfig(
        str(d / "LC08_232066_20190727.tif"), str(d / "endmembers.shp"), str(tmp_path / "o"), class_field="class",
        buffer_m=30.0, tile_size_px=(32, 32), stride_px=(32, 32), max_nodata_percent=100))
    assert res.chip_count >= 5 and sum(res.class_pixels.values()) >= 91
    with rasterio.open(tmp_path / "o" / "images" / "000000.tif") as s:
        assert s.dtypes[0] == "int16" and s.nodata == -9999 and s.count == 6


def test_enmap_224_bands_in_tiff(shared_data: Path, tmp_path: Path) -> None:
    d = shared_data / "landcover" / "enmap_hyperspectral_30m"
    name = "enmap_potsdam_tile_96_0.tif"
    res = export_training_data(ExportConfig(
        str(d / "images" / name), str(d / "labels" / name), str(tmp_path / "o"), tile_size_px=(32, 32),
        stride_px=(32, 32)))
    assert res.chip_count == 1
    with rasterio.open(tmp_path / "o" / "images" / "000000.tif") as s:
        assert s.count == 224 and s.dtypes[0] == "float32"
    desc: dict[str, Any] = json.loads((tmp_path / "o" / "dataset.json").read_text())
    assert len(desc["bands"]) == 224 and all(c["value"] in range(1, 7) for c in desc["classes"])
