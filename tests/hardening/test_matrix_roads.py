"""Bad-input matrix of the road steps: vectorize_roads, extract_roads (core.roads) and evaluate_roads
(core.road_metrics). Lines and nodes are one result: a failure leaves neither; so are a report and its tables.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from shapely.geometry import LineString, MultiLineString, Polygon

from core.errors import ConfigError, LabelError, ModelPackageError, OutputError, RasterReadError, VectorReadError
from core.road_metrics import evaluate_roads
from core.roads import VectorizeConfig, extract_roads, vectorize_roads
from core.vectors import read_vector, write_vector
from tests.hardening.support import (
    CRS,
    ODD_NAME,
    X0,
    Y0,
    assert_clean_failure,
    disk_full,
    partials,
    road_mask,
    write_single,
)

# ----------------------------------------------------------------------------------------------- vectorize


def vec(tmp: Path, raster: Path, stem: str = "roads", **cfg: Any) -> Any:
    return vectorize_roads(raster, tmp / f"{stem}.gpkg", tmp / f"{stem}_nodes.gpkg", VectorizeConfig(**cfg))


def assert_plus(result: Any) -> None:
    """The plus-shaped mask: one junction of degree 4, four arms, two 48 m roads in all."""
    assert result.junction_count == 1 and result.edge_count == 4 and result.end_count == 4
    assert result.total_length_m == pytest.approx(2 * 96 * 0.5, rel=0.05)  # two 48 m roads
    assert len(read_vector(result.lines)) == 4 and len(read_vector(result.nodes)) == 5


@pytest.mark.parametrize("kind", ["uint8 0/1", "uint8 0/255", "float probability", "Int16 with nodata",
                                  "uint16"])
def test_vectorize_accepts_every_mask_type(kind: str, tmp_path: Path) -> None:
    m = road_mask()
    data, nodata = {
        "uint8 0/1": (m, None),
        "uint8 0/255": (m * 255, None),
        "float probability": (m.astype(np.float32) * 0.9 + 0.05, None),
        "Int16 with nodata": (np.where(np.arange(96)[None, :] < 2, -1, m).astype(np.int16), -1),
        "uint16": (m.astype(np.uint16), None),
    }[kind]
    assert_plus(vec(tmp_path, write_single(tmp_path / "r.tif", data, nodata=nodata)))


def test_vectorize_nodata_only_gives_empty_layers(tmp_path: Path) -> None:
    result = vec(tmp_path, write_single(tmp_path / "nd.tif", np.full((64, 64), -1, np.int16), nodata=-1))
    assert result.edge_count == 0 and len(read_vector(result.lines)) == 0 and len(read_vector(result.nodes)) == 0


def test_vectorize_smaller_than_a_block_and_tiny(tmp_path: Path) -> None:
    result = vec(tmp_path, write_single(tmp_path / "tiny.tif", np.ones((3, 2), np.uint8)))
    assert result.edge_count == 0  # a 1.5 m road piece is below every minimum length


def test_vectorize_errors(tmp_path: Path) -> None:
    raster = write_single(tmp_path / "r.tif", road_mask())
    with pytest.raises(ConfigError, match="band 2 does not exist: .* has 1 band"):
        vec(tmp_path, raster, band=2)
    with pytest.raises(ConfigError, match="same file .* give the nodes another name"):
        vectorize_roads(raster, tmp_path / "a.gpkg", tmp_path / "a.gpkg")
    with pytest.raises(OutputError, match="choose a GeoPackage"):
        vectorize_roads(raster, tmp_path / "a.txt", tmp_path / "b.gpkg")
    write_vector(tmp_path / "v.gpkg", [LineString([(0, 0), (1, 1)])], {}, crs=CRS)
    with pytest.raises(RasterReadError, match="cannot open the road raster .* check the path and format"):
        vec(tmp_path, tmp_path / "v.gpkg")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputError, match="cannot create the folder"):
        vectorize_roads(raster, tmp_path / "a_file" / "l.gpkg", tmp_path / "a_file" / "n.gpkg")
    assert_clean_failure(tmp_path, tmp_path / "a.gpkg", tmp_path / "b.gpkg", tmp_path / "roads.gpkg",
                         tmp_path / "roads_nodes.gpkg")
    assert_plus(vec(tmp_path, raster))  # the process is fine


def test_vectorize_replaces_existing_outputs(tmp_path: Path) -> None:
    raster = write_single(tmp_path / "r.tif", road_mask())
    (tmp_path / "roads.gpkg").write_bytes(b"old")
    (tmp_path / "roads_nodes.gpkg").write_bytes(b"old")
    assert_plus(vec(tmp_path, raster))


@pytest.mark.parametrize("after", [0, 1])
def test_vectorize_disk_full_leaves_neither_layer(after: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """after=1: the lines are written, the nodes fail: the lines must not appear alone (nor replace old ones)."""
    import pyogrio.raw

    raster = write_single(tmp_path / "r.tif", road_mask())
    old = vec(tmp_path, raster)
    before = {p: p.read_bytes() for p in (old.lines, old.nodes)}
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    disk_full(monkeypatch, pyogrio.raw, "write", after=after)
    for folder in (tmp_path, fresh):
        with pytest.raises(OutputError, match="disk is full.*free some space"):
            vec(folder, raster)
    assert {p: p.read_bytes() for p in (old.lines, old.nodes)} == before
    assert_clean_failure(fresh, fresh / "roads.gpkg", fresh / "roads_nodes.gpkg")
    assert partials(tmp_path) == []
    monkeypatch.undo()
    assert_plus(vec(fresh, raster))


def test_vectorize_names_with_spaces_and_non_ascii(tmp_path: Path) -> None:
    d = tmp_path / ODD_NAME
    d.mkdir()
    raster = write_single(d / "probabilité ü.tif", road_mask())
    result = vectorize_roads(raster, d / "sortie é" / "routes ü.gpkg", d / "sortie é" / "nœuds ü.gpkg")
    assert_plus(result)


# ----------------------------------------------------------------------------------------------- extract


@pytest.fixture(scope="module")
def road_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.core.test_roads_extract import road_package

    d = tmp_path_factory.mktemp("roadpkg")
    folder = road_package(d / "roads")
    shutil.make_archive(str(d / "roads"), "zip", folder)
    return d / "roads.zip"


def four_band(path: Path, size: int = 48) -> Path:
    from tests.hardening.support import make_raster

    return make_raster(path, size=size, count=4, cell=0.5)


def test_extract_roads_bad_models(tmp_path: Path, road_pkg: Path) -> None:
    from tests.core.test_roads_extract import road_package

    raster = four_band(tmp_path / "img.tif")
    outs = (tmp_path / "prob.tif", tmp_path / "l.gpkg", tmp_path / "n.gpkg")
    data = road_pkg.read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelPackageError, match="truncated or corrupt.*re-export or re-download"):
        extract_roads(raster, tmp_path / "cut.zip", *outs, device="cpu")
    with pytest.raises(ModelPackageError, match="does not exist; pass the folder or zip"):
        extract_roads(raster, tmp_path / "missing.zip", *outs, device="cpu")
    lc = road_package(tmp_path / "lc", task="landcover")
    with pytest.raises(ModelPackageError, match="is a 'landcover' model, not a road model"):
        extract_roads(raster, lc, *outs, device="cpu")
    three = write_single(tmp_path / "one_band.tif", np.zeros((48, 48), np.uint8))
    with pytest.raises(RasterReadError, match="expects 4 bands"):
        extract_roads(three, road_pkg, *outs, device="cpu")
    assert_clean_failure(tmp_path, *outs, tmp_path / "prob_mask.tif")
    result = extract_roads(raster, road_pkg, *outs, device="cpu")  # the process is fine
    with rasterio.open(outs[0]) as src:
        assert src.read(1).min() > 0.99  # the model says road everywhere
    assert result.lines == outs[1]


# ----------------------------------------------------------------------------------------------- evaluate


def lines_file(path: Path, geoms: list[Any], crs: str | None = CRS, layer: str | None = None) -> Path:
    write_vector(path, geoms, {"id": np.arange(len(geoms), dtype=np.int32)}, crs=crs, layer=layer)
    return path


ROAD = LineString([(X0, Y0), (X0 + 100, Y0)])


def test_evaluate_roads_cases(tmp_path: Path) -> None:
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape

    ref = lines_file(tmp_path / "ref.gpkg", [ROAD])
    # another CRS: the same road in degrees
    geo = lines_file(tmp_path / "geo.geojson", [shape(transform_geom(CRS, "EPSG:4326", mapping(ROAD)))], "EPSG:4326")
    assert evaluate_roads(geo, ref, tmp_path / "r1.json")["apls"] > 0.99
    # multi-part and a zero-length (degenerate) piece
    multi = lines_file(tmp_path / "multi.gpkg", [MultiLineString([[(X0, Y0), (X0 + 50, Y0)],
                                                                  [(X0 + 50, Y0), (X0 + 100, Y0)]]),
                                                 LineString([(X0 + 10, Y0), (X0 + 10, Y0)])])
    report = evaluate_roads(multi, ref, tmp_path / "r2.json")
    assert report["relaxed_f1"] > 0.99 and report["apls"] > 0.9
    # empty prediction: a score of 0, not an error
    empty = tmp_path / "empty.gpkg"
    write_vector(empty, [], {"id": np.array([], np.int32)}, crs=CRS, geometry_type="LineString")
    assert evaluate_roads(empty, ref, tmp_path / "r3.json")["apls"] == 0
    with pytest.raises(LabelError, match="reference .* has no line features; choose the reference road centerlines"):
        evaluate_roads(ref, empty, tmp_path / "bad1.json")
    poly = tmp_path / "poly.gpkg"
    write_vector(poly, [Polygon([(X0, Y0), (X0 + 10, Y0), (X0 + 10, Y0 + 10)])], {"id": np.array([1], np.int32)}, CRS)
    with pytest.raises(LabelError, match="must be lines.*Vectorize road masks first"):
        evaluate_roads(poly, ref, tmp_path / "bad2.json")
    with pytest.raises(VectorReadError, match="cannot read vector layer.*check that the file exists"):
        evaluate_roads(tmp_path / "missing.gpkg", ref, tmp_path / "bad3.json")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputError, match="cannot create the folder"):
        evaluate_roads(ref, ref, tmp_path / "a_file" / "r.json")
    for stem in ("bad1", "bad2", "bad3"):
        assert_clean_failure(tmp_path, *(tmp_path / f"{stem}.{ext}" for ext in ("json", "csv", "png")))
    # names with spaces and non-ASCII, in files and layers
    d = tmp_path / ODD_NAME
    d.mkdir()
    odd = lines_file(d / "référence ü.gpkg", [ROAD], layer="routes été")
    report = evaluate_roads(odd, odd, d / "rapport é.json", reference_layer="routes été", predicted_layer="routes été")
    assert report["apls"] == pytest.approx(1.0) and (d / "rapport é.csv").is_file()


def test_evaluate_disk_full_leaves_no_report_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The PNG, CSV and JSON are one report: when the last one (JSON) fails, the first two are not left behind."""
    ref = lines_file(tmp_path / "ref.gpkg", [ROAD])
    real = Path.write_text

    def write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        if ".partial-" in self.name:
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(OutputError, match="disk is full"):
        evaluate_roads(ref, ref, tmp_path / "out" / "report.json")
    monkeypatch.undo()
    assert_clean_failure(tmp_path, *(tmp_path / "out" / f"report.{ext}" for ext in ("json", "csv", "png")))
    assert evaluate_roads(ref, ref, tmp_path / "out" / "report.json")["apls"] == pytest.approx(1.0)
