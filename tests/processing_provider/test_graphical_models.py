"""The shipped graphical models (processing_provider/models/*.model3) in QGIS and through qgis_process.

Each model trains on one small built-in sample scene and maps/measures another one (a different
seed, placed beside it), as the models' TEST_* inputs intend. The chains are tiny (384 px scenes,
64 px chips, width-16 ResNet-18, 1-2 epochs), so the checks are about the wiring: every output
exists, lies on the right grid, and the reports were computed from this run's outputs and the given
reference (recomputed here independently), not about how well two epochs learn.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from core.vectors import read_vector
from tests.qgis_support import run_algorithm_json, run_qgis_process

pytestmark = pytest.mark.qgis

MODELS = {
    "roadlandcover:roadsfromcenterlines": ("Roads from centerlines", ["export", "train", "extract", "evaluate"],
                                           {"train:MODEL", "extract:ROAD_LINES", "evaluate:REPORT"}),
    "roadlandcover:landcoverfrompolygons": ("Land cover from polygons", ["export", "train", "classify", "assess"],
                                            {"train:MODEL", "classify:CLASSIFIED", "assess:REPORT"}),
}
SIZE_PX = 384
CELL_M = 0.5
# Small and fast on a 2-core CPU; the same values work on a GPU.
TRAINING = {"TILE_SIZE": 64, "ENCODER": 0, "BASE_WIDTH": 16, "BATCH_SIZE": 8, "DEVICE": 3}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """A training scene and a test scene beside it (east), with different content (seeds)."""
    from core.sample_data import SampleSceneConfig, generate_sample_scene

    root = tmp_path_factory.mktemp("model_scenes")
    train = generate_sample_scene(root / "train", SampleSceneConfig(size_px=SIZE_PX, seed=1))
    test = generate_sample_scene(root / "test", SampleSceneConfig(
        size_px=SIZE_PX, seed=2, origin_x=500_000.0 + SIZE_PX * CELL_M))
    return train, test


def test_models_are_algorithms_of_the_provider(qgis: Any) -> None:
    """Stable ids from the file names, display names from the models, every step and output resolved."""
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    for alg_id, (display, steps, outputs) in MODELS.items():
        alg = registry.algorithmById(alg_id)
        assert alg is not None, f"{alg_id} is not registered"
        assert alg.provider().id() == "roadlandcover" and alg.displayName() == display
        assert sorted(alg.childAlgorithms()) == sorted(steps)
        for child_id, child in alg.childAlgorithms().items():
            assert child.algorithm() is not None, f"{alg_id}: step {child_id} ({child.algorithmId()}) unresolved"
            ok, errors = alg.validateChildAlgorithm(child_id)
            assert ok, f"{alg_id}: step {child_id}: {errors}"
            names = {p.name() for p in child.algorithm().parameterDefinitions()}
            unknown = set(child.parameterSources()) - names
            assert not unknown, f"{alg_id}: step {child_id} sets parameters the algorithm lacks: {unknown}"
        assert {p.name() for p in alg.destinationParameterDefinitions()} == outputs
        # A fresh instance (what dialogs and qgis_process run) keeps the id and the outputs.
        instance = alg.create()
        assert instance.id() == alg_id
        assert {p.name() for p in instance.destinationParameterDefinitions()} == outputs


def test_qgis_process_lists_models_with_their_outputs() -> None:
    listing = run_qgis_process("list").stdout
    help_text = run_qgis_process("help", "roadlandcover:roadsfromcenterlines").stdout
    assert "roadlandcover:roadsfromcenterlines\tRoads from centerlines" in listing
    assert "roadlandcover:landcoverfrompolygons\tLand cover from polygons" in listing
    for name in ("IMAGERY", "CENTERLINES", "BUFFER_M", "EPOCHS", "TEST_IMAGERY", "TEST_CENTERLINES",
                 "train:MODEL", "extract:ROAD_LINES", "evaluate:REPORT"):
        assert f"\n{name}:" in help_text, f"{name} missing from qgis_process help"


def test_land_cover_model_through_qgis_process(scenes: tuple[Any, Any], tmp_path: Path) -> None:
    train, test = scenes
    out = tmp_path / "out"
    proc, payload = run_algorithm_json("roadlandcover:landcoverfrompolygons", {
        "IMAGERY": train.image, "POLYGONS": train.landcover_polygons, "CLASS_FIELD": "classvalue",
        "CLASS_NAME_FIELD": "classname", "TEST_IMAGERY": test.image, "REFERENCE": test.landcover_polygons,
        "REFERENCE_FIELD": "classvalue", "EPOCHS": 1, "LEARNING_RATE": 0.01, **TRAINING,
        "train:MODEL": out / "landcover_model.zip", "classify:CLASSIFIED": out / "classified.tif",
        "assess:REPORT": out / "accuracy.json"})
    assert payload is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = payload["results"]
    assert results == {"train:MODEL": str(out / "landcover_model.zip"),
                       "classify:CLASSIFIED": str(out / "classified.tif"), "assess:REPORT": str(out / "accuracy.json")}
    log = "\n".join(payload["log"]["info"])
    assert "Executed 4 algorithms" in log

    with zipfile.ZipFile(out / "landcover_model.zip") as zf:
        definition = json.loads(zf.read("model.json"))
    assert [c["value"] for c in definition["classes"]] == [1, 2, 3, 4, 5, 6]
    assert [c["name"] for c in definition["classes"]][:2] == ["water", "forest"]  # CLASS_NAME_FIELD reached export
    assert definition["tile_size_px"] == 64 and definition["architecture"]["name"] == "unet"

    # The classified raster covers the test scene, on its grid, with the trained classes.
    with rasterio.open(out / "classified.tif") as cls, rasterio.open(test.image) as img:
        assert (cls.crs, cls.transform, cls.shape) == (img.crs, img.transform, img.shape)
        pred = cls.read(1)
        assert cls.nodata == 255
        transform, shape = cls.transform, cls.shape
    assert set(np.unique(pred).tolist()) <= {1, 2, 3, 4, 5, 6, 255}
    assert (pred != 255).mean() > 0.9

    # The report is this classification against the test polygons: recompute overall accuracy.
    report = json.loads((out / "accuracy.json").read_text())
    for key in ("overall_accuracy", "kappa", "miou", "per_class", "confusion_matrix"):
        assert key in report
    from rasterio.features import rasterize

    polygons = read_vector(test.landcover_polygons)
    reference = rasterize(list(zip(polygons.geometries, polygons.attributes["classvalue"].astype(int))),
                          out_shape=shape, transform=transform, fill=0, dtype="int32")
    valid = (reference != 0) & (pred != 255)
    assert report["evaluated_pixels"] == int(valid.sum())
    assert report["overall_accuracy"] == pytest.approx(float((pred[valid] == reference[valid]).mean()), abs=1e-9)
    assert 0.0 <= report["miou"] <= 1.0 and -1.0 <= report["kappa"] <= 1.0


def test_roads_model_through_qgis_process(scenes: tuple[Any, Any], tmp_path: Path) -> None:
    train, test = scenes
    out = tmp_path / "out"
    proc, payload = run_algorithm_json("roadlandcover:roadsfromcenterlines", {
        "IMAGERY": train.image, "CENTERLINES": train.road_centerlines, "BUFFER_M": 2.0,
        "TEST_IMAGERY": test.image, "TEST_CENTERLINES": test.road_centerlines, "EPOCHS": 1,
        "LEARNING_RATE": 0.005, **TRAINING,
        "train:MODEL": out / "road_model.zip", "extract:ROAD_LINES": out / "roads.gpkg",
        "evaluate:REPORT": out / "road_report.json"})
    assert payload is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert set(payload["results"]) == {"train:MODEL", "extract:ROAD_LINES", "evaluate:REPORT"}
    log = "\n".join(payload["log"]["info"])
    # Stride is half the chip size (an expression in the model): 11 x 11 chip positions on 384 px.
    assert "121 candidate chips" in log, log[:2000]
    assert "Executed 4 algorithms" in log

    with zipfile.ZipFile(out / "road_model.zip") as zf:
        definition = json.loads(zf.read("model.json"))
    assert definition["task"] == "roads"

    roads = read_vector(out / "roads.gpkg")  # readable, in the imagery's CRS
    with rasterio.open(test.image) as img:
        assert rasterio.crs.CRS.from_user_input(roads.crs) == img.crs
        left, bottom, right, top = img.bounds
    for geom in roads.geometries:
        x0, y0, x1, y1 = geom.bounds
        assert left - 1 <= x0 and x1 <= right + 1 and bottom - 1 <= y0 and y1 <= top + 1

    # The report compares this run's lines with the TEST centerlines (lengths recomputed here).
    report = json.loads((out / "road_report.json").read_text())
    for key in ("apls", "apls_gt_to_prop", "apls_prop_to_gt", "relaxed_precision", "relaxed_recall", "parameters"):
        assert key in report
    assert 0.0 <= report["apls"] <= 1.0
    reference = read_vector(test.road_centerlines)
    assert report["reference_lines"] == len(reference.geometries)
    assert report["reference_length_m"] == pytest.approx(sum(g.length for g in reference.geometries), rel=1e-6)
    assert report["proposal_lines"] == len(roads.geometries)
    assert report["proposal_length_m"] == pytest.approx(sum(g.length for g in roads.geometries), rel=1e-6, abs=1e-6)
    assert report["parameters"]["snap_distance_m"] == 4.0


@pytest.mark.slow
def test_roads_model_learns_roads(scenes: tuple[Any, Any], tmp_path: Path) -> None:
    """With a few more epochs the same model finds roads on the unseen scene."""
    train, test = scenes
    out = tmp_path / "out"
    proc, payload = run_algorithm_json("roadlandcover:roadsfromcenterlines", {
        "IMAGERY": train.image, "CENTERLINES": train.road_centerlines, "TEST_IMAGERY": test.image,
        "TEST_CENTERLINES": test.road_centerlines, "EPOCHS": 10, "LEARNING_RATE": 0.005,
        **{**TRAINING, "BATCH_SIZE": 4},
        "train:MODEL": out / "road_model.zip", "extract:ROAD_LINES": out / "roads.gpkg",
        "evaluate:REPORT": out / "road_report.json"})
    assert payload is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "road_report.json").read_text())
    assert report["proposal_length_m"] > 0.3 * report["reference_length_m"], report
    assert report["relaxed_recall"] > 0.3 and report["relaxed_precision"] > 0.3, report
