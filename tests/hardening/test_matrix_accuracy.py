"""Bad-input matrix of Assess Accuracy (core.accuracy.assess_accuracy): reference polygons and rasters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely

from core.accuracy import AccuracyConfig, assess_accuracy
from core.errors import LabelError, OutputError, RasterReadError
from core.rasterize_labels import transform_geometries
from core.vectors import write_vector
from tests.hardening.support import ODD_NAME, assert_clean_failure, box_json, geojson, partials, write_raster

X0, Y0 = 500000.0, 5000000.0  # write_raster's default origin, 1 m cells
CRS = "EPSG:32633"
REPORT_FILES = ("acc.json", "acc.csv", "acc_confusion.csv", "acc.html")


def classified(tmp: Path, fill: int | None = None) -> Path:
    data = np.ones((1, 8, 8), np.uint8)
    data[:, :, 4:] = 2
    if fill is not None:
        data[:] = fill
    return write_raster(tmp / "cls.tif", data, nodata=255)


def named_classified(tmp: Path) -> Path:
    import rasterio

    path = classified(tmp)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(CLASS_NAMES="1:forest,2:water")
    return path


def polys(tmp: Path, name: str = "ref.gpkg", values: Any = (1, 2), crs: str = CRS, field: str = "classvalue") -> Path:
    geoms = [shapely.box(X0, Y0 - 8, X0 + 4, Y0), shapely.box(X0 + 4, Y0 - 8, X0 + 8, Y0)]
    if crs != CRS:
        geoms = transform_geometries(geoms, CRS, crs)
    arr = np.array(values, dtype=object if isinstance(values[0], str) else np.int32)
    return write_vector(tmp / name, geoms, {field: arr}, crs=crs)


def run(tmp: Path, reference: Path, cls: Path | None = None, out: Path | None = None, **kw: Any) -> Any:
    return assess_accuracy(AccuracyConfig(cls or classified(tmp), reference, out or tmp / "acc.json",
                                          **{"class_field": "classvalue", **kw}))


CASES: dict[str, tuple[Any, ...]] = {
    # name: (builder(tmp) -> kwargs for run, expected error, message)
    #    or (builder, None, expected overall accuracy [, evaluated pixels when not all 64])
    "polygons in another CRS": (lambda t: {"reference": polys(t, crs="EPSG:4326")}, None, 1.0),
    "reference outside the raster": (
        lambda t: {"reference": write_vector(t / "far.gpkg", [shapely.box(0, 0, 10, 10)],
                                             {"classvalue": np.array([1], np.int32)}, crs=CRS)},
        LabelError, r"no pixel .* has a reference value.*check that they overlap"),
    "empty reference layer": (
        lambda t: {"reference": write_vector(t / "e.gpkg", [], {"classvalue": np.array([], np.int32)}, crs=CRS,
                                             geometry_type="Polygon")},
        LabelError, r"holds no features; nothing to assess against"),
    "invalid and multi-part polygons": (
        lambda t: {"reference": geojson(t / "odd.geojson", [
            ({"type": "MultiPolygon", "coordinates": [box_json(X0, Y0 - 8, X0 + 2, Y0)["coordinates"],
                                                      box_json(X0 + 2, Y0 - 8, X0 + 4, Y0)["coordinates"]]},
             {"classvalue": 1}),
            ({"type": "Polygon", "coordinates": [[[X0 + 4, Y0], [X0 + 8, Y0 - 8], [X0 + 8, Y0], [X0 + 4, Y0 - 8],
                                                  [X0 + 4, Y0]]]}, {"classvalue": 2})])},
        None, (1.0, 32 + 16)),  # the bow tie covers two triangles: half of its 32 px box
    "null class value": (
        lambda t: {"reference": geojson(t / "null.geojson", [(box_json(X0, Y0 - 8, X0 + 4, Y0), {"classvalue": 1}),
                                                             (box_json(X0 + 4, Y0 - 8, X0 + 8, Y0), {"classvalue": None})])},
        LabelError, r"is empty in 1 feature\(s\); fill in their class values"),
    # Names are numbered as the export numbers them (alphabetically) when the classified raster has none.
    "text class value": (lambda t: {"reference": polys(t, values=("forest", "water"))}, None, 1.0),
    "text class value unknown to the classified raster": (
        lambda t: {"reference": polys(t, values=("forest", "lava")), "cls": named_classified(t)},
        LabelError, r"holds class names the classified raster does not have: lava; its classes are 1 forest, 2 water"),
    "class field missing": (lambda t: {"reference": polys(t), "class_field": "landuse"},
                            LabelError, r"has no field 'landuse'; its fields are classvalue"),
    "nodata-only classified raster": (lambda t: {"reference": polys(t), "cls": classified(t, fill=255)},
                                      LabelError, r"no pixel .* has a reference value"),
    "16-bit classified and reference rasters": (
        lambda t: {"reference": write_raster(t / "ref16.tif", (np.arange(64).reshape(1, 8, 8) % 8 // 4 + 1)
                                             .astype(np.uint16)),
                   "cls": write_raster(t / "cls16.tif", (np.arange(64).reshape(1, 8, 8) % 8 // 4 + 1).astype(np.int16)),
                   "class_field": None},
        None, 1.0),
    "output cannot be written": (lambda t: {"reference": polys(t), "out": (t / "f").write_text("x") and t / "f" / "a.json"},
                                 OutputError, r"cannot create the folder"),
    "output exists (replaced)": (lambda t: {"reference": polys(t), "out": (t / "acc.json").write_text("{}") and t / "acc.json"},
                                 None, 1.0),
    "unreadable classified raster": (lambda t: {"reference": polys(t), "cls": t / "missing.tif"},
                                     RasterReadError, r"cannot open the classified raster"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_accuracy_matrix(name: str, tmp_path: Path) -> None:
    build, error, expected = CASES[name]
    kwargs = build(tmp_path)
    out = kwargs.get("out") or tmp_path / "acc.json"
    if error is not None:
        with pytest.raises(error, match=expected):
            run(tmp_path, **kwargs)
        assert_clean_failure(tmp_path, *(out.with_name(n.replace("acc", out.stem)) for n in REPORT_FILES))
    else:
        result = run(tmp_path, **kwargs)
        accuracy, pixels = expected if isinstance(expected, tuple) else (expected, 64)
        assert result.metrics.overall_accuracy == pytest.approx(accuracy)
        assert result.metrics.evaluated_pixels == pixels and partials(tmp_path) == []
    assert run(tmp_path, polys(tmp_path, "valid.gpkg"), out=tmp_path / "valid" / "acc.json")["overall_accuracy"] == 1.0


def test_accuracy_disk_full_leaves_no_report_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.write_text

    def write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        if ".partial-" in self.name and self.suffix == ".json":
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(OutputError, match="disk is full"):
        run(tmp_path, polys(tmp_path))
    monkeypatch.undo()
    assert_clean_failure(tmp_path, *(tmp_path / n for n in REPORT_FILES))
    assert run(tmp_path, polys(tmp_path, "b.gpkg"))["overall_accuracy"] == 1.0


def test_accuracy_names_with_spaces_and_non_ascii(tmp_path: Path) -> None:
    d = tmp_path / ODD_NAME
    d.mkdir()
    ref = polys(d, "référence ü.gpkg", field="clâsse é")
    result = assess_accuracy(AccuracyConfig(classified(d), ref, d / "rapport é" / "précision.json",
                                            class_field="clâsse é"))
    assert result.metrics.overall_accuracy == 1.0 and (d / "rapport é" / "précision.html").is_file()
