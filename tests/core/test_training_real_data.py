"""Training on real data (../shared/data, skipped when absent): New Brunswick 0.5 m RGB with the Baker Lake
polygons, exported with the real export and trained for a few CPU epochs.

Proves the chain runs on real, sparse labels (most pixels unlabelled = class 0, ignored) and that the report
has per-class precision/recall/F1/IoU in JSON and CSV for the classes present in validation; then classifies
the real raster with the package the tool just trained and assesses it against the label polygons.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from core.accuracy import AccuracyConfig, assess_accuracy
from core.chips import ExportConfig, export_training_data
from core.inference import CLASS_NODATA, ClassifyConfig, classify_pixels
from core.training import TrainConfig, train_model

NB = "landcover/new_brunswick_0_5m"


def test_new_brunswick_short_run_reports_per_class_metrics(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "nb_chips"
    export = export_training_data(ExportConfig(
        raster=str(shared_data / NB / "23322E759967N_clipped_1m_1of2.tif"),
        labels=str(shared_data / NB / "BakerLake_2017_clipped.gpkg"), output_folder=str(folder),
        class_field="Cinqclasses", class_name_field="Niveau_3", tile_size_px=(64, 64), stride_px=(32, 32)))
    desc = json.loads((folder / "dataset.json").read_text())
    names = {c["value"]: c["name"] for c in desc["classes"]}
    assert names[1] == "Forest" and names[4] == "Building", names
    cfg = TrainConfig(model="unet", encoder="resnet18", base_width=16, epochs=8, batch_size=8, learning_rate=0.01,
                      val_split="blocked", class_weights="balanced", loss="ce", patience=0)
    result = train_model(folder, tmp_path / "nb_model.zip", cfg)
    assert result.stopped == "completed" and result.epochs_run == 8
    metrics = json.loads((result.report_dir / "metrics.json").read_text())
    present = {v for v, m in metrics["per_class"].items() if m["support_px"] > 0}
    assert len(present) >= 2, metrics["per_class"]
    for v in present:
        m = metrics["per_class"][v]
        for key in ("precision", "recall", "f1", "iou"):
            assert 0.0 <= m[key] <= 1.0, (v, key, m)
    assert 0.0 <= metrics["miou"] <= 1.0, metrics
    with open(result.report_dir / "metrics_per_class.csv", newline="", encoding="utf-8") as f:
        rows = {r["value"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(metrics["per_class"])
    for v in present:
        assert rows[v]["name"] == names[int(v)]
        assert float(rows[v]["iou"]) == pytest.approx(metrics["per_class"][v]["iou"], abs=1e-4)
    d = json.loads(__import__("zipfile").ZipFile(tmp_path / "nb_model.zip").read("model.json"))
    assert d["crs"] == desc["crs"] and d["cell_size"] == [0.5, 0.5] and d["training"]["val_split"] == "blocked"
    assert export.chip_count == desc["chip_count"]
    print("\nNew Brunswick:", json.dumps({"split": d["training"]["split"], "accuracy": metrics["accuracy"],
                                         "miou": metrics["miou"], "per_class": {
                                             f"{v} {names[int(v)]}": {k: round(m[k], 3) for k in
                                                                     ("precision", "recall", "f1", "iou", "support_px")}
                                             for v, m in metrics["per_class"].items()}}, indent=1))

    # Classify the real raster with the package trained above, and assess against the label polygons.
    import numpy as np
    import rasterio

    image = shared_data / NB / "23322E759967N_clipped_1m_1of2.tif"
    out = tmp_path / "nb_classified.tif"
    classify_pixels(ClassifyConfig(image, tmp_path / "nb_model.zip", out, device="cpu"))
    with rasterio.open(out) as dst, rasterio.open(image) as src:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        classified, cmap = dst.read(1), dst.colormap(1)
    assert set(np.unique(classified)) <= set(names) | {CLASS_NODATA}
    for c in desc["classes"]:
        assert "#{:02x}{:02x}{:02x}".format(*cmap[c["value"]][:3]) == c["color"].lower()
    acc = assess_accuracy(AccuracyConfig(out, shared_data / NB / "BakerLake_2017_clipped.gpkg",
                                         tmp_path / "nb_accuracy.json", class_field="Cinqclasses",
                                         ignore_classes=(0,)))
    report = json.loads(acc.report.read_text())
    assert 0.0 <= report["overall_accuracy"] <= 1.0 and report["evaluated_pixels"] > 10_000
    assert {report["per_class"][v]["name"] for v in report["per_class"]} <= set(names.values())
    print("New Brunswick classified vs label polygons (train + validation area):",
          {k: round(report[k], 3) for k in ("overall_accuracy", "kappa", "miou")})
