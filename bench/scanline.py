"""Micro-benchmark: numpy scanline fill (core.scanline) vs rasterio.features.rasterize, per 256 px chip.

1. One box polygon crossing the chip, a smooth 200-vertex polygon crossing it, and a 200-vertex star
   (about 4.5 spans per row): ``burn_polygons`` against ``rasterio.features.rasterize`` on the same shapes.
2. ``LabelIndex.rasterize`` over the 256 px chips of the New Brunswick land-cover polygons (../shared/data;
   north-up at the raster's pixel size and at half of it, stride 32 px) with ``LabelIndex.scanline`` off
   and on: the whole per-chip label cost of the export, spatial query and "covers the chip" test included.
   Chips that one polygon covers skip rasterization either way; the figures for the chips that
   rasterize are printed separately.

    .venv/bin/python bench/scanline.py
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import shapely  # noqa: E402
from affine import Affine  # noqa: E402
from rasterio.features import rasterize  # noqa: E402

from core.rasterize_labels import LabelIndex, repair, transform_geometries  # noqa: E402
from core.scanline import burn_polygons  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def best_of(fn: Callable[[], Any], number: int = 300, repeat: int = 7) -> float:
    """Best mean seconds per call over ``repeat`` runs of ``number`` calls (the machine is shared)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def shapes_bench() -> None:
    angle = np.linspace(0, 2 * np.pi, 201)[:-1]
    radius = 100 + 60 * np.random.default_rng(0).random(200)
    cases = {
        "box crossing the chip": shapely.box(-20.3, 30.7, 300.2, 200.1),
        "200-vertex smooth polygon": shapely.Polygon(np.column_stack([100 + 150 * np.cos(angle),
                                                                      140 + 150 * np.sin(angle)])),
        "200-vertex star": shapely.Polygon(np.column_stack([128 + radius * np.cos(angle),
                                                            128 + radius * np.sin(angle)])),
    }
    identity = Affine.identity()
    for name, geom in cases.items():
        old, new = np.zeros((256, 256), np.uint8), np.zeros((256, 256), np.uint8)
        t_old = best_of(lambda g=geom, o=old: rasterize([(g, 1.0)], out=o, transform=identity, all_touched=False))
        t_new = best_of(lambda g=geom, o=new: burn_polygons(o, [g], [1.0]))
        assert np.array_equal(old, new)
        print(f"{name:28s} rasterio {t_old * 1e6:7.1f} us   scanline {t_new * 1e6:7.1f} us   x{t_old / t_new:.1f}")


def new_brunswick_bench() -> None:
    import rasterio

    from core.vectors import read_vector

    d = SHARED / "landcover" / "new_brunswick_0_5m"
    if not d.is_dir():
        print(f"(no {d}: New Brunswick chips skipped)")
        return
    vec = read_vector(d / "BakerLake_2017_clipped.gpkg")
    geoms, _ = repair(vec.geometries)
    with rasterio.open(d / "23322E759967N_clipped_1m_1of2.tif") as src:
        origin, (h, w), crs = src.transform, src.shape, src.crs
    index = LabelIndex(transform_geometries(geoms, vec.crs, crs), vec.attributes["Cinqclasses"].astype(np.int64))
    chips = []
    for scale in (1.0, 0.5):
        for r in range(-128, int(h / scale) - 64, 32):
            for c in range(-128, int(w / scale) - 64, 32):
                chips.append(origin @ Affine.scale(scale) @ Affine.translation(c, r))
    footprints = [shapely.Polygon([t @ (0, 0), t @ (256, 0), t @ (256, 256), t @ (0, 256)]) for t in chips]
    idx = [index.query(f) for f in footprints]
    covered = [bool(len(i)) and bool(shapely.contains(index.geometries[i], f).any()) for i, f in zip(idx, footprints)]
    burn = [k for k in range(len(chips)) if len(idx[k]) and not covered[k]]
    n_geoms = [len(idx[k]) for k in burn]
    print(f"New Brunswick: {len(chips)} chips of 256 px, {len(burn)} rasterize "
          f"(1-{max(n_geoms)} polygons, mean {np.mean(n_geoms):.1f}); the rest are empty or inside one polygon")
    for label, subset in (("all chips", range(len(chips))), ("chips that rasterize", burn)):
        times = {}
        for flag in (False, True):
            LabelIndex.scanline = flag

            def run(subset: Any = subset) -> None:
                for k in subset:
                    index.rasterize(chips[k], (256, 256), footprint=footprints[k], idx=idx[k])

            times[flag] = best_of(run, number=3, repeat=5) / len(subset)
        LabelIndex.scanline = True
        print(f"  {label:22s} LabelIndex.rasterize: rasterio {times[False] * 1e6:7.1f} us/chip   "
              f"scanline {times[True] * 1e6:7.1f} us/chip   x{times[False] / times[True]:.1f}")


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    shapes_bench()
    new_brunswick_bench()
