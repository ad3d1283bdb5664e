"""Train a segmentation model on a training folder and write a model package (docs/formats.md).

One call, :func:`train_model`, does the whole step: split the chips (spatially blocked by default),
build the network from the registry, optionally run the learning-rate finder, train with AdamW and a
one-cycle schedule (mixed precision on CUDA), validate every epoch, keep the best checkpoint, stop
early when the monitored metric stalls, and write the package plus a report folder (per-epoch CSV,
loss curve, per-class metrics, prediction previews).

It runs the same in the worker process started by QGIS, on the command line, and under ``torchrun``
(DistributedDataParallel; gloo on CPU, NCCL on GPUs). CUDA out-of-memory halves the batch and retries
the epoch from its starting weights instead of failing.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from . import __version__
from .classes import default_color
from .config import StepConfig, require
from .datasets import (
    SPLITS,
    ChipDataset,
    LabelMapping,
    TrainingFolder,
    balanced_weights,
    class_pixel_counts,
    label_mapping,
    open_training_folder,
    seed_augmentation_worker,
    split_chips,
)
from .errors import CanceledError, ConfigError, ModelPackageError
from .losses import IGNORE_INDEX, LOSSES, make_loss
from .outputs import atomic_output, prepare_output
from .progress import Feedback, NullFeedback, report_epoch

MONITORS = ("auto", "valid_loss", "miou", "road_iou", "accuracy")
CLASS_WEIGHTS = ("none", "balanced")
EventSink = Callable[[str, dict[str, Any]], None]


@dataclasses.dataclass(frozen=True)
class TrainConfig(StepConfig):
    """Every training parameter (defaults are the Processing algorithm's defaults).

    Attributes:
        model: registry name (unet, linknet, multitask_road).
        encoder: resnet18 / resnet34 / resnet50.
        base_width: encoder width (64 = standard ResNet; smaller for quick CPU runs).
        pretrained: "" (none), "imagenet" (torch.hub, needs internet) or a torchvision ResNet .pth file.
        epochs: maximum number of epochs.
        batch_size: chips per step (halved automatically on CUDA out-of-memory).
        learning_rate: peak one-cycle learning rate; 0 runs the learning-rate finder first.
        val_percent: share of chips held out for validation (percent).
        val_split: "blocked" (spatial blocks, no overlap between the sides) or "random".
        ignore_classes: class values left out of training and metrics (0 is always ignored).
        class_weights: "none" or "balanced" (inverse frequency) for cross-entropy and focal loss.
        loss: auto (ce_dice for land cover, soft_iou for roads), ce, dice, focal, ce_dice, soft_iou.
        monitor: metric for the best checkpoint and early stopping (auto: miou or road_iou).
        patience: epochs without improvement before stopping (0 = never stop early).
        resume_from: a checkpoint_last.pt to resume, or a model package to fine-tune.
        mixed_precision: float16 autocast on CUDA (ignored elsewhere).
        device: auto / cuda / cuda:N / mps / cpu.
        seed: makes splits, initialisation and augmentation repeatable.
    """

    model: str = "unet"
    encoder: str = "resnet34"
    base_width: int = 64
    pretrained: str = ""
    epochs: int = 20
    batch_size: int = 8
    learning_rate: float = 0.0
    weight_decay: float = 1e-4
    val_percent: float = 20.0
    val_split: str = "blocked"
    ignore_classes: tuple[int, ...] = ()
    class_weights: str = "none"
    loss: str = "auto"
    monitor: str = "auto"
    patience: int = 5
    resume_from: str = ""
    mixed_precision: bool = True
    device: str = "auto"
    seed: int = 42
    num_workers: int = 0
    orientation_weight: float = 1.0
    lr_finder_steps: int = 60
    preview_chips: int = 4
    augment: bool = True

    def validate(self) -> None:
        from .models import available_models

        require(self.model in available_models(),
                f"unknown model {self.model!r}; valid models: {', '.join(available_models())}")
        require(self.encoder in ("resnet18", "resnet34", "resnet50"),
                f"unknown encoder {self.encoder!r}; choose resnet18, resnet34 or resnet50")
        require(self.base_width >= 4 and self.base_width % 4 == 0, f"base_width must be a multiple of 4, got {self.base_width}")
        require(1 <= self.epochs <= 10_000, f"epochs must be 1-10000, got {self.epochs}")
        require(1 <= self.batch_size <= 4096, f"batch_size must be 1-4096, got {self.batch_size}")
        require(0 <= self.learning_rate < 10, f"learning_rate must be >= 0 (0 = find it), got {self.learning_rate}")
        require(0 < self.val_percent < 100, f"val_percent must be between 0 and 100, got {self.val_percent}")
        require(self.val_split in SPLITS, f"val_split must be one of {', '.join(SPLITS)}, got {self.val_split!r}")
        require(self.class_weights in CLASS_WEIGHTS, f"class_weights must be none or balanced, got {self.class_weights!r}")
        require(self.loss == "auto" or self.loss in LOSSES, f"loss must be auto or one of {', '.join(LOSSES)}")
        require(self.monitor in MONITORS, f"monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}")
        require(self.patience >= 0, f"patience must be >= 0, got {self.patience}")
        require(all(0 <= v <= 255 for v in self.ignore_classes), "ignore_classes must be class values 0-255")
        require(self.num_workers >= 0, "num_workers must be >= 0")


@dataclasses.dataclass
class TrainResult:
    """What training produced. ``stopped`` is completed, early_stopping or canceled."""

    package: Path
    report_dir: Path
    device: str
    epochs_run: int
    best_epoch: int
    monitor: str
    best_metric: float
    metrics: dict[str, Any]
    stopped: str
    batch_size: int
    learning_rate: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


# --------------------------------------------------------------------------- helpers

CHECKPOINT_VERSION = 2
# Settings that decide what the next epoch does: resuming with another value cannot reproduce the straight run.
_RESUME_SENSITIVE = ("model", "encoder", "base_width", "epochs", "batch_size", "learning_rate", "weight_decay",
                     "val_percent", "val_split", "ignore_classes", "class_weights", "loss", "seed", "augment",
                     "orientation_weight", "mixed_precision")


def default_report_dir(output: str | Path) -> Path:
    """Where checkpoints and reports go when no report folder is given: ``<output stem>_training`` beside it."""
    out = Path(output)
    return out.with_name(out.stem + "_training")


def _save_file_atomically(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary sibling, then one ``os.replace``.

    A process killed at any instant (SIGKILL, power loss) leaves either the previous checkpoint or the
    new one under ``path``, never none and never a torn file; a leftover ``.partial`` file is harmless.
    """
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is a device out-of-memory error (CUDA, or the RuntimeError MPS/HIP raise)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_with_oom_backoff(run: Callable[[int], Any], batch_size: int, on_halve: Callable[[int, BaseException], None],
                         enabled: bool = True) -> tuple[Any, int]:
    """Call ``run(batch_size)``; on out-of-memory halve the batch and call again, down to 1.

    Returns:
        ``run``'s result and the batch size that worked.
    """
    while True:
        try:
            return run(batch_size), batch_size
        except Exception as exc:
            if not enabled or not is_oom(exc) or batch_size <= 1:
                raise
            batch_size = max(1, batch_size // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            on_halve(batch_size, exc)


def one_cycle_lr(progress: float, max_lr: float, pct_start: float = 0.3, div: float = 25.0,
                 final_div: float = 1e4) -> float:
    """One-cycle schedule (Smith 2018) as a function of training progress in [0, 1] (cosine phases).

    A function of progress rather than a step counter, so halving the batch (more steps per epoch)
    or resuming keeps the schedule on track.
    """
    p = min(max(progress, 0.0), 1.0)
    start, end = max_lr / div, max_lr / div / final_div
    if p < pct_start:
        t = p / pct_start
        return start + (max_lr - start) * (1 - math.cos(math.pi * t)) / 2
    t = (p - pct_start) / (1 - pct_start)
    return end + (max_lr - end) * (1 + math.cos(math.pi * t)) / 2


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    valid = target != IGNORE_INDEX
    idx = target[valid] * classes + pred[valid]
    return torch.bincount(idx.reshape(-1), minlength=classes * classes).reshape(classes, classes).cpu()


def metrics_from_confusion(cm: np.ndarray, output_values: tuple[int, ...], roads: bool) -> dict[str, Any]:
    """Per-class precision/recall/F1/IoU (rows = truth, columns = prediction), accuracy, mIoU, road IoU."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    per_class: dict[str, dict[str, float]] = {}
    ious = []
    for i, v in enumerate(output_values):
        precision = tp[i] / (tp[i] + fp[i]) if tp[i] + fp[i] > 0 else 0.0
        recall = tp[i] / (tp[i] + fn[i]) if tp[i] + fn[i] > 0 else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        union = tp[i] + fp[i] + fn[i]
        iou = tp[i] / union if union > 0 else float("nan")
        if union > 0:
            ious.append(iou)
        per_class[str(v)] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                             "iou": float(iou) if union > 0 else 0.0, "support_px": int(cm[i].sum())}
    total = cm.sum()
    out: dict[str, Any] = {
        "accuracy": float(tp.sum() / total) if total > 0 else 0.0,
        "miou": float(np.mean(ious)) if ious else 0.0,
        "per_class": per_class,
    }
    if roads:
        out["road_iou"] = per_class[str(output_values[-1])]["iou"]
    return out


@dataclasses.dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_request: str) -> _Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_request.lower() in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
    return _Dist(rank, world, local)


class _TrainForward(nn.Module):
    """What DDP wraps: the model's training forward (both heads of the multi-task model)."""

    def __init__(self, model: nn.Module, multi: bool) -> None:
        super().__init__()
        self.model = model
        self.multi = multi

    def forward(self, x: torch.Tensor) -> Any:
        return self.model.forward_multi(x) if self.multi else self.model(x)  # type: ignore[operator]


# --------------------------------------------------------------------------- trainer


class Trainer:
    """One training run. :func:`train_model` is the public entry point; tests subclass to inject faults."""

    def __init__(self, folder: str | Path, output: str | Path, config: TrainConfig, feedback: Feedback | None = None,
                 report_dir: str | Path | None = None, events: EventSink | None = None) -> None:
        self.cfg = config
        self.fb = feedback or NullFeedback()
        self.events = events
        self.output = Path(output)
        self.report_dir = Path(report_dir) if report_dir else default_report_dir(self.output)
        self.tf: TrainingFolder = open_training_folder(folder)
        self.dist = _init_distributed(config.device)

    # ---------------------------------------------------------------- events
    def emit(self, kind: str, **data: Any) -> None:
        if not self.dist.main:
            return
        if self.events is not None:
            self.events(kind, data)

    def info(self, message: str) -> None:
        if self.dist.main:
            self.fb.info(message)
            self.emit("info", message=message)

    # ---------------------------------------------------------------- setup
    def _setup(self) -> None:
        from .device import select_device
        from .models import build_model

        cfg, tf = self.cfg, self.tf
        torch.manual_seed(cfg.seed + self.dist.rank * 0)
        np.random.seed(cfg.seed % 2**32)
        choice = select_device(cfg.device if not (self.dist.enabled and torch.cuda.is_available()
                                                  and cfg.device in ("auto", "cuda")) else f"cuda:{self.dist.local_rank}")
        self.device = choice.device
        self.device_text = choice.description + (f", rank {self.dist.rank}/{self.dist.world}" if self.dist.enabled else "")
        self.amp = bool(cfg.mixed_precision and self.device.type == "cuda")
        self.roads = tf.task == "roads"
        self.mapping: LabelMapping = label_mapping(tf, tuple(sorted({0, *cfg.ignore_classes})) if not self.roads else ())
        self.num_classes = len(self.mapping.output_values)
        self.multi = cfg.model == "multitask_road"
        if self.multi and not tf.has_orientation:
            raise ConfigError(f"model multitask_road needs orientation chips, and {tf.folder} has none; export with "
                              "orientation labels (road mode) or train linknet/unet instead")
        train_idx, val_idx, self.split = split_chips(tf, cfg.val_percent, cfg.val_split, cfg.seed)
        self.train_ds = ChipDataset(tf, train_idx, self.mapping, augment=cfg.augment, use_orientation=self.multi,
                                    seed=cfg.seed + self.dist.rank)
        self.val_ds = ChipDataset(tf, val_idx, self.mapping, augment=False, use_orientation=self.multi, seed=cfg.seed)
        self.tile_px = int(self.train_ds.raw(0)[1].shape[-1])
        self.options: dict[str, Any] = {"encoder": cfg.encoder, "base_width": cfg.base_width}
        if self.multi:
            self.options["orientation_bins"] = self.train_ds.bins
        model = build_model(cfg.model, tf.band_count, self.num_classes, **self.options)
        if cfg.pretrained and not cfg.resume_from:
            from .models.resnet import load_pretrained

            load_pretrained(model.encoder, cfg.pretrained)  # type: ignore[arg-type]
        self.model = model.to(self.device)
        weights = None
        if cfg.class_weights == "balanced":
            w = balanced_weights(class_pixel_counts(self.train_ds, self.num_classes))
            weights = torch.tensor(w, dtype=torch.float32, device=self.device)
            self.info("class weights: " + ", ".join(f"{v}={x:.2f}" for v, x in zip(self.mapping.output_values, w)))
        loss_name = cfg.loss if cfg.loss != "auto" else ("soft_iou" if self.roads else "ce_dice")
        self.loss_name = loss_name
        self.loss_fn = make_loss(loss_name, weights)
        self.orient_loss = make_loss("ce")
        self.monitor = cfg.monitor if cfg.monitor != "auto" else ("road_iou" if self.roads else "miou")
        if self.monitor == "road_iou" and not self.roads:
            raise ConfigError("monitor road_iou needs a road training folder; use miou for land cover")
        self.maximize = self.monitor != "valid_loss"
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.batch_size = cfg.batch_size
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.best_metric = -math.inf if self.maximize else math.inf
        self.best_epoch = 0
        self.lr = cfg.learning_rate

    def _resume(self) -> None:
        src = Path(self.cfg.resume_from)
        if src.suffix == ".pt" and src.is_file():
            try:
                ckpt = torch.load(src, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ModelPackageError(f"cannot resume from {src}: {exc}; pass a checkpoint_last.pt written by training") from exc
            if not isinstance(ckpt, dict) or "model" not in ckpt:
                raise ModelPackageError(f"{src} is not a training checkpoint (checkpoint_last.pt)")
            try:
                self.model.load_state_dict(ckpt["model"])
            except RuntimeError as exc:
                raise ConfigError(f"checkpoint {src} does not fit the model {self.cfg.model}/{self.cfg.encoder}/"
                                  f"width {self.cfg.base_width}: {str(exc).splitlines()[0]}") from exc
            if "optimizer" in ckpt:
                self.optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
            rng = ckpt.get("rng") or {}
            if isinstance(rng.get("augment"), str):
                self.train_ds.set_augment_state(rng["augment"])
            if isinstance(rng.get("torch"), torch.Tensor):
                torch.set_rng_state(rng["torch"])
            if isinstance(rng.get("cuda"), torch.Tensor) and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
            self._warn_resume_differences(src, ckpt.get("config") or {})
            self.start_epoch = int(ckpt.get("epoch", 0))
            self.history = list(ckpt.get("history", []))
            self.best_metric = float(ckpt.get("best_metric", self.best_metric))
            self.best_epoch = int(ckpt.get("best_epoch", 0))
            self.lr = float(ckpt.get("lr", self.lr)) or self.lr
            self.batch_size = int(ckpt.get("batch_size", self.batch_size))
            best = src.with_name("checkpoint_best.pt")
            if best.is_file() and best.resolve() != (self.report_dir / "checkpoint_best.pt").resolve():
                self.report_dir.mkdir(parents=True, exist_ok=True)
                import shutil

                shutil.copy2(best, self.report_dir / "checkpoint_best.pt")
            self.info(f"resumed from {src} after epoch {self.start_epoch}")
            return
        from .model_package import load_package

        pkg = load_package(src)
        try:
            self.model.load_state_dict(pkg.model.state_dict())
        except RuntimeError as exc:
            raise ConfigError(f"model package {src} does not fit the requested model: {str(exc).splitlines()[0]}; "
                              "choose the same architecture, encoder, width, bands and classes") from exc
        self.info(f"initialised from model package {src} (fine-tuning)")

    def _warn_resume_differences(self, src: Path, saved: dict[str, Any]) -> None:
        """Say which settings differ from the run that wrote the checkpoint (the result will then differ too)."""
        now = self.cfg.to_dict()
        changed = [f"{k} {saved[k]!r} -> {now[k]!r}" for k in _RESUME_SENSITIVE
                   if k in saved and k in now and _plain(saved[k]) != _plain(now[k])]
        if changed and self.dist.main:
            message = (f"resuming {src} with other settings than the run that wrote it ({'; '.join(changed)}): "
                       "training continues, but will not end where the uninterrupted run would have")
            self.fb.warning(message)

    # ---------------------------------------------------------------- loops
    def _loader(self, ds: ChipDataset, batch_size: int, train: bool, epoch: int = 0) -> DataLoader[Any]:
        sampler: Any = None
        if train and self.dist.enabled:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(ds, num_replicas=self.dist.world, rank=self.dist.rank, shuffle=True,
                                         seed=self.cfg.seed, drop_last=False)
            sampler.set_epoch(epoch)
        gen = torch.Generator()
        gen.manual_seed(self.cfg.seed + epoch)
        return DataLoader(ds, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                          drop_last=train and len(ds) > batch_size and sampler is None, generator=gen,
                          num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=False,
                          worker_init_fn=seed_augmentation_worker if self.cfg.num_workers > 0 else None)

    def compute_loss(self, out: Any, y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        if self.multi:
            road, orient = out
            return self.loss_fn(road, y) + self.cfg.orientation_weight * self.orient_loss(orient, o)  # type: ignore[no-any-return]
        return self.loss_fn(out, y)

    def train_step(self, net: nn.Module, batch: tuple[torch.Tensor, ...]) -> float:
        """Forward, backward and optimizer step on one batch; returns the loss."""
        x, y, o = (t.to(self.device, non_blocking=True) for t in batch)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            out = net(x)
            loss = self.compute_loss(out, y, o)
        self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def _check_cancel(self) -> None:
        if self.fb.is_canceled():
            raise CanceledError("training canceled")

    def train_epoch(self, net: nn.Module, epoch: int, batch_size: int) -> float:
        loader = self._loader(self.train_ds, batch_size, True, epoch)
        net.train()
        total, count = 0.0, 0
        steps = max(1, len(loader))
        for i, batch in enumerate(loader):
            self._check_cancel()
            lr = self.lr if self.fixed_lr else one_cycle_lr((epoch + i / steps) / self.cfg.epochs, self.lr)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            loss = self.train_step(net, batch)
            if not math.isfinite(loss):
                raise ConfigError(f"the training loss became {loss} at epoch {epoch + 1}; lower the learning rate "
                                  "(or set it to 0 to run the learning-rate finder)")
            total += loss * len(batch[0])
            count += len(batch[0])
            done = (epoch - self.start_epoch + (i + 1) / steps) / max(1, self.cfg.epochs - self.start_epoch)
            if self.dist.main:
                self.fb.set_progress(5 + 90 * done)
        return total / max(1, count)

    @torch.no_grad()
    def evaluate(self, collect: int = 0) -> tuple[float, dict[str, Any], list[tuple[np.ndarray, ...]]]:
        """Validation loss and metrics; optionally the first ``collect`` (image, truth, prediction) triples."""
        net = self.model
        net.eval()
        cm = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        total, count = 0.0, 0
        samples: list[tuple[np.ndarray, ...]] = []
        for batch in self._loader(self.val_ds, max(1, self.batch_size), False):
            x, y, o = (t.to(self.device) for t in batch)
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
                out = net.forward_multi(x) if self.multi else net(x)  # type: ignore[operator]
                loss = self.compute_loss(out, y, o)
            logits = out[0] if self.multi else out
            pred = logits.argmax(1)
            cm += confusion_matrix(pred, y, self.num_classes)
            total += float(loss) * len(x)
            count += len(x)
            for j in range(len(x)):
                if len(samples) < collect:
                    samples.append((x[j].float().cpu().numpy(), y[j].cpu().numpy(), pred[j].cpu().numpy()))
        metrics = metrics_from_confusion(cm.numpy(), self.mapping.output_values, self.roads)
        metrics["confusion_matrix"] = cm.tolist()
        return total / max(1, count), metrics, samples

    def _find_lr(self) -> float:
        from .lr_finder import find_lr, plot_lr_finder

        net = _TrainForward(self.model, self.multi)
        net.train()
        bs = min(self.batch_size, len(self.train_ds))

        def batches() -> Iterator[Any]:
            return iter(self._loader(self.train_ds, bs, True))

        result = find_lr(self.model, self.optimizer, batches, lambda b: self.train_step(net, b),
                         max_steps=self.cfg.lr_finder_steps)
        lr = result.suggestion
        if self.dist.enabled:
            import torch.distributed as dist

            t = torch.tensor([lr], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
            dist.broadcast(t, 0)
            lr = float(t.item())
        if self.dist.main:
            self.report_dir.mkdir(parents=True, exist_ok=True)
            plot_lr_finder(result, self.report_dir / "lr_finder.png")
        self.info(f"learning-rate finder: {len(result.lrs)} steps, suggested learning rate {lr:.2e} "
                  f"(plot: {self.report_dir / 'lr_finder.png'})")
        self.emit("lr_finder", suggestion=lr, plot=str(self.report_dir / "lr_finder.png"))
        return lr

    # ---------------------------------------------------------------- checkpoints and reports
    def _save_checkpoints(self, epoch: int, improved: bool) -> None:
        if not self.dist.main:
            return
        self.report_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        if improved:
            _save_file_atomically({"model": state, "epoch": epoch, "metric": self.best_metric},
                                  self.report_dir / "checkpoint_best.pt")
        # Everything the next epoch depends on, so a resumed run (after a cancel, a crash or SIGKILL) ends
        # exactly where the uninterrupted run with the same seed would: weights (with batch-norm statistics),
        # optimizer moments and step counts, the AMP loss scale, the augmentation stream and the global RNG
        # states, the schedule's inputs (lr, epochs) and the early-stopping state. The shuffle order (and
        # DataLoader workers' augmentation seeds) come from a generator seeded per epoch.
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "augment": self.train_ds.augment_state()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        _save_file_atomically({
            "version": CHECKPOINT_VERSION, "model": state, "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng, "epoch": epoch, "history": self.history,
            "best_metric": self.best_metric, "best_epoch": self.best_epoch, "lr": self.lr,
            "batch_size": self.batch_size, "config": self.cfg.to_dict(),
        }, self.report_dir / "checkpoint_last.pt")
        self._write_history()

    def _write_history(self) -> None:
        if not self.history:
            return
        fields = list(self.history[0].keys())
        with atomic_output(self.report_dir / "history.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.history)

    def _plot_history(self) -> None:
        import matplotlib  # type: ignore[import-untyped]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-untyped]

        epochs = [r["epoch"] for r in self.history]
        fig, ax = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
        ax[0].plot(epochs, [r["train_loss"] for r in self.history], "o-", label="train loss")
        ax[0].plot(epochs, [r["valid_loss"] for r in self.history], "o-", label="validation loss")
        ax[0].set_xlabel("epoch")
        ax[0].legend()
        for key in ("miou", "road_iou", "accuracy"):
            if key in self.history[0]:
                ax[1].plot(epochs, [r[key] for r in self.history], "o-", label=key)
        ax[1].axvline(self.best_epoch, color="grey", linestyle="--", label=f"best epoch {self.best_epoch}")
        ax[1].set_ylim(0, 1)
        ax[1].set_xlabel("epoch")
        ax[1].legend()
        fig.tight_layout()
        fig.savefig(self.report_dir / "loss_curve.png")
        plt.close(fig)

    def _class_table(self) -> list[dict[str, Any]]:
        known = {int(c["value"]): c for c in self.tf.description["classes"]}
        out = []
        for v in self.mapping.output_values:
            c = known.get(v, {})
            name = c.get("name") or ("road" if self.roads and v == 1 else "background" if self.roads else f"class {v}")
            color = c.get("color") or ("#ffffff" if self.roads and v == 0 else default_color(max(v, 1)))
            out.append({"value": v, "name": str(name), "color": str(color)})
        return out

    def _write_metrics(self, metrics: dict[str, Any]) -> None:
        (self.report_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        names = {c["value"]: c["name"] for c in self._class_table()}
        with open(self.report_dir / "metrics_per_class.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["value", "name", "precision", "recall", "f1", "iou", "support_px"])
            for v, m in metrics["per_class"].items():
                w.writerow([v, names.get(int(v), ""), f"{m['precision']:.4f}", f"{m['recall']:.4f}",
                            f"{m['f1']:.4f}", f"{m['iou']:.4f}", m["support_px"]])

    def _plot_predictions(self, samples: list[tuple[np.ndarray, ...]]) -> None:
        import matplotlib  # type: ignore[import-untyped]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-untyped]
        from matplotlib.colors import ListedColormap  # type: ignore[import-untyped]

        if not samples:
            return
        colors = [c["color"] for c in self._class_table()]
        cmap = ListedColormap(colors)
        fig, axes = plt.subplots(len(samples), 3, figsize=(9, 3 * len(samples)), dpi=80, squeeze=False)
        for row, (x, y, p) in zip(axes, samples):
            rgb = x[:3] if x.shape[0] >= 3 else np.repeat(x[:1], 3, 0)
            lo, hi = np.percentile(rgb, 2), np.percentile(rgb, 98)
            row[0].imshow(np.clip((rgb.transpose(1, 2, 0) - lo) / max(hi - lo, 1e-6), 0, 1))
            truth = np.ma.masked_equal(y.astype(np.int64), IGNORE_INDEX)  # type: ignore[no-untyped-call]
            row[1].imshow(truth, cmap=cmap, vmin=-0.5, vmax=len(colors) - 0.5, interpolation="nearest")
            row[2].imshow(p, cmap=cmap, vmin=-0.5, vmax=len(colors) - 0.5, interpolation="nearest")
            for a, title in zip(row, ("image", "truth", "prediction")):
                a.set_title(title)
                a.axis("off")
        fig.tight_layout()
        fig.savefig(self.report_dir / "predictions.png")
        plt.close(fig)

    def _definition(self, metrics: dict[str, Any], stopped: str) -> dict[str, Any]:
        desc, cfg = self.tf.description, self.cfg
        validation: dict[str, Any] = {k: metrics[k] for k in ("accuracy", "miou", "road_iou") if k in metrics}
        validation["per_class"] = metrics["per_class"]
        import rasterio

        return {
            "task": self.tf.task,
            "architecture": {"name": cfg.model, "in_channels": self.tf.band_count, "num_classes": self.num_classes,
                             "options": dict(self.options)},
            "bands": [{"index": int(b.get("index", i + 1)), "name": str(b.get("name", f"band {i + 1}"))}
                      for i, b in enumerate(desc["bands"])],
            "classes": self._class_table(),
            "output_values": list(self.mapping.output_values),
            "ignore_value": self.tf.ignore_value,
            "normalization": {"mean": self.train_ds.mean.ravel().tolist(), "std": self.train_ds.std.ravel().tolist()},
            "stretch": desc.get("stretch") or {"method": "none", "low": [], "high": []},
            "input_nodata": desc.get("image_nodata"),
            "cell_size": desc.get("cell_size"),
            "cell_size_units": desc.get("cell_size_units", "metre"),
            "crs": desc.get("crs"),
            "tile_size_px": self.tile_px,
            "recommended_padding_px": max(16, int(self.tile_px // 4) // 8 * 8),
            "validation_metrics": validation,
            "training": {
                "config": cfg.to_dict(), "training_folder": str(self.tf.folder), "epochs_run": len(self.history),
                "best_epoch": self.best_epoch, "monitor": self.monitor, "best_metric": self.best_metric,
                "stopped": stopped, "val_split": self.split["mode"], "split": self.split, "loss": self.loss_name,
                "learning_rate": self.lr, "batch_size": self.batch_size, "device": self.device_text,
                "mixed_precision": self.amp, "world_size": self.dist.world, "history": self.history,
                "orientation": desc.get("orientation") if self.multi else None,
            },
            "software": {"road_landcover": __version__, "torch": torch.__version__, "numpy": np.__version__,
                         "rasterio": rasterio.__version__},
        }

    # ---------------------------------------------------------------- main
    def run(self) -> TrainResult:
        cfg = self.cfg
        prepare_output(self.output)
        self._setup()
        if cfg.resume_from:
            self._resume()
        self.info(f"training {cfg.model} ({cfg.encoder}, width {cfg.base_width}) on {self.device_text}; "
                  f"{self.split['train_chips']} training / {self.split['val_chips']} validation chips "
                  f"({self.split['mode']} split, {self.split['dropped_chips']} overlapping chips dropped); "
                  f"classes {list(self.mapping.output_values)}; loss {self.loss_name}; monitor {self.monitor}")
        self.emit("start", device=self.device_text, split=self.split, classes=list(self.mapping.output_values),
                  monitor=self.monitor, epochs=cfg.epochs, model=cfg.model)
        self.fb.set_progress(1)
        self.fixed_lr = False
        if self.lr <= 0:
            self.lr = self._find_lr()
        self.fb.set_progress(5)
        net: nn.Module = _TrainForward(self.model, self.multi)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DistributedDataParallel(net, device_ids=ids)
        stopped = "completed"
        bad_epochs = 0
        if self.history and self.best_epoch:
            bad_epochs = len(self.history) - self.best_epoch
        try:
            for epoch in range(self.start_epoch, cfg.epochs):
                t0 = time.perf_counter()
                snapshot = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict()))

                def halve(new: int, exc: BaseException, snap: Any = snapshot, epoch: int = epoch) -> None:
                    self.model.load_state_dict(snap[0])
                    self.optimizer.load_state_dict(snap[1])
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.dist.main:
                        self.fb.warning(f"out of memory on {self.device_text} at batch size {new * 2}: "
                                        f"retrying epoch {epoch + 1} with batch size {new}")
                    self.emit("oom", epoch=epoch + 1, batch_size=new)

                train_loss, self.batch_size = run_with_oom_backoff(
                    lambda bs, e=epoch: self.train_epoch(net, e, bs), self.batch_size, halve,  # type: ignore[misc]
                    enabled=not self.dist.enabled)
                self._check_cancel()
                valid_loss, metrics, _ = self.evaluate()
                row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": round(train_loss, 5),
                                       "valid_loss": round(valid_loss, 5), "accuracy": round(metrics["accuracy"], 5),
                                       "miou": round(metrics["miou"], 5)}
                if self.roads:
                    row["road_iou"] = round(metrics["road_iou"], 5)
                row.update({"seconds": round(time.perf_counter() - t0, 2), "lr": float(f"{self.lr:.3g}"),
                            "batch_size": self.batch_size})
                self.history.append(row)
                value = valid_loss if self.monitor == "valid_loss" else float(metrics[self.monitor])
                improved = value > self.best_metric if self.maximize else value < self.best_metric
                if improved:
                    self.best_metric, self.best_epoch, bad_epochs = value, epoch + 1, 0
                else:
                    bad_epochs += 1
                self._save_checkpoints(epoch + 1, improved)
                self.emit("epoch", **row, best=improved)
                if self.dist.main:
                    report_epoch(self.fb, {**row, "best": improved})
                self.info("epoch " + ", ".join(f"{k} {v}" for k, v in row.items()) + (" (best)" if improved else ""))
                if cfg.patience and bad_epochs >= cfg.patience:
                    stopped = "early_stopping"
                    self.info(f"early stopping: {self.monitor} did not improve for {cfg.patience} epochs")
                    break
        except CanceledError:
            if not (self.report_dir / "checkpoint_best.pt").is_file():
                raise CanceledError("training canceled before the first epoch finished; no model was saved") from None
            stopped = "canceled"
            self.info(f"canceled: saving the best checkpoint (epoch {self.best_epoch})")
        return self._finish(stopped)

    def _finish(self, stopped: str) -> TrainResult:
        best = torch.load(self.report_dir / "checkpoint_best.pt", map_location="cpu", weights_only=True)
        self.model.load_state_dict(best["model"])
        _, metrics, samples = self.evaluate(collect=self.cfg.preview_chips)
        if self.dist.main:
            self._write_metrics(metrics)
            self._write_history()
            self._plot_history()
            self._plot_predictions(samples)
            from .model_package import save_package

            state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
            save_package(self.output, self._definition(metrics, stopped), state)
            self.cfg.to_json(self.report_dir / "train_config.json")
        if self.dist.enabled:
            import torch.distributed as dist

            dist.barrier()
        self.fb.set_progress(100)
        result = TrainResult(
            package=self.output, report_dir=self.report_dir, device=self.device_text, epochs_run=len(self.history),
            best_epoch=self.best_epoch, monitor=self.monitor, best_metric=float(self.best_metric),
            metrics={k: metrics[k] for k in ("accuracy", "miou", "road_iou", "per_class") if k in metrics},
            stopped=stopped, batch_size=self.batch_size, learning_rate=self.lr,
        )
        self.emit("done", **result.to_dict())
        return result


def _plain(value: Any) -> Any:
    """Tuples and lists compare equal after a JSON/pickle round trip."""
    return list(value) if isinstance(value, (tuple, list)) else value


def train_model(folder: str | Path, output: str | Path, config: TrainConfig | None = None,
                feedback: Feedback | None = None, report_dir: str | Path | None = None,
                events: EventSink | None = None) -> TrainResult:
    """Train on the training folder ``folder`` and write the model package ``output`` (folder or .zip).

    Args:
        folder: a training folder written by the export step (docs/formats.md).
        output: the model package to write (replaced atomically; ``.zip`` writes a zip).
        config: training parameters (defaults: :class:`TrainConfig`).
        feedback: progress, cancel and messages.
        report_dir: where checkpoints, history.csv, loss_curve.png, metrics and previews go
            (default: ``<output stem>_training`` beside the package).
        events: optional sink for structured events (start, lr_finder, epoch, oom, done), used by the worker.
    """
    from .distributed import leaving_new_process_group

    # Under torchrun the trainer joins the process group; a group it created is left again (as distributed
    # classification does), so a caller that trains in-process does not exit with a live gloo group.
    with leaving_new_process_group():
        return Trainer(folder, output, config or TrainConfig(), feedback, report_dir, events).run()
