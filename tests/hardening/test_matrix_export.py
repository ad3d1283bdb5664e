"""Bad-input matrix of Export Training Data (core.chips.export_training_data).

Each case ends in a clear error (the message names the problem and the fix) with no output folder and no
temporary left, or in a correct result; after every case a valid export in the same process succeeds.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely

from core import chip_writer
from core.chips import ExportConfig, ExportResult, export_training_data
from core.errors import ConfigError, LabelError, OutputError, RasterReadError
from core.rasterize_labels import transform_geometries
from core.vectors import write_vector
from tests.hardening.support import (
    CRS,
    ODD_NAME,
    X0,
    Y0,
    Collect,
    assert_clean_failure,
    box_json,
    disk_full,
    geojson,
    make_raster,
    partials,
    squares,
)

TILE = {"tile_size_px": (32, 32), "stride_px": (32, 32)}


@dataclasses.dataclass
class Case:
    build: Callable[[Path, pytest.MonkeyPatch], ExportConfig]
    error: type[Exception] | None = None
    match: str = ""
    check: Callable[[ExportResult, Path, Collect], None] | None = None


def base(tmp: Path, raster: Path | None = None, labels: Path | None = None, **kw: Any) -> ExportConfig:
    raster = raster or make_raster(tmp / "r.tif")
    labels = labels or squares(tmp / "l.gpkg")
    return ExportConfig(str(raster), str(labels), str(tmp / "out"), **{**TILE, **kw})


def chip(res: ExportResult, kind: str = "images") -> tuple[np.ndarray, Any]:
    with rasterio.open(res.folder / kind / "000000.tif") as src:
        return src.read(), src.profile


def dtype_case(count: int, dtype: str, nodata: Any = None) -> Case:
    def build(tmp: Path, mp: pytest.MonkeyPatch) -> ExportConfig:
        return base(tmp, make_raster(tmp / "r.tif", count=count, dtype=dtype, nodata=nodata))

    def check(res: ExportResult, tmp: Path, fb: Collect) -> None:
        data, prof = chip(res)
        assert data.shape == (count, 32, 32) and prof["dtype"] == dtype
        with rasterio.open(tmp / "r.tif") as src:
            np.testing.assert_array_equal(data, src.read(window=((0, 32), (0, 32))))
        desc = json.loads(res.dataset_json.read_text())
        assert len(desc["bands"]) == count and desc["image_dtype"] == dtype
        assert res.class_pixels == {1: 1024, 2: 1024}

    return Case(build, check=check)


def labels_other_crs(tmp: Path, mp: pytest.MonkeyPatch) -> ExportConfig:
    geo = transform_geometries([shapely.box(X0, Y0 - 32, X0 + 32, Y0)], CRS, "EPSG:4326")
    write_vector(tmp / "geo.gpkg", geo, {"classvalue": np.array([7], np.int32)}, crs="EPSG:4326")
    return base(tmp, labels=tmp / "geo.gpkg")


def labels_outside(tmp: Path, mp: pytest.MonkeyPatch) -> ExportConfig:
    return base(tmp, labels=squares(tmp / "far.gpkg", origin=(X0 + 50000, Y0)))


def empty_layer(tmp: Path, mp: pytest.MonkeyPatch) -> ExportConfig:
    write_vector(tmp / "e.gpkg", [], {}, crs=CRS, layer="labels", geometry_type="Polygon")
    return base(tmp, labels=tmp / "e.gpkg")


def invalid_geometry(tmp: Path, mp: pytest.MonkeyPatch) -> ExportConfig:
    # A self-intersecting "bow tie" over the top-left chip: make_valid turns it into two triangles.
    bowtie = {"type": "Polygon", "coordinates": [[[X0, Y0], [X0 + 32, Y0 - 32], [X0 + 32, Y0], [X0, Y0 - 32],
                                                  [X0, Y0]]]}
    return base(tmp, labels=geojson(tmp / "bowtie.geojson", [(bowtie, {"classvalue": 3})]))


def multipart(tmp: Path, mp: pytest.MonkeyPatch) -> ExportConfig:
    mpoly = {"type": "MultiPolygon", "coordinates": [box_json(X0, Y0 - 16, X0 + 16, Y0)["coordinates"],
                                                     box_json(X0 + 40, Y0 - 56, X0 + 56, Y0 - 40)["coordinates"]]}
    return base(tmp, labels=geojson(tmp / "multi.geojson", [(mpoly, {"classvalue": 4})]))


def null_class(tmp: Path, mp: pytest.MonkeyPatch) -> ExportConfig:
    feats = [(box_json(X0, Y0 - 32, X0 + 32, Y0), {"classvalue": 1}),
             (box_json(X0 + 32, Y0 - 64, X0 + 64, Y0 - 32), {"classvalue": None})]
    return base(tmp, labels=geojson(tmp / "null.geojson", feats))


def text_class(tmp: Path, mp: pytest.MonkeyPatch) -> ExportConfig:
    return base(tmp, labels=squares(tmp / "t.gpkg", values=("forest", "water")))


def missing_field(tmp: Path, mp: pytest.MonkeyPatch) -> ExportConfig:
    return base(tmp, class_field="landuse")


def nodata_only(tmp: Path, mp: pytest.MonkeyPatch) -> ExportConfig:
    path = make_raster(tmp / "nd.tif", nodata=0, count=3)
    with rasterio.open(path, "r+") as dst:
        dst.write(np.zeros((3, 64, 64), np.uint8))
    return base(tmp, path)


def smaller_than_tile(tmp: Path, mp: pytest.MonkeyPatch) -> ExportConfig:
    return base(tmp, make_raster(tmp / "small.tif", size=20), tile_size_px=(64, 64), stride_px=(64, 64))


def smaller_than_tile_all_nodata_allowed(tmp: Path, mp: pytest.MonkeyPatch) -> ExportConfig:
    return base(tmp, make_raster(tmp / "small.tif", size=20), tile_size_px=(32, 32), stride_px=(32, 32),
                max_nodata_percent=100)


def unwritable(tmp: Path, mp: pytest.MonkeyPatch) -> ExportConfig:
    (tmp / "a_file").write_text("not a folder")
    return dataclasses.replace(base(tmp), output_folder=str(tmp / "a_file" / "out"))


def existing_output(tmp: Path, mp: pytest.MonkeyPatch) -> ExportConfig:
    (tmp / "out").mkdir()
    (tmp / "out" / "old_chip.tif").write_text("previous export")
    return base(tmp)


def full_disk(tmp: Path, mp: pytest.MonkeyPatch) -> ExportConfig:
    disk_full(mp, chip_writer.TiffChipWriter, "write", after=2)
    return base(tmp, make_raster(tmp / "r.tif", size=96), only_tiles_with_features=False)


def odd_names(tmp: Path, mp: pytest.MonkeyPatch) -> ExportConfig:
    d = tmp / ODD_NAME
    d.mkdir()
    raster = make_raster(d / "imagé ü.tif")
    labels = d / "étiquettes ü.gpkg"
    geoms = [shapely.box(X0, Y0 - 32, X0 + 32, Y0), shapely.box(X0 + 32, Y0 - 64, X0 + 64, Y0 - 32)]
    write_vector(labels, geoms, {"clâsse ü": np.array([1, 2], np.int32), "nom é": np.array(["forêt", "eau"], object)},
                 crs=CRS, layer="couche été")
    return ExportConfig(str(raster), str(labels), str(d / "sortie é"), labels_layer="couche été",
                        class_field="clâsse ü", class_name_field="nom é", **TILE)


def check_other_crs(res: ExportResult, tmp: Path, fb: Collect) -> None:
    assert res.class_pixels[7] == pytest.approx(1024, abs=40)


def check_bowtie(res: ExportResult, tmp: Path, fb: Collect) -> None:
    assert res.class_pixels[3] == pytest.approx(512, abs=40)  # two triangles of a 32 x 32 square
    assert any("repaired" in w for w in fb.warnings)


def check_multipart(res: ExportResult, tmp: Path, fb: Collect) -> None:
    assert res.class_pixels == {4: 512} and res.chip_count == 2


def check_existing(res: ExportResult, tmp: Path, fb: Collect) -> None:
    assert not (tmp / "out" / "old_chip.tif").exists() and (tmp / "out" / "dataset.json").is_file()


def check_text(res: ExportResult, tmp: Path, fb: Collect) -> None:
    desc = json.loads(res.dataset_json.read_text(encoding="utf-8"))
    assert [(c["value"], c["name"]) for c in desc["classes"]] == [(1, "forest"), (2, "water")]


def check_small(res: ExportResult, tmp: Path, fb: Collect) -> None:
    data, _ = chip(res)
    lab, _ = chip(res, "labels")
    assert data.shape == (3, 32, 32) and res.chip_count == 1
    assert (lab[0, 20:, :] == 0).all() and (lab[0, :20, :20] == 1).all()  # outside the raster: ignored (0)


def check_odd(res: ExportResult, tmp: Path, fb: Collect) -> None:
    desc = json.loads(res.dataset_json.read_text(encoding="utf-8"))
    assert [c["name"] for c in desc["classes"]] == ["forêt", "eau"] and res.chip_count == 2
    assert desc["source"]["class_field"] == "clâsse ü"


CASES: dict[str, Case] = {
    "labels in another CRS": Case(labels_other_crs, check=check_other_crs),
    "labels outside the raster": Case(labels_outside, LabelError, r"no feature inside the raster extent.*check"),
    "empty label layer": Case(empty_layer, LabelError, r"is empty.*draw or load labels"),
    "invalid geometry": Case(invalid_geometry, check=check_bowtie),
    "multi-part geometry": Case(multipart, check=check_multipart),
    "null class value": Case(null_class, LabelError, r"is empty in 1 feature\(s\); fill in their class values"),
    "text class value": Case(text_class, check=check_text),
    "class field missing": Case(missing_field, LabelError, r"no field 'landuse'; its fields are: classvalue"),
    "nodata-only raster": Case(nodata_only, LabelError, r"no chip was exported.*nodata.*raise the nodata limit"),
    "1-band raster": dtype_case(1, "uint8"),
    "16-bit raster": dtype_case(3, "uint16"),
    "Int16 raster": dtype_case(2, "int16", nodata=-9999),
    "float raster": dtype_case(4, "float32"),
    "224-band raster": dtype_case(224, "int16"),
    "raster smaller than a tile": Case(smaller_than_tile, LabelError, r"no chip was exported.*lower the tile size"),
    "raster smaller than a tile, nodata allowed": Case(smaller_than_tile_all_nodata_allowed, check=check_small),
    "output cannot be written": Case(unwritable, OutputError, r"cannot create the folder"),
    "output exists (replaced)": Case(existing_output, check=check_existing),
    "disk full": Case(full_disk, OutputError, r"disk is full.*free some space"),
    "spaces and non-ASCII names": Case(odd_names, check=check_odd),
}


def run_valid(tmp: Path) -> None:
    """A plain valid export, to prove the process is not left broken by the case before."""
    d = tmp / "valid_after"
    d.mkdir()
    res = export_training_data(ExportConfig(str(make_raster(d / "r.tif")), str(squares(d / "l.gpkg")),
                                            str(d / "out"), **TILE))
    assert res.chip_count == 2 and res.class_pixels == {1: 1024, 2: 1024}


@pytest.mark.parametrize("name", list(CASES))
def test_export_matrix(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    cfg = case.build(tmp_path, monkeypatch)
    fb = Collect()
    final = Path(cfg.output_folder)
    if case.error is not None:
        with pytest.raises(case.error, match=case.match):
            export_training_data(cfg, fb)
        assert_clean_failure(tmp_path, final)
    else:
        result = export_training_data(cfg, fb)
        assert case.check is not None
        case.check(result, tmp_path, fb)
        assert (final / "dataset.json").is_file() and partials(tmp_path) == []
    monkeypatch.undo()
    run_valid(tmp_path)


def test_failed_export_keeps_the_previous_folder(tmp_path: Path) -> None:
    """Overwriting is atomic: a run that fails leaves the earlier export exactly as it was."""
    good = base(tmp_path)
    export_training_data(good)
    before = {p.relative_to(tmp_path / "out"): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    with pytest.raises(LabelError):
        export_training_data(dataclasses.replace(good, class_field="nope"))
    after = {p.relative_to(tmp_path / "out"): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert after == before and partials(tmp_path) == []


def test_overwrite_refused_when_not_allowed(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputError, match="already exists; choose another name or allow overwriting"):
        export_training_data(dataclasses.replace(base(tmp_path), overwrite=False))
    assert list((tmp_path / "out").iterdir()) == []


def test_unreadable_raster_and_labels(tmp_path: Path) -> None:
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(RasterReadError, match="cannot open raster.*check that the file exists"):
        export_training_data(base(tmp_path, raster=tmp_path / "broken.tif"))
    with pytest.raises(Exception, match="cannot read vector layer.*check that the file exists"):
        export_training_data(base(tmp_path, labels=tmp_path / "missing.gpkg"))
    with pytest.raises(ConfigError, match="band 5 does not exist"):
        export_training_data(base(tmp_path, bands=(5,)))
    assert_clean_failure(tmp_path, tmp_path / "out")
