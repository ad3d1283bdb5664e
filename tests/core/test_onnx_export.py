"""ONNX export for Deepness: the graph run the way Deepness runs it gives our inference's probabilities.

Deepness's side is simulated from its source (PUTvision/qgis-plugin-deepness):
``preprocessing_utils.normalize_values_to_01`` (x / 255), ``standardize_values`` ((x - mean) / std
with the metadata's values), NHWC -> NCHW, one ONNX Runtime call, then
``MapProcessorSegmentation._process_tile`` (values below ``seg_thresh`` zeroed, argmax over channels).
Our side is the package's own path: ``InputSpec.apply`` (stretch, normalisation), the torch network,
``BatchPredictor`` probabilities, ``classify_pixels`` for a whole raster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.errors import ConfigError, DependencyError, ModelPackageError
from core.inference import BatchPredictor, InputSpec
from core.model_package import load_package, save_package
from core.models import build_model

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (make setup installs the onnx extra)")
pytest.importorskip("onnx", reason="onnx is not installed (make setup installs the onnx extra)")

from core.onnx_export import (  # noqa: E402 (after the skips)
    DEEPNESS_KEYS,
    PACKAGE_KEY,
    OnnxExportConfig,
    export_onnx,
    read_metadata,
)

SMALL = {"encoder": "resnet18", "base_width": 8}
REAL_RGB = Path(__file__).resolve().parents[3] / "shared" / "data" / "landcover" / "new_brunswick_0_5m" / \
    "23322E759967N_clipped_1m_1of2.tif"


def make_package(path: Path, arch: str, in_channels: int, values: list[int], *, task: str = "landcover",
                 outputs: int | None = None, mean: list[float] | None = None, std: list[float] | None = None,
                 stretch: dict[str, Any] | None = None, tile: Any = 64, cell: float = 0.5,
                 units: str = "metre", seed: int = 0) -> Path:
    """A real architecture with random weights (and non-trivial batch-norm statistics) in a package."""
    torch.manual_seed(seed)
    n_out = outputs or len(values)
    model = build_model(arch, in_channels, n_out, **SMALL)
    state = model.state_dict()
    gen = torch.Generator().manual_seed(seed)
    for key, value in state.items():  # eval-mode batch norm that is not the identity (and few dead ReLUs)
        if key.endswith("running_mean"):
            value.copy_(0.1 * torch.randn(value.shape, generator=gen))
        elif key.endswith("running_var"):
            value.copy_(0.5 + torch.rand(value.shape, generator=gen))
            value_bias = state[key[: -len("running_var")] + "bias"]
            value_bias.copy_(0.2 + 0.3 * torch.rand(value_bias.shape, generator=gen))
    # A sharper head without bias, so the random network's classes vary across the tile.
    head = [k for k, v in state.items() if k.endswith("weight") and v.ndim == 4 and v.shape[0] == n_out][-1]
    state[head].mul_(30.0)
    state[head[: -len("weight")] + "bias"].zero_()
    names = {1: "water", 2: "forest", 3: "fields", 5: "buildings", 7: "bare"}
    definition = {
        "task": task,
        "architecture": {"name": arch, "in_channels": in_channels, "num_classes": n_out, "options": dict(SMALL)},
        "bands": [{"index": i + 1, "name": f"b{i + 1}"} for i in range(in_channels)],
        "classes": [{"value": v, "name": names.get(v, f"class{v}"), "color": "#1f78b4"} for v in values],
        "output_values": values,
        "ignore_value": 255 if task == "roads" else 0,
        "normalization": {"mean": mean or [0.0] * in_channels, "std": std or [1.0] * in_channels},
        "stretch": stretch or {"method": "none", "low": [], "high": []},
        "cell_size": [cell, cell],
        "cell_size_units": units,
        "crs": "EPSG:32633",
        "tile_size_px": tile,
    }
    return save_package(path, definition, state)


def deepness_run(onnx_path: Path, raw_nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deepness's preprocessing, one session run, and its segmentation post-processing.

    Returns the probabilities (N, C, H, W) and the channel index map (N, H, W).
    """
    meta = read_metadata(onnx_path)
    mean = np.asarray(meta["standardization_mean"], dtype=np.float32)
    std = np.asarray(meta["standardization_std"], dtype=np.float32)
    x = np.float32(raw_nhwc * 1.0 / 255.0)  # normalize_values_to_01
    x = (x - mean) / std  # standardize_values
    x = np.transpose(x, (0, 3, 1, 2)).astype(np.float32)  # transpose_nhwc_to_nchw
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {session.get_inputs()[0].name: x})
    result = probs.copy()
    result[result < float(meta["seg_thresh"])] = 0.0
    classes = (result != 0).astype(int)[:, 0] if result.shape[1] == 1 else np.argmax(result, axis=1)
    return probs, classes


def our_probabilities(package_path: Path, raw_nchw: np.ndarray) -> np.ndarray:
    """The package's own inference path on whole tiles (stretch, normalisation, network, probabilities)."""
    pkg = load_package(package_path)
    spec = InputSpec.from_definition(pkg.definition)
    x = np.stack([spec.apply(tile) for tile in raw_nchw])
    predictor = BatchPredictor(pkg.model, torch.device("cpu"), 8, int(pkg.definition["architecture"]["num_classes"]),
                               mixed_precision=False)
    with torch.no_grad():
        return predictor._probabilities(pkg.model(torch.from_numpy(x))).numpy()


def confident(probs: np.ndarray, margin: float = 1e-3) -> np.ndarray:
    """Pixels whose top two probabilities differ by more than ``margin`` (argmax cannot flip on rounding)."""
    top = np.sort(probs, axis=1)
    return np.asarray(top[:, -1] - top[:, -2] > margin)


def test_unet_landcover_matches_our_inference_and_metadata(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "unet.zip", "unet", 4, [1, 3, 7], mean=[101.0, 90.0, 80.0, 120.0],
                       std=[30.0, 25.0, 20.0, 40.0])
    out = tmp_path / "unet.onnx"
    result = export_onnx(OnnxExportConfig(pkg, out))
    assert out.is_file() and not list(tmp_path.glob(".*partial*"))
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    assert result.input_shape == ["batch", 4, 64, 64] and result.output_shape == ["batch", 3, 64, 64]

    meta = read_metadata(out)
    assert set(DEEPNESS_KEYS) <= set(meta)
    assert meta["model_type"] == "Segmentor"
    assert meta["class_names"] == {"0": "water", "1": "fields", "2": "bare"}
    assert meta["resolution"] == 50.0  # 0.5 m in Deepness's cm/px
    assert meta["tile_size"] == 64 and meta["tiles_overlap"] == 50
    assert meta["standardization_mean"] == [0.0] * 4 and meta["standardization_std"] == [1.0] * 4
    assert meta["seg_thresh"] == 0.0 and meta["seg_small_segment"] == 0
    assert [c["value"] for c in meta[PACKAGE_KEY]["channels"]] == [1, 3, 7]
    # Values are JSON text, as Deepness json.loads them, and its int()/float() casts accept them.
    assert int(meta["tile_size"]) == 64 and float(meta["resolution"]) == 50.0

    raw = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 4)).astype(np.uint8)  # batch 3: dynamic
    probs, channel_map = deepness_run(out, raw)
    ours = our_probabilities(pkg, np.transpose(raw, (0, 3, 1, 2)))
    assert probs.shape == ours.shape == (3, 3, 64, 64)
    np.testing.assert_allclose(probs, ours, atol=1e-4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    ok = confident(ours)
    assert ok.mean() > 0.9
    np.testing.assert_array_equal(channel_map[ok], np.argmax(ours, axis=1)[ok])
    assert len(np.unique(channel_map)) > 1  # a constant map would make the comparison empty


def test_linknet_road_logit_with_stretch_and_fixed_batch(tmp_path: Path) -> None:
    stretch = {"method": "percentile", "low": [10.0, 20.0, 30.0], "high": [200.0, 1500.0, 3000.0]}
    pkg = make_package(tmp_path / "road", "linknet", 3, [0, 1], task="roads", outputs=1, stretch=stretch,
                       mean=[120.0, 110.0, 100.0], std=[50.0, 45.0, 60.0], seed=3)
    out = tmp_path / "road.onnx"
    result = export_onnx(OnnxExportConfig(pkg, out, batch_size=1))
    assert result.input_shape == [1, 3, 64, 64] and result.output_shape == [1, 2, 64, 64]
    meta = read_metadata(out)
    assert meta["class_names"] == {"0": "background", "1": "road"}
    # 16-bit values: Deepness reads the layer's own data type and divides by 255; the stretch in the
    # graph then sees the raw values again (including those above 255 and below the low cut).
    raw = np.random.default_rng(2).integers(0, 3500, (1, 64, 64, 3)).astype(np.uint16)
    probs, channel_map = deepness_run(out, raw)
    ours = our_probabilities(pkg, np.transpose(raw, (0, 3, 1, 2)))
    np.testing.assert_allclose(probs, ours, atol=1e-4)
    np.testing.assert_allclose(probs[:, 0] + probs[:, 1], 1.0, atol=1e-6)  # [1 - p, p]
    ok = confident(ours)
    np.testing.assert_array_equal(channel_map[ok], (ours[:, 1] > 0.5)[ok].astype(int))


def test_multitask_road_exports_only_the_road_head(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "mt", "multitask_road", 4, [0, 1], task="roads", outputs=2)
    result = export_onnx(OnnxExportConfig(pkg, tmp_path / "mt.onnx", tile_size_px=96))
    assert result.output_shape == ["batch", 2, 96, 96]
    meta = read_metadata(tmp_path / "mt.onnx")
    assert meta["tile_size"] == 96 and meta["tiles_overlap"] == 50


@pytest.mark.skipif(not REAL_RGB.is_file(), reason=f"real data missing: {REAL_RGB} (../shared/data)")
def test_real_chip_deepness_equals_classify_pixels(tmp_path: Path) -> None:
    """A 96 px chip of real 0.5 m RGB imagery: Deepness's way through the ONNX file vs Classify Pixels."""
    import rasterio
    from rasterio.windows import Window

    from core.inference import ClassifyConfig, classify_pixels

    with rasterio.open(REAL_RGB) as src:
        chip = src.read(window=Window(100, 120, 96, 96))
        profile = {**src.profile, "width": 96, "height": 96, "nodata": None,
                   "transform": src.window_transform(Window(100, 120, 96, 96))}
    assert chip.dtype == np.uint8 and chip.shape == (3, 96, 96)
    raster = tmp_path / "chip.tif"
    with rasterio.open(raster, "w", **profile) as dst:
        dst.write(chip)
    mean = [float(b.mean()) for b in chip]
    std = [float(b.std()) for b in chip]
    pkg = make_package(tmp_path / "real.zip", "unet", 3, [1, 2, 3, 5, 7], mean=mean, std=std, tile=96, seed=5)
    out = tmp_path / "real.onnx"
    export_onnx(OnnxExportConfig(pkg, out))
    probs, channel_map = deepness_run(out, np.transpose(chip, (1, 2, 0))[None])
    # One tile covering the raster, no padding: Classify Pixels sees exactly the tile Deepness sees.
    result = classify_pixels(ClassifyConfig(raster, pkg, tmp_path / "cls.tif", tmp_path / "p.tif",
                                            tile_size_px=96, padding_px=0, device="cpu"))
    assert result.tiles == 1
    with rasterio.open(tmp_path / "p.tif") as p, rasterio.open(tmp_path / "cls.tif") as c:
        ours, classified = p.read(), c.read(1)
    np.testing.assert_allclose(probs[0], ours, atol=1e-4)
    values = np.asarray([1, 2, 3, 5, 7])
    ok = confident(probs)[0]
    assert ok.mean() > 0.9 and len(np.unique(classified)) > 1
    np.testing.assert_array_equal(values[channel_map[0]][ok], classified[ok])


def test_geographic_model_gets_no_resolution_and_a_warning(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "geo", "unet", 3, [1, 2], cell=5e-6, units="degree")
    result = export_onnx(OnnxExportConfig(pkg, tmp_path / "geo.onnx", verify=False))
    assert "resolution" not in read_metadata(tmp_path / "geo.onnx")
    assert result.max_abs_diff is None
    assert any("not metres" in w for w in result.warnings)


def test_bad_packages_are_refused_and_leave_nothing(tmp_path: Path) -> None:
    out = tmp_path / "x.onnx"
    with pytest.raises(ModelPackageError, match="does not exist"):
        export_onnx(OnnxExportConfig(tmp_path / "missing.zip", out))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelPackageError, match="not a model package"):
        export_onnx(OnnxExportConfig(empty, out))
    rect = make_package(tmp_path / "rect", "unet", 3, [1, 2], tile=[64, 32])
    with pytest.raises(ModelPackageError, match="square"):
        export_onnx(OnnxExportConfig(rect, out))
    broken = make_package(tmp_path / "broken", "unet", 3, [1, 2])
    definition = json.loads((broken / "model.json").read_text())
    definition["architecture"]["num_classes"] = 3  # weights have 2 output channels
    definition["output_values"] = [1, 2, 3]
    (broken / "model.json").write_text(json.dumps(definition))
    with pytest.raises(ModelPackageError, match="do not fit"):
        export_onnx(OnnxExportConfig(broken, out))
    with pytest.raises(ConfigError, match=r"\.onnx"):
        OnnxExportConfig(rect, tmp_path / "x.zip")
    with pytest.raises(ConfigError, match="tile size"):
        OnnxExportConfig(rect, out, tile_size_px=4)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*partial*"))


def test_missing_onnx_names_the_pip_command_with_numpy_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    from core import deps
    from core.onnx_export import require_onnx

    real = deps.check

    def check(modules: Any = deps.DL_STACK, import_modules: bool = True) -> list[deps.Problem]:
        return [deps.Problem(deps.REQUIREMENTS[m], None) for m in modules if m == "onnx"] or real(modules)

    monkeypatch.setattr(deps, "check", check)
    with pytest.raises(DependencyError) as info:
        require_onnx("/opt/qgis/python3")
    message = str(info.value)
    assert "onnx is not installed" in message
    assert "/opt/qgis/python3 -m pip install" in message and "'onnx>=1.14'" in message
    assert "'numpy>=1.24,<2'" in message


def test_cli_export_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from core.cli import main

    pkg = make_package(tmp_path / "cli.zip", "unet", 3, [1, 2])
    code = main(["-q", "export-onnx", str(pkg), str(tmp_path / "cli.onnx"), "--tile-size-px", "32",
                 "--overlap-percent", "25"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["deepness_metadata"]["tile_size"] == 32 and printed["deepness_metadata"]["tiles_overlap"] == 25
    assert printed["input_shape"] == ["batch", 3, 32, 32]
    assert main(["-q", "export-onnx", str(tmp_path / "nothing"), str(tmp_path / "n.onnx")]) == 2
