"""The built-in sample scene: deterministic, georeferenced, and its ground truth agrees with itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize

from core.errors import ConfigError
from core.sample_data import (
    BARE,
    BUILDINGS,
    FIELDS,
    FOREST,
    ROAD,
    SAMPLE_CLASSES,
    WATER,
    SampleSceneConfig,
    generate_sample_scene,
)
from core.vectors import read_vector


def _read(path: Path) -> tuple[np.ndarray, Any]:
    with rasterio.open(path) as src:
        return src.read(), src


def test_georeferencing_and_layout(sample_scene: Any) -> None:
    with rasterio.open(sample_scene.image) as src:
        assert (src.count, src.width, src.height) == (4, 512, 512)
        assert src.crs.to_epsg() == 32633 and src.res == (0.5, 0.5)
        assert src.bounds.left == 500_000 and src.bounds.top == 5_200_256
        assert src.nodata == 0 and src.dtypes[0] == "uint8"
        assert [src.descriptions[i] for i in range(4)] == ["red", "green", "blue", "nir"]
        image = src.read()
    for path in (sample_scene.class_raster, sample_scene.road_mask):
        with rasterio.open(path) as other:
            assert other.transform == src.transform and other.crs == src.crs and other.shape == src.shape
    # The clipped corner is nodata in every band; elsewhere no pixel is 0 (0 is reserved for nodata).
    nodata = (image == 0).all(axis=0)
    assert (image == 0).any(axis=0).sum() == nodata.sum()
    assert 0.005 < nodata.mean() < 0.05 and nodata[0, -1] and not nodata[-1, 0]


def test_same_seed_same_scene_other_seed_other_scene(tmp_path: Path, sample_scene: Any) -> None:
    again = generate_sample_scene(tmp_path / "again", SampleSceneConfig(size_px=512))
    other = generate_sample_scene(tmp_path / "other", SampleSceneConfig(size_px=512, seed=7))
    a, _ = _read(sample_scene.image)
    b, _ = _read(again.image)
    c, _ = _read(other.image)
    assert np.array_equal(a, b)
    assert (a != c).mean() > 0.3


def test_classes_colours_and_legend(sample_scene: Any) -> None:
    classes, _ = _read(sample_scene.class_raster)
    counts = np.bincount(classes.ravel(), minlength=7) / classes.size
    assert counts[0] == 0, "every pixel has a class (the truth is complete)"
    for value in (WATER, FOREST, FIELDS, BUILDINGS, BARE, ROAD):
        assert counts[value] > 0.004, f"class {value} is missing or tiny"
    with rasterio.open(sample_scene.class_raster) as src:
        cmap = src.colormap(1)
    for c in SAMPLE_CLASSES:
        assert cmap[c.value][:3] == c.rgba[:3]
    qml = sample_scene.class_raster.with_suffix(".qml").read_text()
    assert 'type="paletted"' in qml and 'label="bare ground"' in qml
    description = json.loads(sample_scene.description.read_text())
    assert {c["name"]: c["pixels"] for c in description["classes"]}["road"] == int((classes == ROAD).sum())


def test_polygons_and_road_mask_agree_with_class_raster(sample_scene: Any) -> None:
    classes, src = _read(sample_scene.class_raster)
    polys = read_vector(sample_scene.landcover_polygons)
    assert polys.crs is not None and "32633" in polys.crs
    assert set(polys.attributes["classvalue"]) == {1, 2, 3, 4, 5, 6}
    assert all(g.is_valid for g in polys.geometries)
    burned = rasterize(zip(polys.geometries, polys.attributes["classvalue"].tolist()),
                       out_shape=classes.shape[1:], transform=src.transform, dtype="uint8")
    assert (burned == classes[0]).mean() > 0.99
    mask, _ = _read(sample_scene.road_mask)
    assert set(np.unique(mask)) == {0, 1}
    assert ((mask[0] == 1) == (classes[0] == ROAD)).mean() > 0.995


def test_road_network_is_noded_with_junctions_and_dead_ends(sample_scene: Any) -> None:
    roads = read_vector(sample_scene.road_centerlines)
    assert roads.geometry_type in ("LineString", "Unknown")
    assert set(roads.attributes) >= {"road_id", "highway", "speed_kph", "width_m"}
    assert set(roads.attributes["highway"]) == {"primary", "secondary", "tertiary", "residential", "track"}
    assert roads.attributes["speed_kph"].min() >= 20 and roads.attributes["width_m"].max() == 14
    degree: dict[tuple[float, float], int] = {}
    for line in roads.geometries:
        for pt in (line.coords[0], line.coords[-1]):
            key = (round(pt[0], 3), round(pt[1], 3))
            degree[key] = degree.get(key, 0) + 1
    assert sum(d >= 3 for d in degree.values()) >= 8, "crossings and T-junctions"
    assert sum(d == 4 for d in degree.values()) >= 1, "at least one crossing"
    # Dead ends: track ends inside the scene (not on its border).
    with rasterio.open(sample_scene.image) as src:
        b = src.bounds
    inner_ends = [k for k, d in degree.items() if d == 1 and b.left + 1 < k[0] < b.right - 1 and b.bottom + 1 < k[1] < b.top - 1]
    assert len(inner_ends) >= 2


def test_imagery_separates_the_classes(sample_scene: Any) -> None:
    image, _ = _read(sample_scene.image)
    classes, _ = _read(sample_scene.class_raster)
    valid = (image != 0).all(axis=0)
    mean = {v: image[:, (classes[0] == v) & valid].mean(axis=1) for v in (WATER, FOREST, FIELDS, ROAD)}
    ndvi = {v: (m[3] - m[0]) / (m[3] + m[0]) for v, m in mean.items()}
    assert ndvi[FOREST] > 0.4 and ndvi[WATER] < 0 and ndvi[ROAD] < 0.05
    assert mean[WATER].sum() < mean[ROAD].sum() < mean[FIELDS].sum() + 150
    forest_texture = image[1, (classes[0] == FOREST) & valid].std()
    water_texture = image[1, (classes[0] == WATER) & valid].std()
    assert forest_texture > 2 * water_texture, "tree crowns are textured, water is smooth"


@pytest.mark.parametrize("kwargs", [{"size_px": 16}, {"cell_size_m": 0.0}, {"size_px": 10**6}])
def test_bad_configs_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SampleSceneConfig(**kwargs)
