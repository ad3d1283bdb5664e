"""Helpers shared by the hardening tests: tiny inputs, fault injection, and the checks every case makes.

The rasters, labels and packages come from the step tests (tests/core) so the matrix exercises the same
fixtures; only what those lack (hand-written GeoJSON with nulls, road rasters, fault injectors) lives here.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.core.test_chips import make_raster, squares  # noqa: F401  (re-exported for the matrix)
from tests.core.test_inference import CancelAfter, definition, make_package, write_raster  # noqa: F401

CRS = "EPSG:32633"
X0, Y0 = 500000.0, 5200000.0
ODD_NAME = "dossier é ü 名前"  # spaces and non-ASCII in every path component we create


def geojson(path: Path, features: list[tuple[dict[str, Any] | None, dict[str, Any]]], crs: str = CRS) -> Path:
    """Write a GeoJSON file by hand (so nulls and text values are exactly what a user's file holds)."""
    epsg = crs.split(":")[1]
    doc = {"type": "FeatureCollection",
           "crs": {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"}},
           "features": [{"type": "Feature", "geometry": g, "properties": p} for g, p in features]}
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def box_json(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def partials(folder: Path) -> list[Path]:
    """Temporary outputs left behind (atomic_output names them ``.<stem>.partial-<id><suffix>``)."""
    return [p for p in folder.rglob("*") if ".partial-" in p.name]


def assert_clean_failure(folder: Path, *finals: Path) -> None:
    """After a failure: no final-named output and no temporary remains."""
    for f in finals:
        assert not f.exists(), f"{f} exists after a failed run"
    assert partials(folder) == [], partials(folder)


class FailAfter:
    """Calls the wrapped function ``n`` times, then raises ``OSError(ENOSPC)`` as a full disk does."""

    def __init__(self, fn: Callable[..., Any], n: int) -> None:
        self.fn = fn
        self.n = n
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls > self.n:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.fn(*args, **kwargs)


def disk_full(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, after: int) -> FailAfter:
    """Make ``owner.name`` (a writer method or function) fail with ENOSPC after ``after`` calls."""
    original = getattr(owner, name)
    fail = FailAfter(original, after)
    if isinstance(owner, type):
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return fail(self, *args, **kwargs)
        monkeypatch.setattr(owner, name, method)
    else:
        monkeypatch.setattr(owner, name, fail)
    return fail


class CancelAfterProgress:
    """Feedback whose ``is_canceled()`` turns true after ``n`` progress reports; records when it did."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0
        self.canceled_at: float | None = None
        self.messages: list[str] = []
        self.warnings: list[str] = []

    def set_progress(self, percent: float) -> None:
        import time

        self.calls += 1
        if self.calls >= self.n and self.canceled_at is None:
            self.canceled_at = time.perf_counter()

    def is_canceled(self) -> bool:
        return self.canceled_at is not None

    def info(self, message: str) -> None:
        self.messages.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)


class Collect(CancelAfterProgress):
    """Never cancels; keeps the messages and warnings."""

    def __init__(self) -> None:
        super().__init__(10**12)


def road_mask(size: int = 96) -> np.ndarray:
    """A 0/1 uint8 mask with a plus-shaped road crossing (4 px wide)."""
    m = np.zeros((size, size), np.uint8)
    m[size // 2 - 2: size // 2 + 2, :] = 1
    m[:, size // 2 - 2: size // 2 + 2] = 1
    return m


def write_single(path: Path, data: np.ndarray, cell: float = 0.5, nodata: float | None = None,
                 crs: str = CRS) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs=crs, transform=from_origin(X0, Y0, cell, cell), nodata=nodata) as dst:
        dst.write(data, 1)
    return path


def files_of(folder: Path) -> Iterator[Path]:
    return (p for p in sorted(folder.rglob("*")) if p.is_file())
