"""The main job on built-in data: ``make demo`` / ``road-landcover demo``.

Generates the sample scene, then runs the whole workflow on it, the way a user would chain the
Processing algorithms: export chips -> train briefly -> classify -> assess accuracy for land cover,
and export road chips -> train a road model -> extract road lines -> evaluate (APLS) for roads.
Returns (and writes) a report with every figure, so the demo doubles as a smoke test of the chain.

Honest figures: the models are trained on the northern part of the scene only (``train_fraction``) and
every metric is measured on the southern rest, which no chip came from.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .config import StepConfig, require
from .progress import Feedback, NullFeedback, SubFeedback
from .sample_data import SampleSceneConfig, generate_sample_scene


@dataclasses.dataclass(frozen=True)
class DemoConfig(StepConfig):
    """How big the demo is. The defaults take a few minutes on a laptop CPU, seconds on a GPU."""

    size_px: int = 1600
    chip_px: int = 128
    epochs: int = 8
    base_width: int = 32
    device: str = "auto"
    roads: bool = True
    landcover: bool = True
    train_fraction: float = 0.6

    def validate(self) -> None:
        require(self.size_px >= 2 * self.chip_px, f"size_px ({self.size_px}) must hold at least 2x2 chips of {self.chip_px} px")
        require(self.chip_px % 32 == 0, f"chip_px must be a multiple of 32 (U-Net strides), got {self.chip_px}")
        require(self.epochs >= 1, "epochs must be at least 1")
        require(0.2 <= self.train_fraction <= 0.8, f"train_fraction must be within 0.2-0.8, got {self.train_fraction}")


QUICK = DemoConfig(size_px=384, chip_px=64, epochs=2, base_width=16)


@dataclasses.dataclass(frozen=True)
class DemoAreas:
    """The scene split into a northern training area and a southern test area (raster CRS bounds)."""

    train: tuple[float, float, float, float]
    test: tuple[float, float, float, float]


def split_scene(image: Path, train_fraction: float) -> DemoAreas:
    """North ``train_fraction`` of the scene for chips, the south rest for every metric."""
    import rasterio

    with rasterio.open(image) as src:
        left, bottom, right, top = src.bounds
        res = abs(src.transform.e)
    cut = top - round((top - bottom) * train_fraction / res) * res  # on a pixel edge
    return DemoAreas(train=(left, cut, right, top), test=(left, bottom, right, cut))


@contextmanager
def _step(report: dict[str, Any], name: str, fb: Feedback) -> Iterator[dict[str, Any]]:
    entry: dict[str, Any] = {}
    fb.info(f"== {name}")
    t0 = time.perf_counter()
    yield entry
    entry["seconds"] = round(time.perf_counter() - t0, 2)
    report["steps"][name] = entry


def run_demo(output: str | Path, config: DemoConfig | None = None, feedback: Feedback | None = None) -> dict[str, Any]:
    """Run the chain in ``output``; return a JSON-able report (also written to ``demo_report.json``)."""
    cfg = config or DemoConfig()
    fb = feedback or NullFeedback()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"output": str(out.resolve()), "config": cfg.to_dict(), "steps": {}}

    with _step(report, "sample_scene", fb) as entry:
        scene = generate_sample_scene(out / "scene", SampleSceneConfig(size_px=cfg.size_px), SubFeedback(fb, 0, 5))
        description = json.loads(scene.description.read_text(encoding="utf-8"))
        entry.update(image=str(scene.image), size_px=cfg.size_px,
                     class_pixels={c["name"]: c["pixels"] for c in description["classes"]},
                     road_edges=description["roads"]["edges"], road_length_m=description["roads"]["total_length_m"])

    areas = split_scene(scene.image, cfg.train_fraction)
    report["evaluated_on"] = (f"held-out south {1 - cfg.train_fraction:.0%} of the scene (bounds {areas.test}); "
                              f"chips come from the north {cfg.train_fraction:.0%} only")
    chains: list[tuple[str, Callable[..., None]]] = []
    if cfg.landcover:
        chains.append(("landcover", _landcover_chain))
    if cfg.roads:
        chains.append(("roads", _roads_chain))
    for i, (_name, chain) in enumerate(chains):
        span = 95 / len(chains)
        chain(scene, areas, out, cfg, report, SubFeedback(fb, 5 + i * span, 5 + (i + 1) * span))

    report["summary"] = _summary(report)
    (out / "demo_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    fb.set_progress(100)
    return report


def _train_config(cfg: DemoConfig, **overrides: Any) -> Any:
    from .training import TrainConfig

    base: dict[str, Any] = {"encoder": "resnet18", "base_width": cfg.base_width, "epochs": cfg.epochs,
                            "batch_size": 8, "learning_rate": 0.01, "val_split": "random", "patience": 0,
                            "device": cfg.device, "preview_chips": 4}
    base.update(overrides)
    return TrainConfig(**base)


def _landcover_chain(scene: Any, areas: DemoAreas, out: Path, cfg: DemoConfig, report: dict[str, Any], fb: Feedback) -> None:
    from .accuracy import AccuracyConfig, assess_accuracy
    from .chips import ExportConfig, export_training_data
    from .inference import ClassifyConfig, classify_pixels
    from .training import train_model

    chip = (cfg.chip_px, cfg.chip_px)
    with _step(report, "landcover_export", fb) as entry:
        exported = export_training_data(ExportConfig(
            str(scene.image), str(scene.landcover_polygons), str(out / "chips_landcover"),
            class_field="classvalue", class_name_field="classname", tile_size_px=chip, stride_px=chip,
            extent=areas.train),
            SubFeedback(fb, 0, 15))
        entry.update(folder=str(exported.folder), chips=exported.chip_count)
    with _step(report, "landcover_train", fb) as entry:
        trained = train_model(exported.folder, out / "landcover_model.zip", _train_config(cfg, model="unet", loss="ce"),
                              SubFeedback(fb, 15, 75))
        entry.update(package=str(trained.package), device=trained.device, epochs=trained.epochs_run,
                     validation_miou=round(float(trained.metrics.get("miou", float("nan"))), 4))
    with _step(report, "landcover_classify", fb) as entry:
        classified = classify_pixels(ClassifyConfig(
            input_raster=scene.image, model=trained.package, output_classified=out / "landcover_classified.tif",
            device=cfg.device, extent=areas.test), SubFeedback(fb, 75, 90))
        entry.update(output=str(classified.output_classified), device=classified.device,
                     megapixels_per_second=round(classified.megapixels_per_second, 3))
    with _step(report, "landcover_accuracy", fb) as entry:
        accuracy = assess_accuracy(AccuracyConfig(
            classified=classified.output_classified, reference=scene.class_raster,
            output_report=out / "landcover_accuracy.json"), SubFeedback(fb, 90, 100))
        entry.update(report=str(out / "landcover_accuracy.json"), overall_accuracy=accuracy["overall_accuracy"],
                     kappa=accuracy["kappa"], miou=accuracy["miou"],
                     f1={c["name"]: c["f1"] for c in accuracy["per_class"].values()})


def _roads_chain(scene: Any, areas: DemoAreas, out: Path, cfg: DemoConfig, report: dict[str, Any], fb: Feedback) -> None:
    from .chips import ExportConfig, export_training_data
    from .road_metrics import evaluate_roads
    from .roads import VectorizeConfig, extract_roads
    from .training import train_model

    chip = (cfg.chip_px, cfg.chip_px)
    with _step(report, "roads_export", fb) as entry:
        exported = export_training_data(ExportConfig(
            str(scene.image), str(scene.road_centerlines), str(out / "chips_roads"), label_mode="road_binary",
            buffer_m=2.0, tile_size_px=chip, stride_px=(cfg.chip_px // 2, cfg.chip_px // 2), extent=areas.train),
            SubFeedback(fb, 0, 15))
        entry.update(folder=str(exported.folder), chips=exported.chip_count)
    with _step(report, "roads_train", fb) as entry:
        trained = train_model(exported.folder, out / "road_model.zip", _train_config(cfg, model="linknet", batch_size=4, learning_rate=0.005),
                              SubFeedback(fb, 15, 75))
        entry.update(package=str(trained.package), device=trained.device, epochs=trained.epochs_run,
                     validation_road_iou=round(float(trained.metrics.get("road_iou", float("nan"))), 4))
    with _step(report, "roads_extract", fb) as entry:
        lines = extract_roads(scene.image, trained.package, out / "road_probability.tif", out / "roads.gpkg",
                              out / "road_nodes.gpkg", VectorizeConfig(min_spur_m=5.0), device=cfg.device,
                              feedback=SubFeedback(fb, 75, 95), extent=areas.test)
        entry.update(lines=str(lines.lines), edges=lines.edge_count, length_m=round(lines.total_length_m, 1))
    with _step(report, "roads_evaluate", fb) as entry:
        reference = _clip_lines(scene.road_centerlines, areas.test, out / "road_centerlines_test.gpkg")
        metrics = evaluate_roads(lines.lines, reference, out / "road_report.json",
                                 feedback=SubFeedback(fb, 95, 100))
        entry.update({k: metrics[k] for k in ("apls", "apls_gt_to_prop", "apls_prop_to_gt", "relaxed_precision",
                                              "relaxed_recall", "relaxed_f1") if k in metrics})


def _clip_lines(path: Path, bounds: tuple[float, float, float, float], output: Path) -> Path:
    """The reference centerlines inside the test area, so recall is not charged for the training area."""
    import numpy as np
    import shapely

    from .vectors import read_vector, write_vector

    layer = read_vector(path)
    clipped = shapely.clip_by_rect(np.asarray(layer.geometries, dtype=object), *bounds)
    keep = ~shapely.is_empty(clipped)
    attributes = {k: v[keep] for k, v in layer.attributes.items()}
    return write_vector(output, list(clipped[keep]), attributes, layer.crs, geometry_type="MultiLineString"
                        if any(g.geom_type == "MultiLineString" for g in clipped[keep]) else "LineString")


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    steps = report["steps"]
    summary: dict[str, Any] = {}
    if "landcover_accuracy" in steps:
        s = steps["landcover_accuracy"]
        summary["landcover"] = {"overall_accuracy": s["overall_accuracy"], "kappa": s["kappa"], "miou": s["miou"]}
    if "roads_evaluate" in steps:
        s = steps["roads_evaluate"]
        summary["roads"] = {k: s.get(k) for k in ("apls", "relaxed_f1")}
    summary["evaluated_on"] = report.get("evaluated_on")
    summary["seconds"] = round(sum(s.get("seconds", 0) for s in steps.values()), 1)
    return summary
