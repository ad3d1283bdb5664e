"""The provider through the real ``qgis_process`` (scripts/qgis_process), as a subprocess."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from core.vectors import read_vector
from tests.qgis_support import run_algorithm_json, run_qgis_process

pytestmark = pytest.mark.qgis


def test_list_shows_provider_and_algorithms() -> None:
    out = run_qgis_process("list").stdout
    assert "Road & Land Cover (Deep Learning)" in out
    assert "roadlandcover:samplescene" in out


def test_help_is_real_documentation() -> None:
    out = run_qgis_process("help", "roadlandcover:samplescene").stdout
    assert "road network" in out and "SIZE_PX" in out and "OUTPUT_FOLDER" in out


def test_run_in_qgis_process_equals_plain_python(tmp_path: Path, sample_scene: Any) -> None:
    """The same core code inside qgis_process (QGIS's own GDAL/GEOS loaded) gives the same files."""
    proc, result = run_algorithm_json(
        "roadlandcover:samplescene", {"SIZE_PX": 512, "OUTPUT_FOLDER": tmp_path / "qp"})
    assert result is not None, proc.stdout
    outputs = result["results"]
    for key, ref in (("IMAGE", sample_scene.image), ("CLASS_RASTER", sample_scene.class_raster),
                     ("ROAD_MASK", sample_scene.road_mask)):
        with rasterio.open(outputs[key]) as a, rasterio.open(ref) as b:
            assert a.crs == b.crs and a.transform == b.transform
            assert np.array_equal(a.read(), b.read()), key
    for key, ref in (("LANDCOVER_POLYGONS", sample_scene.landcover_polygons),
                     ("ROAD_CENTERLINES", sample_scene.road_centerlines)):
        got, want = read_vector(outputs[key]), read_vector(ref)
        assert len(got) == len(want)
        # shapely runs its own GEOS inside QGIS too (core/native_libs.py), so overlays agree exactly.
        assert [g.wkb for g in got.geometries] == [w.wkb for w in want.geometries], key


def test_qgis_process_runs_the_wheels_own_gdal_and_geos(tmp_path: Path) -> None:
    """qgis_process links Debian's GDAL 3.6 and GEOS: without isolation rasterio's calls went into them."""
    from core import native_libs

    expected = native_libs.describe()  # plain Python: only the wheels' libraries exist here
    assert not native_libs.mixed_libraries()
    proc, result = run_algorithm_json("roadlandcover:samplescene", {"SIZE_PX": 256, "OUTPUT_FOLDER": tmp_path / "s"})
    assert result is not None, proc.stdout
    assert f"Native libraries: {expected}" in proc.stdout + proc.stderr, proc.stdout[-3000:]
    assert "is in use, but the wheel ships" not in proc.stdout + proc.stderr


def test_bad_parameter_fails_with_clear_message(tmp_path: Path) -> None:
    proc, _ = run_algorithm_json(
        "roadlandcover:samplescene", {"CRS": "EPSG:4326", "OUTPUT_FOLDER": tmp_path / "geo"}, check=False)
    assert proc.returncode != 0
    assert "needs a projected CRS in metres; EPSG:4326 is not one" in proc.stdout + proc.stderr
    assert not (tmp_path / "geo").exists()
