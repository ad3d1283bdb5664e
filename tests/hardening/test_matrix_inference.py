"""Bad-input matrix of Classify Pixels (core.inference.classify_pixels) and of the model package it loads.

Packages are the tiny registered test models of tests/core/test_inference.py (an identity "one-hot" model
whose argmax reproduces band 1, and a two-layer convolution for any band count), so every case runs in
milliseconds and a correct result can be checked pixel by pixel.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch

from core.errors import ConfigError, ModelPackageError, OutputError, RasterReadError
from core.inference import CLASS_NODATA, ClassifyConfig, ClassifyResult, classify_pixels
from core.model_package import save_package
from core.models import build_model
from tests.hardening.support import (
    ODD_NAME,
    Collect,
    assert_clean_failure,
    definition,
    disk_full,
    make_package,
    partials,
    write_raster,
)

VALUES = [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("packages")
    return {
        "onehot": make_package(d / "onehot", "test_onehot", 1, VALUES),
        "onehot_zip": make_package(d / "onehot.zip", "test_onehot", 1, VALUES),
        "conv3": make_package(d / "conv3.zip", "test_tinyconv", 3, [1, 2, 3]),
        "conv224": make_package(d / "conv224", "test_tinyconv", 224, [1, 2]),
    }


def classes_raster(path: Path, dtype: str = "uint8", h: int = 40, w: int = 48, cell: float = 1.0,
                   nodata: float | None = None) -> tuple[Path, np.ndarray]:
    data = (np.add.outer(np.arange(h) // 8, np.arange(w) // 8) % 5).astype(dtype)
    return write_raster(path, data[None], cell=cell, nodata=nodata), data


@dataclasses.dataclass
class Case:
    build: Callable[[Path, dict[str, Path], pytest.MonkeyPatch], ClassifyConfig]
    error: type[Exception] | None = None
    match: str = ""
    check: Callable[[ClassifyResult, Path, Collect], None] | None = None


def cfg(raster: Path, model: Path, out: Path, **kw: Any) -> ClassifyConfig:
    return ClassifyConfig(raster, model, out, **{"tile_size_px": 16, "padding_px": 2, "device": "cpu", **kw})


def read1(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def identity_case(dtype: str) -> Case:
    """A 1-band raster of this dtype holding class indices 0-4 comes back unchanged through the identity model."""
    def build(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
        raster, _ = classes_raster(tmp / "in.tif", dtype)
        return cfg(raster, pk["onehot"], tmp / "out.tif")

    def check(res: ClassifyResult, tmp: Path, fb: Collect) -> None:
        with rasterio.open(tmp / "in.tif") as src:
            expected = src.read(1).astype(np.uint8)
        np.testing.assert_array_equal(read1(res.output_classified), expected)

    return Case(build, check=check)


def band_mismatch(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    raster, _ = classes_raster(tmp / "in.tif")
    return cfg(raster, pk["conv3"], tmp / "out.tif")


def bands_224(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    data = np.random.default_rng(0).integers(0, 4000, (224, 24, 20)).astype(np.int16)
    return cfg(write_raster(tmp / "hyper.tif", data), pk["conv224"], tmp / "out.tif")


def check_224(res: ClassifyResult, tmp: Path, fb: Collect) -> None:
    out = read1(res.output_classified)
    assert out.shape == (24, 20) and set(np.unique(out)) <= {1, 2}


def classes_inconsistent(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    d = definition("test_tinyconv", 1, [1, 2, 3])
    d["architecture"]["num_classes"] = 2  # network with 2 outputs, package lists 3 classes
    pkg = save_package(tmp / "bad_classes", d, build_model("test_tinyconv", 1, 2).state_dict())
    raster, _ = classes_raster(tmp / "in.tif")
    return cfg(raster, pkg, tmp / "out.tif")


def weights_do_not_fit(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    pkg = save_package(tmp / "misfit", definition("test_tinyconv", 1, [1, 2, 3]),
                       build_model("test_tinyconv", 1, 5).state_dict())
    raster, _ = classes_raster(tmp / "in.tif")
    return cfg(raster, pkg, tmp / "out.tif")


def cell_10x(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    raster, _ = classes_raster(tmp / "coarse.tif", h=8, w=8, cell=10.0)  # the model was trained at 1 m
    return cfg(raster, pk["onehot"], tmp / "out.tif")


def check_cell_10x(res: ClassifyResult, tmp: Path, fb: Collect) -> None:
    assert any("differs from the model's training cell size" in w and "10.0x" in w for w in fb.warnings)
    with rasterio.open(res.output_classified) as out, rasterio.open(tmp / "coarse.tif") as src:
        assert out.res == (1.0, 1.0) and out.bounds == src.bounds
        np.testing.assert_array_equal(out.read(1)[5::10, 5::10], src.read(1))


def truncated_zip(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    data = pk["onehot_zip"].read_bytes()
    (tmp / "cut.zip").write_bytes(data[: len(data) // 2])
    raster, _ = classes_raster(tmp / "in.tif")
    return cfg(raster, tmp / "cut.zip", tmp / "out.tif")


def truncated_weights(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    shutil.copytree(pk["onehot"], tmp / "pkg")
    w = tmp / "pkg" / "weights.pt"
    w.write_bytes(w.read_bytes()[:100])
    raster, _ = classes_raster(tmp / "in.tif")
    return cfg(raster, tmp / "pkg", tmp / "out.tif")


def corrupt_json(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    shutil.copytree(pk["onehot"], tmp / "pkg")
    (tmp / "pkg" / "model.json").write_text('{"format": "road-landcover-model", "task": ', encoding="utf-8")
    raster, _ = classes_raster(tmp / "in.tif")
    return cfg(raster, tmp / "pkg", tmp / "out.tif")


def missing_model(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    raster, _ = classes_raster(tmp / "in.tif")
    return cfg(raster, tmp / "nowhere.zip", tmp / "out.tif")


class Evil:
    """Unpickling this runs a shell command (the attack a model file could carry)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch '{self.marker}'",))


def pickle_code(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    shutil.copytree(pk["onehot"], tmp / "pkg")
    torch.save({"centres": Evil(tmp / "pwned")}, tmp / "pkg" / "weights.pt")
    d = json.loads((tmp / "pkg" / "model.json").read_text())
    d["weights"].pop("sha256")  # so the refusal comes from the loader, not the checksum
    (tmp / "pkg" / "model.json").write_text(json.dumps(d))
    with zipfile.ZipFile(tmp / "evil.zip", "w") as zf:
        for f in (tmp / "pkg").iterdir():
            zf.write(f, f.name)
    raster, _ = classes_raster(tmp / "in.tif")
    return cfg(raster, tmp / "evil.zip", tmp / "out.tif")


def zip_slip(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    with zipfile.ZipFile(pk["onehot_zip"]) as src, zipfile.ZipFile(tmp / "slip.zip", "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("../../escaped.txt", "owned")
    raster, _ = classes_raster(tmp / "in.tif")
    return cfg(raster, tmp / "slip.zip", tmp / "out.tif")


def nodata_only(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    raster = write_raster(tmp / "nd.tif", np.full((1, 20, 30), -9999, np.int16), nodata=-9999)
    return cfg(raster, pk["onehot"], tmp / "out.tif")


def check_nodata_only(res: ClassifyResult, tmp: Path, fb: Collect) -> None:
    out = read1(res.output_classified)
    assert out.shape == (20, 30) and (out == CLASS_NODATA).all()


def smaller_than_tile(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    raster, _ = classes_raster(tmp / "in.tif", h=5, w=7)
    return cfg(raster, pk["onehot"], tmp / "out.tif", tile_size_px=64, padding_px=16)


def unwritable(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    (tmp / "a_file").write_text("x")
    raster, _ = classes_raster(tmp / "in.tif")
    return cfg(raster, pk["onehot"], tmp / "a_file" / "out.tif")


def existing(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    (tmp / "out.tif").write_bytes(b"an older result")
    raster, _ = classes_raster(tmp / "in.tif")
    return cfg(raster, pk["onehot"], tmp / "out.tif")


def full_disk(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    disk_full(mp, rasterio.io.DatasetWriter, "write", after=1)
    raster, _ = classes_raster(tmp / "in.tif", h=300, w=300)  # the classes are written, the probabilities fail
    return cfg(raster, pk["onehot"], tmp / "out.tif", tile_size_px=64, padding_px=0,
               output_probability=tmp / "prob.tif")


def odd_names(tmp: Path, pk: dict[str, Path], mp: pytest.MonkeyPatch) -> ClassifyConfig:
    d = tmp / ODD_NAME
    d.mkdir()
    shutil.copy(pk["onehot_zip"], d / "modèle ü.zip")
    raster, _ = classes_raster(d / "imagé ü.tif")
    return cfg(raster, d / "modèle ü.zip", d / "sortie é" / "classé ü.tif")


def check_identity(res: ClassifyResult, tmp: Path, fb: Collect) -> None:
    src = next(p for p in tmp.rglob("*.tif") if p.name in ("in.tif", "imagé ü.tif"))
    np.testing.assert_array_equal(read1(res.output_classified), read1(src))
    assert res.output_classified.with_suffix(".qml").is_file()


CASES: dict[str, Case] = {
    "1-band uint8": identity_case("uint8"),
    "16-bit raster": identity_case("uint16"),
    "Int16 raster": identity_case("int16"),
    "float raster": identity_case("float32"),
    "224-band raster": Case(bands_224, check=check_224),
    "model bands do not fit": Case(band_mismatch, RasterReadError,
                                   r"expects 3 bands: b1 \(band 1\).*has 1 band.*use a raster with the bands"),
    "model classes do not fit": Case(classes_inconsistent, ModelPackageError,
                                     r"2 outputs but the package lists 3 output values"),
    "weights do not fit": Case(weights_do_not_fit, ModelPackageError, r"do not fit its architecture"),
    "cell size 10x off the model's": Case(cell_10x, check=check_cell_10x),
    "truncated zip package": Case(truncated_zip, ModelPackageError, r"truncated or corrupt.*re-export or re-download"),
    "truncated weights": Case(truncated_weights, ModelPackageError, r"checksum.*truncated or altered"),
    "corrupt model.json": Case(corrupt_json, ModelPackageError, r"not valid JSON.*corrupt"),
    "model does not exist": Case(missing_model, ModelPackageError, r"does not exist; pass the folder or zip"),
    "pickle that runs code": Case(pickle_code, ModelPackageError, r"asks to run code.*refused"),
    "zip with ../ paths": Case(zip_slip, ModelPackageError, r"outside its folder.*zip slip"),
    "nodata-only raster": Case(nodata_only, check=check_nodata_only),
    "raster smaller than a tile": Case(smaller_than_tile, check=check_identity),
    "output cannot be written": Case(unwritable, OutputError, r"cannot create the folder"),
    "output exists (replaced)": Case(existing, check=check_identity),
    "disk full": Case(full_disk, OutputError, r"disk is full.*free some space"),
    "spaces and non-ASCII names": Case(odd_names, check=check_identity),
}


def run_valid(tmp: Path, packages: dict[str, Path]) -> None:
    d = tmp / "valid_after"
    d.mkdir()
    raster, data = classes_raster(d / "in.tif")
    classify_pixels(cfg(raster, packages["onehot_zip"], d / "out.tif"))
    np.testing.assert_array_equal(read1(d / "out.tif"), data)


@pytest.mark.parametrize("name", list(CASES))
def test_classify_matrix(name: str, tmp_path: Path, packages: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    config = case.build(tmp_path, packages, monkeypatch)
    fb = Collect()
    finals = [Path(config.output_classified)] + ([Path(config.output_probability)] if config.output_probability else [])
    if case.error is not None:
        with pytest.raises(case.error, match=case.match):
            classify_pixels(config, fb)
        assert_clean_failure(tmp_path, *finals)
        assert not list(tmp_path.parent.rglob("escaped.txt")) and not (tmp_path / "pwned").exists()
    else:
        result = classify_pixels(config, fb)
        assert case.check is not None
        case.check(result, tmp_path, fb)
        assert partials(tmp_path) == []
    monkeypatch.undo()
    run_valid(tmp_path, packages)


def test_failed_classify_keeps_the_previous_output(tmp_path: Path, packages: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    raster, _ = classes_raster(tmp_path / "in.tif", h=300, w=300)
    out = tmp_path / "out.tif"
    classify_pixels(cfg(raster, packages["onehot"], out, tile_size_px=64, padding_px=0))
    before = out.read_bytes()
    disk_full(monkeypatch, rasterio.io.DatasetWriter, "write", after=0)
    with pytest.raises(OutputError, match="disk is full"):
        classify_pixels(cfg(raster, packages["onehot"], out, tile_size_px=64, padding_px=0))
    assert out.read_bytes() == before and partials(tmp_path) == []


def test_overwrite_refused_and_bad_output_name(tmp_path: Path, packages: dict[str, Path]) -> None:
    raster, _ = classes_raster(tmp_path / "in.tif")
    (tmp_path / "out.tif").write_bytes(b"old")
    with pytest.raises(OutputError, match="already exists; choose another name or allow overwriting"):
        classify_pixels(cfg(raster, packages["onehot"], tmp_path / "out.tif", overwrite=False))
    assert (tmp_path / "out.tif").read_bytes() == b"old"
    with pytest.raises(ConfigError, match=r"must be a GeoTIFF \(.tif\)"):
        cfg(raster, packages["onehot"], tmp_path / "out.png")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(RasterReadError, match="cannot open raster.*check that GDAL can read it"):
        classify_pixels(cfg(tmp_path / "broken.tif", packages["onehot"], tmp_path / "o2.tif"))
    assert_clean_failure(tmp_path, tmp_path / "o2.tif")
