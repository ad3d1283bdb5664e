"""Benchmark of Classify Pixels: pipeline efficiency, padding overhead, and memory vs raster size.

1. Efficiency: end-to-end Mpix/s of ``classify_pixels`` (read, normalise, predict, blend, write a
   compressed GeoTIFF) divided by the model's own forward Mpix/s on the same device and batch size,
   in the same run, at padding 0 (target >= 0.9). Then the same run with padding, whose extra cost is
   the padding overhead (tiles overlap, so more pixels go through the network).
2. Memory: peak RSS of a fresh process classifying a BIG x BIG raster vs a SMALL x SMALL one with a
   very cheap model (target: ratio <= 1.5). Rasters are generated in a temporary folder and deleted.

    .venv/bin/python bench/inference.py                     # defaults: 2048 px, 20000 vs 5000 px
    .venv/bin/python bench/inference.py --device cuda --model-width 64 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import torch  # noqa: E402
from affine import Affine  # noqa: E402
from torch import nn  # noqa: E402

from core.models import register_model  # noqa: E402
from core.tiling import TileGrid  # noqa: E402


class BenchConvNet(nn.Module):
    """A few 3x3 convolutions: a stand-in for a segmentation network with a tunable cost."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, num_classes, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


@register_model("bench_convnet")
def _build(in_channels: int, num_classes: int, width: int = 32, depth: int = 4) -> nn.Module:
    return BenchConvNet(in_channels, num_classes, width, depth)


@register_model("bench_cheap")
def _build_cheap(in_channels: int, num_classes: int) -> nn.Module:
    return nn.Conv2d(in_channels, num_classes, 1)


def make_package(path: Path, arch: str, options: dict[str, int], tile: int, num_classes: int = 4) -> Path:
    from core.model_package import save_package
    from core.models import build_model

    model = build_model(arch, 3, num_classes, **options)
    d = {
        "task": "landcover",
        "architecture": {"name": arch, "in_channels": 3, "num_classes": num_classes, "options": options},
        "bands": [{"index": i + 1, "name": n} for i, n in enumerate(("red", "green", "blue"))],
        "classes": [{"value": v + 1, "name": f"class {v + 1}"} for v in range(num_classes)],
        "output_values": list(range(1, num_classes + 1)),
        "normalization": {"mean": [120.0] * 3, "std": [50.0] * 3},
        "stretch": {"method": "none", "low": [], "high": []},
        "cell_size": [0.5, 0.5], "tile_size_px": tile,
    }
    return save_package(path, d, model.state_dict())


def make_raster(path: Path, size_px: int, block: int = 2048) -> Path:
    """A 3-band uint8 raster written block by block (bounded memory even at 20000 px)."""
    profile = {"driver": "GTiff", "width": size_px, "height": size_px, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": Affine(0.5, 0, 500000, 0, -0.5, 5000000), "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate", "bigtiff": "IF_SAFER"}
    rng = np.random.default_rng(0)
    pattern = rng.integers(0, 255, (3, block, block), dtype=np.uint8)
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size_px, block):
            for c in range(0, size_px, block):
                h, w = min(block, size_px - r), min(block, size_px - c)
                dst.write(pattern[:, :h, :w], window=rasterio.windows.Window(c, r, w, h))
    return path


def forward_mpix_per_s(package: Path, device: str, batch: int, tile: int, seconds: float = 5.0) -> float:
    """The model alone: the same batch of normalised tiles, repeated, on the device."""
    from core.device import select_device
    from core.inference import BatchPredictor
    from core.model_package import load_package

    dev = select_device(device).device
    pkg = load_package(package)
    model = pkg.model.to(dev).eval()
    predictor = BatchPredictor(model, dev, batch, int(pkg.definition["architecture"]["num_classes"]))
    x = np.random.default_rng(1).normal(0, 1, (batch, 3, tile, tile)).astype(np.float32)
    predictor.predict(x)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        predictor.predict(x)
        n += 1
    return n * batch * tile * tile / 1e6 / (time.perf_counter() - t0)


def classify(raster: Path, package: Path, out: Path, device: str, batch: int, tile: int, padding: int) -> float:
    from core.inference import ClassifyConfig, classify_pixels

    result = classify_pixels(ClassifyConfig(raster, package, out, tile_size_px=tile, padding_px=padding,
                                            batch_size=batch, device=device))
    return result.megapixels_per_second


RSS_CHILD = """
import resource, sys, json
sys.path.insert(0, sys.argv[1])
import bench.inference as b
from pathlib import Path
from core.inference import ClassifyConfig, classify_pixels
r = classify_pixels(ClassifyConfig(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), tile_size_px=512,
                                   padding_px=0, batch_size=4, device=sys.argv[5]))
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": r.seconds, "mpix_per_s": r.megapixels_per_second}))
"""


def peak_rss(raster: Path, package: Path, out: Path, device: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", RSS_CHILD, str(REPO), str(raster), str(package), str(out), device],
                          capture_output=True, text=True, check=True, cwd=REPO)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size-px", type=int, default=2048, help="raster side for the efficiency runs")
    ap.add_argument("--tile-px", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--model-width", type=int, default=32)
    ap.add_argument("--padding-px", type=int, default=32, help="padding for the overhead run")
    ap.add_argument("--big-px", type=int, default=20000)
    ap.add_argument("--small-px", type=int, default=5000)
    ap.add_argument("--skip-rss", action="store_true")
    args = ap.parse_args()
    from core.device import select_device

    report: dict[str, object] = {"device": select_device(args.device).description}
    with tempfile.TemporaryDirectory(prefix="rlc-bench-") as work:
        w = Path(work)
        pkg = make_package(w / "model", "bench_convnet", {"width": args.model_width, "depth": 4}, args.tile_px)
        raster = make_raster(w / "img.tif", args.size_px)
        fwd = forward_mpix_per_s(pkg, args.device, args.batch_size, args.tile_px)
        e2e = classify(raster, pkg, w / "out0.tif", args.device, args.batch_size, args.tile_px, 0)
        fwd_after = forward_mpix_per_s(pkg, args.device, args.batch_size, args.tile_px)
        forward = (fwd + fwd_after) / 2
        padded = classify(raster, pkg, w / "outp.tif", args.device, args.batch_size, args.tile_px, args.padding_px)
        report["efficiency"] = {
            "raster_px": args.size_px, "tile_px": args.tile_px, "batch_size": args.batch_size,
            "model": f"bench_convnet width {args.model_width} depth 4",
            "forward_mpix_per_s": round(forward, 3), "end_to_end_mpix_per_s_padding_0": round(e2e, 3),
            "pipeline_efficiency": round(e2e / forward, 3),
            f"end_to_end_mpix_per_s_padding_{args.padding_px}": round(padded, 3),
            "padding_overhead": round(e2e / padded - 1, 3),
            "padding_overhead_expected_from_tile_count": round(
                TileGrid(args.size_px, args.size_px, args.tile_px, args.padding_px).tile_count
                / TileGrid(args.size_px, args.size_px, args.tile_px, 0).tile_count - 1, 3),
        }
        print(json.dumps(report, indent=2), flush=True)
        if not args.skip_rss:
            cheap = make_package(w / "cheap", "bench_cheap", {}, 512)
            rss = {}
            for size in (args.small_px, args.big_px):
                r = make_raster(w / f"rss_{size}.tif", size)
                rss[size] = peak_rss(r, cheap, w / f"rss_out_{size}.tif", args.device)
                r.unlink()
                (w / f"rss_out_{size}.tif").unlink()
            report["memory"] = {
                "model": "bench_cheap (one 1x1 convolution)", "tile_px": 512, "batch_size": 4,
                **{f"{s}px": v for s, v in rss.items()},
                "rss_ratio_big_vs_small": round(rss[args.big_px]["peak_rss_mb"] / rss[args.small_px]["peak_rss_mb"], 3),
            }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
