"""Training: proof that it learns, the model package contract, splits, augmentation, OOM backoff, cancel.

Sizes are tiny (64 px chips of the 512 px sample scene, ResNet-18 encoders of width 16) so the
default suite stays fast on two shared cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from core.datasets import label_mapping, open_training_folder, rotate_orientation, split_chips  # noqa: E402
from core.errors import CanceledError, ConfigError  # noqa: E402
from core.losses import IGNORE_INDEX, make_loss  # noqa: E402
from core.training import (  # noqa: E402
    TrainConfig,
    Trainer,
    metrics_from_confusion,
    one_cycle_lr,
    run_with_oom_backoff,
    train_model,
)
from tests.core.test_training_helpers import write_training_folder  # noqa: E402

TINY = {"encoder": "resnet18", "base_width": 16, "batch_size": 8, "patience": 0}


@pytest.fixture(scope="module")
def landcover_folder(sample_scene: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_folder(sample_scene, tmp_path_factory.mktemp("lc") / "chips", "landcover")


def export_landcover_chips(sample_scene: Any, out: Path) -> Path:
    """The REAL export (core.chips) of the sample scene's land-cover polygons as 64 px chips (< 1 s)."""
    from core.chips import ExportConfig, export_training_data

    export_training_data(ExportConfig(raster=str(sample_scene.image), labels=str(sample_scene.landcover_polygons),
                                      output_folder=str(out), class_field="classvalue", class_name_field="classname",
                                      tile_size_px=(64, 64), stride_px=(64, 64)))
    return out


@pytest.fixture(scope="module")
def exported_landcover(sample_scene: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """63 chips of 64 px from the real export of the sample scene."""
    return export_landcover_chips(sample_scene, tmp_path_factory.mktemp("export_lc") / "chips")


@pytest.fixture(scope="module")
def exported_roads(sample_scene: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The REAL road export of the sample scene: centerlines buffered 3 m (a 6 m band, SpaceNet-like), orientation
    chips (36 bins over 180 degrees), 64 px chips without overlap, chips without roads kept (< 1 s)."""
    from core.chips import ExportConfig, export_training_data

    out = tmp_path_factory.mktemp("export_rd") / "chips"
    export_training_data(ExportConfig(raster=str(sample_scene.image), labels=str(sample_scene.road_centerlines),
                                      output_folder=str(out), label_mode="road_binary", buffer_m=3.0,
                                      orientation=True, tile_size_px=(64, 64), stride_px=(64, 64),
                                      only_tiles_with_features=False))
    return out


@pytest.fixture(scope="module")
def road_folder(sample_scene: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_folder(sample_scene, tmp_path_factory.mktemp("rd") / "chips", "roads", orientation=True)


class Recorder:
    def __init__(self, cancel_after_epochs: int | None = None) -> None:
        self.messages: list[str] = []
        self.warnings: list[str] = []
        self.epochs = 0
        self.cancel_after = cancel_after_epochs

    def set_progress(self, percent: float) -> None:
        assert 0 <= percent <= 100

    def is_canceled(self) -> bool:
        return self.cancel_after is not None and self.epochs >= self.cancel_after

    def info(self, message: str) -> None:
        self.messages.append(message)
        if message.startswith("epoch "):
            self.epochs += 1

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def test_landcover_training_learns_and_writes_the_package(exported_landcover: Path, tmp_path: Path) -> None:
    """Export -> training end to end: the real export of the sample scene's polygons (63 chips of 64 px),
    10 CPU epochs of U-Net ResNet-18 width 32 on 50 chips (random split; the chips do not overlap): validation
    mIoU 0.52 and accuracy 0.83, against the trivial majority-class (fields) baseline of mIoU 0.08 and
    accuracy 0.51 on the same 13 validation chips. About 10 s on an idle 2-core CPU."""
    from core.model_package import load_package

    cfg = TrainConfig(model="unet", epochs=10, learning_rate=0.01, loss="ce", val_split="random",
                      **{**TINY, "base_width": 32})
    result = train_model(exported_landcover, tmp_path / "model", cfg, Recorder())
    cm = np.asarray(json.loads((result.report_dir / "metrics.json").read_text())["confusion_matrix"])
    truth = cm.sum(1)
    trivial_acc = truth.max() / truth.sum()
    trivial_miou = trivial_acc / np.count_nonzero(truth)  # majority class IoU = its share; others 0
    assert result.metrics["miou"] > max(0.4, 4 * trivial_miou), (result.metrics["miou"], trivial_miou)
    assert result.metrics["accuracy"] > max(0.75, trivial_acc + 0.2), (result.metrics["accuracy"], trivial_acc)
    # The package follows docs/formats.md and reproduces the best checkpoint.
    d = json.loads((tmp_path / "model" / "model.json").read_text())
    assert d["architecture"] == {"name": "unet", "in_channels": 4, "num_classes": 6,
                                 "options": {"encoder": "resnet18", "base_width": 32}}
    assert d["output_values"] == [1, 2, 3, 4, 5, 6] and d["ignore_value"] == 0
    assert [c["name"] for c in d["classes"]][:2] == ["water", "forest"] and d["classes"][0]["color"] == "#1f78b4"
    assert [b["name"] for b in d["bands"]] == ["red", "green", "blue", "nir"]
    ds = json.loads((exported_landcover / "dataset.json").read_text())
    assert d["normalization"]["mean"] == pytest.approx([b["mean"] for b in ds["bands"]])
    assert d["stretch"] == ds["stretch"] and d["cell_size"] == [0.5, 0.5] and d["crs"] == ds["crs"]
    assert d["tile_size_px"] == 64 and d["recommended_padding_px"] == 16
    assert d["training"]["val_split"] == "random" and d["training"]["epochs_run"] == 10
    assert d["validation_metrics"]["miou"] == pytest.approx(result.metrics["miou"])
    assert set(d["validation_metrics"]["per_class"]) == {"1", "2", "3", "4", "5", "6"}
    pkg = load_package(tmp_path / "model")
    assert pkg.in_channels == 4
    for name in ("history.csv", "loss_curve.png", "predictions.png", "metrics.json", "metrics_per_class.csv",
                 "checkpoint_best.pt", "checkpoint_last.pt"):
        assert (result.report_dir / name).stat().st_size > 0, name
    header = (result.report_dir / "history.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,train_loss,valid_loss,accuracy,miou,seconds")


def test_blocked_split_never_overlaps(sample_scene: Any, tmp_path: Path) -> None:
    folder = write_training_folder(sample_scene, tmp_path / "ov", "landcover", chip_px=64, stride_px=32)
    tf = open_training_folder(folder)
    train, val, info = split_chips(tf, 20, "blocked", seed=3)
    b = np.asarray(tf.bounds)
    for i in train:
        for j in val:
            dx = min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0])
            dy = min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1])
            assert not (dx > 0 and dy > 0), (i, j)
    assert info["dropped_chips"] > 0 and 0.1 < len(val) / len(tf.names) < 0.4
    r_train, r_val, _ = split_chips(tf, 20, "random", seed=3)
    assert sorted(r_train + r_val) == list(range(len(tf.names)))
    with pytest.raises(ConfigError, match="val_percent"):
        split_chips(tf, 0, "blocked")


def test_label_mapping_ignores_zero_and_requested_classes(landcover_folder: Path) -> None:
    tf = open_training_folder(landcover_folder)
    m = label_mapping(tf, (0, 5))
    assert m.output_values == (1, 2, 3, 4, 6)
    assert list(m.map(np.array([0, 1, 5, 6], dtype=np.uint8))) == [IGNORE_INDEX, 0, IGNORE_INDEX, 4]


def rotate_orientation_360(img: np.ndarray, bins: int, k: int, flip: bool) -> np.ndarray:
    return rotate_orientation(img, bins, k, flip, period_deg=360.0)


def test_orientation_modulo_180_as_exported() -> None:
    """The export's convention (docs/formats.md): 36 bins of 5 degrees over 180 degrees."""
    bins = 36
    east = np.array([[0]], dtype=np.uint8)
    assert rotate_orientation(east, bins, 1, False)[0, 0] == 18  # a quarter turn: 0 -> 90 deg
    assert rotate_orientation(east, bins, 2, False)[0, 0] == 0  # a half turn: a road keeps its direction
    assert rotate_orientation(np.array([[9]], dtype=np.uint8), bins, 0, True)[0, 0] == 26  # mirror [45,50) -> (130,135]
    assert rotate_orientation(np.array([[36, 255]], dtype=np.uint8), bins, 1, True).tolist() == [[36, 255]]


def test_orientation_follows_rotations_and_flips() -> None:
    bins = 36  # 10-degree bins over 360 degrees, counter-clockwise from east
    east = np.array([[0]], dtype=np.uint8)
    assert rotate_orientation_360(east, bins, 1, False)[0, 0] == 9  # a quarter turn: east -> north (90 deg)
    north_east = np.array([[4]], dtype=np.uint8)  # 40-50 deg
    assert rotate_orientation_360(north_east, bins, 0, True)[0, 0] == 13  # mirror: 45 -> 135 deg (bin 13)
    img = np.array([[0, 17, 35, 36, 255]], dtype=np.uint8)
    assert np.array_equal(rotate_orientation_360(img, bins, 4, False), img)
    twice = rotate_orientation_360(rotate_orientation_360(img, bins, 0, True), bins, 0, True)
    assert np.array_equal(twice, img)
    assert list(rotate_orientation_360(img, bins, 2, False)[0, 3:]) == [36, 255]  # background and ignore kept

    # Geometric check on a real line: rotate a chip with a line at 30 degrees, then the bin of the
    # rotated line (measured from its pixels) equals the rotated bin.
    rr, cc = np.mgrid[0:41, 0:41]
    line = np.abs((cc - 20) * np.sin(np.radians(30)) + (rr - 20) * np.cos(np.radians(30))) < 0.7  # rows go down
    for k in range(4):
        for flip in (False, True):
            img2 = np.rot90(line, k)
            if flip:
                img2 = img2[:, ::-1]
            r, c = np.nonzero(img2)
            vec = np.linalg.svd(np.c_[c - c.mean(), -(r - r.mean())], full_matrices=False)[2][0]
            angle = np.degrees(np.arctan2(vec[1], vec[0])) % 180
            expected = rotate_orientation_360(np.array([[3]], dtype=np.uint8), bins, k, flip)[0, 0]  # 30-40 deg
            assert min(abs(expected * 10 + 5 - angle) % 180, 180 - abs(expected * 10 + 5 - angle) % 180) < 8


def test_losses_ignore_pixels() -> None:
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    target[0] = IGNORE_INDEX
    for name in ("ce", "dice", "focal", "ce_dice", "soft_iou"):
        loss = make_loss(name)(logits, target)
        loss.backward()
        assert torch.isfinite(loss)
        assert float(logits.grad[0].abs().sum()) == 0.0, name  # ignored chip gets no gradient
        logits.grad = None
    with pytest.raises(ConfigError, match="valid losses"):
        make_loss("lovasz")


def test_metrics_and_schedule() -> None:
    cm = np.array([[8, 2], [1, 9]])
    m = metrics_from_confusion(cm, (0, 1), roads=True)
    assert m["accuracy"] == pytest.approx(17 / 20)
    assert m["road_iou"] == pytest.approx(9 / 12)
    assert m["per_class"]["1"]["precision"] == pytest.approx(9 / 11)
    assert m["per_class"]["1"]["recall"] == pytest.approx(9 / 10)
    assert one_cycle_lr(0.0, 0.01) == pytest.approx(0.01 / 25)
    assert one_cycle_lr(0.3, 0.01) == pytest.approx(0.01)
    assert one_cycle_lr(1.0, 0.01) < 1e-6


def test_oom_backoff_halves_until_it_fits() -> None:
    calls: list[int] = []
    halved: list[int] = []

    def step(bs: int) -> str:
        calls.append(bs)
        if bs > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return "ok"

    assert run_with_oom_backoff(step, 16, lambda bs, exc: halved.append(bs)) == ("ok", 2)
    assert calls == [16, 8, 4, 2] and halved == [8, 4, 2]
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_with_oom_backoff(step, 16, lambda bs, exc: None, enabled=False)
    with pytest.raises(ValueError):  # other errors are not retried
        run_with_oom_backoff(lambda bs: (_ for _ in ()).throw(ValueError("bad")), 8, lambda bs, exc: None)


class OOMTrainer(Trainer):
    """Raises a CUDA out-of-memory error whenever a batch holds more than 2 chips."""

    def train_step(self, net: Any, batch: Any) -> float:
        if len(batch[0]) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by the test)")
        return super().train_step(net, batch)


def test_trainer_halves_batch_on_oom_and_finishes(landcover_folder: Path, tmp_path: Path) -> None:
    fb = Recorder()
    cfg = TrainConfig(model="unet", epochs=1, learning_rate=0.003, **{**TINY, "batch_size": 8})
    result = OOMTrainer(landcover_folder, tmp_path / "m", cfg, fb).run()
    assert result.batch_size == 2 and result.epochs_run == 1
    assert sum("out of memory" in w for w in fb.warnings) == 2  # 8 -> 4 -> 2
    assert (tmp_path / "m" / "model.json").exists()


def test_cancel_keeps_the_best_checkpoint_and_resume_continues(landcover_folder: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(model="unet", epochs=5, learning_rate=0.003, **TINY)
    result = train_model(landcover_folder, tmp_path / "m", cfg, Recorder(cancel_after_epochs=1))
    assert result.stopped == "canceled" and result.epochs_run == 1
    d = json.loads((tmp_path / "m" / "model.json").read_text())
    assert d["training"]["stopped"] == "canceled"
    resumed = train_model(landcover_folder, tmp_path / "m2", TrainConfig(
        model="unet", epochs=2, learning_rate=0.003, resume_from=str(result.report_dir / "checkpoint_last.pt"), **TINY),
        Recorder())
    assert resumed.epochs_run == 2 and resumed.stopped == "completed"
    with pytest.raises(CanceledError, match="before the first epoch"):
        train_model(landcover_folder, tmp_path / "m3", cfg, Recorder(cancel_after_epochs=0))
    assert not (tmp_path / "m3").exists()


def test_bad_inputs_give_clear_errors(landcover_folder: Path, road_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid models"):
        TrainConfig(model="deeplab")
    with pytest.raises(ConfigError, match="dataset.json"):
        train_model(tmp_path, tmp_path / "m", TrainConfig())
    with pytest.raises(ConfigError, match="orientation chips"):
        train_model(landcover_folder, tmp_path / "m", TrainConfig(model="multitask_road", epochs=1, **TINY))
    with pytest.raises(ConfigError, match="road_iou"):
        train_model(landcover_folder, tmp_path / "m", TrainConfig(monitor="road_iou", epochs=1, **TINY))


def test_multitask_road_learns_from_the_real_export(exported_roads: Path, tmp_path: Path) -> None:
    """Export -> training for roads: multi-task model (ResNet-18 width 16, both decoders), 10 CPU epochs, batch 4,
    on the real road export (road 12 % of the pixels). Validation road IoU 0.41 (accuracy 0.84), against the
    trivial baselines on the same 13 validation chips: all background = road IoU 0, all road = road IoU 0.14.
    About 15 s on an idle 2-core CPU."""
    cfg = TrainConfig(model="multitask_road", epochs=10, learning_rate=0.005, val_split="random",
                      **{**TINY, "batch_size": 4})
    result = train_model(exported_roads, tmp_path / "roads.zip", cfg, Recorder())
    cm = np.asarray(json.loads((result.report_dir / "metrics.json").read_text())["confusion_matrix"])
    all_road_iou = cm[1].sum() / cm.sum()  # predicting road everywhere: IoU = the road share
    assert result.metrics["road_iou"] > max(0.3, 2 * all_road_iou), (result.metrics, all_road_iou)
    d = json.loads(__import__("zipfile").ZipFile(tmp_path / "roads.zip").read("model.json"))
    assert d["output_values"] == [0, 1] and d["architecture"]["options"]["orientation_bins"] == 36
    assert d["task"] == "roads" and d["ignore_value"] == 255
    assert d["training"]["orientation"]["period_deg"] == 180.0


@pytest.mark.slow
def test_multitask_road_training_learns(road_folder: Path, tmp_path: Path) -> None:
    """The hand-made road folder (road mask = full road width, 3.5-14 m), blocked split, 16 epochs, width 32:
    road IoU far above the trivial all-background baseline (road IoU 0) and all-road baseline (~0.2)."""
    cfg = TrainConfig(model="multitask_road", epochs=16, learning_rate=0.005, **{**TINY, "batch_size": 4,
                                                                                  "base_width": 32})
    result = train_model(road_folder, tmp_path / "roads.zip", cfg, Recorder())
    cm = np.asarray(json.loads((result.report_dir / "metrics.json").read_text())["confusion_matrix"])
    assert result.metrics["road_iou"] > max(0.3, 2 * cm[1].sum() / cm.sum()), result.metrics
    d = json.loads(__import__("zipfile").ZipFile(tmp_path / "roads.zip").read("model.json"))
    assert d["output_values"] == [0, 1] and d["architecture"]["options"]["orientation_bins"] == 36
    assert d["task"] == "roads" and d["ignore_value"] == 255


def test_lr_finder_picks_a_rate_and_plots(landcover_folder: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(model="linknet", epochs=1, learning_rate=0.0, lr_finder_steps=12, **TINY)
    result = train_model(landcover_folder, tmp_path / "m", cfg, Recorder())
    assert 1e-5 <= result.learning_rate <= 1e-2
    assert (result.report_dir / "lr_finder.png").stat().st_size > 1000
