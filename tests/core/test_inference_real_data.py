"""Real data (../shared/data): classify the New Brunswick 0.5 m RGB clip and assess it against its labels.

The model is a tiny untrained convolutional package (the point is georeferencing, nodata, colours and
the report on a real raster and CRS, EPSG:2953, not accuracy).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from core.accuracy import AccuracyConfig, assess_accuracy
from core.inference import CLASS_NODATA, ClassifyConfig, classify_pixels
from core.model_package import save_package
from core.models import build_model
from tests.core.test_inference import definition

NAMES = {1: "forest", 2: "water", 3: "road", 4: "building", 5: "rail"}
COLORS = {1: "#33a02c", 2: "#1f78b4", 3: "#666666", 4: "#e31a1c", 5: "#6a3d9a"}


def test_classify_and_assess_new_brunswick(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "landcover" / "new_brunswick_0_5m"
    image = folder / "23322E759967N_clipped_1m_1of2.tif"
    labels = folder / "derived" / "BakerLake_5class_label_1of2.tif"
    d = definition("test_tinyconv", 3, [1, 2, 3, 4, 5], tile=64, cell=0.5)
    d["classes"] = [{"value": v, "name": n, "color": COLORS[v]} for v, n in NAMES.items()]
    d["normalization"] = {"mean": [100.0, 100.0, 100.0], "std": [50.0, 50.0, 50.0]}
    pkg = save_package(tmp_path / "nb.zip", d, build_model("test_tinyconv", 3, 5).state_dict())
    # Make a copy of the image with nodata in a corner (the original has none).
    with rasterio.open(image) as src:
        profile, data = src.profile, src.read()
    data[:, :20, :30] = 0
    profile.update(nodata=0)
    nodata_image = tmp_path / "nb_nodata.tif"
    with rasterio.open(nodata_image, "w", **profile) as dst:
        dst.write(data)
    out = tmp_path / "nb_classified.tif"
    result = classify_pixels(ClassifyConfig(nodata_image, pkg, out, tile_size_px=64, padding_px=8, device="cpu"))
    assert not result.warnings  # same cell size as the model
    with rasterio.open(out) as dst, rasterio.open(image) as src:
        assert dst.crs == src.crs and dst.crs.to_epsg() == 2953
        assert dst.transform == src.transform and dst.shape == (341, 280)
        classified = dst.read(1)
        cmap = dst.colormap(1)
    assert (classified[:20, :30] == CLASS_NODATA).all()
    assert set(np.unique(classified[20:, 30:])) <= set(NAMES)
    assert cmap[2][:3] == (0x1F, 0x78, 0xB4) and cmap[4][:3] == (0xE3, 0x1A, 0x1C)
    assert 'label="water"' in out.with_suffix(".qml").read_text()
    acc = assess_accuracy(AccuracyConfig(out, labels, tmp_path / "acc.json", ignore_classes=(0,)))
    report = json.loads(acc.report.read_text())
    assert set(report) >= {"overall_accuracy", "kappa", "miou", "per_class"}
    with rasterio.open(labels) as lab:
        ref = lab.read(1)
    evaluated = int(((ref != 0) & (classified != CLASS_NODATA)).sum())
    assert report["evaluated_pixels"] == evaluated
    assert report["overall_accuracy"] == pytest.approx(np.mean(classified[(ref != 0) & (classified != CLASS_NODATA)]
                                                 == ref[(ref != 0) & (classified != CLASS_NODATA)]))
    assert report["per_class"]["2"]["name"] == "water"
