"""A training folder written exactly per docs/formats.md from the built-in sample scene.

The tests of training must not depend on the export code (written at the same time by someone
else), so this cuts the sample scene into chips with rasterio windows itself: images, labels
(land cover: class values, 0 = nodata; roads: 0/1, 255 = nodata), orientation bins for roads
(angle of the centerline segment, counter-clockwise from east, 36 bins over 360 degrees),
dataset.json and chips.csv.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

BINS = 36


def write_training_folder(scene: Any, out: Path, task: str = "landcover", chip_px: int = 64, stride_px: int = 64,
                          orientation: bool = False) -> Path:
    """Write a training folder for ``task`` (landcover or roads) from a SampleScene."""
    import rasterio
    from rasterio.features import rasterize
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    from core.sample_data import SAMPLE_CLASSES
    from core.vectors import read_vector

    out.mkdir(parents=True)
    for sub in ("images", "labels") + (("orientation",) if orientation else ()):
        (out / sub).mkdir()
    with rasterio.open(scene.image) as src:
        image, profile, transform, crs = src.read(), src.profile, src.transform, src.crs
    nodata = np.all(image == 0, axis=0)
    if task == "landcover":
        with rasterio.open(scene.class_raster) as src:
            label = src.read(1)
        label = np.where(nodata, 0, label).astype(np.uint8)
        ignore = 0
        classes = [{"value": c.value, "name": c.name, "color": c.color, "pixels": int((label == c.value).sum())}
                   for c in SAMPLE_CLASSES]
        label_mode = "classified_tiles"
    else:
        with rasterio.open(scene.road_mask) as src:
            label = src.read(1)
        label = np.where(nodata, 255, label).astype(np.uint8)
        ignore = 255
        classes = [{"value": 0, "name": "background", "color": "#000000", "pixels": int((label == 0).sum())},
                   {"value": 1, "name": "road", "color": "#ff0000", "pixels": int((label == 1).sum())}]
        label_mode = "road_binary"
    orient_img = None
    if orientation:
        lines = read_vector(scene.road_centerlines)
        shapes = []
        for geom in lines.geometries:
            coords = np.asarray(geom.coords)
            for (x0, y0), (x1, y1) in zip(coords[:-1], coords[1:]):
                angle = math.degrees(math.atan2(y1 - y0, x1 - x0)) % 360.0
                from shapely.geometry import LineString

                shapes.append((LineString([(x0, y0), (x1, y1)]).buffer(2.0, cap_style=2), int(angle // (360 / BINS))))
        orient_img = rasterize(shapes, out_shape=label.shape, transform=transform, fill=BINS, dtype="uint8")
        orient_img[nodata] = 255
    rows = []
    h, w = label.shape
    n = 0
    valid_pixels: list[np.ndarray] = []
    for r in range(0, h - chip_px + 1, stride_px):
        for c in range(0, w - chip_px + 1, stride_px):
            win = Window(c, r, chip_px, chip_px)
            chip = image[:, r:r + chip_px, c:c + chip_px]
            lab = label[r:r + chip_px, c:c + chip_px]
            nd = nodata[r:r + chip_px, c:c + chip_px]
            if nd.all():
                continue
            name = f"{n:06d}.tif"
            n += 1
            t = window_transform(win, transform)
            prof = {**profile, "width": chip_px, "height": chip_px, "transform": t, "driver": "GTiff",
                    "compress": "deflate", "tiled": False}
            prof.pop("blockxsize", None)
            prof.pop("blockysize", None)
            with rasterio.open(out / "images" / name, "w", **prof) as dst:
                dst.write(chip)
            lprof = {**prof, "count": 1, "dtype": "uint8", "nodata": None}
            with rasterio.open(out / "labels" / name, "w", **lprof) as dst:
                dst.write(lab[None])
            if orient_img is not None:
                with rasterio.open(out / "orientation" / name, "w", **lprof) as dst:
                    dst.write(orient_img[r:r + chip_px, c:c + chip_px][None])
            valid_pixels.append(chip[:, ~nd])
            minx, maxy = t @ (0, 0)
            maxx, miny = t @ (chip_px, chip_px)
            counts = {f"class_{cl['value']}": int((lab == cl["value"]).sum()) for cl in classes}
            rows.append({"file": name, "minx": minx, "miny": miny, "maxx": maxx, "maxy": maxy, "rotation_deg": 0,
                         "nodata_fraction": round(float(nd.mean()), 4), **counts})
    allpix = np.concatenate(valid_pixels, axis=1).astype(np.float64)
    bands = [{"index": i + 1, "name": nm, "min": float(allpix[i].min()), "max": float(allpix[i].max()),
              "mean": float(allpix[i].mean()), "std": float(allpix[i].std()),
              "p2": float(np.percentile(allpix[i], 2)), "p98": float(np.percentile(allpix[i], 98))}
             for i, nm in enumerate(("red", "green", "blue", "nir"))]
    with open(out / "chips.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    desc = {
        "format": "road-landcover-chips", "version": 1, "task": task, "label_mode": label_mode,
        "ignore_value": ignore, "classes": classes, "bands": bands, "image_dtype": "uint8", "image_nodata": 0,
        "stretch": {"method": "none", "low": [], "high": []}, "cell_size": [0.5, 0.5], "cell_size_units": "metre",
        "crs": crs.to_string(), "tile_size_px": [chip_px, chip_px], "stride_px": [stride_px, stride_px],
        "chip_format": "tif", "chip_count": len(rows),
        "orientation": {"bins": BINS, "width_m": 4.0} if orientation else None, "speed_bins": None,
        "source": {"raster": str(scene.image), "labels": "test fixture", "class_field": "classvalue"},
        "parameters": {"tile_size_px": chip_px, "stride_px": stride_px}, "created": "2026-11-21T16:00:00Z",
        "software": {"road_landcover": "test"},
    }
    (out / "dataset.json").write_text(json.dumps(desc, indent=2), encoding="utf-8")
    return out


def test_fixture_folder_matches_formats(sample_scene: Any, tmp_path: Path) -> None:
    import rasterio

    from core.datasets import open_training_folder

    folder = write_training_folder(sample_scene, tmp_path / "tf", "roads", orientation=True)
    tf = open_training_folder(folder)
    assert len(tf.names) == 64 and tf.has_orientation and tf.task == "roads" and tf.ignore_value == 255
    with rasterio.open(folder / "images" / tf.names[9]) as img, rasterio.open(folder / "labels" / tf.names[9]) as lab:
        assert img.count == 4 and img.transform == lab.transform and img.crs == lab.crs
        assert tuple(img.bounds) == tf.bounds[9]
    o = rasterio.open(folder / "orientation" / tf.names[9]).read(1)
    assert set(np.unique(o)) <= set(range(BINS + 1)) | {255}
