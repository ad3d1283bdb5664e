"""Bad-input matrix of Train Deep Learning Model (core.training.train_model) on a tiny exported folder
(9 chips of 64 px, U-Net ResNet-18 width 8, one epoch: about a second per run on two cores)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely

from core.chips import ExportConfig, export_training_data
from core.errors import ConfigError, OutputError, RasterReadError
from core.inference import ClassifyConfig, classify_pixels
from core.training import TrainConfig, train_model
from core.vectors import write_vector
from tests.hardening.support import CRS, ODD_NAME, X0, Y0, assert_clean_failure, disk_full, make_raster, partials

TINY = {"model": "unet", "encoder": "resnet18", "base_width": 8, "epochs": 1, "batch_size": 2, "patience": 0,
        "learning_rate": 0.01, "val_split": "random", "device": "cpu", "preview_chips": 1}


def export_folder(out: Path, count: int = 3, dtype: str = "uint8", size: int = 192) -> Path:
    """A raster whose left half is class 1 and right half class 2, exported as 64 px chips."""
    out.mkdir(parents=True, exist_ok=True)
    raster = make_raster(out.parent / f"{out.name}_image.tif", size=size, count=count, dtype=dtype)
    labels = out.parent / f"{out.name}_labels.gpkg"
    write_vector(labels, [shapely.box(X0, Y0 - size, X0 + size / 2, Y0), shapely.box(X0 + size / 2, Y0 - size, X0 + size, Y0)],
                 {"classvalue": np.array([1, 2], np.int32)}, crs=CRS)
    export_training_data(ExportConfig(str(raster), str(labels), str(out), tile_size_px=(64, 64), stride_px=(64, 64)))
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_folder(tmp_path_factory.mktemp("train") / "chips")


def copy_folder(folder: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(folder, tmp / "chips"))


def valid_run(folder: Path, tmp: Path) -> None:
    result = train_model(folder, tmp / "valid_after" / "model.zip", TrainConfig(**TINY))
    assert result.package.is_file() and result.epochs_run == 1


def test_training_folder_problems(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.zip"
    with pytest.raises(ConfigError, match="has no dataset.json.*run 'Export training data' first"):
        train_model(tmp_path, out, TrainConfig(**TINY))
    bad = copy_folder(folder, tmp_path)
    (bad / "dataset.json").write_text('{"format": "road-landcover-chips", "bands": [', encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON.*export the training data again"):
        train_model(bad, out, TrainConfig(**TINY))
    shutil.rmtree(bad)
    bad = copy_folder(folder, tmp_path)
    (bad / "labels" / "000001.tif").unlink()
    with pytest.raises(ConfigError, match="lack an image or label"):
        train_model(bad, out, TrainConfig(**TINY))
    shutil.rmtree(bad)
    bad = copy_folder(folder, tmp_path)
    for chip in (bad / "images").iterdir():
        chip.write_bytes(chip.read_bytes()[:300])  # truncated chips
    with pytest.raises(RasterReadError, match="cannot read chip .*export the training data again"):
        train_model(bad, out, TrainConfig(**TINY))
    assert_clean_failure(tmp_path, out)
    valid_run(folder, tmp_path)


def test_training_output_problems(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputError, match="cannot create the folder"):
        train_model(folder, tmp_path / "a_file" / "m.zip", TrainConfig(**TINY))
    # exists: replaced (atomically, by the new package)
    (tmp_path / "m.zip").write_bytes(b"an older model")
    result = train_model(folder, tmp_path / "m.zip", TrainConfig(**TINY))
    import zipfile

    assert zipfile.is_zipfile(result.package)
    before = result.package.read_bytes()
    # disk full while the package is written: the previous package stays, no temporary remains
    import core.model_package

    disk_full(monkeypatch, core.model_package.zipfile.ZipFile, "writestr", after=1)
    with pytest.raises(OutputError, match="disk is full.*free some space"):
        train_model(folder, tmp_path / "m.zip", TrainConfig(**TINY))
    with pytest.raises(OutputError, match="disk is full"):
        train_model(folder, tmp_path / "fresh.zip", TrainConfig(**TINY))
    monkeypatch.undo()
    assert (tmp_path / "m.zip").read_bytes() == before
    assert_clean_failure(tmp_path, tmp_path / "fresh.zip")
    valid_run(folder, tmp_path)


def test_training_names_with_spaces_and_non_ascii(folder: Path, tmp_path: Path) -> None:
    d = tmp_path / ODD_NAME
    d.mkdir()
    odd = Path(shutil.copytree(folder, d / "données ü"))
    result = train_model(odd, d / "modèle é.zip", TrainConfig(**TINY))
    assert result.package == d / "modèle é.zip" and (d / "modèle é_training" / "history.csv").is_file()
    assert partials(tmp_path) == []


def test_224_bands_and_int16_export_train_classify(tmp_path: Path) -> None:
    """A 224-band Int16 raster (hyperspectral, like EnMAP) through the whole chain."""
    folder = export_folder(tmp_path / "hyper", count=224, dtype="int16", size=128)
    desc = json.loads((folder / "dataset.json").read_text())
    assert len(desc["bands"]) == 224 and desc["image_dtype"] == "int16"
    result = train_model(folder, tmp_path / "hyper.zip", TrainConfig(**TINY))
    out = tmp_path / "classified.tif"
    classify_pixels(ClassifyConfig(tmp_path / "hyper_image.tif", result.package, out, device="cpu"))
    with rasterio.open(out) as dst, rasterio.open(tmp_path / "hyper_image.tif") as src:
        assert dst.shape == src.shape and dst.transform == src.transform
        assert set(np.unique(dst.read(1)).tolist()) <= {1, 2}
