"""Cancel at every stage: a feedback whose is_canceled() turns true after N progress reports.

Each step must stop promptly (CanceledError, or for training after an epoch: a package from the best
checkpoint), leave nothing under its final names that looks finished, keep an earlier result of the same
name untouched, and leave the process able to run the step again.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from core.chips import ExportConfig, export_training_data
from core.errors import CanceledError
from core.inference import ClassifyConfig, classify_pixels
from core.model_package import load_package
from core.roads import VectorizeConfig, extract_roads, vectorize_roads
from core.training import TrainConfig, train_model
from tests.hardening.support import (
    CancelAfterProgress,
    Collect,
    assert_clean_failure,
    make_package,
    make_raster,
    partials,
    squares,
    write_raster,
    write_single,
)
from tests.hardening.test_matrix_training import TINY, export_folder

PROMPT_S = 3.0  # from the cancel request to the return, on a loaded 2-core machine


def prompt(fb: CancelAfterProgress) -> float:
    assert fb.canceled_at is not None, "the step never reported progress"
    return time.perf_counter() - fb.canceled_at


def test_cancel_export(tmp_path: Path) -> None:
    raster = make_raster(tmp_path / "r.tif", size=192)
    labels = squares(tmp_path / "l.gpkg")
    cfg = ExportConfig(str(raster), str(labels), str(tmp_path / "out"), tile_size_px=(16, 16), stride_px=(16, 16),
                       only_tiles_with_features=False)
    first = export_training_data(cfg)  # 144 chips: an earlier export under the same name
    before = {p: p.stat().st_mtime_ns for p in first.folder.rglob("*")}
    fb = CancelAfterProgress(2)  # progress is reported every 16 chips: stops at about chip 32 of 144
    with pytest.raises(CanceledError, match="canceled"):
        export_training_data(cfg, fb)
    assert prompt(fb) < PROMPT_S
    assert {p: p.stat().st_mtime_ns for p in first.folder.rglob("*")} == before and partials(tmp_path) == []
    fresh = ExportConfig(**{**cfg.to_dict(), "output_folder": str(tmp_path / "fresh")})
    with pytest.raises(CanceledError):
        export_training_data(fresh, CancelAfterProgress(2))
    assert_clean_failure(tmp_path, tmp_path / "fresh")  # no folder at all: a folder with dataset.json is complete
    assert export_training_data(fresh).chip_count == 144


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_folder(tmp_path_factory.mktemp("cancel_train") / "chips")


def test_cancel_training(folder: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(**{**TINY, "epochs": 3})
    # Count the progress reports of one epoch in an uncanceled run (one per training batch).
    counter = Collect()
    train_model(folder, tmp_path / "full.zip", TrainConfig(**{**TINY, "epochs": 2}), counter)
    per_epoch = (counter.calls - 3) // 2  # minus the start (1 %), after set-up (5 %) and the end (100 %)
    assert per_epoch >= 2
    # Canceled during the second epoch: the package is the best checkpoint (epoch 1), marked canceled.
    fb = CancelAfterProgress(2 + per_epoch + 1)
    result = train_model(folder, tmp_path / "m.zip", cfg, fb)
    assert prompt(fb) < PROMPT_S + 2  # plus the final validation and package writing
    assert result.stopped == "canceled" and result.epochs_run == 1 and result.best_epoch == 1
    best = torch.load(result.report_dir / "checkpoint_best.pt", weights_only=True)["model"]
    package = load_package(result.package).model.state_dict()
    assert all(torch.equal(best[k], package[k]) for k in best)
    assert load_package(result.package).definition["training"]["stopped"] == "canceled"
    # Canceled in the first epoch: nothing to keep, no package, a clear error.
    fb = CancelAfterProgress(3)
    with pytest.raises(CanceledError, match="before the first epoch finished; no model was saved"):
        train_model(folder, tmp_path / "none.zip", cfg, fb)
    assert prompt(fb) < PROMPT_S
    assert_clean_failure(tmp_path, tmp_path / "none.zip")
    assert train_model(folder, tmp_path / "again.zip", TrainConfig(**TINY)).stopped == "completed"


def test_cancel_inference(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "onehot", "test_onehot", 1, [0, 1, 2, 3, 4])
    data = np.random.default_rng(0).integers(0, 5, (1, 256, 256)).astype(np.uint8)
    raster = write_raster(tmp_path / "in.tif", data)
    out, prob = tmp_path / "out.tif", tmp_path / "prob.tif"
    cfg = ClassifyConfig(raster, pkg, out, output_probability=prob, tile_size_px=16, padding_px=2, batch_size=4,
                         device="cpu")
    classify_pixels(cfg)
    before = out.read_bytes(), prob.read_bytes()
    fb = CancelAfterProgress(3)
    with pytest.raises(CanceledError, match="classify pixels"):
        classify_pixels(cfg, fb)
    assert prompt(fb) < PROMPT_S
    assert (out.read_bytes(), prob.read_bytes()) == before and partials(tmp_path) == []
    fresh = ClassifyConfig(raster, pkg, tmp_path / "fresh.tif", output_probability=tmp_path / "fresh_p.tif",
                           tile_size_px=16, padding_px=2, batch_size=4, device="cpu")
    with pytest.raises(CanceledError):
        classify_pixels(fresh, CancelAfterProgress(3))
    assert_clean_failure(tmp_path, tmp_path / "fresh.tif", tmp_path / "fresh_p.tif",
                         tmp_path / "fresh.qml", Path(str(tmp_path / "fresh.tif") + ".aux.xml"))
    classify_pixels(fresh)
    with rasterio.open(tmp_path / "fresh.tif") as src:
        np.testing.assert_array_equal(src.read(), data)


def big_mask(size: int = 1024) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[:, size // 2 - 2: size // 2 + 2] = 1
    m[size // 3: size // 3 + 4, :] = 1
    return m


def test_cancel_vectorization(tmp_path: Path) -> None:
    raster = write_single(tmp_path / "mask.tif", big_mask())
    cfg = VectorizeConfig(block_size_px=256)  # 16 blocks, progress after each
    lines, nodes = tmp_path / "roads.gpkg", tmp_path / "nodes.gpkg"
    first = vectorize_roads(raster, lines, nodes, cfg)
    before = lines.read_bytes(), nodes.read_bytes()
    fb = CancelAfterProgress(3)
    with pytest.raises(CanceledError, match="road vectorization"):
        vectorize_roads(raster, lines, nodes, cfg, fb)
    assert prompt(fb) < PROMPT_S
    assert (lines.read_bytes(), nodes.read_bytes()) == before and partials(tmp_path) == []
    with pytest.raises(CanceledError):
        vectorize_roads(raster, tmp_path / "l2.gpkg", tmp_path / "n2.gpkg", cfg, CancelAfterProgress(3))
    assert_clean_failure(tmp_path, tmp_path / "l2.gpkg", tmp_path / "n2.gpkg")
    again = vectorize_roads(raster, tmp_path / "l2.gpkg", tmp_path / "n2.gpkg", cfg)
    assert again.edge_count == first.edge_count == 4 and again.junction_count == first.junction_count == 1


def test_cancel_extract_roads(tmp_path: Path) -> None:
    from tests.core.test_roads_extract import road_package

    pkg = road_package(tmp_path / "roads")
    raster = make_raster(tmp_path / "img.tif", size=128, count=4, cell=0.5)
    outs = (tmp_path / "prob.tif", tmp_path / "lines.gpkg", tmp_path / "nodes.gpkg")
    fb = CancelAfterProgress(1)  # during inference
    with pytest.raises(CanceledError):
        extract_roads(raster, pkg, *outs, device="cpu", batch_size=1, feedback=fb)
    assert prompt(fb) < PROMPT_S
    assert_clean_failure(tmp_path, *outs, tmp_path / "prob_mask.tif")
    result = extract_roads(raster, pkg, *outs, device="cpu", feedback=Collect())
    assert result.lines.is_file() and result.nodes.is_file()
