"""The training folder (docs/formats.md) as a torch dataset: split, label mapping, normalisation, augmentation.

Chips are small; the whole folder is read once into memory (as stored, usually uint8) when it fits
``cache_limit_bytes``, so the training loop never waits on the disk and the data pipeline costs a few
percent of a training step (see bench/train.py). Larger folders are read chip by chip.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import ConfigError, LabelError, RasterReadError
from .losses import IGNORE_INDEX

SPLITS = ("blocked", "random")


@dataclasses.dataclass
class TrainingFolder:
    """A parsed training folder: its ``dataset.json``, the chip names and their map bounds."""

    folder: Path
    description: dict[str, Any]
    names: list[str]
    bounds: list[tuple[float, float, float, float]]
    has_orientation: bool

    @property
    def task(self) -> str:
        return str(self.description.get("task", "landcover"))

    def label_path(self, name: str, kind: str = "labels") -> Path:
        """Label-type chip of image chip ``name``: JPEG images have PNG labels (``label_format``)."""
        ext = self.description.get("label_format") or self.description.get("chip_format") or Path(name).suffix[1:]
        return self.folder / kind / f"{Path(name).stem}.{ext}"

    @property
    def ignore_value(self) -> int:
        return int(self.description.get("ignore_value", 255 if self.task == "roads" else 0))

    @property
    def band_count(self) -> int:
        return len(self.description["bands"])


def open_training_folder(path: str | Path) -> TrainingFolder:
    """Read ``dataset.json`` and the chip index of a folder written by the export step."""
    folder = Path(path)
    meta = folder / "dataset.json"
    if not meta.is_file():
        raise ConfigError(
            f"{folder} has no dataset.json: it is not a (complete) training folder; run 'Export training data' first"
        )
    try:
        desc = json.loads(meta.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{meta} is not valid JSON ({exc}); export the training data again") from exc
    if desc.get("format") != "road-landcover-chips":
        raise ConfigError(f"{meta} is not a road-landcover-chips description (format {desc.get('format')!r})")
    for key in ("bands", "classes"):
        if not desc.get(key):
            raise ConfigError(f"{meta} lists no {key}; export the training data again")
    names: list[str] = []
    bounds: list[tuple[float, float, float, float]] = []
    index = folder / "chips.csv"
    if index.is_file():
        with open(index, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                names.append(Path(row["file"]).name)
                bounds.append((float(row["minx"]), float(row["miny"]), float(row["maxx"]), float(row["maxy"])))
    else:  # tolerate a folder without index: bounds come from the chips themselves
        import rasterio

        for p in sorted((folder / "images").glob("*")):
            names.append(p.name)
            with rasterio.open(p) as src:
                bounds.append(tuple(src.bounds))  # type: ignore[arg-type]
    tf = TrainingFolder(folder, desc, names, bounds, False)
    missing = [n for n in names if not (folder / "images" / n).is_file() or not tf.label_path(n).is_file()]
    if missing:
        raise ConfigError(f"{folder}: {len(missing)} chip(s) listed in chips.csv lack an image or label "
                          f"(first: {missing[0]}); export the training data again")
    if len(names) < 2:
        raise ConfigError(f"{folder} holds {len(names)} chip(s); training needs at least 2 (one to validate on)")
    has_orientation = all(tf.label_path(n, "orientation").is_file() for n in names)
    return TrainingFolder(folder, desc, names, bounds, has_orientation)


@dataclasses.dataclass(frozen=True)
class LabelMapping:
    """Label values -> network output channels. ``lut[value]`` is a channel index or IGNORE_INDEX."""

    output_values: tuple[int, ...]
    lut: np.ndarray
    binary_roads: bool

    def map(self, label: np.ndarray) -> np.ndarray:
        return self.lut[label]  # type: ignore[no-any-return]


def label_mapping(tf: TrainingFolder, ignore_classes: tuple[int, ...] = ()) -> LabelMapping:
    """Channels for the trained classes; the ignore value and ``ignore_classes`` map to IGNORE_INDEX.

    Road folders train background/road (``[0, 1]``); continuous speed labels (1-254) count as road.
    """
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    if tf.task == "roads":
        lut[0] = 0
        lut[1:255] = 1
        lut[tf.ignore_value] = IGNORE_INDEX
        return LabelMapping((0, 1), lut, True)
    values = [int(c["value"]) for c in tf.description["classes"]]
    trained = [v for v in sorted(set(values)) if v != tf.ignore_value and v != 0 and v not in ignore_classes]
    if len(trained) < 2:
        raise LabelError(
            f"only {len(trained)} class(es) left to train after ignoring {sorted({0, *ignore_classes})}; "
            "a segmentation model needs at least two classes"
        )
    for i, v in enumerate(trained):
        lut[v] = i
    return LabelMapping(tuple(trained), lut, False)


def split_chips(tf: TrainingFolder, val_percent: float, mode: str = "blocked", seed: int = 0,
                block_chips: int = 2) -> tuple[list[int], list[int], dict[str, Any]]:
    """Split chip indices into train and validation sets.

    ``random`` draws chips at random. ``blocked`` cuts the map into square blocks of ``block_chips``
    chip widths, draws whole blocks for validation, and then drops every training chip that overlaps
    a validation chip, so overlapping chips (stride < tile) never sit on both sides of the split and the
    validation score is not inflated by pixels seen in training.

    Returns:
        train indices, validation indices, and a summary for the report.
    """
    if mode not in SPLITS:
        raise ConfigError(f"unknown validation split {mode!r}; choose one of {', '.join(SPLITS)}")
    if not 0 < val_percent < 100:
        raise ConfigError(f"val_percent must be between 0 and 100 (exclusive), got {val_percent}")
    rng = np.random.default_rng(seed)
    n = len(tf.names)
    n_val = max(1, int(round(n * val_percent / 100)))
    if mode == "random":
        order = rng.permutation(n)
        val = sorted(int(i) for i in order[:n_val])
        train = sorted(int(i) for i in order[n_val:])
        return train, val, {"mode": "random", "train_chips": len(train), "val_chips": len(val), "dropped_chips": 0}
    b = np.asarray(tf.bounds, dtype=np.float64)
    width = float(np.median(b[:, 2] - b[:, 0]))
    height = float(np.median(b[:, 3] - b[:, 1]))
    size = max(width, height) * block_chips
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    keys = [(int(math.floor(x / size)), int(math.floor(y / size))) for x, y in zip(cx, cy)]
    blocks = sorted(set(keys))
    members: dict[tuple[int, int], list[int]] = {k: [] for k in blocks}
    for i, k in enumerate(keys):
        members[k].append(i)
    val_set: set[int] = set()
    for j in rng.permutation(len(blocks)):
        if len(val_set) >= n_val:
            break
        val_set.update(members[blocks[int(j)]])
    if len(val_set) >= n:  # one block holds everything: fall back to halves of that block
        val_set = set(sorted(val_set, key=lambda i: (cy[i], cx[i]))[:n_val])
    val = sorted(val_set)
    vb = b[val]
    tol = 1e-9 * max(width, height)
    train, dropped = [], 0
    for i in range(n):
        if i in val_set:
            continue
        x0, y0, x1, y1 = b[i]
        overlaps = (np.minimum(x1, vb[:, 2]) - np.maximum(x0, vb[:, 0]) > tol) & \
                   (np.minimum(y1, vb[:, 3]) - np.maximum(y0, vb[:, 1]) > tol)
        if bool(overlaps.any()):
            dropped += 1
        else:
            train.append(i)
    if not train:
        raise ConfigError(
            f"the blocked split of {n} chips left no training chip that does not overlap validation; "
            "export more chips, lower VAL_PERCENT, or use the random split"
        )
    return train, val, {"mode": "blocked", "block_size_map_units": size, "train_chips": len(train),
                        "val_chips": len(val), "dropped_chips": dropped}


def rotate_orientation(bins_img: np.ndarray, bins: int, k: int, flip_lr: bool, period_deg: float = 180.0) -> np.ndarray:
    """Orientation bins after ``np.rot90(k)`` then (optionally) ``np.fliplr`` of the chip.

    Angles are counter-clockwise from the map's x axis (east), bin ``b`` covers
    ``[b, b+1) * period_deg / bins``. A counter-clockwise quarter turn adds 90 degrees; a left-right
    mirror maps angle a to 180 - a. Background (``bins``) and ignored (255) pixels are unchanged.
    """
    width = period_deg / bins
    out = bins_img.astype(np.int64)
    road = out < bins
    shift = int(round(90.0 * k / width))
    out[road] = (out[road] + shift) % bins
    if flip_lr:
        out[road] = (int(round(180.0 / width)) - 1 - out[road]) % bins
    return out.astype(bins_img.dtype)


def _read(path: Path) -> np.ndarray:
    import rasterio

    try:
        with rasterio.open(path) as src:
            return src.read()  # type: ignore[no-any-return]
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(f"cannot read chip {path}: {exc}; export the training data again") from exc


class ChipDataset(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Chips of a training folder as normalised float tensors with mapped labels.

    Items are ``(image[C,H,W] float32, label[H,W] int64, orientation[H,W] int64)``; the orientation
    is an empty tensor when the folder has none or it is not used.
    """

    def __init__(self, tf: TrainingFolder, indices: list[int], mapping: LabelMapping, augment: bool = False,
                 use_orientation: bool = False, cache_limit_bytes: int = 2 << 30, seed: int = 0) -> None:
        self.tf = tf
        self.indices = list(indices)
        self.mapping = mapping
        self.augment = augment
        self.use_orientation = use_orientation and tf.has_orientation
        bands = tf.description["bands"]
        self.mean = np.asarray([float(b.get("mean", 0.0)) for b in bands], dtype=np.float32)[:, None, None]
        self.std = np.asarray([max(float(b.get("std", 1.0)), 1e-6) for b in bands], dtype=np.float32)[:, None, None]
        orientation = tf.description.get("orientation") or {}
        self.bins = int(orientation.get("bins", 36))
        # docs/formats.md: orientation is modulo 180 degrees unless the folder says otherwise.
        self.period_deg = float(orientation.get("period_deg", 180.0))
        self.rng = np.random.default_rng(seed)
        self._cache: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] | None = None
        first = _read(tf.folder / "images" / tf.names[self.indices[0]]) if self.indices else np.zeros((1, 1, 1))
        if first.shape[0] != tf.band_count:
            raise ConfigError(f"chip {tf.names[self.indices[0]]} has {first.shape[0]} bands, dataset.json lists "
                              f"{tf.band_count}; export the training data again")
        if first.nbytes * 1.3 * len(self.indices) <= cache_limit_bytes:
            self._cache = [self._load(i) for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def augment_state(self) -> str:
        """The augmentation generator's state as JSON text, for checkpoints (a resumed run continues the stream)."""
        return json.dumps(self.rng.bit_generator.state)

    def set_augment_state(self, state: str) -> None:
        """Restore a state from :meth:`augment_state`."""
        self.rng.bit_generator.state = json.loads(state)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        name = self.tf.names[i]
        image = _read(self.tf.folder / "images" / name)
        label = self.mapping.map(_read(self.tf.label_path(name))[0])
        orient = _read(self.tf.label_path(name, "orientation"))[0] if self.use_orientation else None
        if image.shape[1:] != label.shape:
            raise ConfigError(f"image and label chip {name} differ in size; export the training data again")
        return image, label, orient

    def raw(self, item: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The stored (un-normalised, un-augmented) image, mapped label and orientation of one item."""
        return self._cache[item] if self._cache is not None else self._load(self.indices[item])

    def normalize(self, image: np.ndarray) -> np.ndarray:
        return (image.astype(np.float32) - self.mean) / self.std  # type: ignore[no-any-return]

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image, label, orient = self.raw(item)
        x = self.normalize(image)
        if self.augment:
            x, label, orient = self._augment(x, label, orient)
        o = torch.from_numpy(np.ascontiguousarray(orient).astype(np.int64)) if orient is not None else torch.empty(0)
        return (torch.from_numpy(np.ascontiguousarray(x)),
                torch.from_numpy(np.ascontiguousarray(label).astype(np.int64)), o)

    def _augment(self, x: np.ndarray, label: np.ndarray,
                 orient: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Dihedral transform (the 8 flips/quarter turns) and mild brightness/contrast jitter."""
        rng = self.rng
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))
        x, label = np.rot90(x, k, axes=(1, 2)), np.rot90(label, k)
        if orient is not None:
            orient = rotate_orientation(np.rot90(orient, k), self.bins, k, False, self.period_deg)
        if flip:
            x, label = x[:, :, ::-1], label[:, ::-1]
            if orient is not None:
                orient = rotate_orientation(orient[:, ::-1], self.bins, 0, True, self.period_deg)
        gain = rng.uniform(0.9, 1.1, size=(x.shape[0], 1, 1)).astype(np.float32)
        bias = rng.uniform(-0.1, 0.1, size=(x.shape[0], 1, 1)).astype(np.float32)
        return x * gain + bias, label, orient


def seed_augmentation_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker process its own augmentation stream.

    Every worker receives a copy of the dataset, generator state included; without this all workers
    would draw the same flips and jitter, and (workers being restarted every epoch) the same ones every
    epoch. torch seeds each worker with ``base_seed + worker_id``, ``base_seed`` drawn from the loader's
    generator, so the streams are distinct, and repeatable for a seeded loader (which resume relies on).
    """
    info = torch.utils.data.get_worker_info()
    if info is not None and isinstance(info.dataset, ChipDataset):
        info.dataset.rng = np.random.default_rng(torch.initial_seed() % 2**63)


def class_pixel_counts(ds: ChipDataset, classes: int) -> np.ndarray:
    """Pixels per output channel over the dataset (ignored pixels not counted)."""
    counts = np.zeros(classes, dtype=np.int64)
    for item in range(len(ds)):
        _, label, _ = ds.raw(item)
        valid = label[label != IGNORE_INDEX]
        counts += np.bincount(valid.ravel(), minlength=classes)[:classes]
    return counts


def balanced_weights(counts: np.ndarray, max_weight: float = 10.0) -> np.ndarray:
    """Inverse-frequency class weights (sklearn's "balanced"), capped and normalised to mean 1."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    w = np.ones_like(counts)
    w[present] = counts[present].sum() / (present.sum() * counts[present])
    w = np.clip(w, 1.0 / max_weight, max_weight)
    return w / w.mean()  # type: ignore[no-any-return]
