"""Classify pixels with a model package: padded, streaming, tiled inference into a GeoTIFF.

The flow for one raster (see docs/classify.md for the user's view):

1. open the raster; resample it on the fly to the requested cell size (a ``WarpedVRT``, nothing is
   written), cut the requested extent, and check its bands against the package;
2. lay a :class:`core.tiling.TileGrid` over it: same-size tiles whose centres are kept, reflected at
   the raster edges, grouped into chunks that partition the output;
3. a reader thread reads tile windows, applies the package's stretch and normalisation and hands
   batches over a small queue (so disk reads overlap with the network);
4. the main thread predicts each batch (autocast on CUDA; an out-of-memory error halves the batch
   and retries), blends the tiles into their chunk and writes every finished chunk straight into
   the output GeoTIFF (tiled, compressed, under a temporary name renamed when complete).

Memory is bounded by the chunk, the batch and the queue, never by the raster size. Nodata in the
input (the raster's nodata value, all bands) stays nodata in the output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import StepConfig, require
from .errors import CanceledError, ConfigError, ModelPackageError, RasterReadError
from .progress import Feedback, NullFeedback, check_canceled
from .tiling import BLEND_MODES, Chunk, TileGrid

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .classes import ClassInfo
    from .model_package import ModelPackage

TTA_MODES = ("none", "flips", "dihedral")
TTA_MERGES = ("mean", "max")
#: Value of pixels without a prediction (input nodata) in the classified output (class values are 0-254).
CLASS_NODATA = 255
#: Value of pixels without a prediction in the probability output (probabilities are 0-1).
PROBABILITY_NODATA = -1.0
#: Output chunks are about this many pixels on a side (bounded memory; few tiles predicted twice).
CHUNK_TARGET_PX = 1024
#: Warn when the raster's native cell size and the model's differ by more than this factor.
CELL_SIZE_WARN_RATIO = 2.0
#: GDAL block cache in MB during inference (bounded memory whatever the raster size).
GDAL_CACHE_MB = 64

BatchStep = Callable[["torch.Tensor"], "torch.Tensor"]


@dataclasses.dataclass(frozen=True)
class ClassifyConfig(StepConfig):
    """Parameters of Classify Pixels.

    Attributes:
        input_raster: any raster GDAL reads.
        model: model package folder, its ``model.json`` or a zip.
        output_classified: classified GeoTIFF to write (class values of the package, 255 = nodata).
        output_probability: optional float32 GeoTIFF: one band per class, or for road models the
            single road probability; values 0-1, nodata -1.
        cell_size_m: output cell size in the raster CRS's units (metres for projected CRSs);
            ``None`` uses the model's training cell size (or the native one when unknown).
        extent: ``(xmin, ymin, xmax, ymax)`` in the raster CRS to classify; ``None`` for all of it.
        tile_size_px: tile side the network sees; ``None`` uses the model's.
        padding_px: context discarded on each tile side; ``None`` uses a quarter of the tile.
        blend: ``centre`` (keep tile centres) or ``weighted`` (overlapping centres, linear ramps).
        batch_size: tiles per forward pass (halved automatically on CUDA out-of-memory).
        device: auto / cuda / cuda:N / mps / cpu.
        tta: test-time augmentation: none, flips (4: identity, horizontal, vertical, both) or
            dihedral (all 8 rotations and flips).
        tta_merge: how augmented probabilities merge: mean or max.
        mixed_precision: run the network under float16 autocast on CUDA.
        overwrite: replace existing outputs.
    """

    input_raster: Path
    model: Path
    output_classified: Path
    output_probability: Path | None = None
    cell_size_m: float | None = None
    extent: tuple[float, float, float, float] | None = None
    tile_size_px: int | None = None
    padding_px: int | None = None
    blend: str = "centre"
    batch_size: int = 8
    device: str = "auto"
    tta: str = "none"
    tta_merge: str = "mean"
    mixed_precision: bool = True
    overwrite: bool = True

    def validate(self) -> None:
        require(self.blend in BLEND_MODES, f"blend must be one of {', '.join(BLEND_MODES)}, got {self.blend!r}")
        require(self.tta in TTA_MODES, f"tta must be one of {', '.join(TTA_MODES)}, got {self.tta!r}")
        require(self.tta_merge in TTA_MERGES, f"tta_merge must be mean or max, got {self.tta_merge!r}")
        require(self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}")
        require(self.cell_size_m is None or self.cell_size_m > 0,
                f"cell size must be positive, got {self.cell_size_m}; leave it empty to use the model's")
        require(self.tile_size_px is None or self.tile_size_px >= 8,
                f"tile size must be at least 8 px, got {self.tile_size_px}")
        require(self.padding_px is None or self.padding_px >= 0, f"padding must be 0 or more, got {self.padding_px}")
        if self.extent is not None:
            xmin, ymin, xmax, ymax = self.extent
            require(xmax > xmin and ymax > ymin, f"extent {self.extent} is empty; give xmin, ymin, xmax, ymax")
        require(Path(self.output_classified).suffix.lower() in (".tif", ".tiff"),
                f"the classified output {self.output_classified} must be a GeoTIFF (.tif)")
        require(self.output_probability is None or Path(self.output_probability).suffix.lower() in (".tif", ".tiff"),
                f"the probability output {self.output_probability} must be a GeoTIFF (.tif)")


@dataclasses.dataclass
class ClassifyResult:
    """What was written and how, for the log, the Processing results and the benchmark."""

    output_classified: Path
    output_probability: Path | None
    device: str
    width_px: int
    height_px: int
    cell_size: tuple[float, float]
    tile_size_px: int
    padding_px: int
    blend: str
    batch_size: int
    tiles: int
    seconds: float
    forward_seconds: float
    warnings: list[str]
    #: Output windows ``(row0, row1, col0, col1)`` this process wrote (all chunks unless sharded).
    chunk_windows: list[tuple[int, int, int, int]] = dataclasses.field(default_factory=list)
    classes: list[ClassInfo] = dataclasses.field(default_factory=list)

    @property
    def megapixels_per_second(self) -> float:
        return self.width_px * self.height_px / 1e6 / max(self.seconds, 1e-9)


# --------------------------------------------------------------------------------------------------
# The package's view of the input: bands, stretch, normalisation
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """How raw raster values become network input, from the package (docs/formats.md)."""

    band_indexes: tuple[int, ...]
    band_names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    stretch_low: np.ndarray | None
    stretch_high: np.ndarray | None

    @classmethod
    def from_definition(cls, definition: dict[str, Any]) -> InputSpec:
        bands = definition["bands"]
        n = int(definition["architecture"]["in_channels"])
        if len(bands) != n:
            raise ModelPackageError(
                f"the package lists {len(bands)} bands but its network takes {n} input channels; the package is inconsistent"
            )
        norm = definition["normalization"]
        mean = np.asarray(norm.get("mean", [0.0] * n), dtype=np.float32)
        std = np.asarray(norm.get("std", [1.0] * n), dtype=np.float32)
        if mean.shape != (n,) or std.shape != (n,):
            raise ModelPackageError(f"normalization mean/std must have {n} values (one per band)")
        std = np.where(std > 0, std, 1.0).astype(np.float32)
        stretch = definition.get("stretch") or {"method": "none"}
        low = high = None
        if str(stretch.get("method", "none")) != "none":
            low = np.asarray(stretch["low"], dtype=np.float32)
            high = np.asarray(stretch["high"], dtype=np.float32)
            if low.shape != (n,) or high.shape != (n,):
                raise ModelPackageError(f"stretch low/high must have {n} values (one per band)")
        return cls(
            band_indexes=tuple(int(b["index"]) for b in bands),
            band_names=tuple(str(b.get("name", f"band {b['index']}")) for b in bands),
            mean=mean, std=std, stretch_low=low, stretch_high=high,
        )

    def describe(self) -> str:
        return ", ".join(f"{name} (band {i})" for name, i in zip(self.band_names, self.band_indexes))

    def check_raster(self, path: Path, count: int, descriptions: Sequence[str | None]) -> None:
        """Refuse a raster whose band count cannot serve the package's bands, naming both."""
        missing = [i for i in self.band_indexes if i > count]
        if missing or count < len(self.band_indexes):
            have = ", ".join(f"{d or 'band'} (band {i + 1})" for i, d in enumerate(descriptions))
            raise RasterReadError(
                f"the model expects {len(self.band_indexes)} bands: {self.describe()}, but raster {path} has {count} "
                f"band(s): {have}; use a raster with the bands the model was trained on (same order), "
                "or stack them into one raster first"
            )

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Raw values (bands, ...) -> stretched -> normalised float32, as training saw them."""
        x = raw.astype(np.float32)  # a copy: the operations below work in place (one buffer per tile)
        shape = (-1,) + (1,) * (x.ndim - 1)
        if self.stretch_low is not None and self.stretch_high is not None:
            low, high = self.stretch_low.reshape(shape), self.stretch_high.reshape(shape)
            x -= low
            x /= np.maximum(high - low, 1e-12)
            np.clip(x, 0.0, 1.0, out=x)
            x *= 255.0
        x -= self.mean.reshape(shape)
        x /= self.std.reshape(shape)
        return x


def package_classes(definition: dict[str, Any]) -> list[ClassInfo]:
    """Classes of the package in output-value order, with names and colours (filled when missing)."""
    from .classes import make_classes

    items = {int(c["value"]): c for c in definition.get("classes", [])}
    values = [int(v) for v in definition["output_values"]]
    names = {v: str(items[v].get("name", f"class {v}")) for v in values if v in items}
    colors = {v: str(items[v]["color"]) for v in values if v in items and items[v].get("color")}
    return make_classes(values, names, colors)


def _tile_size(definition: dict[str, Any]) -> int:
    t = definition.get("tile_size_px", 256)
    return int(t[0] if isinstance(t, (list, tuple)) else t)


# --------------------------------------------------------------------------------------------------
# Network step: augmentation, autocast, out-of-memory backoff
# --------------------------------------------------------------------------------------------------


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device out-of-memory error (CUDA's own class or its message)."""
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    import torch

    y = torch.rot90(x, k, dims=(2, 3)) if k else x
    return torch.flip(y, dims=(3,)) if flip else y


def _dihedral_inverse(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    import torch

    y = torch.flip(x, dims=(3,)) if flip else x
    return torch.rot90(y, -k, dims=(2, 3)) if k else y


def tta_transforms(mode: str) -> list[tuple[int, bool]]:
    """(quarter turns, horizontal flip) pairs: flips = identity, h, v (= 2 turns + h), h+v (= 2 turns)."""
    if mode == "none":
        return [(0, False)]
    if mode == "flips":
        return [(0, False), (0, True), (2, True), (2, False)]
    return [(k, f) for k in range(4) for f in (False, True)]


class BatchPredictor:
    """Runs the network on batches of tiles and returns class probabilities on the CPU.

    ``step`` is the single forward pass (tensor on the device in, logits out); it is a parameter so
    tests can inject a CUDA out-of-memory error on the CPU and check that the batch is halved and
    the work retried, not lost.
    """

    def __init__(self, model: nn.Module, device: torch.device, batch_size: int, num_outputs: int,
                 tta: str = "none", tta_merge: str = "mean", mixed_precision: bool = True,
                 step: BatchStep | None = None, feedback: Feedback | None = None) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.num_outputs = num_outputs
        self.transforms = tta_transforms(tta)
        self.tta_merge = tta_merge
        self.autocast = mixed_precision and device.type == "cuda"
        self.step: BatchStep = step if step is not None else self._forward
        self.feedback = feedback or NullFeedback()
        self.forward_seconds = 0.0
        self.halvings = 0

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        if self.autocast:
            with torch.autocast(device_type="cuda", dtype=torch.float16):
                out: torch.Tensor = self.model(x)
            return out.float()
        result: torch.Tensor = self.model(x)
        return result

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        import torch

        if logits.shape[1] == 1:  # one road logit -> [background, road]
            p = torch.sigmoid(logits)
            return torch.cat([1.0 - p, p], dim=1)
        return torch.softmax(logits, dim=1)

    def _predict_once(self, batch: torch.Tensor) -> torch.Tensor:
        merged: torch.Tensor | None = None
        for k, flip in self.transforms:
            logits = self.step(_dihedral(batch, k, flip))
            if logits.ndim != 4 or logits.shape[2:] != batch.shape[2:]:
                raise ModelPackageError(
                    f"the network returned shape {tuple(logits.shape)} for input {tuple(batch.shape)}; it must return "
                    "(batch, classes, height, width) at the input size; try a tile size the architecture accepts "
                    "(for U-Nets a multiple of 32)"
                )
            p = _dihedral_inverse(self._probabilities(logits.float()), k, flip)
            if merged is None:
                merged = p
            elif self.tta_merge == "max":
                merged = merged.maximum(p)
            else:
                merged = merged + p
        assert merged is not None
        if self.tta_merge == "mean" and len(self.transforms) > 1:
            merged = merged / len(self.transforms)
        return merged

    def predict(self, tiles: np.ndarray, cancel: Callable[[], None] | None = None) -> np.ndarray:
        """Probabilities ``(n, classes, h, w)`` float32 for ``tiles`` ``(n, bands, h, w)``.

        Runs sub-batches of at most :attr:`batch_size`; on out-of-memory it frees the cache,
        halves :attr:`batch_size` (kept for the rest of the run) and retries the same tiles.
        """
        import torch

        n = tiles.shape[0]
        out: np.ndarray | None = None
        i = 0
        with torch.inference_mode():
            while i < n:
                if cancel is not None:
                    cancel()
                bs = min(self.batch_size, n - i)
                try:
                    t0 = time.perf_counter()
                    x = torch.from_numpy(np.ascontiguousarray(tiles[i:i + bs])).to(self.device, non_blocking=True)
                    probs = self._predict_once(x).to("cpu").numpy()
                    self.forward_seconds += time.perf_counter() - t0
                except Exception as exc:
                    if not is_out_of_memory(exc):
                        raise
                    del exc
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    if bs <= 1:
                        raise MemoryError(
                            f"the {self.device} device ran out of memory with a single tile; use a smaller tile size, "
                            "no test-time augmentation, or the cpu device"
                        ) from None
                    self.batch_size = max(1, bs // 2)
                    self.halvings += 1
                    self.feedback.warning(
                        f"{self.device} ran out of memory with batch size {bs}; retrying with {self.batch_size}"
                    )
                    continue
                if out is None:
                    out = np.empty((n, *probs.shape[1:]), dtype=np.float32)
                out[i:i + bs] = probs
                i += bs
        assert out is not None
        return out


# --------------------------------------------------------------------------------------------------
# Reading: the raster (or its resampled view), an extent, reflected tile windows
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class OutputGrid:
    """The grid the output is written on: transform, size and CRS (the input grid or a resampled one)."""

    transform: Any
    width_px: int
    height_px: int
    crs: Any
    row_off: int = 0
    col_off: int = 0


def plan_grid(src: Any, cell_size_m: float | None, model_cell: float | None,
              extent: tuple[float, float, float, float] | None,
              warnings: list[str]) -> tuple[OutputGrid, OutputGrid, bool]:
    """Choose the output grid; returns the whole (resampled) grid, the output window of it, and
    whether the raster must be resampled.

    The requested cell size (or the model's) replaces the native one on a north-up grid anchored at
    the raster's top-left corner; an extent becomes a window on that grid, rounded outwards.
    """
    from affine import Affine

    t = src.transform
    native = (abs(t.a), abs(t.e))
    geographic = bool(src.crs is not None and src.crs.is_geographic)
    target = cell_size_m
    if target is None and model_cell is not None and not geographic:
        target = model_cell
    if target is None and model_cell is not None and geographic:
        warnings.append(
            f"the raster is in a geographic CRS ({src.crs}); its cell size cannot be compared with the model's "
            f"{model_cell} m, so it is used as it is; reproject it to a metric CRS at the model's cell size for best results"
        )
    if model_cell is not None and not geographic:
        ratio = max(native[0], model_cell) / min(native[0], model_cell)
        if ratio > CELL_SIZE_WARN_RATIO:
            warnings.append(
                f"the raster's cell size ({native[0]:g}) differs from the model's training cell size ({model_cell:g}) by "
                f"{ratio:.1f}x; it is resampled to {target:g}, and results are best at the model's cell size"
            )
    resample = target is not None and not (
        math.isclose(target, native[0], rel_tol=1e-6) and math.isclose(target, native[1], rel_tol=1e-6))
    if resample and (t.b != 0 or t.d != 0):
        raise RasterReadError(f"{src.name} is rotated; rotated rasters cannot be resampled on the fly; warp it first")
    if resample:
        assert target is not None
        left, top = t.c, t.f
        right, bottom = left + src.width * t.a, top + src.height * t.e
        width = max(1, int(math.ceil(abs(right - left) / target - 1e-9)))
        height = max(1, int(math.ceil(abs(top - bottom) / target - 1e-9)))
        transform = Affine(target, 0.0, min(left, right), 0.0, -target, max(top, bottom))
    else:
        transform, width, height = t, src.width, src.height
    full = grid = OutputGrid(transform, width, height, src.crs)
    if extent is not None:
        from rasterio.windows import from_bounds

        win = from_bounds(*extent, transform=transform)
        col0 = max(0, int(math.floor(win.col_off + 1e-9)))
        row0 = max(0, int(math.floor(win.row_off + 1e-9)))
        col1 = min(width, int(math.ceil(win.col_off + win.width - 1e-9)))
        row1 = min(height, int(math.ceil(win.row_off + win.height - 1e-9)))
        if col1 <= col0 or row1 <= row0:
            raise ConfigError(f"the extent {extent} does not overlap raster {src.name}; choose an extent inside it")
        grid = OutputGrid(transform @ Affine.translation(col0, row0), col1 - col0, row1 - row0, src.crs, row0, col0)
    return full, grid, resample


class TileReader:
    """Reads network-ready tiles (reflected at the edges) and their validity masks."""

    def __init__(self, dataset: Any, grid: OutputGrid, tiling: TileGrid, spec: InputSpec,
                 nodata: float | None) -> None:
        self.dataset = dataset
        self.grid = grid
        self.tiling = tiling
        self.spec = spec
        self.nodata = nodata
        self._row_axis = tiling.rows
        self._col_axis = tiling.cols

    def read(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Tile (row ``i``, column ``j``): normalised ``(bands, t, t)`` float32 and valid ``(t, t)`` bool."""
        from rasterio.windows import Window

        ri = self._row_axis.read_indices(i)
        ci = self._col_axis.read_indices(j)
        r0, r1 = int(ri.min()), int(ri.max()) + 1
        c0, c1 = int(ci.min()), int(ci.max()) + 1
        window = Window(self.grid.col_off + c0, self.grid.row_off + r0, c1 - c0, r1 - r0)
        try:
            raw = self.dataset.read(list(self.spec.band_indexes), window=window)
        except Exception as exc:
            raise RasterReadError(f"cannot read {self.dataset.name} at {window}: {exc}") from exc
        if len(ri) != r1 - r0 or len(ci) != c1 - c0 or (ri[:-1] >= ri[1:]).any() or (ci[:-1] >= ci[1:]).any():
            raw = raw[:, (ri - r0)[:, None], (ci - c0)[None, :]]  # reflected edges: gather (else the window is it)
        if self.nodata is not None:
            nd = self.nodata
            invalid = np.all(np.isnan(raw), axis=0) if np.isnan(nd) else np.all(raw == nd, axis=0)
        else:
            invalid = np.zeros(raw.shape[1:], dtype=bool)
        x = self.spec.apply(raw)
        if invalid.any():
            x[:, invalid] = 0.0  # the mean after normalisation: no extreme values near nodata
        x[~np.isfinite(x)] = 0.0
        return x, ~invalid


def _prefetch(items: Sequence[tuple[int, int, int]], reader: TileReader, batch_size: int,
              stop: threading.Event) -> Iterator[tuple[list[tuple[int, int, int]], np.ndarray, np.ndarray]]:
    """Batches ``(keys, tiles, valid)`` read by a background thread, at most two batches ahead."""
    q: queue.Queue[Any] = queue.Queue(maxsize=2)
    sentinel = object()

    def work() -> None:
        try:
            for start in range(0, len(items), batch_size):
                keys = list(items[start:start + batch_size])
                tiles, valids = zip(*(reader.read(i, j) for _, i, j in keys))
                payload = (keys, np.stack(tiles), np.stack(valids))
                while not stop.is_set():
                    try:
                        q.put(payload, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(sentinel)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(exc)

    thread = threading.Thread(target=work, name="rlc-tile-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is sentinel:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)


# --------------------------------------------------------------------------------------------------
# Writing: chunk accumulators and the output files
# --------------------------------------------------------------------------------------------------


class ChunkBuffer:
    """Blended probabilities and validity of one chunk while its tiles arrive."""

    def __init__(self, chunk: Chunk, num_classes: int) -> None:
        self.chunk = chunk
        h, w = chunk.shape
        self.probs = np.zeros((num_classes, h, w), dtype=np.float32)
        self.valid = np.zeros((h, w), dtype=bool)
        self.remaining = len(chunk.tiles)


def _add_tile(buf: ChunkBuffer, grid: TileGrid, wy: np.ndarray, wx: np.ndarray, i: int, j: int,
              probs: np.ndarray, valid: np.ndarray) -> None:
    """Blend tile (i, j) into the chunk: its valid range, clipped to the chunk, times its weights."""
    c = buf.chunk
    rows, cols = grid.rows, grid.cols
    va, vb = rows.valid_range(i)
    ua, ub = cols.valid_range(j)
    ra, rb = max(va, c.row0), min(vb, c.row1)
    ca, cb = max(ua, c.col0), min(ub, c.col1)
    if ra >= rb or ca >= cb:
        return
    ty, tx = rows.tile_start(i), cols.tile_start(j)
    src = (slice(ra - ty, rb - ty), slice(ca - tx, cb - tx))
    dst = (slice(ra - c.row0, rb - c.row0), slice(ca - c.col0, cb - c.col0))
    if grid.blend == "centre":
        buf.probs[(slice(None), *dst)] = probs[(slice(None), *src)]
    else:
        weight = (wy[src[0]][:, None] * wx[src[1]][None, :]).astype(np.float32)
        buf.probs[(slice(None), *dst)] += probs[(slice(None), *src)] * weight
    buf.valid[dst] = valid[src]


def _class_profile(grid: OutputGrid, count: int, dtype: str, nodata: float) -> dict[str, Any]:
    """Tiled DEFLATE at level 1, no predictor for class values (categories: differences mean nothing).

    Why level 1: DEFLATE's default level 6 costs up to 30x more on noisy maps (an untrained model, speckled
    classes: 0.87 s vs 0.07 s per 16.8 Mpix), time the writer thread takes from the network on a CPU and
    that it must not lack beside a GPU. Smooth real maps compress about as fast either way and stay small.
    """
    block = 256
    return {
        "driver": "GTiff", "width": grid.width_px, "height": grid.height_px, "count": count, "dtype": dtype,
        "crs": grid.crs, "transform": grid.transform, "nodata": nodata,
        "tiled": grid.width_px >= block and grid.height_px >= block, "blockxsize": block, "blockysize": block,
        "compress": "deflate", "zlevel": 1, "predictor": 1 if dtype == "uint8" else 3, "bigtiff": "IF_SAFER",
        "interleave": "band",
    }


def write_category_names(raster_path: Path, classes: Sequence[ClassInfo]) -> Path:
    """Write ``<raster>.aux.xml`` with GDAL category names (index = class value) for band 1.

    rasterio cannot set category names; GDAL (and so QGIS) reads them from this sidecar.
    """
    from xml.sax.saxutils import escape

    top = max((c.value for c in classes), default=0)
    names = {c.value: c.name for c in classes}
    cats = "\n".join(f"      <Category>{escape(names.get(v, ''))}</Category>" for v in range(top + 1))
    xml = (f'<PAMDataset>\n  <PAMRasterBand band="1">\n    <CategoryNames>\n{cats}\n    </CategoryNames>\n'
           "  </PAMRasterBand>\n</PAMDataset>\n")
    path = Path(str(raster_path) + ".aux.xml")
    path.write_text(xml, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------------


def classify_pixels(config: ClassifyConfig, feedback: Feedback | None = None,
                    package: ModelPackage | None = None, step: BatchStep | None = None,
                    rank: int = 0, world_size: int = 1) -> ClassifyResult:
    """Classify ``config.input_raster`` with the model package; write the classified GeoTIFF.

    Args:
        config: the parameters (validated on construction).
        feedback: progress, cancel and messages.
        package: an already loaded package (skips loading ``config.model``).
        step: replaces the network's forward pass (tests inject out-of-memory errors with it).
        rank, world_size: tile sharding across processes (see :mod:`core.distributed`); rank ``r``
            predicts every ``world_size``-th chunk. Use :func:`core.distributed.classify_distributed`
            rather than passing these yourself.

    Raises:
        RasterReadError: the raster cannot be read or lacks the model's bands.
        ModelPackageError: the package is unusable.
        CanceledError: the user canceled; no output was left under the final names.
    """
    import rasterio
    from rasterio.vrt import WarpedVRT

    from .classes import colormap, write_paletted_qml
    from .device import select_device
    from .model_package import load_package
    from .outputs import atomic_output

    fb = feedback or NullFeedback()
    t_start = time.perf_counter()
    warnings: list[str] = []
    pkg = package if package is not None else load_package(config.model)
    definition = pkg.definition
    spec = InputSpec.from_definition(definition)
    classes = package_classes(definition)
    output_values = pkg.output_values
    num_classes = max(2, len(output_values))
    num_outputs = int(definition["architecture"]["num_classes"])
    if num_outputs not in (1, len(output_values)):
        raise ModelPackageError(
            f"the network has {num_outputs} outputs but the package lists {len(output_values)} output values; "
            "the package is inconsistent"
        )
    road_model = str(definition.get("task")) == "roads"
    device = select_device(config.device)
    fb.info(f"device: {device.description}")
    model = pkg.model.to(device.device).eval()
    cell = definition.get("cell_size")
    model_cell = float(cell[0] if isinstance(cell, (list, tuple)) else cell) if cell else None
    tile = config.tile_size_px or _tile_size(definition)
    padding = config.padding_px if config.padding_px is not None else tile // 4

    with contextlib.ExitStack() as stack:
        # A small fixed GDAL block cache: the default (5 % of RAM) would fill with blocks of a large
        # raster that are never read again and make memory grow with the raster size.
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB))
        try:
            src = stack.enter_context(rasterio.open(config.input_raster))
        except Exception as exc:
            raise RasterReadError(
                f"cannot open raster {config.input_raster}: {exc}; check that GDAL can read it") from exc
        spec.check_raster(Path(config.input_raster), src.count, src.descriptions)
        nodata = src.nodata
        full_grid, grid_out, resample = plan_grid(src, config.cell_size_m, model_cell, config.extent, warnings)
        dataset: Any = src
        if resample:
            from rasterio.enums import Resampling

            dataset = stack.enter_context(WarpedVRT(
                src, crs=src.crs, transform=full_grid.transform, width=full_grid.width_px,
                height=full_grid.height_px, resampling=Resampling.bilinear, nodata=nodata))
        for w in warnings:
            fb.warning(w)
        chunk_tiles = max(1, CHUNK_TARGET_PX // max(1, tile - 2 * padding))
        tiling = TileGrid(grid_out.height_px, grid_out.width_px, tile, padding, config.blend,
                          chunk_tiles if config.blend == "centre" else 2 * chunk_tiles)
        weights_y, weights_x = tiling.rows.weights(), tiling.cols.weights()
        chunks = [c for c in tiling.chunks() if c.index % world_size == rank]
        items = [(c.index, i, j) for c in chunks for (i, j) in c.tiles]
        by_index = {c.index: c for c in chunks}
        fb.info(
            f"{grid_out.width_px} x {grid_out.height_px} px at cell size {abs(grid_out.transform.a):g}; "
            f"{len(items)} tiles of {tile} px (padding {padding} px, blend {config.blend}) in {len(chunks)} chunks; "
            f"batch size {config.batch_size}"
        )
        reader = TileReader(dataset, grid_out, tiling, spec, nodata)
        predictor = BatchPredictor(model, device.device, config.batch_size, num_outputs, config.tta,
                                   config.tta_merge, config.mixed_precision, step=step, feedback=fb)
        road_channel = output_values.index(1) if road_model and 1 in output_values else num_classes - 1
        lut = np.asarray(output_values if len(output_values) >= 2 else [0, 1], dtype=np.uint8)

        cls_tmp = stack.enter_context(atomic_output(config.output_classified, config.overwrite))
        prob_tmp = (stack.enter_context(atomic_output(config.output_probability, config.overwrite))
                    if config.output_probability is not None else None)
        cls_ds = stack.enter_context(rasterio.open(cls_tmp, "w", **_class_profile(grid_out, 1, "uint8", CLASS_NODATA)))
        cls_ds.write_colormap(1, colormap(classes))
        cls_ds.set_band_description(1, "class")
        cls_ds.update_tags(CLASS_NAMES=",".join(f"{c.value}:{c.name}" for c in classes),
                           MODEL=str(definition.get("architecture", {}).get("name", "")))
        prob_bands = 1 if road_model else num_classes
        prob_ds = None
        if prob_tmp is not None:
            prob_ds = stack.enter_context(rasterio.open(
                prob_tmp, "w", **_class_profile(grid_out, prob_bands, "float32", PROBABILITY_NODATA)))
            names = ["road probability"] if road_model else [f"p({c.name})" for c in classes]
            for b, name in enumerate(names, start=1):
                prob_ds.set_band_description(b, name)

        buffers: dict[int, ChunkBuffer] = {}
        done = 0
        stop = threading.Event()

        def cancel() -> None:
            check_canceled(fb, "classify pixels")

        def finish(buf: ChunkBuffer) -> None:
            from rasterio.windows import Window

            c = buf.chunk
            window = Window(c.col0, c.row0, c.col1 - c.col0, c.row1 - c.row0)
            classified = lut[np.argmax(buf.probs, axis=0)]
            classified[~buf.valid] = CLASS_NODATA
            cls_ds.write(classified, 1, window=window)
            if prob_ds is not None:
                probs = buf.probs[road_channel:road_channel + 1] if road_model else buf.probs
                probs = np.where(buf.valid[None], probs, np.float32(PROBABILITY_NODATA)).astype(np.float32)
                prob_ds.write(probs, window=window)

        # Finished chunks are argmax-ed and written on a writer thread while the network works on
        # the next batches (numpy and GDAL release the GIL). At most one chunk waits to be written,
        # so memory stays bounded by two chunk buffers.
        from concurrent.futures import Future, ThreadPoolExecutor

        writer = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlc-chunk-writer"))
        pending: Future[None] | None = None
        try:
            for keys, tiles, valids in _prefetch(items, reader, config.batch_size, stop):
                cancel()
                probs = predictor.predict(tiles, cancel)
                for n, (ci, i, j) in enumerate(keys):
                    buf = buffers.get(ci)
                    if buf is None:
                        buf = buffers[ci] = ChunkBuffer(by_index[ci], num_classes)
                    _add_tile(buf, tiling, weights_y[i], weights_x[j], i, j, probs[n], valids[n])
                    buf.remaining -= 1
                    if buf.remaining == 0:
                        if pending is not None:
                            pending.result()  # re-raises a failed write here
                        pending = writer.submit(finish, buffers.pop(ci))
                done += len(keys)
                fb.set_progress(100.0 * done / max(1, len(items)))
            if pending is not None:
                pending.result()
        except CanceledError:
            stop.set()
            raise
        finally:
            if pending is not None:
                pending.exception()  # never close the datasets under a running write
        if predictor.halvings:
            warnings.append(f"batch size reduced to {predictor.batch_size} after out-of-memory errors")
        cls_ds.close()
        if prob_ds is not None:
            prob_ds.close()
    # Leaving the ExitStack renamed the outputs into place; now the styles that belong beside them.
    write_paletted_qml(config.output_classified, classes)
    write_category_names(Path(config.output_classified), classes)
    seconds = time.perf_counter() - t_start
    result = ClassifyResult(
        output_classified=Path(config.output_classified),
        output_probability=Path(config.output_probability) if config.output_probability else None,
        device=device.description, width_px=grid_out.width_px, height_px=grid_out.height_px,
        cell_size=(abs(grid_out.transform.a), abs(grid_out.transform.e)), tile_size_px=tile, padding_px=padding,
        blend=config.blend, batch_size=predictor.batch_size, tiles=len(items), seconds=seconds,
        forward_seconds=predictor.forward_seconds, warnings=warnings,
        chunk_windows=[(c.row0, c.row1, c.col0, c.col1) for c in chunks], classes=classes,
    )
    fb.info(f"classified {result.width_px} x {result.height_px} px in {seconds:.1f} s "
            f"({result.megapixels_per_second:.2f} Mpix/s) on {device.description}")
    return result
