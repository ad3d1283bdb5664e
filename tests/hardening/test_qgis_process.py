"""A representative subset of the bad-input matrix through the real ``scripts/qgis_process``.

Each call costs a few seconds (QGIS starts every time), so one call checks one case of each kind:
what QGIS adds (its own layer loading, output handling, error printing) on top of the core matrix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely

from core.rasterize_labels import transform_geometries
from core.vectors import read_vector, write_vector
from tests.hardening.support import (
    CRS,
    ODD_NAME,
    X0,
    Y0,
    box_json,
    definition,
    geojson,
    make_package,
    make_raster,
    partials,
    write_single,
)
from tests.hardening.support import write_raster as write_raster_3d
from tests.qgis_support import run_algorithm_json

pytestmark = pytest.mark.qgis


@pytest.fixture(autouse=True)
def _needs_qgis() -> None:
    pytest.importorskip("qgis.core", reason="QGIS Python bindings are not installed (run make setup)")


def failed(proc: Any, *phrases: str) -> None:
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-2000:]
    for phrase in phrases:
        assert phrase in text, (phrase, text[-3000:])
    assert "This is a bug" not in text and "Traceback" not in text, text[-3000:]


def test_export_names_other_crs_and_missing_field(tmp_path: Path) -> None:
    d = tmp_path / ODD_NAME
    d.mkdir()
    raster = make_raster(d / "imagé ü.tif", size=64)
    geo = transform_geometries([shapely.box(X0, Y0 - 32, X0 + 32, Y0)], CRS, "EPSG:4326")
    labels = write_vector(d / "étiquettes ü.gpkg", geo, {"clâsse": np.array([7], np.int32)}, crs="EPSG:4326")
    proc, payload = run_algorithm_json("roadlandcover:exporttrainingdata", {
        "INPUT_RASTER": raster, "INPUT_LABELS": labels, "CLASS_FIELD": "clâsse", "TILE_SIZE_X": 32,
        "TILE_SIZE_Y": 32, "STRIDE_X": 32, "STRIDE_Y": 32, "OUTPUT_FOLDER": d / "sortie é"})
    assert payload is not None, proc.stdout[-2000:]
    desc = json.loads((d / "sortie é" / "dataset.json").read_text(encoding="utf-8"))
    assert desc["classes"][0]["value"] == 7 and desc["classes"][0]["pixels"] == pytest.approx(1024, abs=40)
    proc, _ = run_algorithm_json("roadlandcover:exporttrainingdata", {
        "INPUT_RASTER": raster, "INPUT_LABELS": labels, "CLASS_FIELD": "landuse", "OUTPUT_FOLDER": d / "bad"},
        check=False)
    failed(proc, "no field 'landuse'", "choose one of them")
    assert not (d / "bad").exists() and partials(d) == []


def test_classify_refuses_unsafe_and_broken_models(tmp_path: Path) -> None:
    import zipfile

    pkg = make_package(tmp_path / "onehot.zip", "test_onehot", 1, [0, 1, 2, 3, 4])
    raster = write_raster_3d(tmp_path / "in.tif", np.zeros((1, 16, 16), np.uint8))
    with zipfile.ZipFile(pkg) as src, zipfile.ZipFile(tmp_path / "slip.zip", "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("../../escaped.txt", "owned")
    proc, _ = run_algorithm_json("roadlandcover:classifypixels", {
        "INPUT_RASTER": raster, "MODEL": tmp_path / "slip.zip", "OUTPUT_CLASSIFIED": tmp_path / "o1.tif"}, check=False)
    failed(proc, "zip slip")
    assert not (tmp_path / "o1.tif").exists() and not list(tmp_path.parent.rglob("escaped.txt"))
    data = pkg.read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[: len(data) // 2])
    proc, _ = run_algorithm_json("roadlandcover:classifypixels", {
        "INPUT_RASTER": raster, "MODEL": tmp_path / "cut.zip", "OUTPUT_CLASSIFIED": tmp_path / "o2.tif"}, check=False)
    failed(proc, "truncated or corrupt", "re-export or re-download")
    assert not (tmp_path / "o2.tif").exists() and partials(tmp_path) == []


def test_classify_unwritable_output_and_existing_output(tmp_path: Path) -> None:
    from core.model_package import save_package
    from core.models import build_model

    # A real (registered) architecture: qgis_process does not see the test-only models.
    d = definition("unet", 1, [1, 2, 3]) | {"architecture": {"name": "unet", "in_channels": 1, "num_classes": 3,
                                                              "options": {"encoder": "resnet18", "base_width": 8}}}
    pkg = save_package(tmp_path / "unet.zip", d, build_model("unet", 1, 3, encoder="resnet18", base_width=8).state_dict())
    data = np.random.default_rng(0).integers(0, 5, (1, 20, 24)).astype(np.uint8)
    raster = write_raster_3d(tmp_path / "in.tif", data)
    (tmp_path / "a_file").write_text("x")
    proc, _ = run_algorithm_json("roadlandcover:classifypixels", {
        "INPUT_RASTER": raster, "MODEL": pkg, "OUTPUT_CLASSIFIED": tmp_path / "a_file" / "o.tif"}, check=False)
    failed(proc, "cannot create the folder")
    (tmp_path / "o.tif").write_bytes(b"an older result")
    proc, payload = run_algorithm_json("roadlandcover:classifypixels", {
        "INPUT_RASTER": raster, "MODEL": pkg, "OUTPUT_CLASSIFIED": tmp_path / "o.tif"})
    assert payload is not None, proc.stdout[-2000:]
    with rasterio.open(tmp_path / "o.tif") as out, rasterio.open(raster) as src:
        assert out.transform == src.transform and out.shape == src.shape
        assert set(np.unique(out.read(1)).tolist()) <= {1, 2, 3}
    assert partials(tmp_path) == []


def test_vectorize_nodata_only_and_accuracy_null_classes(tmp_path: Path) -> None:
    raster = write_single(tmp_path / "nd.tif", np.full((64, 64), -1, np.int16), nodata=-1)
    proc, payload = run_algorithm_json("roadlandcover:vectorizeroads", {
        "INPUT_RASTER": raster, "OUTPUT_LINES": tmp_path / "l.gpkg", "OUTPUT_NODES": tmp_path / "n.gpkg"})
    assert payload is not None, proc.stdout[-2000:]
    assert len(read_vector(tmp_path / "l.gpkg")) == 0 and len(read_vector(tmp_path / "n.gpkg")) == 0
    cls = write_raster_3d(tmp_path / "cls.tif", np.ones((1, 8, 8), np.uint8), origin=(X0, Y0))
    ref = geojson(tmp_path / "ref.geojson", [(box_json(X0, Y0 - 8, X0 + 4, Y0), {"classvalue": 1}),
                                             (box_json(X0 + 4, Y0 - 8, X0 + 8, Y0), {"classvalue": None})])
    proc, _ = run_algorithm_json("roadlandcover:assessaccuracy", {
        "CLASSIFIED": cls, "REFERENCE": ref, "CLASS_FIELD": "classvalue", "OUTPUT_REPORT": tmp_path / "acc.json"},
        check=False)
    failed(proc, "is empty in 1 feature(s)", "fill in their class values")
    assert not (tmp_path / "acc.json").exists() and not (tmp_path / "acc.csv").exists()
