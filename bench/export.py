"""Benchmark of ``core.chips.export_training_data``: chips/s vs a raw windowed read, and peak RSS vs raster size.

    .venv/bin/python bench/export.py                # 5000 px throughput + RSS 5000 vs 20000 px
    .venv/bin/python bench/export.py --quick        # smaller sizes, a smoke run
    .venv/bin/python bench/export.py --repeat 5     # five runs of the small export, median reported

The small export also measures, in the same process, a raw windowed read of the same windows (the target
ratio's baseline) and the write floor: creating the same number of image and label files of the chips' sizes
with nothing computed (what the kernel charges any exporter), plus the cost of one new page of memory, which
separates a virtual machine that backs memory lazily from a workstation.

Each measurement runs in a fresh subprocess so peak RSS (VmHWM, see :func:`peak_rss_mb`) belongs to one raster
size. The
rasters are synthetic (4-band uint8, tiled 256x256, deflate) with polygon labels covering every chip, written
to a temporary folder that is deleted afterwards. A last series repeats the small export on an RGBA raster
whose alpha band masks pixels in every chip (see :func:`make_inputs`), and a final one repeats it with threads
in one process only (``workers=1``, what runs inside QGIS) beside the default (worker processes on 2+ cores).
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


def make_inputs(folder: Path, size: int, alpha: bool = False) -> tuple[Path, Path]:
    """A tiled, compressed raster written block by block (never whole in memory) and grid polygon labels.

    The 4 bands are multispectral (red, green, blue, near-infrared: tagged minisblack, so GDAL does not take the
    4th for alpha) and the export's chips hold all 4, the bands the raw read reads. ``alpha``: the 4th band is
    an alpha band instead (GDAL's default for 4 bands of 8 bit) with random values, so ~0.4 % of the pixels of
    every chip are transparent: the export masks them (3-band chips, labels ignored there, statistics of the
    valid pixels) -- the worst case of the masked path.
    """
    import numpy as np
    import rasterio
    import shapely
    from affine import Affine
    from rasterio.windows import Window

    from core.vectors import write_vector

    raster = folder / f"r{size}{'a' if alpha else ''}.tif"
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 4, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": Affine(0.5, 0, 500000, 0, -0.5, 5200000), "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
    if not alpha:
        profile["photometric"] = "minisblack"
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
    labels = folder / f"l{size}{'a' if alpha else ''}.gpkg"
    write_vector(labels, geoms, {"classvalue": np.array(values, dtype=np.int32)}, crs="EPSG:32633")
    return raster, labels


def write_floor(folder: Path, sizes: list[int], count: int) -> float:
    """Seconds to write ``count`` sets of new files of ``sizes`` bytes: what any exporter pays the kernel.

    Creating a file and filling new page-cache pages is work no export code can avoid; on a virtual machine
    whose host backs guest memory lazily it costs far more than on a workstation, so the figure tells the two
    apart. The bytes are random (the kernel does not look at them) and written with one ``writev`` per file,
    as the chip writer does.
    """
    import os

    import numpy as np

    folder.mkdir()
    payloads = [np.random.default_rng(k).integers(0, 255, n, dtype=np.uint8).tobytes() for k, n in enumerate(sizes)]
    t0 = time.perf_counter()
    for i in range(count):
        for k, data in enumerate(payloads):
            fd = os.open(folder / f"{k}_{i:06d}.tif", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.writev(fd, [data])
            finally:
                os.close(fd)
    return time.perf_counter() - t0


def child(args: argparse.Namespace) -> None:
    """Runs in its own process: one export (and, optionally, the raw-read and write baselines of it)."""
    import os

    import rasterio

    from core.chips import ExportConfig, _chip_origins, export_training_data
    from core.raster_io import raster_env, raw_window_read

    # Warm-up: a 1-chip export pays the one-off imports (vector I/O, preview, GeoPackage) and GDAL driver
    # set-up that a QGIS session or the CLI pays once, not per export; the raw-read baseline has them too.
    export_training_data(ExportConfig(args.raster, args.labels, args.out + "_warmup", tile_size_px=(256, 256),
                                      max_chips=1, preview_chips=1))
    cfg = ExportConfig(args.raster, args.labels, args.out, tile_size_px=(256, 256), stride_px=(256, 256),
                       max_chips=args.max_chips, preview_chips=4, workers=args.workers)
    # Flush what earlier steps wrote (the generated raster, the previous run's chips): the kernel writing
    # them back on one of the 2 cores during the timed export would bill this run for another's output.
    os.sync()
    cpu0 = os.times()
    t0 = time.perf_counter()
    res = export_training_data(cfg)
    export_s = time.perf_counter() - t0
    cpu1 = os.times()
    # CPU of this process and of the worker processes it forked (joined, so counted in the children's times).
    user = cpu1.user - cpu0.user + cpu1.children_user - cpu0.children_user
    system = cpu1.system - cpu0.system + cpu1.children_system - cpu0.children_system
    n = max(res.chip_count, 1)
    # Memory of all the export's processes: this one's peak plus each worker's (a forked worker's peak counts
    # the pages it shares with this process once more: an upper bound).
    workers_mb = (res.processes - 1) * resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    out = {"size": args.size, "chips": res.chip_count, "export_s": export_s, "chips_per_s": res.chip_count / export_s,
           "processes": res.processes, "cpu_ms_per_chip": (user + system) * 1e3 / n, "sys_ms_per_chip": system * 1e3 / n,
           "peak_rss_mb": peak_rss_mb() + workers_mb}  # before the baselines, which map memory of their own
    if args.baseline:
        with raster_env(), rasterio.open(args.raster) as src:
            origins = _chip_origins(src.width, src.height, (256, 256), (256, 256))[: res.chip_count]
            t0 = time.perf_counter()
            for col, row in origins:
                raw_window_read(src, (1, 2, 3, 4), col, row, 256, 256)
            raw_s = time.perf_counter() - t0
        out.update(raw_s=raw_s, raw_chips_per_s=len(origins) / raw_s, ratio=(res.chip_count / export_s) / (len(origins) / raw_s))
        first = sorted(Path(args.out, "images").iterdir())[0].stem
        sizes = [Path(args.out, "images", first + ".tif").stat().st_size, Path(args.out, "labels", first + ".tif").stat().st_size]
        write_s = write_floor(Path(args.out + "_floor"), sizes, res.chip_count)
        out.update(write_floor_s=write_s, write_floor_chips_per_s=res.chip_count / write_s,
                   io_floor_chips_per_s=res.chip_count / (raw_s + write_s), fresh_page_us=fresh_page_cost_us())
    print(json.dumps(out))


def fresh_page_cost_us(mb: int = 64) -> float:
    """Microseconds to fault in one new 4 KB page of anonymous memory (about 0.1-0.3 on bare metal)."""
    import mmap

    buf = mmap.mmap(-1, mb << 20)
    try:
        t0 = time.perf_counter()
        for off in range(0, mb << 20, 4096):
            buf[off] = 1
        return (time.perf_counter() - t0) / (mb * 256) * 1e6
    finally:
        buf.close()


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


def spread_root() -> Path:
    """The folder the benchmark works in: ext4 spreads its subfolders over block groups (best effort).

    On this project's VM (ext4 without a journal) a block group whose inodes were freed recently makes every
    new file in it scan past them (``recently_deleted``): in /tmp, after test suites and earlier benchmark
    runs had deleted their files, creating a chip's two files cost 2.5-2.7 ms of kernel time instead of 0.72
    ms in a fresh group (358-400 vs 1336-1384 chips/s of bare file creation). The ``T`` attribute (``chattr
    +T``, "top of directory hierarchy") makes ext4's Orlov allocator place each subfolder in a group of its
    own, so the benchmark measures the export, not what the machine deleted before. Elsewhere (another file
    system, no ``chattr``) the attribute is simply not set; ``write_floor_chips_per_s`` shows the file
    creation cost either way.
    """
    root = Path(tempfile.gettempdir()) / "rlc_bench_export"
    root.mkdir(exist_ok=True)
    try:
        subprocess.run(["chattr", "+T", str(root)], capture_output=True, check=False)
    except OSError:
        pass
    return root


def run_child(raster: Path, labels: Path, out: Path, size: int, max_chips: int | None, baseline: bool,
              workers: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--child", "--raster", str(raster), "--labels", str(labels), "--out", str(out),
           "--size", str(size), "--workers", str(workers)] + (["--max-chips", str(max_chips)] if max_chips else []) + (
               ["--baseline"] if baseline else [])
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
    p.add_argument("--workers", type=int, default=0, help="export worker processes (0: automatic, 1: threads only)")
    p.add_argument("--baseline", action="store_true")
    p.add_argument("--repeat", type=int, default=3, help="runs of the small export; the median (by ratio) is reported")
    args = p.parse_args()
    if args.child:
        child(args)
        return
    small, large = (1500, 4000) if args.quick else (args.small, args.large)
    root = spread_root()
    made: list[Path] = []
    try:
        results = {}
        # (name, size, alpha, runs, workers): the target figures (the large export's ratio is the steady
        # state: its fixed costs -- label loading, index, footprints, preview -- are spread over 16x the chips),
        # then the masked path on the small size.
        # The export's default on this machine (worker processes where there are 2+ cores), then the same small
        # export with threads in one process only (workers=1: what QGIS, which must not fork, runs).
        plan = [("small", small, False, args.repeat, 0), ("large", large, False, 1, 0),
                ("rgba", small, True, args.repeat, 0), ("threads", small, False, args.repeat, 1)]
        for name, size, alpha, repeat, workers in plan:
            # Each series in a folder of its own, which ext4 places in a block group of its own (see
            # spread_root): deleting one series' files must not slow the next one's file creation.
            tmp = Path(tempfile.mkdtemp(prefix=f"{name}_", dir=root))
            made.append(tmp)
            t0 = time.perf_counter()
            raster, labels = make_inputs(tmp, size, alpha)
            print(f"generated {size}x{size}{' RGBA' if alpha else ''} in {time.perf_counter() - t0:.1f}s "
                  f"({raster.stat().st_size / 1e6:.0f} MB on disk) in {tmp}", file=sys.stderr)
            runs = []
            for k in range(repeat):
                # Outputs stay until the end: on ext4 without a journal, files deleted recently make new inodes
                # of their block group slow to allocate, which would bill one run for the last one's cleanup.
                r = run_child(raster, labels, tmp / f"out_{k}", size, None, baseline=True, workers=workers)
                runs.append(r)
                print(json.dumps(r), file=sys.stderr)
            runs.sort(key=lambda r: r.get("ratio", 0.0))
            results[name] = {**runs[len(runs) // 2], "all_ratios": [round(r.get("ratio", 0.0), 3) for r in runs]}
            raster.unlink()
        s, lg, rgba, thr = results["small"], results["large"], results["rgba"], results["threads"]
        summary = {
            "processes": s["processes"], "chips_per_s": round(s["chips_per_s"], 1), "raw_read_chips_per_s": round(s["raw_chips_per_s"], 1),
            "ratio_export_to_raw_read": round(s["ratio"], 3), "target_ratio": 0.5, "all_ratios": s["all_ratios"],
            f"peak_rss_mb_{small}": round(s["peak_rss_mb"], 1), f"peak_rss_mb_{large}": round(lg["peak_rss_mb"], 1),
            "rss_ratio_large_to_small": round(lg["peak_rss_mb"] / s["peak_rss_mb"], 3), "target_rss_ratio": 1.5,
            "chips_small": s["chips"], "chips_large": lg["chips"], "export_s_large": round(lg["export_s"], 1),
            "chips_per_s_large": round(lg["chips_per_s"], 1), "raw_read_chips_per_s_large": round(lg["raw_chips_per_s"], 1),
            "ratio_export_to_raw_read_large": round(lg["ratio"], 3),
            "fresh_page_us_large": round(lg["fresh_page_us"], 2), "write_floor_chips_per_s_large": round(lg["write_floor_chips_per_s"], 1),
            "write_floor_chips_per_s": round(s["write_floor_chips_per_s"], 1),
            "io_floor_chips_per_s": round(s["io_floor_chips_per_s"], 1),
            "ratio_export_to_io_floor": round(s["chips_per_s"] / s["io_floor_chips_per_s"], 3),
            "fresh_page_us": round(s["fresh_page_us"], 2),
            "export_cpu_ms_per_chip": round(s["cpu_ms_per_chip"], 2), "export_sys_ms_per_chip": round(s["sys_ms_per_chip"], 2),
            "rgba_masked_ratio_export_to_raw_read": round(rgba["ratio"], 3), "rgba_all_ratios": rgba["all_ratios"],
            "rgba_chips_per_s": round(rgba["chips_per_s"], 1),
            "threads_ratio_export_to_raw_read": round(thr["ratio"], 3), "threads_all_ratios": thr["all_ratios"],
            "threads_chips_per_s": round(thr["chips_per_s"], 1), "threads_cpu_ms_per_chip": round(thr["cpu_ms_per_chip"], 2),
        }
        print(json.dumps(summary, indent=2))
    finally:
        for tmp in made:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
