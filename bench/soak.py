"""Soak run: classify and vectorize a large raster many times in ONE process; memory and file handles stay flat.

A QGIS session, or a server process, runs the steps again and again: anything that leaks (an open
dataset, a GDAL handle, a thread, a cache that only grows, a temporary file) shows up as a trend over
rounds, not in one run. Each round here

1. classifies a ``--size-px`` square 3-band raster with a real model package (U-Net, ResNet-18 encoder,
   width 8, untrained: the weights do not change the work) through ``core.inference.classify_pixels``,
   writing the classified GeoTIFF and the probability GeoTIFF (replacing the previous round's);
2. vectorizes a road mask of the same size (bench/roads.py's synthetic city grid) with
   ``core.roads.vectorize_roads`` into two GeoPackages (replacing the previous round's).

After each round (and a ``gc.collect()``) it prints wall seconds per step, the process's RSS, its
open file descriptors and threads (psutil), and the number of files in the output folder. At the end
it prints the trend (last / first round) and fails (exit 1) when RSS grew by more than
``--max-rss-growth-mib`` from the end of round 2 (round 1 pays one-off costs: imports, allocator
arenas, torch's kernels) to the last round, or when file handles, threads or output files grew at all
after round 1.

    .venv/bin/python bench/soak.py                           # 4000 px, 5 rounds, CPU
    .venv/bin/python bench/soak.py --size-px 8000 --rounds 10 --device cuda
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from bench.inference import make_package, make_raster  # noqa: E402
from bench.roads import write_synthetic_mask  # noqa: E402


def snapshot(proc: psutil.Process, out_dir: Path) -> dict[str, Any]:
    """RSS, open file descriptors, threads and output files, after a full garbage collection."""
    gc.collect()
    fds = proc.num_fds() if hasattr(proc, "num_fds") else proc.num_handles()  # type: ignore[attr-defined]
    return {"rss_mib": round(proc.memory_info().rss / 2**20, 1), "fds": fds, "threads": proc.num_threads(),
            "open_files": len(proc.open_files()), "output_files": sum(1 for _ in out_dir.rglob("*"))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--size-px", type=int, default=4000, help="side of the square rasters (default 4000)")
    ap.add_argument("--rounds", type=int, default=5, help="classify + vectorize rounds (default 5)")
    ap.add_argument("--device", default="cpu", help="auto, cuda, mps or cpu (default cpu)")
    ap.add_argument("--tile-px", type=int, default=256)
    ap.add_argument("--padding-px", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--block-size-px", type=int, default=2048, help="vectorization block (default 2048)")
    ap.add_argument("--max-rss-growth-mib", type=float, default=64.0,
                    help="allowed RSS growth from the end of round 2 to the last round (default 64 MiB)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.rounds < 3:
        ap.error("--rounds must be at least 3 (round 1 warms up, growth is measured from round 2)")

    from core.device import select_device
    from core.inference import ClassifyConfig, classify_pixels
    from core.roads import VectorizeConfig, vectorize_roads

    proc = psutil.Process()
    work = Path(tempfile.mkdtemp(prefix="rlc_soak_"))
    inputs, out = work / "inputs", work / "out"
    inputs.mkdir()
    out.mkdir()
    rows: list[dict[str, Any]] = []
    try:
        t0 = time.perf_counter()
        package = make_package(inputs / "model", "unet", {"encoder": "resnet18", "base_width": 8}, args.tile_px)
        image = make_raster(inputs / "image.tif", args.size_px)
        mask = inputs / "roads.tif"
        write_synthetic_mask(mask, args.size_px)
        print(f"inputs: {args.size_px} x {args.size_px} px image and road mask, model package in "
              f"{time.perf_counter() - t0:.1f} s; device {select_device(args.device).description}", file=sys.stderr)
        base = snapshot(proc, out)
        print(f"before round 1: {json.dumps(base)}", file=sys.stderr)
        for r in range(1, args.rounds + 1):
            t = time.perf_counter()
            c = classify_pixels(ClassifyConfig(image, package, out / "classes.tif",
                                               output_probability=out / "probability.tif",
                                               tile_size_px=args.tile_px, padding_px=args.padding_px,
                                               batch_size=args.batch_size, device=args.device))
            classify_s = time.perf_counter() - t
            t = time.perf_counter()
            v = vectorize_roads(mask, out / "lines.gpkg", out / "nodes.gpkg",
                                VectorizeConfig(block_size_px=args.block_size_px))
            vectorize_s = time.perf_counter() - t
            row = {"round": r, "classify_s": round(classify_s, 2), "classify_mpix_per_s": round(c.megapixels_per_second, 3),
                   "vectorize_s": round(vectorize_s, 2), "edges": v.edge_count, **snapshot(proc, out)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    first, second, last = rows[0], rows[1], rows[-1]
    growth = last["rss_mib"] - second["rss_mib"]
    problems = []
    if growth > args.max_rss_growth_mib:
        problems.append(f"RSS grew {growth:.1f} MiB from round 2 to round {last['round']} "
                        f"(allowed {args.max_rss_growth_mib:g} MiB)")
    for key in ("fds", "threads", "open_files", "output_files"):
        if max(row[key] for row in rows[1:]) > first[key]:
            problems.append(f"{key} grew after round 1: {[row[key] for row in rows]}")
    if len({row["edges"] for row in rows}) != 1:
        problems.append(f"vectorization is not repeatable: edges per round {[row['edges'] for row in rows]}")
    summary = {
        "size_px": args.size_px, "rounds": args.rounds, "device": args.device,
        "model": "unet resnet18 base_width 8 (untrained)", "tile_px": args.tile_px, "padding_px": args.padding_px,
        "rss_mib_before": base["rss_mib"], "rss_mib_per_round": [row["rss_mib"] for row in rows],
        "rss_growth_after_round_2_mib": round(growth, 1),
        "rss_trend_last_over_first": round(last["rss_mib"] / first["rss_mib"], 3),
        "fds_per_round": [row["fds"] for row in rows], "fds_before": base["fds"],
        "threads_per_round": [row["threads"] for row in rows],
        "seconds_trend_last_over_first": round((last["classify_s"] + last["vectorize_s"])
                                               / (first["classify_s"] + first["vectorize_s"]), 3),
        "classify_s_per_round": [row["classify_s"] for row in rows],
        "vectorize_s_per_round": [row["vectorize_s"] for row in rows],
        "flat": not problems, "problems": problems,
    }
    print(json.dumps(summary, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps({"rounds": rows, "summary": summary}, indent=2) + "\n", encoding="utf-8")
    for p in problems:
        print(f"soak: {p}", file=sys.stderr)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
