"""``extract_roads``: imagery + road model package -> probability -> centerlines (core.inference + vectorize)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from core.errors import ModelPackageError  # noqa: E402
from core.model_package import save_package  # noqa: E402
from core.models import build_model  # noqa: E402
from core.roads import VectorizeConfig, extract_roads  # noqa: E402


def road_package(folder: Path, task: str = "roads", bias: float = 20.0) -> Path:
    """A tiny road U-Net whose last bias makes it say "road" (bias > 0) or "no road" (bias < 0) everywhere."""
    model = build_model("unet", 4, 1, encoder="resnet18", base_width=8)
    state = model.state_dict()
    last_bias = [k for k, v in state.items() if k.endswith("bias") and tuple(v.shape) == (1,)][-1]
    state[last_bias] = torch.full((1,), bias)
    for k, v in state.items():  # silence the rest of the head so the bias decides
        if k == last_bias.replace("bias", "weight"):
            state[k] = torch.zeros_like(v)
    definition = {
        "task": task, "architecture": {"name": "unet", "in_channels": 4, "num_classes": 1,
                                       "options": {"encoder": "resnet18", "base_width": 8}},
        "bands": [{"index": i, "name": n} for i, n in enumerate(("red", "green", "blue", "nir"), start=1)],
        "classes": [{"value": 0, "name": "background", "color": "#000000"}, {"value": 1, "name": "road", "color": "#ffc400"}],
        "output_values": [0, 1], "ignore_value": 255, "normalization": {"mean": [0.0] * 4, "std": [255.0] * 4},
        "cell_size": [0.5, 0.5], "tile_size_px": 64, "recommended_padding_px": 8,
    }
    save_package(folder, definition, state)
    return folder


def crop(src_path: Path, out: Path, size: int = 160) -> Path:
    """The top-right corner of the sample scene (imagery with its clipped nodata corner), kept small for speed."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(src_path) as src:
        window = Window(src.width - size, 0, size, size)
        profile = {**src.profile, "width": size, "height": size, "transform": src.window_transform(window)}
        profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return out


def test_extract_roads_runs_inference_then_vectorization(sample_scene: Any, tmp_path: Path) -> None:
    import rasterio

    pkg = road_package(tmp_path / "pkg")
    image = crop(sample_scene.image, tmp_path / "img.tif")
    result = extract_roads(image, pkg, tmp_path / "prob.tif", tmp_path / "l.gpkg", tmp_path / "n.gpkg",
                           VectorizeConfig(min_component_m=5.0), batch_size=4, device="cpu")
    with rasterio.open(tmp_path / "prob.tif") as prob, rasterio.open(image) as img:
        p = prob.read(1)
        assert prob.count == 1 and prob.crs == img.crs and prob.transform == img.transform
        valid = img.read(1) > 0
    assert (p[valid] > 0.99).all()  # the model says road everywhere there is imagery
    assert (p[~valid] == -1).all()  # nodata stays nodata, and is never road
    assert 0 < valid.mean() < 1 and result.edge_count >= 1 and result.total_length_m > 20
    assert (tmp_path / "l.gpkg").exists() and (tmp_path / "n.gpkg").exists()


def test_extract_roads_refuses_a_landcover_model(sample_scene: Any, tmp_path: Path) -> None:
    pkg = road_package(tmp_path / "pkg", task="landcover")
    with pytest.raises(ModelPackageError, match="not a road model"):
        extract_roads(sample_scene.image, pkg, tmp_path / "p.tif", tmp_path / "l.gpkg", tmp_path / "n.gpkg")
    assert not (tmp_path / "p.tif").exists()


def test_cli_roads_with_a_model_extracts_from_imagery(sample_scene: Any, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``road-landcover roads IMAGE LINES --model PKG`` = extractroads: probability beside the lines, then lines."""
    import json

    import rasterio

    from core.cli import main

    pkg = road_package(tmp_path / "pkg")
    image = crop(sample_scene.image, tmp_path / "img.tif")
    assert main(["-q", "roads", str(image), str(tmp_path / "r.gpkg"), "--model", str(pkg), "--device", "cpu",
                 "--min-component-m", "5", "--batch-size", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["edge_count"] >= 1 and Path(out["nodes"]) == tmp_path / "r_nodes.gpkg"
    with rasterio.open(tmp_path / "r_prob.tif") as prob:
        assert prob.count == 1 and prob.read(1).max() > 0.99
