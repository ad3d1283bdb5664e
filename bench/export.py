"""Benchmark of ``core.chips.export_training_data``: chips/s vs a raw windowed read, and peak RSS vs raster size.

    .venv/bin/python bench/export.py                # 5000 px throughput + RSS 5000 vs 20000 px
    .venv/bin/python bench/export.py --quick        # smaller sizes, a smoke run

Each measurement runs in a fresh subprocess so peak RSS (VmHWM, see :func:`peak_rss_mb`) belongs to one raster
size. The
rasters are synthetic (4-band uint8, tiled 256x256, deflate) with polygon labels covering every chip, written
to a temporary folder that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_inputs(folder: Path, size: int) -> tuple[Path, Path]:
    """A tiled, compressed raster written block by block (never whole in memory) and grid polygon labels."""
    import numpy as np
    import rasterio
    import shapely
    from affine import Affine
    from rasterio.windows import Window

    from core.vectors import write_vector

    raster = folder / f"r{size}.tif"
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 4, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": Affine(0.5, 0, 500000, 0, -0.5, 5200000), "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
    rng = np.random.default_rng(0)
    with rasterio.open(raster, "w", **profile) as dst:
        for row in range(0, size, 1024):
            h = min(1024, size - row)
            block = rng.integers(0, 255, (4, h, size), dtype=np.uint8)
            dst.write(block, window=Window(0, row, size, h))
    # One polygon per 1000 x 1000 px cell with a class 1-4: every chip has labels.
    cell = 500.0
    n = int(np.ceil(size * 0.5 / cell))
    geoms, values = [], []
    for i in range(n):
        for j in range(n):
            x0, y0 = 500000 + i * cell, 5200000 - (j + 1) * cell
            geoms.append(shapely.box(x0 + 5, y0 + 5, x0 + cell - 5, y0 + cell - 5))
            values.append((i + j) % 4 + 1)
    labels = folder / f"l{size}.gpkg"
    write_vector(labels, geoms, {"classvalue": np.array(values, dtype=np.int32)}, crs="EPSG:32633")
    return raster, labels


def child(args: argparse.Namespace) -> None:
    """Runs in its own process: one export (and, optionally, the raw-read baseline of the same windows)."""
    import rasterio

    from core.chips import ExportConfig, _chip_origins, export_training_data
    from core.raster_io import raster_env, raw_window_read

    cfg = ExportConfig(args.raster, args.labels, args.out, tile_size_px=(256, 256), stride_px=(256, 256),
                       max_chips=args.max_chips, preview_chips=4)
    t0 = time.perf_counter()
    res = export_training_data(cfg)
    export_s = time.perf_counter() - t0
    out = {"size": args.size, "chips": res.chip_count, "export_s": export_s, "chips_per_s": res.chip_count / export_s}
    if args.baseline:
        with raster_env(), rasterio.open(args.raster) as src:
            origins = _chip_origins(src.width, src.height, (256, 256), (256, 256))[: res.chip_count]
            t0 = time.perf_counter()
            for col, row in origins:
                raw_window_read(src, (1, 2, 3, 4), col, row, 256, 256)
            raw_s = time.perf_counter() - t0
        out.update(raw_s=raw_s, raw_chips_per_s=len(origins) / raw_s, ratio=(res.chip_count / export_s) / (len(origins) / raw_s))
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))


def peak_rss_mb() -> float:
    """Peak RSS of this process's own memory, in MB.

    ``/proc/self/status`` VmHWM, not ``ru_maxrss``: on Linux ``ru_maxrss`` survives exec, so a child started
    by a parent that once held more memory (here: the parent that generated the 20000 px raster, ~310 MB)
    reports the parent's peak. That artefact alone made the 20000 px run look twice as large as the 5000 px
    one. ``ru_maxrss`` stays the fallback where /proc is missing.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_child(raster: Path, labels: Path, out: Path, size: int, max_chips: int | None, baseline: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", "--raster", str(raster), "--labels", str(labels), "--out", str(out),
           "--size", str(size)] + (["--max-chips", str(max_chips)] if max_chips else []) + (["--baseline"] if baseline else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--small", type=int, default=5000)
    p.add_argument("--large", type=int, default=20000)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--raster"), p.add_argument("--labels"), p.add_argument("--out")
    p.add_argument("--size", type=int), p.add_argument("--max-chips", type=int)
    p.add_argument("--baseline", action="store_true")
    args = p.parse_args()
    if args.child:
        child(args)
        return
    small, large = (1500, 4000) if args.quick else (args.small, args.large)
    tmp = Path(tempfile.mkdtemp(prefix="rlc_bench_export_"))
    try:
        results = []
        for size in (small, large):
            t0 = time.perf_counter()
            raster, labels = make_inputs(tmp, size)
            print(f"generated {size}x{size} in {time.perf_counter() - t0:.1f}s "
                  f"({raster.stat().st_size / 1e6:.0f} MB on disk)", file=sys.stderr)
            r = run_child(raster, labels, tmp / f"out{size}", size, None, baseline=(size == small))
            results.append(r)
            print(json.dumps(r), file=sys.stderr)
            shutil.rmtree(tmp / f"out{size}", ignore_errors=True)
            raster.unlink()
        s, lg = results
        summary = {
            "chips_per_s": round(s["chips_per_s"], 1), "raw_read_chips_per_s": round(s["raw_chips_per_s"], 1),
            "ratio_export_to_raw_read": round(s["ratio"], 3), "target_ratio": 0.5,
            f"peak_rss_mb_{small}": round(s["peak_rss_mb"], 1), f"peak_rss_mb_{large}": round(lg["peak_rss_mb"], 1),
            "rss_ratio_large_to_small": round(lg["peak_rss_mb"] / s["peak_rss_mb"], 3), "target_rss_ratio": 1.5,
            "chips_small": s["chips"], "chips_large": lg["chips"], "export_s_large": round(lg["export_s"], 1),
        }
        print(json.dumps(summary, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
