"""Export Training Data For Deep Learning: image chips + label chips + the description training reads.

The training folder format is the contract in ``docs/formats.md``. The export walks a grid of chip
windows over the raster (optionally rotated copies), reads each chip with a windowed read (memory is
bounded by the chip, not the raster), rasterizes the labels that touch the chip through a spatial index,
and writes the chips into a temporary folder that is renamed only when ``dataset.json`` is complete, so a
canceled or failed export never leaves a folder that looks finished.

Labels are a vector layer (polygons burned with their class; lines and points buffered by ``buffer_m``
metres, measured in a local metric projection even when the layer is in degrees) or a classified raster
(resampled with nearest neighbour). Road modes turn centerlines into SpaceNet-style masks (binary,
speed-proportional, or speed bins) and optionally orientation chips for multi-task road models.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import dataclasses
import datetime as _dt
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from . import __version__
from .chip_writer import TiffChipWriter, write_with_gdal
from .classes import ClassInfo, class_values_from_field, make_classes
from .config import StepConfig, require
from .direct_io import FileWriter, direct_io_wanted
from .errors import ConfigError, LabelError, RasterReadError
from .outputs import atomic_output
from .progress import Feedback, NullFeedback, check_canceled

LABEL_MODES: tuple[str, ...] = ("classified_tiles", "road_binary", "road_speed_continuous", "road_speed_bins")
CHIP_FORMATS: tuple[str, ...] = ("tif", "png", "jpg")
STRETCHES: tuple[str, ...] = ("none", "percentile", "minmax")
RASTER_LABEL_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2", ".asc", ".nc")
ROAD_IGNORE = 255
_STATS_SAMPLE = 20000  # values kept per band for the percentiles of dataset.json (reservoir sample)


@dataclasses.dataclass(frozen=True)
class ExportConfig(StepConfig):
    """Every parameter of the export (serialized into ``dataset.json["parameters"]``).

    Attributes:
        raster: image raster path (any GDAL raster).
        labels: label source: a vector file (polygons, lines, points) or a classified raster.
        output_folder: the training folder to create (replaced when it exists and ``overwrite``).
        labels_layer: layer name inside a multi-layer vector file (GeoPackage).
        class_field: integer class field; default ``classvalue`` or ``value`` when present, else class 1.
        class_name_field: optional field with class names.
        label_mode: ``classified_tiles`` | ``road_binary`` | ``road_speed_continuous`` | ``road_speed_bins``.
        buffer_m: half-width in metres for lines (road masks: SpaceNet uses 2 m) and radius for points.
        speed_field: numeric speed field for the speed modes.
        speed_max: speed that maps to label 254 in continuous mode / upper edge of the bins (default: data max).
        speed_bin_width: width of one speed bin, in the units of ``speed_field``.
        orientation: also write ``orientation/`` chips (road centerline direction per road pixel).
        orientation_bin_deg: orientation bin size in degrees (180 / bin size bins).
        orientation_width_m: full width of the band around centerlines that gets an orientation
            (default ``2 * buffer_m``, i.e. the road mask).
        tile_size_px: chip (width, height) in pixels.
        stride_px: step between chips (x, y) in pixels; smaller than the tile size means overlap.
        cell_size: output cell size (x, y) in raster CRS units; default the raster's own.
        resampling: image resampling when the cell size differs or chips are rotated (labels: nearest).
        extent: (minx, miny, maxx, maxy) to export, in ``extent_crs`` (default the raster's CRS).
        mask_polygons: vector file; only chips entirely inside its polygons are exported.
        rotation_deg: also export copies rotated by k * this angle (k = 1, 2, ... while < 360).
        only_tiles_with_features: skip chips without any labelled pixel.
        max_nodata_percent: skip chips with more invalid (nodata/outside) pixels than this.
        chip_format: ``tif`` (any bands/dtype), ``png`` (1-4 bands, 8/16 bit), ``jpg`` (1 or 3 bands, 8 bit).
        bands: 1-based band indices in output order; default all bands except alpha.
        stretch: ``none`` keeps raw values; ``percentile`` / ``minmax`` map them to 8 bit.
        stretch_percentiles: low/high percentiles of the ``percentile`` stretch.
        class_names / class_colors: legend from the label layer's style (value -> name / ``#rrggbb``).
        max_chips: stop after this many chips (quick tries).
        preview_chips: how many chips ``preview.png`` shows.
        workers: processes making chips; 0 = one per core where forking is safe (Linux, outside QGIS) and
            the output is the same (8/16-bit chips, no ``max_chips``), 1 = threads in this process only.
        overwrite: replace an existing output folder.
    """

    raster: str
    labels: str
    output_folder: str
    labels_layer: str | None = None
    class_field: str | None = None
    class_name_field: str | None = None
    label_mode: str = "classified_tiles"
    buffer_m: float = 2.0
    speed_field: str | None = None
    speed_max: float | None = None
    speed_bin_width: float = 10.0
    orientation: bool = False
    orientation_bin_deg: float = 5.0
    orientation_width_m: float | None = None
    tile_size_px: tuple[int, int] = (256, 256)
    stride_px: tuple[int, int] = (128, 128)
    cell_size: tuple[float, float] | None = None
    resampling: str = "bilinear"
    extent: tuple[float, float, float, float] | None = None
    extent_crs: str | None = None
    mask_polygons: str | None = None
    rotation_deg: float = 0.0
    only_tiles_with_features: bool = True
    max_nodata_percent: float = 25.0
    chip_format: str = "tif"
    bands: tuple[int, ...] | None = None
    stretch: str = "none"
    stretch_percentiles: tuple[float, float] = (2.0, 98.0)
    class_names: dict[int, str] | None = None
    class_colors: dict[int, str] | None = None
    max_chips: int | None = None
    preview_chips: int = 8
    overwrite: bool = True
    workers: int = 0

    def validate(self) -> None:
        from .raster_io import RESAMPLING_NAMES

        require(self.label_mode in LABEL_MODES,
                f"label_mode {self.label_mode!r} is unknown; use one of: {', '.join(LABEL_MODES)}")
        require(self.chip_format in CHIP_FORMATS,
                f"chip_format {self.chip_format!r} is unknown; use one of: {', '.join(CHIP_FORMATS)}")
        require(self.stretch in STRETCHES, f"stretch {self.stretch!r} is unknown; use one of: {', '.join(STRETCHES)}")
        require(self.resampling in RESAMPLING_NAMES,
                f"resampling {self.resampling!r} is unknown; use one of: {', '.join(RESAMPLING_NAMES)}")
        require(len(self.tile_size_px) == 2 and all(8 <= t <= 8192 for t in self.tile_size_px),
                f"tile_size_px {self.tile_size_px} must be two sizes between 8 and 8192 pixels")
        require(len(self.stride_px) == 2 and all(1 <= s <= 8192 for s in self.stride_px),
                f"stride_px {self.stride_px} must be two steps between 1 and 8192 pixels")
        require(self.cell_size is None or (len(self.cell_size) == 2 and all(c > 0 for c in self.cell_size)),
                f"cell_size {self.cell_size} must be two positive numbers (raster CRS units)")
        require(self.buffer_m > 0, f"buffer_m is {self.buffer_m}; it must be a positive number of metres")
        require(0 <= self.max_nodata_percent <= 100, "max_nodata_percent must be between 0 and 100")
        require(0 <= self.rotation_deg < 360, "rotation_deg must be between 0 (no rotated copies) and 360")
        require(self.speed_bin_width > 0, "speed_bin_width must be positive")
        require(self.speed_max is None or self.speed_max > 0, "speed_max must be positive")
        require(0 < self.orientation_bin_deg <= 90 and (180.0 / self.orientation_bin_deg) <= 254,
                "orientation_bin_deg must be between 0.71 and 90 degrees (at most 254 bins)")
        require(self.orientation_width_m is None or self.orientation_width_m > 0, "orientation_width_m must be positive")
        require(self.extent is None or (len(self.extent) == 4 and self.extent[0] < self.extent[2]
                                        and self.extent[1] < self.extent[3]),
                f"extent {self.extent} must be (minx, miny, maxx, maxy) with min < max")
        require(self.bands is None or (len(self.bands) > 0 and all(b >= 1 for b in self.bands)),
                "bands must be 1-based band numbers, e.g. (3, 2, 1)")
        require(0 <= self.stretch_percentiles[0] < self.stretch_percentiles[1] <= 100,
                "stretch_percentiles must be (low, high) with 0 <= low < high <= 100")
        require(self.max_chips is None or self.max_chips > 0, "max_chips must be positive")
        require(self.workers >= 0, "workers must be 0 (automatic), 1 (no worker processes) or more")
        if self.label_mode in ("road_speed_continuous", "road_speed_bins"):
            require(bool(self.speed_field), f"label_mode {self.label_mode} needs speed_field (a numeric speed field)")
        if self.orientation:
            require(self.label_mode != "classified_tiles",
                    "orientation chips are for road models: choose a road label mode (road_binary, ...)")

    @property
    def task(self) -> str:
        return "landcover" if self.label_mode == "classified_tiles" else "roads"

    @property
    def ignore_value(self) -> int:
        return 0 if self.label_mode == "classified_tiles" else ROAD_IGNORE

    @property
    def orientation_bins(self) -> int:
        return int(round(180.0 / self.orientation_bin_deg))


@dataclasses.dataclass
class ExportResult:
    """What the export produced."""

    folder: Path
    chip_count: int
    class_pixels: dict[int, int]
    footprints: Path
    dataset_json: Path
    skipped: dict[str, int]
    processes: int = 1  # processes that made the chips (1: threads in the calling process)


# --------------------------------------------------------------------------- labels


@dataclasses.dataclass
class _VectorLabels:
    index: Any  # LabelIndex of burn geometries
    centerlines: Any  # LabelIndex of line geometries (orientation), or None
    orientation_band: Any  # LabelIndex of the orientation band when its width differs from the mask
    class_values: list[int]
    names: dict[int, str]
    class_field: str | None
    repaired: int
    features: int
    speed_edges: list[float] | None
    speed_max: float | None


def _pick_field(attributes: dict[str, np.ndarray], wanted: str | None, layer: str) -> str | None:
    if wanted:
        for name in attributes:
            if name == wanted or name.lower() == wanted.lower():
                return name
        raise LabelError(
            f"the label layer {layer} has no field {wanted!r}; its fields are: "
            f"{', '.join(attributes) or '(none)'}; choose one of them or leave the class field empty"
        )
    for candidate in ("classvalue", "value"):
        for name in attributes:
            if name.lower() == candidate:
                return name
    return None


def _load_vector_labels(cfg: ExportConfig, raster_crs: Any, area: tuple[float, float, float, float],
                        feedback: Feedback) -> _VectorLabels:
    from .rasterize_labels import LabelIndex, buffer_metres, repair, require_labels_inside, transform_geometries
    from .vectors import read_vector

    layer_name = cfg.labels + (f"|{cfg.labels_layer}" if cfg.labels_layer else "")
    vec = read_vector(cfg.labels, cfg.labels_layer)
    if not len(vec):
        raise LabelError(f"the label layer {layer_name} is empty (no feature with a geometry); "
                         "draw or load labels first")
    geoms, repaired = repair(vec.geometries)
    if repaired:
        feedback.warning(f"{repaired} invalid label geometries were repaired (make_valid)")
    if vec.crs is None:
        feedback.warning(f"the label layer {layer_name} has no CRS; assuming the raster's CRS")
        src_crs = raster_crs
    else:
        src_crs = vec.crs
    n = len(geoms)
    names: dict[int, str] = {}
    speed_edges: list[float] | None = None
    speed_max: float | None = None
    field: str | None = None
    if cfg.label_mode == "classified_tiles":
        field = _pick_field(vec.attributes, cfg.class_field, layer_name)
        if field:
            values, text_names = class_values_from_field(vec.attributes[field], field, layer_name)
            if text_names:
                names.update(text_names)
                feedback.warning(f"the class field {field!r} holds names; classes numbered alphabetically: "
                                 + ", ".join(f"{v} {nm}" for v, nm in sorted(text_names.items()))
                                 + " (recorded in dataset.json)")
        else:
            values = np.ones(n, dtype=np.int64)
        bad = values[(values < 0) | (values > 254)]
        if len(bad):
            raise LabelError(
                f"the class field {field!r} of {layer_name} has value {int(bad[0])}, outside 0-254 "
                "(0 = unlabelled, 255 is reserved); renumber the classes"
            )
        if cfg.class_name_field:
            name_field = _pick_field(vec.attributes, cfg.class_name_field, layer_name)
            assert name_field is not None
            for v, nm in zip(values, vec.attributes[name_field]):
                names.setdefault(int(v), str(nm))
        class_values = sorted({int(v) for v in values if v != 0})
        if not class_values:
            raise LabelError(f"every feature of {layer_name} has class 0 (unlabelled); nothing to learn from")
    else:
        class_values = [1]
        values = np.ones(n, dtype=np.int64)
        if cfg.speed_field:
            field = _pick_field(vec.attributes, cfg.speed_field, layer_name)
            assert field is not None
            try:
                speed = np.asarray(vec.attributes[field], dtype=np.float64)
            except (TypeError, ValueError):
                raise LabelError(f"the speed field {field!r} of {layer_name} is not numeric; choose a numeric field") from None
            speed = np.nan_to_num(speed, nan=0.0)
            speed_max = float(cfg.speed_max or speed.max())
            if speed_max <= 0:
                raise LabelError(f"the speed field {field!r} of {layer_name} has no positive speed")
            if cfg.label_mode == "road_speed_continuous":
                values = np.clip(np.round(254.0 * speed / speed_max), 1, 254).astype(np.int64)
            elif cfg.label_mode == "road_speed_bins":
                nbins = max(1, int(math.ceil(speed_max / cfg.speed_bin_width - 1e-9)))
                speed_edges = [i * cfg.speed_bin_width for i in range(nbins + 1)]
                values = np.clip(np.floor(speed / cfg.speed_bin_width), 0, nbins - 1).astype(np.int64) + 1
            order = np.argsort(values, kind="stable")  # fastest road wins where roads overlap
            geoms = [geoms[i] for i in order]
            values = values[order]
    geoms = transform_geometries(geoms, src_crs, raster_crs)
    require_labels_inside(geoms, area, layer_name)
    kinds = np.array([g.geom_type for g in geoms])
    is_line = np.isin(kinds, ["LineString", "MultiLineString", "LinearRing"])
    is_point = np.isin(kinds, ["Point", "MultiPoint"])
    burn = list(geoms)
    to_buffer = np.flatnonzero(is_line | is_point)
    if len(to_buffer):
        buffered = buffer_metres([geoms[i] for i in to_buffer], raster_crs, cfg.buffer_m)
        for i, g in zip(to_buffer, buffered):
            burn[i] = g
    index = LabelIndex(burn, values, all_touched=is_point)
    centerlines = orientation_band = None
    if cfg.orientation:
        lines = [geoms[i] for i in np.flatnonzero(is_line)]
        if not lines:
            raise LabelError(f"orientation chips need road centerlines (lines); {layer_name} has no line feature")
        centerlines = LabelIndex(lines, np.ones(len(lines)))
        width_m = cfg.orientation_width_m or 2 * cfg.buffer_m
        if not math.isclose(width_m, 2 * cfg.buffer_m):
            band = buffer_metres(lines, raster_crs, width_m / 2.0)
            orientation_band = LabelIndex(band, np.ones(len(band)))
    return _VectorLabels(index, centerlines, orientation_band, class_values, names, field, repaired, n,
                         speed_edges, speed_max)


# --------------------------------------------------------------------------- statistics


class _BandStats:
    """Running per-band statistics of the stored chip values (valid pixels only).

    8/16-bit integer chips keep an exact histogram per band (cheap: one C histogram per band and chip), so
    min, max, mean, std and the percentiles are exact. Other types keep exact count/sum/min/max and a
    reservoir sample of pixels for the percentiles.
    """

    def __init__(self, nbands: int, dtype: str, seed: int = 0) -> None:
        self.nbands = nbands
        self.hist_size = {"uint8": 256, "uint16": 65536}.get(dtype, 0)
        self.hist = np.zeros((nbands, self.hist_size), dtype=np.int64) if self.hist_size else None
        self.count = np.zeros(nbands, dtype=np.int64)
        self.sum = np.zeros(nbands, dtype=np.float64)
        self.sumsq = np.zeros(nbands, dtype=np.float64)
        self.min = np.full(nbands, np.inf)
        self.max = np.full(nbands, -np.inf)
        self.sample = np.zeros((nbands, _STATS_SAMPLE), dtype=np.float64)
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def add_histograms(self, hist: np.ndarray) -> None:
        """Add a chip's :func:`_chip_histograms`: the export's path for 8-bit chips (the reader thread takes
        them, Pillow's C loop without the GIL; integer sums, so the order does not matter)."""
        assert self.hist is not None and self.hist_size == 256
        self.hist += hist

    def add_all_valid(self, data: np.ndarray) -> None:
        """:meth:`add` for a chip without invalid pixels."""
        self._add(data, None, True)

    def add(self, data: np.ndarray, valid: np.ndarray) -> None:
        all_valid = bool(valid.all())
        if not all_valid and not valid.any():
            return
        self._add(data, valid, all_valid)

    def _add(self, data: np.ndarray, valid: np.ndarray | None, all_valid: bool) -> None:
        if self.hist is not None:
            for i, band in enumerate(data):
                vals = band.ravel() if all_valid else band[valid]
                self.hist[i] += np.bincount(vals, minlength=self.hist_size)[: self.hist_size]
            return
        vals = data.reshape(self.nbands, -1) if all_valid else data[:, valid]
        vals = vals.astype(np.float64)
        self.count += vals.shape[1]
        self.sum += vals.sum(axis=1)
        self.sumsq += np.einsum("ij,ij->i", vals, vals)
        self.min = np.minimum(self.min, vals.min(axis=1))
        self.max = np.maximum(self.max, vals.max(axis=1))
        step = max(1, vals.shape[1] // 2048)
        take = vals[:, self.rng.integers(0, step)::step]
        free = _STATS_SAMPLE - self.seen
        if free > 0:
            m = min(free, take.shape[1])
            self.sample[:, self.seen:self.seen + m] = take[:, :m]
            take = take[:, m:]
            self.seen += m
        if take.shape[1]:
            pos = self.rng.integers(0, self.seen + np.arange(1, take.shape[1] + 1))
            keep = pos < _STATS_SAMPLE
            self.sample[:, pos[keep]] = take[:, keep]
            self.seen += take.shape[1]

    def to_json(self, names: list[str], indices: tuple[int, ...]) -> list[dict[str, Any]]:
        out = []
        for i, (idx, name) in enumerate(zip(indices, names)):
            if self.hist is not None:
                h = self.hist[i]
                n = int(h.sum())
                values = np.arange(self.hist_size, dtype=np.float64)
                nz = np.flatnonzero(h)
                mean = float((h * values).sum() / n) if n else 0.0
                std = float(np.sqrt(max((h * values * values).sum() / n - mean * mean, 0.0))) if n else 0.0
                cdf = np.cumsum(h) / max(n, 1)
                p2 = float(np.searchsorted(cdf, 0.02)) if n else 0.0
                p98 = float(np.searchsorted(cdf, 0.98)) if n else 0.0
                lo, hi = (float(nz[0]), float(nz[-1])) if n else (np.inf, -np.inf)
            else:
                n = int(self.count[i])
                mean = float(self.sum[i] / max(n, 1))
                std = float(np.sqrt(max(self.sumsq[i] / max(n, 1) - mean * mean, 0.0)))
                filled = min(self.seen, _STATS_SAMPLE)
                s = self.sample[i, :filled]
                p2, p98 = (np.percentile(s, [2, 98]).tolist() if filled else (0.0, 0.0))
                lo, hi = float(self.min[i]), float(self.max[i])
            out.append({"index": int(idx), "name": name, "min": _f(lo), "max": _f(hi), "mean": _f(mean),
                        "std": _f(std), "p2": _f(p2), "p98": _f(p98), "count": n})
        return out


def _f(x: float) -> float | None:
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


def _stretch_limits(src: Any, bands: tuple[int, ...], method: str, percentiles: tuple[float, float],
                    sample_px: int = 1024) -> tuple[list[float], list[float]]:
    """Per-band low/high for the stretch, from a decimated read (bounded memory, whole raster)."""
    from .raster_io import invalid_mask

    scale = max(src.width / sample_px, src.height / sample_px, 1.0)
    h, w = max(1, int(src.height / scale)), max(1, int(src.width / scale))
    low, high = [], []
    for b in bands:
        data = src.read([b], out_shape=(1, h, w))
        valid = ~invalid_mask(data, src.nodata)
        vals = data[0][valid].astype(np.float64)
        if not vals.size:
            raise RasterReadError(f"band {b} of {src.name} has no valid pixel (all nodata); check the raster")
        if method == "percentile":
            lo, hi = np.percentile(vals, percentiles)
        else:
            lo, hi = vals.min(), vals.max()
        if hi <= lo:
            hi = lo + 1.0
        low.append(float(lo))
        high.append(float(hi))
    return low, high


def _apply_stretch(data: np.ndarray, low: list[float], high: list[float]) -> np.ndarray:
    lo = np.asarray(low, dtype=np.float32)[:, None, None]
    hi = np.asarray(high, dtype=np.float32)[:, None, None]
    scaled = np.clip((data.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0) * 255.0
    out: np.ndarray = np.round(scaled).astype(np.uint8)
    return out


def _byte_histogram(band: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Exact counts of the values 0-255 of a 2-D uint8 array (of its ``valid`` pixels only, when given).

    Pillow's C histogram, zero-copy over the array (and the mask): 3x faster than numpy's bincount, which
    first widens every value to 64 bits (0.11 vs 0.36 ms for the 4 bands of a 256 px chip; masked: 0.07 vs
    0.14 ms per band, where bincount also copies the selected pixels out).
    """
    if band.dtype != np.uint8 or band.ndim != 2:
        vals = band.ravel() if valid is None else band[valid]
        out: np.ndarray = np.bincount(vals, minlength=256)[:256]
        return out
    out = _chip_histograms(band[None], valid)[0]
    return out


def _mask_args(valid: np.ndarray | None) -> tuple[Any, ...]:
    """The arguments of a Pillow C image's ``histogram`` that count only the ``valid`` pixels (all: none)."""
    return () if valid is None else ((0, 0), _byte_image(np.ascontiguousarray(valid).view(np.uint8)))


def _byte_image(plane: np.ndarray) -> Any:
    """Pillow's C image over a contiguous 2-D uint8 array, without a copy.

    ``Image.core.map_buffer`` is what ``Image.frombuffer`` calls, without the ``Image`` wrapper around it:
    7 us less per call, and the export makes 4-5 per chip (a fifth of the histograms' cost). Its C image
    keeps the array alive and has the same ``histogram``. A Pillow without it gets the public path.
    """
    from PIL import Image

    h, w = plane.shape
    try:
        return Image.core.map_buffer(plane, (w, h), "raw", 0, ("L", 0, 1))  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # pragma: no cover - Pillow's internals changed
        return Image.frombuffer("L", (w, h), plane, "raw", "L", 0, 1).im


def _label_counts(label: np.ndarray) -> np.ndarray:
    """Pixels of each value 0-255 of a label chip; a chip of one value (inside one polygon) is counted without
    a histogram (min and max: 5 us instead of 40 us)."""
    if label.dtype == np.uint8 and (low := label.min()) == label.max():
        counts = np.zeros(256, dtype=np.int64)
        counts[int(low)] = label.size
        return counts
    return _byte_histogram(label)


def _chip_histograms(data: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """(bands, 256) exact counts of each band of a uint8 chip (``valid`` pixels only, when given).

    :func:`_byte_histogram` per band, with the mask's image made once and one array made of all the counts.
    """
    if data.dtype != np.uint8:
        return np.stack([_byte_histogram(band, valid) for band in data])
    mask = _mask_args(valid)
    counts: list[int] = []
    for band in data:
        counts += _byte_image(np.ascontiguousarray(band)).histogram(*mask)
    return np.array(counts, dtype=np.int64).reshape(len(data), 256)


# --------------------------------------------------------------------------- grid


def _chip_origins(width: int, height: int, tile: tuple[int, int], stride: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left (col, row) of every chip: a regular stride plus one chip flush with the right/bottom edge."""

    def axis(n: int, t: int, s: int) -> list[int]:
        if n <= t:
            return [0]
        starts = list(range(0, n - t + 1, s))
        if starts[-1] != n - t:
            starts.append(n - t)
        return starts

    return [(c, r) for r in axis(height, tile[1], stride[1]) for c in axis(width, tile[0], stride[0])]


def _export_area(src: Any, cfg: ExportConfig) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds

    left, bottom, right, top = src.bounds
    if cfg.extent is None:
        return left, bottom, right, top
    ext = cfg.extent
    if cfg.extent_crs and src.crs is not None:
        ext = transform_bounds(cfg.extent_crs, src.crs, *ext, densify_pts=21)
    area = (max(left, ext[0]), max(bottom, ext[1]), min(right, ext[2]), min(top, ext[3]))
    if area[0] >= area[2] or area[1] >= area[3]:
        raise ConfigError(
            f"the extent {tuple(round(v, 6) for v in ext)} does not overlap the raster "
            f"{tuple(round(v, 6) for v in src.bounds)}; choose an extent inside the raster"
        )
    return area


# --------------------------------------------------------------------------- writing


def _check_format(fmt: str, nbands: int, dtype: str) -> None:
    if fmt == "png" and not (1 <= nbands <= 4 and dtype in ("uint8", "uint16")):
        raise ConfigError(
            f"PNG chips hold 1-4 bands of 8 or 16 bit; the chips would have {nbands} band(s) of {dtype}. "
            "Use TIFF chips, select at most 4 bands, or apply a stretch to 8 bit"
        )
    if fmt == "jpg" and not (nbands in (1, 3) and dtype == "uint8"):
        raise ConfigError(
            f"JPEG chips hold 1 or 3 bands of 8 bit; the chips would have {nbands} band(s) of {dtype}. "
            "Use TIFF or PNG chips, select 1 or 3 bands, or apply a stretch to 8 bit"
        )


def _write_chip(path: Path, data: np.ndarray, transform: Any, crs: Any, nodata: float | None, fmt: str) -> None:
    import rasterio

    if fmt == "tif":
        write_with_gdal(path, data, transform, crs, nodata)
        return
    driver = {"png": "PNG", "jpg": "JPEG"}[fmt]
    profile: dict[str, Any] = {"driver": driver, "width": data.shape[2], "height": data.shape[1],
                               "count": data.shape[0], "dtype": str(data.dtype), "crs": crs,
                               "transform": transform}
    if nodata is not None:
        profile["nodata"] = nodata
    if fmt == "jpg":
        profile["quality"] = 95
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(str(path), "w", **profile) as dst:
            dst.write(data)


class _Candidate(NamedTuple):
    """A chip that passed the checks needing no pixels; ``number`` is its 1-based place among all candidates."""

    number: int
    angle: float
    grid: Any
    footprint: Any
    hits: np.ndarray | None


def _candidates(origins: list[tuple[int, int]], angles: list[float], base: Any, tile: tuple[int, int],
                mask_geom: Any, vlabels: _VectorLabels | None, only_with_features: bool,
                skipped: dict[str, int], chunk: int = 256, start: int = 0,
                stop: int | None = None) -> Iterator[_Candidate]:
    """The candidate chips in export order, less those outside the mask or without a feature under them.

    Candidate ``k`` (0-based) is origin ``k % len(origins)`` at angle ``k // len(origins)``; only
    ``start <= k < stop`` are made (a worker process's block). The skipped ones are counted in ``skipped``.
    Footprints, the mask test and the label index query run on ``chunk`` chips at a time (one shapely call
    each instead of one per chip: ~20 us per chip less); each grid is made per chip, so footprints are bit
    for bit the same whatever the blocks.
    """
    import shapely
    from affine import Affine

    from .raster_io import Grid, rotated_grid

    n = len(origins)
    stop = n * len(angles) if stop is None else min(stop, n * len(angles))
    k = start
    while k < stop:
        a, i0 = divmod(k, n)
        i1 = min(n, i0 + chunk, i0 + stop - k)
        angle = angles[a]
        grids = [rotated_grid(Grid(base @ Affine.translation(col, row), *tile), angle) for col, row in origins[i0:i1]]
        footprints = shapely.polygons(np.array([g.corners() for g in grids], dtype=np.float64))
        keep = np.ones(len(grids), dtype=bool)
        if mask_geom is not None:
            keep = shapely.contains(mask_geom, footprints)
            skipped["outside_mask"] += int((~keep).sum())
        hits_of: list[np.ndarray | None] = [None] * len(grids)
        if vlabels is not None:
            which, tree_idx = vlabels.index.query_many(footprints)
            bounds = np.searchsorted(which, np.arange(len(grids) + 1)).tolist()
            hits_of = [tree_idx[bounds[i]:bounds[i + 1]] for i in range(len(grids))]
            if only_with_features:
                empty = keep & (np.diff(bounds) == 0)
                skipped["no_features"] += int(empty.sum())
                keep &= ~empty
        for i in np.flatnonzero(keep).tolist():
            yield _Candidate(k + i + 1, angle, grids[i], footprints[i], hits_of[i])
        k += i1 - i0


class _Pixels(NamedTuple):
    """A chip's pixels as read.

    ``stored``: the values written (stretched when asked); ``invalid``: outside, nodata or transparent
    pixels, None when there are none; ``hist``: the 8-bit band histograms of the valid pixels
    (:func:`_chip_histograms`) when the read took them, else None.
    """

    stored: np.ndarray
    invalid: np.ndarray | None
    hist: np.ndarray | None = None


def _read_pixels(src: Any, bands: tuple[int, ...], grid: Any, resampling: Any, fill: float,
                 stretch: tuple[list[float], list[float], bool] | None, byte_stats: bool) -> _Pixels:
    """Read one chip and do the pixel work that needs no labels.

    ``stretch``: (low, high, zero the invalid pixels). ``byte_stats``: take the 8-bit band histograms too.
    Stretch and histograms are C loops that release the GIL: on the export's reader thread they run beside
    the main thread's labels (0.2 ms per chip that the main thread no longer spends). Moving the histograms
    on to the I/O threads instead was slower (5 of 5 alternating runs), and so it was in the worker
    processes, which have no reader thread (there, right after the read, the pixels are still in the CPU's
    cache: ahead in 8 of 12 alternating rounds).
    """
    from .raster_io import read_grid

    data, invalid = read_grid(src, bands, grid, resampling, fill=fill)
    mask = invalid if invalid.any() else None
    stored = data
    if stretch is not None:
        stored = _apply_stretch(data, stretch[0], stretch[1])
        if stretch[2] and mask is not None:
            np.copyto(stored, 0, where=mask)  # every band (2x faster than stored[:, mask] = 0)
    hist = _chip_histograms(stored, None if mask is None else ~mask) if byte_stats else None
    return _Pixels(stored, mask, hist)


_END = object()


class _ChipReader:
    """Reads the images of the next chips on a background thread while the main thread labels the current one.

    GDAL releases the GIL while it decodes, so on 2 cores the read of chip k+1 overlaps the labels of chip k
    and the I/O threads' files of chip k-1. The main thread runs the candidates' pixel-free checks and
    hands the reader ``ahead`` chips to read; the reader runs only ``read`` (the read and the C loops of
    :func:`_read_pixels`, which release the GIL), so it needs the GIL as little as possible (doing the checks
    there too made it wait for the GIL: 0.3-0.4 ms per chip). Only this thread
    reads the raster (a GDAL dataset is not for concurrent use), inside the export's GDAL settings (rasterio's
    environment is per thread). A read error is raised by the iteration; :meth:`close` stops the thread.
    """

    def __init__(self, read: Any, candidates: Iterator[_Candidate], ahead: int = 4) -> None:
        import queue
        import threading

        self._candidates = candidates
        self._ahead = ahead
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, args=(read,), name="chip-reader", daemon=True)
        self._thread.start()

    def _run(self, read: Any) -> None:
        from .raster_io import raster_env

        with raster_env():
            while (cand := self._requests.get()) is not _END:
                try:
                    self._results.put((cand, read(cand.grid)))
                except BaseException as exc:  # handed to the main thread, which raises it
                    self._results.put(exc)
                    return

    def __iter__(self) -> Iterator[tuple[_Candidate, _Pixels]]:
        queued = 0
        for cand in self._candidates:
            self._requests.put(cand)
            queued += 1
            if queued >= self._ahead:
                queued -= 1
                yield self._result()
        for _ in range(queued):
            yield self._result()

    def _result(self) -> tuple[_Candidate, _Pixels]:
        item = self._results.get()
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the thread after its current read (the unread requests are dropped)."""
        import queue

        while True:
            try:
                self._requests.get_nowait()
            except queue.Empty:
                break
        self._requests.put(_END)
        self._thread.join()


class _ChipFile(NamedTuple):
    """One file of a chip: where, what, its nodata and format; ``compress`` for single-band label chips."""

    path: str
    data: np.ndarray
    nodata: float | None
    fmt: str
    compress: bool = False


class _ChipSink:
    """Turns finished chips into files on the file writer's I/O threads, ``chips_per_job`` chips per job.

    The caller patches each chip's TIFF template; creating the files, DEFLATE-compressing label strips and
    waiting for the device happen on the I/O threads. Every job costs thread wake-ups and GIL
    hand-offs, which this project's virtual machine charges dearly: with 4 chips per job on 2 I/O threads
    instead of 1 chip per job on 3, the export made 8-13 instead of 14-19 voluntary context switches per
    chip and ran ~6 % faster (median of 15 alternating runs each). Errors of the I/O threads surface on a
    later submit or at :meth:`finish`; :meth:`close` drops queued files and waits for the running ones.
    """

    def __init__(self, tiff: TiffChipWriter | None, files: FileWriter, crs: Any, stats: _BandStats,
                 chips_per_job: int = 4) -> None:
        self.tiff = tiff
        self.files = files
        self.crs = crs
        self.stats = stats
        self.chips_per_job = chips_per_job
        self.submitted = 0

    def submit(self, files: list[_ChipFile], transform: Any, px: _Pixels) -> None:
        if self.submitted % self.chips_per_job == 0:
            self.files.begin()
        self.submitted += 1
        for f in files:
            if f.fmt == "tif" and self.tiff is not None:
                self.tiff.write(f.path, f.data, transform, f.nodata, f.compress)
            else:
                self.files.run(_write_chip, f.path, f.data, transform, self.crs, f.nodata, f.fmt)
        if px.hist is not None:  # 8-bit chips: taken by the read
            self.stats.add_histograms(px.hist)
        elif px.invalid is None:
            self.stats.add_all_valid(px.stored)
        else:
            self.stats.add(px.stored, ~px.invalid)
        if self.submitted % self.chips_per_job == 0:
            self.files.end()

    def finish(self) -> None:
        """Wait for every file (raising the first write error)."""
        self.files.flush()

    def close(self) -> None:
        self.files.close()


# --------------------------------------------------------------------------- chip making


class _ChipPlan(NamedTuple):
    """The candidate grid: what :func:`_candidates` needs to make any block of it."""

    origins: list[tuple[int, int]]
    angles: list[float]
    base: Any
    tile: tuple[int, int]
    mask_geom: Any

    @property
    def total(self) -> int:
        return len(self.origins) * len(self.angles)


@dataclasses.dataclass
class _ChipJob:
    """Everything that turns a candidate into chip files, shared by the threads and the worker processes.

    Worker processes are forked, so they inherit it (label index included) without pickling.
    """

    cfg: ExportConfig
    bands: tuple[int, ...]
    resampling: Any
    fill: float
    stretch: tuple[list[float], list[float], bool] | None
    out_dtype: str
    image_nodata: float | None
    vlabels: _VectorLabels | None
    area: tuple[float, float, float, float]
    dirs: dict[str, Path]
    ext: str
    label_ext: str
    plan: _ChipPlan
    sampler: _PreviewSampler  # which chips the preview shows (their makers keep their decimated pixels)
    _names: dict[str, tuple[str, str]] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        # (folder path + separator, extension) per folder: chip paths are strings made with one f-string
        # (pathlib's joins were ~15 ms of a 400-chip export's bookkeeping).
        self._names = {f: (f"{d}{os.sep}", self.folder_ext(f)) for f, d in self.dirs.items()}

    def warm_templates(self, crs: Any) -> None:
        """Make the TIFF templates of unrotated image and label chips now (once per process and layout:
        :func:`core.chip_writer._verified_template`), so forked workers inherit them."""
        if self.ext != "tif":
            return
        tiff = TiffChipWriter(crs)
        tw, th = self.plan.tile
        tiff.template((len(self.bands), th, tw), self.out_dtype, self.plan.base, self.image_nodata)
        tiff.template((1, th, tw), "uint8", self.plan.base, None, True)

    def folder_ext(self, folder: str) -> str:
        return {"images": self.ext, "speed": "tif"}.get(folder, self.label_ext)

    def path(self, folder: str, stem: str) -> str:
        """Where chip ``stem``'s file of ``folder`` goes (the one place that names chip files)."""
        prefix, ext = self._names[folder]
        return f"{prefix}{stem}.{ext}"

    def chip_files(self, stem: str) -> tuple[str, str]:
        """Chip ``stem``'s image and label files (what the preview reads when it must)."""
        return self.path("images", stem), self.path("labels", stem)

    def candidates(self, skipped: dict[str, int], start: int = 0, stop: int | None = None) -> Iterator[_Candidate]:
        p = self.plan
        return _candidates(p.origins, p.angles, p.base, p.tile, p.mask_geom, self.vlabels,
                           self.cfg.only_tiles_with_features, skipped, start=start, stop=stop)

    def reader(self, src: Any) -> Any:
        """The per-chip read: :func:`_read_pixels` bound to this job and ``src`` (8-bit chips: with their
        band histograms)."""
        import functools

        return functools.partial(_read_pixels, src, self.bands, resampling=self.resampling, fill=self.fill,
                                 stretch=self.stretch, byte_stats=np.dtype(self.out_dtype) == np.uint8)

    def sink(self, crs: Any, stats: _BandStats, io_threads: int) -> _ChipSink:
        """A chip sink with its own file writer (TIFF templates come from the process's cache)."""
        files = FileWriter(direct_io_wanted(next(iter(self.dirs.values()))), threads=io_threads)
        return _ChipSink(TiffChipWriter(crs, files=files) if self.ext == "tif" else None, files, crs, stats)


def _chip_stem(index: int) -> str:
    """The file name (without extension) of the export's chip ``index`` (0-based, in export order)."""
    return f"{index:06d}"


def _no_skips() -> dict[str, int]:
    return {"outside_mask": 0, "no_features": 0, "nodata": 0}


class _Kept(NamedTuple):
    """An exported chip as the export's bookkeeping sees it; its files are named ``name`` + extension.

    ``number``: its candidate's number; ``preview``: the decimated (image, label) when ``preview.png`` shows it
    (:meth:`_PreviewSampler.wanted`), else None.
    """

    number: int
    name: str
    angle: float
    bounds: tuple[float, float, float, float]
    footprint: Any
    counts: dict[int, int]
    nodata_fraction: float
    preview: tuple[np.ndarray, np.ndarray] | None


def _make_chip(job: _ChipJob, raster_labels: Any, cand: _Candidate, px: _Pixels, name: str,
               skipped: dict[str, int], after: int) -> tuple[list[_ChipFile], _Kept] | None:
    """Label one chip and decide whether it is exported (None, counted in ``skipped``, when not).

    ``after``: the candidate number of the chip exported last before it by the same maker (or where the
    maker's block starts), which tells whether the preview shows it.
    """
    cfg, vlabels = job.cfg, job.vlabels
    grid, footprint, invalid = cand.grid, cand.footprint, px.invalid
    nodata_fraction = np.count_nonzero(invalid) / invalid.size if invalid is not None else 0.0  # = mean(), 10x faster
    if nodata_fraction * 100.0 > cfg.max_nodata_percent:
        skipped["nodata"] += 1
        return None
    speed_bands = None
    if vlabels is not None:
        burned = vlabels.index.rasterize(grid.transform, grid.shape, fill=0, footprint=footprint, idx=cand.hits)
        if cfg.label_mode == "road_speed_bins":
            nb = len(vlabels.speed_edges or [0, 1]) - 1
            speed_bands = np.stack([burned == i + 1 for i in range(nb)] + [burned > 0]).astype(np.uint8)
            label = (burned > 0).astype(np.uint8)
        else:
            label = burned
    else:
        label = _raster_label_chip(raster_labels, grid, cfg.labels)
    if invalid is not None:
        label[invalid] = cfg.ignore_value
    counts = _label_counts(label)
    counts[cfg.ignore_value] = 0
    if cfg.only_tiles_with_features and not counts[1:].any():
        skipped["no_features"] += 1  # no labelled pixel (0 and the ignore value do not count)
        return None
    if speed_bands is not None and invalid is not None:
        np.copyto(speed_bands, 0, where=invalid)
    files = [_ChipFile(job.path("images", name), px.stored, job.image_nodata, job.ext),
             _ChipFile(job.path("labels", name), label[None], None, job.label_ext, True)]
    if cfg.orientation and vlabels is not None:
        orient = _orientation_chip(vlabels, grid, footprint, label, invalid, cfg.orientation_bins)
        files.append(_ChipFile(job.path("orientation", name), orient[None], None, job.label_ext, True))
    if speed_bands is not None:
        files.append(_ChipFile(job.path("speed", name), speed_bands, None, "tif"))
    if cfg.label_mode == "road_speed_continuous":
        counts = np.array([counts[0], counts[1:255].sum()])
    chip_counts = {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    preview = job.sampler.decimate(px.stored, label) if job.sampler.wanted(cand.number, after) else None
    return files, _Kept(cand.number, name, cand.angle, grid.bounds(), footprint, chip_counts, nodata_fraction, preview)


def _chips_in_threads(job: _ChipJob, src: Any, raster_labels: Any, stats: _BandStats, skipped: dict[str, int],
                      fb: Feedback) -> Generator[_Kept, None, None]:
    """Make the chips in this process: a reader thread, this thread labelling, I/O threads writing."""
    total = job.plan.total
    sink = job.sink(src.crs, stats, io_threads=2)
    reader = _ChipReader(job.reader(src), job.candidates(skipped))
    kept = after = 0
    try:
        for cand, px in reader:
            check_canceled(fb, "export of training chips")
            if cand.number % 16 == 0:
                fb.set_progress(100.0 * cand.number / total)
            if job.cfg.max_chips is not None and kept >= job.cfg.max_chips:
                break
            made = _make_chip(job, raster_labels, cand, px, _chip_stem(kept), skipped, after)
            if made is None:
                continue
            files, chip = made
            after = cand.number
            sink.submit(files, cand.grid.transform, px)
            kept += 1
            yield chip
        sink.finish()
    finally:
        reader.close()
        sink.close()  # on cancel/error: drop queued chips, wait for the running one, before the folder goes


# Candidates per worker-process block: large enough that a block's message and its final flush cost little
# per chip; near the end blocks shrink to _MIN_BLOCK (see _block_starts) so that the processes end together.
_BLOCK = 16
_MIN_BLOCK = 4


def _block_starts(total: int, processes: int) -> list[int]:
    """The first candidate of each block, then ``total``: guided self-scheduling.

    A block is a quarter of each process's share of what is left, between :data:`_MIN_BLOCK` and
    :data:`_BLOCK`. With fixed blocks of 16 (40 ms of work) a process often still made the last one while
    the others waited: ~20 ms of one idle core at the end of every export, 3 % of a 400-chip one. Blocks
    depend only on ``total`` and ``processes``, never on timing, so the output does not either.
    """
    starts = [0]
    while starts[-1] < total:
        left = total - starts[-1]
        size = max(_MIN_BLOCK, min(_BLOCK, -(-left // (4 * processes))))
        starts.append(min(total, starts[-1] + size))
    return starts


# Modules whose presence means a Qt/QGIS process: their threads may hold locks (GDAL's among them) that
# a forked child would inherit locked, so the export does not fork there.
_FORK_UNSAFE_MODULES = ("qgis.core", "PyQt5.QtCore", "PyQt6.QtCore")


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _fork_refusal() -> str | None:
    """Why worker processes cannot be forked here, or None when they can."""
    import multiprocessing
    import sys

    if not sys.platform.startswith("linux") or "fork" not in multiprocessing.get_all_start_methods():
        return "worker processes are only forked on Linux"
    loaded = [m for m in _FORK_UNSAFE_MODULES if m in sys.modules]
    if loaded:
        return f"this process runs Qt/QGIS ({loaded[0]}), which must not be forked"
    if multiprocessing.current_process().daemon:
        return "this process is a daemonic worker, which may not start processes"
    import threading

    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if others:  # a lock one of them holds (GDAL's, say) would stay locked in the copy
        return f"this process runs other threads ({', '.join(others[:3])}), which must not be forked"
    return None


def _process_workers(cfg: ExportConfig, total: int, stats: _BandStats, fb: Feedback) -> int:
    """How many worker processes make the chips (1: threads in this process).

    Threads share one GIL, which caps the export at ~1.5 cores; forked workers each make whole blocks of
    chips. They are used when the statistics add up in any order (8/16-bit histograms: the same
    ``dataset.json`` as the threads), ``max_chips`` does not cut the export short, there are enough chips,
    and forking is safe (Linux, no Qt/QGIS in the process).
    """
    wanted = cfg.workers if cfg.workers else min(_usable_cores(), 8)
    if wanted <= 1:
        return 1
    why = _fork_refusal()
    if why is None and stats.hist is None:
        why = f"the statistics of {stats.nbands}-band non-8/16-bit chips are a sample that depends on the chip order"
    if why is None and cfg.max_chips is not None:
        why = "max_chips stops the export early"
    if why is None and not cfg.workers and total < 8 * _BLOCK:
        why = "there are few chips"
    if why is not None:
        if cfg.workers:
            fb.info(f"exporting with threads in this process, not {cfg.workers} worker processes: {why}")
        return 1
    return min(wanted, max(1, -(-total // _BLOCK)))


class _BlockMaker:
    """Makes whole blocks of candidates (``starts``: :func:`_block_starts`) in one process: read, label and write,
    one after the other.

    Used by the export's process and by each forked worker; no reader thread (each process has a core).
    """

    def __init__(self, job: _ChipJob, src: Any, raster_labels: Any, stats: _BandStats, starts: list[int],
                 counter: _BlockCounter) -> None:
        self.job = job
        self.starts = starts
        self.counter = counter
        self.raster_labels = raster_labels
        self.sink = job.sink(src.crs, stats, io_threads=1)
        self.read = job.reader(src)

    def make(self, block: int, waiting: Callable[[], None]) -> tuple[list[_Kept], dict[str, int]]:
        """Block ``block``'s exported chips, under their predicted names (:meth:`_BlockCounter.first_index`;
        ``waiting`` is called while the blocks before it are still being counted)."""
        skipped = _no_skips()
        candidates = list(self.job.candidates(skipped, self.starts[block], self.starts[block + 1]))
        self.counter.publish(block, len(candidates))
        first = self.counter.first_index(block, waiting)
        kept: list[_Kept] = []
        after = self.starts[block]
        for cand in candidates:
            px = self.read(cand.grid)
            made = _make_chip(self.job, self.raster_labels, cand, px, _chip_stem(first + len(kept)), skipped, after)
            if made is not None:
                self.sink.submit(made[0], cand.grid.transform, px)
                kept.append(made[1])
                after = cand.number
        return kept, skipped


class _BlockCounter:
    """The next block nobody has taken yet, and each block's predicted first chip, shared by the export's process
    and the workers it forks.

    Blocks are handed out in order, to whichever process asks first. Chips are named by their index in export
    order, which depends on how many chips every earlier block exports, and that is only known once it is made.
    So each block's maker publishes how many of its candidates passed the checks needing no pixels (mask, a
    label under it), an upper bound of what it exports, and names its chips from the sum of those bounds
    for the blocks before it. Unless a chip was skipped after its read (no labelled pixel, too much nodata),
    that is its index, and the bookkeeping renames nothing; a chip's predicted index is never below its
    index, nor shared, so the renames needed otherwise, in export order, never meet another chip's file.
    (Workers had written temporary names, all renamed by the export's process: 800 renames in a 400-chip export.)

    The next block sits in 8 bytes of shared anonymous memory, with a pipe holding one byte as its lock
    (whoever reads the byte holds it), then one byte per block: its count + 1 (0 until published; a block has
    at most :data:`_BLOCK` candidates, and a one-byte store cannot be seen half-made). Both are inherited by
    the fork and cost a few syscalls to make, where ``multiprocessing.Value`` made a heap arena (a file in a
    new temporary folder) and a POSIX semaphore: 3.9 ms the first time in a process, which the CLI pays.
    """

    def __init__(self, blocks: int) -> None:
        import mmap

        assert _BLOCK < 255
        self._shared = mmap.mmap(-1, 8 + blocks)  # MAP_SHARED | MAP_ANONYMOUS: forked processes see the same bytes
        self._token, self._give = os.pipe()
        os.write(self._give, b"x")
        self._counted = 0  # this process's running sum of the published counts of blocks 0 .. _counted - 1
        self._sum = 0

    def publish(self, block: int, candidates: int) -> None:
        """Block ``block`` has ``candidates`` candidates left after the checks needing no pixels."""
        self._shared[8 + block] = candidates + 1

    def first_index(self, block: int, waiting: Callable[[], None]) -> int:
        """The predicted index of block ``block``'s first chip; ``waiting()`` runs while an earlier block is still
        uncounted (its maker publishes right after claiming it: a fraction of a millisecond)."""
        while self._counted < block:
            count = self._shared[8 + self._counted]
            if count:
                self._sum += count - 1
                self._counted += 1
            else:
                waiting()
                time.sleep(0.0002)
        return self._sum

    @property
    def value(self) -> int:
        """The next block, read without the lock (it only grows: a peek, to skip a pointless claim)."""
        return int.from_bytes(self._shared[:8], "little")

    def claim(self, waiting: Callable[[], None]) -> int:
        """Take the next block (its number may be past the last one: none is left); ``waiting()`` runs every
        50 ms while another process holds the lock (it held it for microseconds, unless it was killed then)."""
        import select

        while not select.select([self._token], [], [], 0.05)[0]:
            waiting()
        os.read(self._token, 1)
        try:
            block = self.value
            self._shared[:8] = (block + 1).to_bytes(8, "little")
        finally:
            os.write(self._give, b"x")
        return block

    def close(self) -> None:
        os.close(self._token)
        os.close(self._give)
        self._shared.close()


def _chips_in_processes(job: _ChipJob, src: Any, raster_labels: Any, workers: int, stats: _BandStats,
                        skipped: dict[str, int], fb: Feedback, finisher: _Finisher) -> Generator[_Kept, None, None]:
    """Make the chips in this process and ``workers - 1`` forked ones, in blocks of candidates (:func:`_block_starts`).

    Workers take the next untaken block, write its chips under their predicted names (:class:`_BlockCounter`)
    and send back only what the bookkeeping needs (then, at the end, their histograms). This process yields
    the blocks in order, so names, index and statistics are those of the threads (a chip whose prediction was
    too high is renamed then); while the next block in order is not ready it makes an untaken block itself,
    so no core idles and the bookkeeping it also does never holds the workers back. A worker that fails sends
    its error; one that dies (out of memory) is noticed; cancel and errors terminate them all before the
    folder is removed.
    Workers that sent everything are handed to ``finisher``: they exit on their own (6-11 ms each) while the
    export ends, except the first, which waits to draw the preview (:class:`_Finisher`).
    """
    import multiprocessing

    from .malloc_tuning import freed_memory_kept

    ctx = multiprocessing.get_context("fork")
    total = job.plan.total
    starts = _block_starts(total, workers)
    blocks = len(starts) - 1
    counter = _BlockCounter(blocks)
    procs: list[Any] = []
    conns: list[Any] = []
    own: _BlockMaker | None = None
    busy: list[int] = []
    tuned = contextlib.ExitStack()
    try:
        # The largest per-chip buffers: the chip's pixels as float64 (the stretch and the statistics' arithmetic).
        tw, th = job.plan.tile
        tuned.enter_context(freed_memory_kept(len(job.bands) * tw * th * 8))  # the workers inherit it
        for w in range(1, workers):  # before this process starts any thread
            parent, child = ctx.Pipe()
            # The worker's own datasets, opened here: a forked process's first GeoTIFF open re-creates PROJ's
            # context (proj.db) to decode the CRS, 14-26 ms of the worker's start. This process never reads
            # through them (a file offset is shared across fork) and closes its copies once the worker has them.
            rasters = _open_worker_rasters(job, src)
            proc = ctx.Process(target=_process_worker, args=(child, job, counter, starts, rasters, w == 1,
                                                             [*conns, parent]),
                               name=f"chip-worker-{w}", daemon=True)
            try:
                proc.start()
            finally:
                for r in rasters:
                    if r is not None:
                        r.close()
            child.close()  # so that this end's recv sees EOF when the worker dies
            procs.append(proc)
            conns.append(parent)
        fb.info(f"making chips in {workers} processes")
        own = _BlockMaker(job, src, raster_labels, stats, starts, counter)
        ready: dict[int, tuple[list[_Kept], dict[str, int], bool]] = {}  # made, skipped, made here
        busy.extend(range(len(procs)))  # workers that have not sent their histograms yet
        made = 0

        def collect() -> None:
            """Take every message waiting; a worker that sent its histograms has no more to say."""
            for i in list(busy):
                if conns[i].poll():
                    kind, payload = _receive(conns[i], procs[i])
                    if kind == "block":
                        ready[payload[0]] = (payload[1], payload[2], False)
                    else:
                        assert stats.hist is not None
                        stats.hist += payload
                        busy.remove(i)

        def waiting() -> None:
            """While a worker counts its block: cancel, its error or its death still end the export."""
            check_canceled(fb, "export of training chips")
            collect()
            _raise_if_one_died([conns[i] for i in busy], [procs[i] for i in busy])

        for b in range(blocks):
            while b not in ready:
                check_canceled(fb, "export of training chips")
                collect()
                if b in ready:
                    break
                if counter.value < blocks and (c := counter.claim(waiting)) < blocks:
                    ready[c] = (*own.make(c, waiting), True)
                else:
                    _wait_any([conns[i] for i in busy], [procs[i] for i in busy], fb)
            kept, block_skipped, here = ready.pop(b)
            if here and kept and kept[0].name != _chip_stem(made):  # to be renamed: its files must be complete
                own.sink.finish()
            for key, n in block_skipped.items():
                skipped[key] += n
            for chip in kept:
                yield chip
                made += 1
            fb.set_progress(100.0 * starts[b + 1] / total)
        own.sink.finish()
        while busy:
            _wait_any([conns[i] for i in busy], [procs[i] for i in busy], fb)
            collect()
    finally:
        if own is not None:
            own.sink.close()
        if procs and not busy:  # all done: they exit (or help) while the export writes its index and preview
            finisher.procs.extend(procs)
            finisher.helper = (conns.pop(0), procs[0])
        else:
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
            for proc in procs:
                proc.join()
        for conn in conns:
            conn.close()
        counter.close()  # the workers keep their copies until they exit
        tuned.close()


def _wait_any(conns: list[Any], procs: list[Any], fb: Feedback) -> None:
    """Wait (checking for cancel) until a worker has a message, failing if one died without a word."""
    from multiprocessing.connection import wait

    while not wait(conns, timeout=0.05):
        check_canceled(fb, "export of training chips")
        _raise_if_one_died(conns, procs)


def _raise_if_one_died(conns: list[Any], procs: list[Any]) -> None:
    """Fail the export if a worker exited without a word (killed: out of memory, say)."""
    for conn, proc in zip(conns, procs):
        if not proc.is_alive() and not conn.poll():
            raise RasterReadError(_DIED.format(proc.exitcode))


_DIED = ("an export worker process died (exit code {}), perhaps out of memory; export with fewer workers "
         "(--workers) or smaller tiles")


def _receive(conn: Any, proc: Any) -> tuple[str, Any]:
    """A worker's waiting message; its error is raised here."""
    try:
        kind, payload = conn.recv()
    except EOFError:
        proc.join()
        raise RasterReadError(_DIED.format(proc.exitcode)) from None
    if kind == "error":
        raise payload
    return kind, payload


def _open_worker_rasters(job: _ChipJob, src: Any) -> tuple[Any, Any]:
    """A worker's own raster and label raster (None with vector labels): GDAL datasets are not shared."""
    from .raster_io import open_raster, raster_env

    with raster_env():
        own = open_raster(job.cfg.raster)
        try:
            labels = _open_label_raster(job.cfg, src, job.area)[0] if job.vlabels is None else None
        except BaseException:
            own.close()
            raise
    return own, labels


def _process_worker(conn: Any, job: _ChipJob, counter: _BlockCounter, starts: list[int], rasters: tuple[Any, Any],
                    helper: bool, inherited: list[Any]) -> None:
    """A forked worker: makes untaken blocks until none is left, then sends its histograms (and, the ``helper``,
    draws the preview when asked: :class:`_Finisher`).

    ``rasters``: its raster and label raster, opened by the export's process for it (:func:`_open_worker_rasters`).
    ``inherited``: the export's ends of the workers' pipes, which the fork copied. They are closed at once: while
    any copy of the export's end is open, the worker's end never reads EOF, so the helper would wait for a job
    forever once the export no longer needs it (or has died).
    """
    from .raster_io import raster_env

    for end in inherited:
        end.close()
    src, raster_labels = rasters
    parent = os.getppid()

    def waiting() -> None:
        if os.getppid() != parent:  # the export's process was killed: nobody will count the blocks before
            raise RasterReadError("the export's process is gone")

    try:
        with raster_env(), src:
            stats = _BandStats(len(job.bands), job.out_dtype)
            maker = _BlockMaker(job, src, raster_labels, stats, starts, counter)
            try:
                while (b := counter.claim(waiting)) < len(starts) - 1:
                    kept, skipped = maker.make(b, waiting)
                    maker.sink.finish()  # the bookkeeping may rename these files: they must be complete
                    conn.send(("block", (b, kept, skipped)))
            finally:
                maker.sink.close()
                if raster_labels is not None:
                    raster_labels.close()
        conn.send(("stats", stats.hist))
        if helper:
            _help_at_the_end(conn, job)
    except BaseException as exc:  # handed to the parent, which raises it
        import pickle

        try:
            pickle.dumps(exc)
        except Exception:
            exc = RasterReadError(f"an export worker process failed: {exc!r}")
        with contextlib.suppress(OSError):  # the export may have stopped listening (its own error)
            conn.send(("error", exc))
    finally:
        conn.close()


def _help_at_the_end(conn: Any, job: _ChipJob) -> None:
    """The helper worker's last job: draw ``preview.png`` when the export asks (or exit when it does not)."""
    try:
        kind, payload = conn.recv()
    except EOFError:  # the export drew it itself, or stopped
        return
    if kind == "preview":
        path, picks, classes = payload
        _write_preview(Path(path), picks, classes, job.cfg, job.sampler.tile_px)
        conn.send(("done", None))


class _Finisher:
    """The worker processes at the end of an export: one of them (the helper) draws the preview while this
    process writes the index, the footprints and the description, and all are joined once the export is done.

    The end of an export ran on one core while the other idled: ~30 ms of a 400-chip export's ~480, of which the
    preview sheet and its PNG were 6-13 ms. The helper is the first worker, which has made its chips and
    waits for the preview's picks (their decimated pixels, ~260 KB for 4 chips of 256 px) and classes; the
    rest of what it needs, its job, it inherited. Without a helper (threads only), the export draws it.
    """

    def __init__(self) -> None:
        self.procs: list[Any] = []  # every worker process, to join
        self.helper: tuple[Any, Any] | None = None  # (connection, process) of the worker waiting for a job
        self.drawing = False

    def draw_preview(self, path: Path, picks: list[tuple[np.ndarray, np.ndarray]], classes: list[ClassInfo],
                     cfg: ExportConfig, tile_px: int) -> None:
        """Have ``path`` drawn: by the helper when there is one (see :meth:`wait`), else here and now."""
        if picks and self.helper is not None:
            try:
                self.helper[0].send(("preview", (str(path), picks, classes)))
                self.drawing = True
                return
            except OSError:  # the helper is gone (killed): draw it here
                pass
        _write_preview(path, picks, classes, cfg, tile_px)

    def wait(self) -> None:
        """Until the helper has written the preview (raising its error); then it may exit, while the export ends."""
        if self.drawing and self.helper is not None:
            self.drawing = False
            _receive(*self.helper)
            self.helper[0].close()
            self.helper = None

    def stop(self) -> None:
        """On an error: the helper must not write into the temporary folder while it is removed."""
        if self.drawing and self.helper is not None:
            self.helper[1].terminate()
            self.helper[1].join()

    def close(self) -> None:
        """Let the helper go (its connection's end tells it to exit) and join every worker."""
        if self.helper is not None:
            self.helper[0].close()
            self.helper = None
        for proc in self.procs:
            proc.join()
        self.procs.clear()


def _raster_labelled(cfg: ExportConfig) -> bool:
    return Path(cfg.labels).suffix.lower() in RASTER_LABEL_SUFFIXES


def _open_label_raster(cfg: ExportConfig, src: Any, area: tuple[float, float, float, float]) -> tuple[Any, dict[int, str]]:
    """The classified label raster, checked and warped to the image's CRS when needed, and its colours."""
    from .raster_io import open_raster

    if cfg.label_mode != "classified_tiles":
        raise ConfigError("road label modes need road centerlines (a vector layer), not a raster")
    labels = open_raster(cfg.labels)
    _check_raster_labels(labels, src, area)
    if labels.crs is not None and labels.crs != src.crs:
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        labels = WarpedVRT(labels, crs=src.crs, resampling=Resampling.nearest)
    colors: dict[int, str] = {}
    try:
        cmap = labels.colormap(1)
        colors = {int(v): "#{:02x}{:02x}{:02x}".format(*rgba[:3]) for v, rgba in cmap.items()}
    except ValueError:
        pass
    return labels, colors


# --------------------------------------------------------------------------- main


def export_training_data(cfg: ExportConfig, feedback: Feedback | None = None) -> ExportResult:
    """Export image and label chips with their description into ``cfg.output_folder``.

    Raises:
        ConfigError: inconsistent parameters (format vs bands, extent outside the raster, ...).
        LabelError: unusable labels (empty, outside, bad class field) or no chip to export.
        RasterReadError: the raster cannot be read.
        CanceledError: the user canceled; no output folder is left behind.
    """
    from .raster_io import default_bands, open_raster, raster_env

    fb = feedback or NullFeedback()
    with raster_env(), open_raster(cfg.raster) as src:
        if src.crs is None:
            raise RasterReadError(f"the raster {cfg.raster} has no CRS; assign one (Raster > Projections) first")
        bands = tuple(cfg.bands) if cfg.bands else default_bands(src)
        bad = [b for b in bands if b > src.count]
        if bad:
            raise ConfigError(f"band {bad[0]} does not exist: {cfg.raster} has {src.count} band(s)")
        src_dtype = str(src.dtypes[bands[0] - 1])
        out_dtype = "uint8" if cfg.stretch != "none" else src_dtype
        _check_format(cfg.chip_format, len(bands), out_dtype)
        finisher = _Finisher()  # the worker processes once they made their chips (see _chips_in_processes)
        try:
            with atomic_output(cfg.output_folder, overwrite=cfg.overwrite) as tmp:
                tmp.mkdir()
                try:
                    return _export(cfg, src, bands, out_dtype, tmp, Path(cfg.output_folder), fb, finisher)
                except BaseException:
                    finisher.stop()  # before the temporary folder goes
                    raise
        finally:
            finisher.close()


def _export(cfg: ExportConfig, src: Any, bands: tuple[int, ...], out_dtype: str, tmp: Path, final: Path,
            fb: Feedback, finisher: _Finisher) -> ExportResult:

    import shapely
    from affine import Affine

    from .raster_io import resampling_from_name

    area = _export_area(src, cfg)
    csx, csy = cfg.cell_size if cfg.cell_size else (abs(src.transform.a), abs(src.transform.e))
    x0, y0 = area[0], area[3]
    if cfg.cell_size is None and src.transform.b == 0 and src.transform.d == 0:
        # Snap the origin to the raster's pixel grid so chips are plain windowed reads.
        col, row = ~src.transform @ (x0, y0)
        x0, y0 = src.transform @ (math.floor(col + 1e-9), math.floor(row + 1e-9))
    ncols = max(1, int(math.ceil((area[2] - x0) / csx - 1e-9)))
    nrows = max(1, int(math.ceil((y0 - area[1]) / csy - 1e-9)))
    base = Affine(csx, 0.0, x0, 0.0, -csy, y0)
    tw, th = cfg.tile_size_px
    origins = _chip_origins(ncols, nrows, cfg.tile_size_px, cfg.stride_px)
    angles = [0.0]
    if cfg.rotation_deg > 0:
        k = 1
        while k * cfg.rotation_deg < 360 - 1e-9:
            angles.append(k * cfg.rotation_deg)
            k += 1
    resampling = resampling_from_name(cfg.resampling)

    # ---- labels
    raster_labels = None
    vlabels: _VectorLabels | None = None
    label_names: dict[int, str] = {}
    label_colors: dict[int, str] = {}
    if _raster_labelled(cfg):
        raster_labels, label_colors = _open_label_raster(cfg, src, area)
    else:
        vlabels = _load_vector_labels(cfg, src.crs, area, fb)
        label_names = vlabels.names
    names = {**label_names, **(cfg.class_names or {})}
    colors = {**label_colors, **(cfg.class_colors or {})}

    mask_geom = None
    if cfg.mask_polygons:
        from .rasterize_labels import repair, transform_geometries
        from .vectors import read_vector

        mvec = read_vector(cfg.mask_polygons)
        mgeoms, _ = repair(mvec.geometries)
        mgeoms = transform_geometries(mgeoms, mvec.crs or src.crs, src.crs)
        mask_geom = shapely.unary_union([g for g in mgeoms if g.geom_type in ("Polygon", "MultiPolygon")])
        if mask_geom.is_empty:
            raise ConfigError(f"the mask layer {cfg.mask_polygons} has no polygon; use a polygon layer")
        shapely.prepare(mask_geom)

    low: list[float] = []
    high: list[float] = []
    if cfg.stretch != "none":
        low, high = _stretch_limits(src, bands, cfg.stretch, cfg.stretch_percentiles)
    src_nodata = src.nodata
    # Stretched chips keep 0 for nodata (the label chips mark those pixels ignored anyway).
    image_nodata: float | None = src_nodata if cfg.stretch == "none" else (0 if src_nodata is not None else None)
    fill = src_nodata if src_nodata is not None else 0

    ext = cfg.chip_format
    label_ext = "tif" if ext == "tif" else "png"
    folders = ["images", "labels"]
    if cfg.orientation:
        folders.append("orientation")
    if cfg.label_mode == "road_speed_bins":
        folders.append("speed")
    dirs = {f: tmp / f for f in folders}
    for d in dirs.values():
        d.mkdir()

    stats = _BandStats(len(bands), out_dtype)
    class_pixels: dict[int, int] = {}
    rows: list[dict[str, Any]] = []
    footprints: list[Any] = []
    skipped = _no_skips()
    obins = cfg.orientation_bins
    total = len(origins) * len(angles)
    fb.info(f"export grid {ncols}x{nrows} px at cell size {csx:g} x {csy:g}: {total} candidate chips")
    sampler = _PreviewSampler(cfg.preview_chips, cfg.tile_size_px, min(total, cfg.max_chips or total))
    job = _ChipJob(cfg, bands, resampling, fill, (low, high, image_nodata is not None) if cfg.stretch != "none" else None,
                   out_dtype, image_nodata, vlabels, area, dirs, ext, label_ext,
                   _ChipPlan(origins, angles, base, (tw, th), mask_geom), sampler)
    job.warm_templates(src.crs)
    workers = _process_workers(cfg, total, stats, fb)
    if workers > 1:
        made = _chips_in_processes(job, src, raster_labels, workers, stats, skipped, fb, finisher)
    else:
        made = _chips_in_threads(job, src, raster_labels, stats, skipped, fb)
    with contextlib.closing(made):
        for chip in made:
            name = _chip_stem(len(rows))
            if chip.name != name:  # a worker process's chip: it could not know how many chips came before
                for folder in dirs:
                    old, new = job.path(folder, chip.name), job.path(folder, name)
                    os.rename(old, new)
                    if not new.endswith(".tif"):  # GDAL keeps a PNG's or JPEG's georeferencing in a sidecar
                        with contextlib.suppress(FileNotFoundError):
                            os.rename(f"{old}.aux.xml", f"{new}.aux.xml")
            for v, c in chip.counts.items():
                class_pixels[v] = class_pixels.get(v, 0) + c
            minx, miny, maxx, maxy = chip.bounds
            rows.append({"file": f"{name}.{ext}", "minx": minx, "miny": miny, "maxx": maxx, "maxy": maxy,
                         "rotation_deg": chip.angle, "nodata_fraction": round(chip.nodata_fraction, 6),
                         "counts": chip.counts})
            footprints.append(chip.footprint)
            sampler.offer(chip.number, chip.preview, name)
    if raster_labels is not None:
        raster_labels.close()
    if not rows:
        raise LabelError(
            f"no chip was exported from {total} candidate chips (skipped: {skipped['no_features']} without "
            f"labelled pixels, {skipped['nodata']} over {cfg.max_nodata_percent:g}% nodata, "
            f"{skipped['outside_mask']} outside the mask polygons); check that the labels overlap the raster, "
            "lower the tile size, raise the nodata limit, or export all tiles"
        )

    # ---- classes
    if cfg.label_mode == "classified_tiles":
        values = set(vlabels.class_values) if vlabels is not None else set()
        values |= {v for v in class_pixels if v != 0}
        classes = make_classes(sorted(values), names, colors)
    else:
        classes = [ClassInfo(0, names.get(0, "background"), colors.get(0, "#000000")),
                   ClassInfo(1, names.get(1, "road"), colors.get(1, "#e31a1c"))]
    class_values = [c.value for c in classes]

    # ---- preview, index, footprints, description (dataset.json last: it marks the folder complete). The preview
    # is drawn by a worker process when there is one; not on a thread here: pyogrio holds the GIL while it
    # writes the GeoPackage (~12 ms), so a preview on a thread beside it only waited (17-27 ms for 3 ms of work).
    finisher.draw_preview(tmp / "preview.png", sampler.picks(job.chip_files), classes, cfg, sampler.tile_px)
    fields = ["file", "minx", "miny", "maxx", "maxy", "rotation_deg", "nodata_fraction"] + [
        f"class_{v}" for v in class_values]
    with open(tmp / "chips.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(fields)
        for r in rows:
            writer.writerow([r["file"], repr(r["minx"]), repr(r["miny"]), repr(r["maxx"]), repr(r["maxy"]),
                             r["rotation_deg"], r["nodata_fraction"]]
                            + [r["counts"].get(v, 0) for v in class_values])
    _write_footprints(tmp / "chip_footprints.gpkg", rows, footprints, class_values, src.crs)
    finisher.wait()

    from .raster_io import band_names as _bn

    all_names = _bn(src)
    desc = {
        "format": "road-landcover-chips",
        "version": 1,
        "task": cfg.task,
        "label_mode": cfg.label_mode,
        "ignore_value": cfg.ignore_value,
        "classes": [{**c.to_dict(), "pixels": int(class_pixels.get(c.value, 0))} for c in classes],
        "bands": stats.to_json([all_names[b - 1] for b in bands], bands),
        "image_dtype": out_dtype,
        "image_nodata": image_nodata,
        "stretch": {"method": cfg.stretch, "low": low, "high": high},
        "cell_size": [csx, csy],
        "cell_size_units": _units(src.crs),
        "crs": _crs_string(src.crs),
        "tile_size_px": [tw, th],
        "stride_px": list(cfg.stride_px),
        "chip_format": ext,
        "label_format": label_ext,
        "chip_count": len(rows),
        "orientation": ({"bins": obins, "width_m": cfg.orientation_width_m or 2 * cfg.buffer_m,
                         "bin_deg": 180.0 / obins, "period_deg": 180.0} if cfg.orientation else None),
        "speed_bins": (_speed_bins_json(cfg, vlabels) if cfg.label_mode == "road_speed_bins" else None),
        "source": {"raster": str(Path(cfg.raster).resolve()), "labels": str(Path(cfg.labels).resolve()),
                   "class_field": vlabels.class_field if vlabels else None,
                   "label_kind": "vector" if vlabels else "raster",
                   "features": vlabels.features if vlabels else None,
                   "repaired_geometries": vlabels.repaired if vlabels else 0,
                   "speed_max": vlabels.speed_max if vlabels else None},
        "skipped": skipped,
        "parameters": cfg.to_dict(),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "software": _software(),
    }
    (tmp / "dataset.json").write_text(json.dumps(desc, indent=2) + "\n", encoding="utf-8")
    fb.set_progress(100.0)
    fb.info(f"exported {len(rows)} chips to {final} (skipped {skipped})")
    return ExportResult(final, len(rows), {c.value: int(class_pixels.get(c.value, 0)) for c in classes},
                        final / "chip_footprints.gpkg", final / "dataset.json", skipped, workers)


def _check_raster_labels(lab: Any, src: Any, area: tuple[float, float, float, float]) -> None:
    from rasterio.warp import transform_bounds

    if lab.count < 1:
        raise LabelError(f"the label raster {lab.name} has no band")
    if str(lab.dtypes[0]).startswith("complex"):
        raise LabelError(f"the label raster {lab.name} is {lab.dtypes[0]}; class rasters must hold integer "
                         "class values 1-254 (0 = unlabelled)")
    b = lab.bounds
    if lab.crs is not None and src.crs is not None and lab.crs != src.crs:
        b = transform_bounds(lab.crs, src.crs, *b, densify_pts=21)
    if b[0] >= area[2] or b[2] <= area[0] or b[1] >= area[3] or b[3] <= area[1]:
        raise LabelError(f"the label raster {lab.name} does not overlap the raster extent; check its CRS and extent")


def _raster_label_chip(lab: Any, grid: Any, name: str) -> np.ndarray:
    from rasterio.enums import Resampling

    from .raster_io import read_grid

    data, invalid = read_grid(lab, (1,), grid, Resampling.nearest, fill=0)
    values = data[0]
    valid_values = values[~invalid]
    if values.dtype.kind == "f" and not np.all(valid_values == np.round(valid_values)):
        frac = valid_values[valid_values != np.round(valid_values)][0]
        raise LabelError(f"the label raster {name} holds non-integer value {float(frac)}; class rasters must hold "
                         "whole class values 1-254 (0 = unlabelled)")
    bad = valid_values[(valid_values > 254) | (valid_values < 0)]
    if bad.size:
        raise LabelError(f"the label raster {name} has value {int(bad[0])} outside 0-254; renumber its classes "
                         "or set that value as the raster's nodata")
    out: np.ndarray = values.astype(np.uint8)
    out[invalid] = 0
    return out


def _orientation_chip(vl: _VectorLabels, grid: Any, footprint: Any, label: np.ndarray, invalid: np.ndarray | None,
                      bins: int) -> np.ndarray:
    from .rasterize_labels import segment_orientation_bins, to_pixel_space

    # Segments slightly outside the chip still decide the direction of its edge pixels.
    idx = vl.centerlines.query(footprint.buffer(max(abs(grid.transform.a), abs(grid.transform.b)) * 16))
    lines: list[Any] = list(to_pixel_space(vl.centerlines.geometries[idx], grid.transform)) if len(idx) else []
    nearest = segment_orientation_bins(lines, grid.shape, bins)
    if vl.orientation_band is not None:
        road = vl.orientation_band.rasterize(grid.transform, grid.shape, footprint=footprint) > 0
    else:
        road = (label > 0) & (label != ROAD_IGNORE)
    out = np.where(road, nearest, bins).astype(np.uint8)
    if invalid is not None:
        out[invalid] = ROAD_IGNORE
    return out


def _speed_bins_json(cfg: ExportConfig, vl: _VectorLabels | None) -> dict[str, Any]:
    edges = (vl.speed_edges if vl else None) or []
    names = [f"{edges[i]:g}-{edges[i + 1]:g}" for i in range(len(edges) - 1)] + ["any road"]
    return {"field": cfg.speed_field, "bin_width": cfg.speed_bin_width, "edges": edges, "bands": names}


def _units(crs: Any) -> str:
    if crs.is_geographic:
        return "degree"
    units = (crs.linear_units or "unknown").lower()
    return "metre" if units in ("metre", "meter", "m", "metres", "meters") else units


def _crs_string(crs: Any) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else str(crs.to_wkt())


def _software() -> dict[str, str]:
    import rasterio

    return {"road_landcover": __version__, "rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__}


def _write_footprints(path: Path, rows: list[dict[str, Any]], footprints: list[Any], class_values: list[int],
                      crs: Any) -> None:
    from .vectors import write_vector

    attrs: dict[str, Any] = {
        "file": np.array([r["file"] for r in rows], dtype=object),
        "minx": np.array([r["minx"] for r in rows]), "miny": np.array([r["miny"] for r in rows]),
        "maxx": np.array([r["maxx"] for r in rows]), "maxy": np.array([r["maxy"] for r in rows]),
        "rotation_deg": np.array([r["rotation_deg"] for r in rows], dtype=np.float64),
        "nodata_fraction": np.array([r["nodata_fraction"] for r in rows], dtype=np.float64),
    }
    for v in class_values:
        attrs[f"class_{v}"] = np.array([r["counts"].get(v, 0) for r in rows], dtype=np.int64)
    write_vector(path, footprints, attrs, crs=_crs_string(crs), layer="chips", geometry_type="Polygon")


def _display_rgb(data: np.ndarray) -> np.ndarray:
    """(3, h, w) uint8 for a quick look: first three bands (or grey), 2-98 % stretch per chip.

    8- and 16-bit bands take their percentiles from a histogram and map through a lookup table (0.1 ms a
    band instead of 1.5 ms for np.percentile and float arithmetic); other types go the float way.
    """
    rgb = data[:3] if data.shape[0] >= 3 else np.repeat(data[:1], 3, axis=0)
    out = np.zeros(rgb.shape, dtype=np.uint8)
    for i, band in enumerate(rgb):
        if band.dtype.kind in "ui" and band.dtype.itemsize <= 2:
            low = int(np.iinfo(band.dtype).min)
            values = (band.astype(np.int32) - low).ravel()
            cum = np.cumsum(np.bincount(values))
            lo, hi = np.searchsorted(cum, [0.02 * cum[-1], 0.98 * cum[-1]])
            lut = np.clip((np.arange(len(cum), dtype=np.float64) - lo) / max(hi - lo, 1), 0, 1) * 255
            out[i] = np.round(lut).astype(np.uint8)[values].reshape(band.shape)
            continue
        fband = band.astype(np.float64)
        finite = fband[np.isfinite(fband)]
        flo, fhi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
        out[i] = np.round(np.clip((np.nan_to_num(fband) - flo) / max(fhi - flo, 1e-9), 0, 1) * 255).astype(np.uint8)
    return out


class _PreviewSampler:
    """Picks the few exported chips that ``preview.png`` shows, spread evenly over the candidate grid.

    The targets are fixed before any chip is made: the middle candidate of each of ``n`` equal parts of the
    grid (of its first ``max_chips`` candidates when the export stops there). A target shows the first chip
    exported at or after it, or the last chip of the export when none is. So whoever makes a chip knows
    whether it is shown (:meth:`wanted`) and keeps only its decimated pixels (:meth:`decimate`): a worker
    process sends them with the chip's bookkeeping, and no chip is read back from disk (reading back the
    workers' chips had cost 10-17 ms, and up to 48 ms beside the footprints' GeoPackage). The one exception
    is a pick the maker could not know: the chips of its block after the target were all skipped, so the
    pick is the first chip of a later block; it is read from its files. Memory: ``n`` decimated chips.
    """

    def __init__(self, n: int, tile_size: tuple[int, int], candidates: int, tile_px: int = 192) -> None:
        self.n = max(n, 0)
        self.step = max(1, int(math.ceil(max(tile_size) / min(tile_px, max(tile_size)))))
        # Panels as large as the decimated chips (128 px for 256 px chips, not 192 with a white margin): the
        # sheet has half the pixels, and its PNG encoding was most of the preview's time.
        self.tile_px = int(math.ceil(max(tile_size) / self.step))
        span = max(candidates, 1)
        # Candidate numbers (1-based, as _Candidate.number).
        self.targets = sorted({1 + (2 * j + 1) * span // (2 * self.n) for j in range(self.n)})
        self._next = 0  # the first target no chip has answered yet
        self._chosen: list[tuple[Any, str]] = []
        self._last: tuple[Any, str] | None = None

    def wanted(self, number: int, after: int) -> bool:
        """Whether chip ``number`` is shown, given that no chip was exported after candidate ``after`` before it."""
        i = bisect.bisect_right(self.targets, after)
        return i < len(self.targets) and self.targets[i] <= number

    def decimate(self, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the preview draws of a chip: its first 3 bands and its label, every ``step``-th pixel (copies)."""
        s = self.step
        return np.array(image[:3, ::s, ::s]), np.array(label[::s, ::s])

    def offer(self, number: int, pixels: tuple[np.ndarray, np.ndarray] | None, stem: str) -> None:
        """The next exported chip, in export order: candidate ``number``, its decimated ``pixels`` when its maker
        kept them, and its name (its files are read only if it is shown and its pixels were not kept)."""
        if self._next < len(self.targets) and self.targets[self._next] <= number:
            while self._next < len(self.targets) and self.targets[self._next] <= number:
                self._next += 1
            self._chosen.append((pixels, stem))
            self._last = None
        elif self._next < len(self.targets):
            self._last = (pixels, stem)  # shown if no chip comes after the remaining targets

    def picks(self, files: Callable[[str], tuple[str | Path, str | Path]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The pixels of the shown chips, in export order; ``files(stem)``: a chip's (image, label) files."""
        chosen = self._chosen + ([self._last] if self._last is not None else [])
        return [pixels if pixels is not None else self._read(*files(stem)) for pixels, stem in chosen]

    def _read(self, image: str | Path, label: str | Path) -> tuple[np.ndarray, np.ndarray]:
        import rasterio

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PNG/JPEG chips have no georeferencing
            with rasterio.open(image) as ds:
                img = ds.read(list(range(1, min(ds.count, 3) + 1)))
            with rasterio.open(label) as ds:
                lab = ds.read(1)
        return self.decimate(img, lab)


def _preview_sheet(picks: list[tuple[np.ndarray, np.ndarray]], classes: list[ClassInfo], cfg: ExportConfig,
                   tile_px: int) -> np.ndarray | None:
    """``preview.png``'s pixels (3, h, w): the picked chips (image, label), each plain and with its labels
    overlaid; None without picks."""
    if not picks:
        return None
    # Per label value: how much of the image stays and which colour is blended in (one lookup per chip).
    keep = np.ones(256)
    tint = np.zeros((256, 3))
    shown = range(1, 255) if cfg.task == "roads" else [c.value for c in classes]
    rgba = {c.value: c.rgba for c in classes}
    for v in shown:
        if v != cfg.ignore_value and 0 <= v <= 255:
            keep[v] = 0.45
            tint[v] = 0.55 * np.array((227.0, 26.0, 28.0) if cfg.task == "roads" else rgba[v][:3], dtype=np.float64)
    panels = []
    for img, lab in picks:
        rgb = _display_rgb(img)
        idx = np.clip(lab, 0, 255).astype(np.intp)
        over = rgb * keep[idx] + tint[idx].transpose(2, 0, 1)
        pad = np.full((3, tile_px, tile_px), 255, dtype=np.uint8)
        pair = np.full((3, tile_px, 2 * tile_px + 4), 255, dtype=np.uint8)
        for j, arr in enumerate((rgb, over.astype(np.uint8))):
            p = pad.copy()
            p[:, :arr.shape[1], :arr.shape[2]] = arr[:, :tile_px, :tile_px]
            pair[:, :, j * (tile_px + 4):j * (tile_px + 4) + tile_px] = p
        panels.append(pair)
    per_row = 2
    rows_img = []
    for k in range(0, len(panels), per_row):
        chunk = panels[k:k + per_row]
        while len(chunk) < per_row:
            chunk.append(np.full_like(panels[0], 255))
        rows_img.append(np.concatenate([np.pad(p, ((0, 0), (4, 4), (4, 4)), constant_values=255) for p in chunk], axis=2))
    sheet: np.ndarray = np.concatenate(rows_img, axis=1)
    return sheet


def _write_preview(path: Path, picks: list[tuple[np.ndarray, np.ndarray]], classes: list[ClassInfo],
                   cfg: ExportConfig, tile_px: int) -> None:
    """``preview.png`` of the picked chips (no file without picks)."""
    sheet = _preview_sheet(picks, classes, cfg, tile_px)
    if sheet is not None:
        path.write_bytes(_png_bytes(sheet))


def _png_bytes(rgb: np.ndarray) -> bytes:
    """A (3, h, w) uint8 image as an 8-bit RGB PNG: no row filters, zlib level 1 (level 0 when it would not pay).

    GDAL's and Pillow's PNG writers try 5 row filters per row and hold the GIL while they encode: 18-20 ms
    for a preview sheet, and 40-60 ms beside the footprints' GeoPackage, which holds it too. zlib alone
    releases the GIL. Noisy imagery hardly compresses (level 1 saved 10 % of the benchmark's sheet in 10-16
    ms), so a sample of rows decides: under a quarter saved, the stream is stored.
    """
    import struct
    import zlib

    _, h, w = rgb.shape
    rows = np.zeros((h, 1 + 3 * w), dtype=np.uint8)  # each row: filter type 0 (none), then its RGB pixels
    rows[:, 1:] = np.ascontiguousarray(rgb.transpose(1, 2, 0)).reshape(h, 3 * w)
    raw = rows.tobytes()
    sample = rows[::8].tobytes()  # every 8th row: the chips as much as the sheet's white margins
    level = 1 if len(zlib.compress(sample, 1)) < 0.75 * len(sample) else 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8 bits, truecolour, deflate, no filter, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, level))
            + chunk(b"IEND", b""))


def iter_chip_pairs(folder: str | Path) -> Iterator[tuple[Path, Path]]:
    """(image, label) paths of a training folder, in chips.csv order (a small reader for tests and tools)."""
    folder = Path(folder)
    desc = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    label_ext = desc.get("label_format", desc["chip_format"])
    with open(folder / "chips.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            stem = row["file"].rsplit(".", 1)[0]
            yield folder / "images" / row["file"], folder / "labels" / f"{stem}.{label_ext}"
