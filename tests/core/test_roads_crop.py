"""Road vectorization's cropped steps give bit-identical results to the straightforward full-array calls.

``core.roads`` thins tile by tile with a halo of context and removes blobs/holes by counting pixels in
small components' boxes; these tests compare both with the plain versions (scikit-image ``skeletonize``
on the whole array; a label + ``bincount`` size lookup on the whole array) on random masks, on the
built-in sample scene's road mask, on SpaceNet's road mask and on the benchmark's synthetic city grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage.morphology import skeletonize

from core import roads
from core.roads import VectorizeConfig, _road_mask, skeletonize_tiled

EIGHT = np.ones((3, 3), bool)
FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


def reference_drop_small(mask: np.ndarray, min_px: int, structure: np.ndarray) -> np.ndarray:
    """The straightforward removal of components under ``min_px`` pixels (whole-array size lookup)."""
    labels, count = ndimage.label(mask, structure=structure)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    small = sizes < min_px
    small[0] = False
    return np.asarray(mask & ~small[labels])


def reference_road_mask(data: np.ndarray, valid: np.ndarray | None, cfg: VectorizeConfig,
                        cell_area_m2: float) -> np.ndarray:
    mask = data >= cfg.threshold
    if valid is not None:
        mask &= valid
    blob_px = int(round(cfg.min_blob_area_m2 / cell_area_m2))
    hole_px = int(round(cfg.max_hole_area_m2 / cell_area_m2))
    if blob_px > 1 and mask.any():
        mask = reference_drop_small(mask, blob_px, EIGHT)
    if hole_px > 1 and mask.any():
        mask = ~reference_drop_small(~mask, hole_px, FOUR)
        if valid is not None:
            mask &= valid
    return np.asarray(mask, bool)


def random_mask(seed: int, shape: tuple[int, int], n_lines: int, noise: float) -> np.ndarray:
    """Thick random lines (roads of 1-15 px, crossing, some diagonal), rectangles and speckle noise."""
    rng = np.random.default_rng(seed)
    h, w = shape
    rr, cc = np.mgrid[0:h, 0:w]
    mask = rng.random(shape) < noise
    for _ in range(n_lines):
        r0, c0, r1, c1 = rng.uniform(-10, max(h, w) + 10, 4)
        half = rng.uniform(0.5, 7.5)
        d = np.array([r1 - r0, c1 - c0])
        length = max(float(np.hypot(*d)), 1e-6)
        t = np.clip(((rr - r0) * d[0] + (cc - c0) * d[1]) / length ** 2, 0, 1)
        mask |= np.hypot(rr - (r0 + t * d[0]), cc - (c0 + t * d[1])) <= half
    for _ in range(rng.integers(0, 4)):
        r, c = rng.integers(0, h), rng.integers(0, w)
        mask[r: r + rng.integers(1, 25), c: c + rng.integers(1, 25)] = rng.random() < 0.7
    return mask


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), h=st.integers(1, 120), w=st.integers(1, 120), n_lines=st.integers(0, 8),
       noise=st.sampled_from([0.0, 0.0, 0.01, 0.1, 0.5, 0.9]), tile=st.integers(4, 64))
def test_tiles_are_cut_and_pasted_exactly(seed: int, h: int, w: int, n_lines: int, noise: float, tile: int) -> None:
    """With a halo as large as the mask every tile sees all of it: the tiling must then be exact."""
    mask = random_mask(seed, (h, w), n_lines, noise)
    got = skeletonize_tiled(mask, tile=tile, halo=max(h, w))
    assert got.dtype == bool and got.shape == mask.shape
    assert np.array_equal(got, skeletonize(mask).astype(bool))


def test_default_halo_reproduces_the_whole_array_skeleton_on_a_city_grid(tmp_path: Path) -> None:
    """The benchmark's mask: 13.5 % roads 4.5 m wide at 0.5 m, blobs and gaps; small tiles, many seams."""
    import rasterio

    from bench.roads import write_synthetic_mask

    write_synthetic_mask(tmp_path / "m.tif", 1400)
    with rasterio.open(tmp_path / "m.tif") as src:
        mask = _road_mask(src.read(1), None, VectorizeConfig(), 0.25)
    expected = skeletonize(mask).astype(bool)
    for tile in (128, 512):
        assert np.array_equal(skeletonize_tiled(mask, tile=tile), expected), tile
    assert not skeletonize_tiled(np.zeros((700, 900), bool), tile=128).any()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), h=st.integers(1, 100), w=st.integers(1, 100), n_lines=st.integers(0, 6),
       noise=st.sampled_from([0.0, 0.02, 0.2, 0.5, 0.8]), blob_m2=st.sampled_from([0.0, 0.5, 2.0, 5.0, 20.0]),
       hole_m2=st.sampled_from([0.0, 0.5, 2.0, 5.0, 20.0]), with_valid=st.booleans())
def test_blob_and_hole_removal_matches_whole_array_lookup(seed: int, h: int, w: int, n_lines: int, noise: float,
                                                          blob_m2: float, hole_m2: float, with_valid: bool) -> None:
    mask = random_mask(seed, (h, w), n_lines, noise)
    rng = np.random.default_rng(seed + 1)
    valid = rng.random((h, w)) > 0.05 if with_valid else None
    data = mask.astype(np.uint8)
    cfg = VectorizeConfig(threshold=1, min_blob_area_m2=blob_m2, max_hole_area_m2=hole_m2)
    expected = reference_road_mask(data, valid, cfg, 0.25)
    got = _road_mask(data, None if valid is None else valid.copy(), cfg, 0.25)
    assert np.array_equal(got, expected)


def test_many_components_take_the_vectorized_path(monkeypatch: pytest.MonkeyPatch) -> None:
    mask = random_mask(7, (150, 150), 4, 0.3)
    cfg = VectorizeConfig(threshold=1)
    expected = reference_road_mask(mask.astype(np.uint8), None, cfg, 0.25)
    assert np.array_equal(_road_mask(mask.astype(np.uint8), None, cfg, 0.25), expected)
    monkeypatch.setattr(roads, "_MANY_COMPONENTS", 3)
    assert np.array_equal(_road_mask(mask.astype(np.uint8), None, cfg, 0.25), expected)


def _check_real_mask(mask: np.ndarray, cell_area_m2: float) -> None:
    data = mask.astype(np.uint8)
    cfg = VectorizeConfig(threshold=1)
    cleaned = _road_mask(data, None, cfg, cell_area_m2)
    assert np.array_equal(cleaned, reference_road_mask(data, None, cfg, cell_area_m2))
    # Also with harsher clean-up, so that blobs and holes are really removed on this data.
    harsh = VectorizeConfig(threshold=1, min_blob_area_m2=400 * cell_area_m2, max_hole_area_m2=400 * cell_area_m2)
    assert np.array_equal(_road_mask(data, None, harsh, cell_area_m2),
                          reference_road_mask(data, None, harsh, cell_area_m2))
    for m in (mask, cleaned, np.pad(cleaned, 37, mode="symmetric")):
        expected = skeletonize(m).astype(bool)
        assert expected.any()
        for tile in (128, roads.SKELETON_TILE_PX):
            assert np.array_equal(skeletonize_tiled(m, tile=tile), expected), tile


def test_sample_scene_mask_is_identical(sample_scene: Any) -> None:
    import rasterio

    with rasterio.open(sample_scene.road_mask) as src:
        mask = src.read(1) > 0
        cell = abs(src.transform.a * src.transform.e)
    assert 0.02 < mask.mean() < 0.5
    _check_real_mask(mask, cell)


def test_spacenet_mask_is_identical(shared_data: Path) -> None:
    import rasterio

    from core.roads import cell_size_metres

    with rasterio.open(shared_data / "roads" / "spacenet_vegas_pan16" / "sample_road_raster_mask.tif") as src:
        mask = src.read(1) > 0
        dx, dy = cell_size_metres(src.crs, src.transform, src.height)
    assert mask.shape == (1300, 1300) and 0.01 < mask.mean() < 0.2
    _check_real_mask(mask, dx * dy)
