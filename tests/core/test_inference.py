"""Tiled inference end to end on tiny synthetic rasters with tiny registered models.

Helpers here (models, packages, rasters) are imported by the other inference and provider tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from core.errors import CanceledError, RasterReadError
from core.inference import CLASS_NODATA, ClassifyConfig, classify_pixels
from core.model_package import load_package, save_package
from core.models import register_model
from core.tiling import reflect_index

CRS = "EPSG:32633"


class OneHot(nn.Module):
    """Band 1 holds a class index k: logits -(x - c)^2 peak at c = k, so argmax reproduces the input."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("centres", torch.arange(num_classes, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -10.0 * (x[:, :1] - self.centres) ** 2


class TinyConv(nn.Module):
    """Two 3x3 convolutions: receptive field radius 2 px (zero padding inside the tile)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.b = nn.Conv2d(6, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


@register_model("test_onehot")
def _build_onehot(in_channels: int, num_classes: int, **options: Any) -> nn.Module:
    return OneHot(num_classes)


@register_model("test_tinyconv")
def _build_tinyconv(in_channels: int, num_classes: int, **options: Any) -> nn.Module:
    return TinyConv(in_channels, num_classes)


def definition(arch: str, in_channels: int, values: list[int], tile: int = 32, cell: float = 1.0,
               task: str = "landcover", **extra: Any) -> dict[str, Any]:
    palette = ["#1f78b4", "#33a02c", "#e6ab02", "#e31a1c", "#a6761d", "#6a3d9a", "#ff7f00", "#b2df8a"]
    return {
        "task": task,
        "architecture": {"name": arch, "in_channels": in_channels, "num_classes": len(values), "options": {}},
        "bands": [{"index": i + 1, "name": f"b{i + 1}"} for i in range(in_channels)],
        "classes": [{"value": v, "name": f"class{v}", "color": palette[n % 8]} for n, v in enumerate(values)],
        "output_values": values,
        "ignore_value": 0,
        "normalization": {"mean": [0.0] * in_channels, "std": [1.0] * in_channels},
        "stretch": {"method": "none", "low": [], "high": []},
        "cell_size": [cell, cell],
        "cell_size_units": "metre",
        "tile_size_px": tile,
        **extra,
    }


def make_package(path: Path, arch: str, in_channels: int, values: list[int], **kw: Any) -> Path:
    from core.models import build_model

    model = build_model(arch, in_channels, len(values))
    return save_package(path, definition(arch, in_channels, values, **kw), model.state_dict())


def write_raster(path: Path, data: np.ndarray, cell: float = 1.0, nodata: float | None = None,
                 origin: tuple[float, float] = (500000.0, 5000000.0)) -> Path:
    data = data if data.ndim == 3 else data[None]
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": str(data.dtype), "crs": CRS, "transform": Affine(cell, 0, origin[0], 0, -cell, origin[1]),
               "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


class CancelAfter:
    """Feedback that asks to cancel after ``n`` progress reports."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def set_progress(self, percent: float) -> None:
        self.calls += 1

    def is_canceled(self) -> bool:
        return self.calls >= self.n

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass


@pytest.fixture(scope="module")
def onehot_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_package(tmp_path_factory.mktemp("pkg") / "onehot", "test_onehot", 1, [0, 1, 2, 3, 4])


@pytest.fixture(scope="module")
def conv_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_package(tmp_path_factory.mktemp("pkg") / "conv.zip", "test_tinyconv", 2, [1, 2, 3])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(height=st.integers(1, 70), width=st.integers(1, 70), tile=st.integers(8, 40),
       padding=st.integers(0, 6), blend=st.sampled_from(["centre", "weighted"]), batch=st.integers(1, 5))
def test_identity_model_reproduces_input_exactly(tmp_path: Path, onehot_package: Path, height: int, width: int,
                                                 tile: int, padding: int, blend: str, batch: int) -> None:
    if tile < 2 * padding + 2:
        padding = 0
    rng = np.random.default_rng(height * 1000 + width)
    classes = rng.integers(0, 5, (height, width)).astype(np.uint8)
    src = write_raster(tmp_path / f"in_{height}_{width}.tif", classes)
    out = tmp_path / f"out_{height}_{width}_{tile}_{padding}_{blend}.tif"
    cfg = ClassifyConfig(src, onehot_package, out, tile_size_px=tile, padding_px=padding, blend=blend,
                         batch_size=batch, device="cpu")
    classify_pixels(cfg)
    np.testing.assert_array_equal(read(out)[0], classes)


def whole_image_probabilities(model: nn.Module, image: np.ndarray, pad: int) -> np.ndarray:
    h, w = image.shape[1:]
    ri, ci = reflect_index(np.arange(-pad, h + pad), h), reflect_index(np.arange(-pad, w + pad), w)
    padded = torch.from_numpy(image[:, ri[:, None], ci[None, :]].astype(np.float32))[None]
    with torch.no_grad():
        probs = torch.softmax(model(padded), dim=1)[0].numpy()
    return probs[:, pad:pad + h, pad:pad + w]


@pytest.mark.parametrize("blend", ["centre", "weighted"])
@pytest.mark.parametrize(("height", "width", "tile", "padding"), [(61, 75, 24, 2), (50, 33, 16, 4), (9, 13, 32, 3)])
def test_tiled_prediction_equals_whole_image_prediction(tmp_path: Path, conv_package: Path, blend: str,
                                                        height: int, width: int, tile: int, padding: int) -> None:
    rng = np.random.default_rng(7)
    image = rng.normal(0, 1, (2, height, width)).astype(np.float32)
    src = write_raster(tmp_path / "img.tif", image)
    out, prob = tmp_path / "cls.tif", tmp_path / "prob.tif"
    cfg = ClassifyConfig(src, conv_package, out, output_probability=prob, tile_size_px=tile, padding_px=padding,
                         blend=blend, batch_size=3, device="cpu")
    classify_pixels(cfg)
    expected = whole_image_probabilities(load_package(conv_package).model, image, padding)
    np.testing.assert_allclose(read(prob), expected, atol=2e-6)
    np.testing.assert_array_equal(read(out)[0], np.array([1, 2, 3])[np.argmax(expected, axis=0)])


def test_too_little_padding_shows_seams(tmp_path: Path, conv_package: Path) -> None:
    """The equality above is a real check: with padding below the receptive field it fails."""
    image = np.random.default_rng(3).normal(0, 1, (2, 40, 40)).astype(np.float32)
    src = write_raster(tmp_path / "img.tif", image)
    prob = tmp_path / "prob.tif"
    classify_pixels(ClassifyConfig(src, conv_package, tmp_path / "c.tif", output_probability=prob,
                                   tile_size_px=12, padding_px=0, device="cpu"))
    expected = whole_image_probabilities(load_package(conv_package).model, image, 0)
    assert np.abs(read(prob) - expected).max() > 1e-3


def test_output_georeferencing_nodata_colours_and_styles(tmp_path: Path, onehot_package: Path) -> None:
    classes = np.tile(np.arange(5, dtype=np.uint8), (20, 6))[:, :27]
    classes[3:6, 4:9] = 200  # nodata
    src = write_raster(tmp_path / "in.tif", classes, cell=1.0, nodata=200)
    out = tmp_path / "sub" / "cls.tif"
    result = classify_pixels(ClassifyConfig(src, onehot_package, out, tile_size_px=16, padding_px=4, device="cpu"))
    assert result.width_px == 27 and result.height_px == 20 and result.device.startswith("cpu")
    with rasterio.open(out) as dst, rasterio.open(src) as ref:
        assert dst.crs == ref.crs and dst.transform == ref.transform
        assert dst.nodata == CLASS_NODATA and dst.dtypes[0] == "uint8"
        assert dst.profile["compress"].lower() == "deflate"
        data = dst.read(1)
        cmap = dst.colormap(1)
    assert (data[3:6, 4:9] == CLASS_NODATA).all()
    expected = classes.copy()
    expected[3:6, 4:9] = CLASS_NODATA
    np.testing.assert_array_equal(data, expected)
    assert cmap[0][:3] == (0x1F, 0x78, 0xB4) and cmap[4][:3] == (0xA6, 0x76, 0x1D)
    qml = out.with_suffix(".qml").read_text()
    assert 'type="paletted"' in qml and 'label="class3"' in qml
    assert "<Category>class2</Category>" in Path(str(out) + ".aux.xml").read_text()
    assert [p.name for p in out.parent.iterdir() if "partial" in p.name] == []


def test_band_mismatch_names_both(tmp_path: Path, conv_package: Path) -> None:
    src = write_raster(tmp_path / "one.tif", np.zeros((1, 10, 10), np.float32))
    with pytest.raises(RasterReadError, match=r"expects 2 bands: b1 \(band 1\), b2 \(band 2\).*has 1 band"):
        classify_pixels(ClassifyConfig(src, conv_package, tmp_path / "o.tif", device="cpu"))
    assert not (tmp_path / "o.tif").exists()


def test_stretch_and_normalisation_come_from_the_package(tmp_path: Path) -> None:
    # 16-bit data, stretch 1000..3000 -> 0..255, then (x - 100) / 50 -> class index 0..4 (onehot model).
    pkg = save_package(tmp_path / "p", definition(
        "test_onehot", 1, [10, 11, 12, 13, 14],
        stretch={"method": "percentile", "low": [1000.0], "high": [3000.0]}) | {
        "normalization": {"mean": [0.0], "std": [255.0 / 4.0]}}, {"centres": torch.arange(5.0).view(1, -1, 1, 1)})
    raw = np.array([[1000, 1500, 2000, 2500, 3000, 9000]], dtype=np.uint16)
    src = write_raster(tmp_path / "u16.tif", raw)
    out = tmp_path / "o.tif"
    classify_pixels(ClassifyConfig(src, pkg, out, tile_size_px=8, padding_px=1, device="cpu"))
    np.testing.assert_array_equal(read(out)[0, 0], [10, 11, 12, 13, 14, 14])


def test_cell_size_resampling_and_warning(tmp_path: Path, onehot_package: Path) -> None:
    classes = np.repeat(np.repeat(np.arange(4, dtype=np.uint8).reshape(2, 2), 20, 0), 20, 1)  # 40x40 at 1 m
    src = write_raster(tmp_path / "in.tif", classes, cell=1.0)
    messages: list[str] = []

    class Collect(CancelAfter):
        def warning(self, message: str) -> None:
            messages.append(message)

    out = tmp_path / "o.tif"
    result = classify_pixels(ClassifyConfig(src, onehot_package, out, cell_size_m=4.0, tile_size_px=8,
                                            padding_px=1, device="cpu"), Collect(10**9))
    assert result.width_px == 10 and result.height_px == 10
    with rasterio.open(out) as dst:
        assert dst.res == (4.0, 4.0) and dst.bounds == rasterio.open(src).bounds
        np.testing.assert_array_equal(dst.read(1), np.repeat(np.repeat(np.arange(4).reshape(2, 2), 5, 0), 5, 1))
    # The model was trained at 1 m; this raster is at 1 m: no warning. A 0.25 m raster warns.
    assert not any("differs" in m for m in messages)
    fine = write_raster(tmp_path / "fine.tif", classes, cell=0.25)
    classify_pixels(ClassifyConfig(fine, onehot_package, tmp_path / "f.tif", tile_size_px=8, padding_px=1,
                                   device="cpu"), Collect(10**9))
    assert any("differs from the model's training cell size" in m and "4.0x" in m for m in messages)
    with rasterio.open(tmp_path / "f.tif") as dst:
        assert dst.res == (1.0, 1.0) and dst.width == 10  # resampled to the model's cell size by default


def test_extent_cuts_a_window(tmp_path: Path, onehot_package: Path) -> None:
    classes = np.random.default_rng(1).integers(0, 5, (30, 40)).astype(np.uint8)
    src = write_raster(tmp_path / "in.tif", classes, origin=(1000.0, 2000.0))
    out = tmp_path / "o.tif"
    classify_pixels(ClassifyConfig(src, onehot_package, out, extent=(1010.0, 1975.0, 1030.0, 1990.0),
                                   tile_size_px=8, padding_px=2, device="cpu"))
    with rasterio.open(out) as dst:
        assert dst.bounds == (1010.0, 1975.0, 1030.0, 1990.0)
        np.testing.assert_array_equal(dst.read(1), classes[10:25, 10:30])


def test_cancel_stops_within_a_batch_and_leaves_no_output(tmp_path: Path, onehot_package: Path) -> None:
    src = write_raster(tmp_path / "in.tif", np.zeros((64, 64), np.uint8))
    out = tmp_path / "o.tif"
    prob = tmp_path / "p.tif"
    calls: list[int] = []

    def step(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return load_package(onehot_package).model(x)

    with pytest.raises(CanceledError):
        classify_pixels(ClassifyConfig(src, onehot_package, out, output_probability=prob, tile_size_px=8,
                                       padding_px=0, batch_size=2, device="cpu"), CancelAfter(3), step=step)
    assert sum(calls) <= 4 * 2  # 64 tiles; stopped after the third batch
    assert list(tmp_path.iterdir()) == [src]


def test_probability_output_for_road_model(tmp_path: Path) -> None:
    class RoadLogit(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1] * 4.0 - 2.0

    register_model("test_roadlogit")(lambda in_channels, num_classes, **o: RoadLogit())
    d = definition("test_roadlogit", 1, [0, 1], task="roads")
    d["architecture"]["num_classes"] = 1
    pkg = save_package(tmp_path / "road", d, {})
    img = np.array([[0.0, 0.25, 0.55, 0.75, 1.0]], np.float32).repeat(3, 0)
    src = write_raster(tmp_path / "in.tif", img)
    out, prob = tmp_path / "c.tif", tmp_path / "p.tif"
    classify_pixels(ClassifyConfig(src, pkg, out, output_probability=prob, tile_size_px=8, padding_px=1,
                                   device="cpu"))
    with rasterio.open(prob) as p:
        assert p.count == 1 and p.dtypes[0] == "float32" and p.descriptions[0] == "road probability"
        np.testing.assert_allclose(p.read(1)[0], 1 / (1 + np.exp(-(img[0] * 4 - 2))), atol=1e-6)
    np.testing.assert_array_equal(read(out)[0, 0], [0, 0, 1, 1, 1])


def test_tta_dihedral_is_consistent_for_equivariant_model(tmp_path: Path, onehot_package: Path) -> None:
    classes = np.random.default_rng(5).integers(0, 5, (23, 31)).astype(np.uint8)
    src = write_raster(tmp_path / "in.tif", classes)
    for tta, merge in [("flips", "mean"), ("dihedral", "max")]:
        out = tmp_path / f"{tta}.tif"
        classify_pixels(ClassifyConfig(src, onehot_package, out, tile_size_px=12, padding_px=2, tta=tta,
                                       tta_merge=merge, device="cpu"))
        np.testing.assert_array_equal(read(out)[0], classes)


def test_package_json_roundtrip_is_read(onehot_package: Path) -> None:
    d = json.loads((onehot_package / "model.json").read_text())
    assert d["output_values"] == [0, 1, 2, 3, 4]


def test_cli_classify_and_evaluate(tmp_path: Path, onehot_package: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from core.cli import main

    classes = np.random.default_rng(9).integers(0, 5, (20, 30)).astype(np.uint8)
    src = write_raster(tmp_path / "in.tif", classes)
    out = tmp_path / "cls.tif"
    assert main(["-q", "classify", str(src), str(onehot_package), str(out), "--tile-size-px", "16",
                 "--padding-px", "2", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["size_px"] == [30, 20]
    np.testing.assert_array_equal(read(out)[0], classes)
    assert main(["-q", "evaluate", str(out), str(src), str(tmp_path / "acc.json"), "--ignore", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["overall_accuracy"] == pytest.approx(1.0)
    assert main(["classify", str(src), str(tmp_path / "missing.zip"), str(out)]) == 2
