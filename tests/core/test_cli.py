"""The headless command line ``road-landcover`` (installed console script)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio

from core.cli import main

EXE = shutil.which("road-landcover", path=str(Path(sys.executable).parent))


def test_console_script_is_installed() -> None:
    assert EXE is not None, "pip install -e . should install the road-landcover console script"
    out = subprocess.run([EXE, "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("sample", "doctor", "demo"):
        assert cmd in out


def test_sample_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "sample", str(tmp_path / "s"), "--size-px", "200", "--cell-size-m", "1.0", "--seed", "3"]) == 0
    paths = json.loads(capsys.readouterr().out)
    with rasterio.open(paths["image"]) as src:
        assert src.width == 200 and src.res == (1.0, 1.0)


def test_bad_value_exits_2_with_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", str(tmp_path / "s"), "--size-px", "5"]) == 2
    err = capsys.readouterr().err
    assert "road-landcover sample: error: size_px must be 128-20000 pixels, got 5" in err
    assert not (tmp_path / "s").exists()


def test_doctor_reports_packages_and_device(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "rasterio" in out and "device: cpu" in out


def test_demo_runs_the_whole_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """make demo's job, tiny: export -> train -> classify -> assess, and roads export -> train -> extract -> APLS."""
    assert main(["-q", "demo", "--quick", "--output", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    steps = report["steps"]
    assert list(steps) == ["sample_scene", "landcover_export", "landcover_train", "landcover_classify",
                           "landcover_accuracy", "roads_export", "roads_train", "roads_extract", "roads_evaluate"]
    assert steps["landcover_export"]["chips"] > 10 and steps["roads_export"]["chips"] > 5
    acc = steps["landcover_accuracy"]
    assert 0 <= acc["overall_accuracy"] <= 1 and -1 <= acc["kappa"] <= 1
    # Two epochs of a tiny model only prove the chain (learning is tested in test_training.py); the outputs must
    # still sit on the scene's grid, over the test area only.
    import rasterio

    with rasterio.open(steps["sample_scene"]["image"]) as src, \
            rasterio.open(tmp_path / "demo" / "landcover_classified.tif") as out:
        # The held-out south 40 % of the scene, on the scene's grid.
        assert (out.crs, out.res, out.width) == (src.crs, src.res, src.width)
        assert (out.bounds.left, out.bounds.bottom) == (src.bounds.left, src.bounds.bottom)
        assert out.height == round(src.height * 0.4)
        assert out.colormap(1)[1][3] == 255  # coloured, class 1 opaque
    assert 0 <= steps["roads_evaluate"]["apls"] <= 1
    for name in ("landcover_classified.tif", "roads.gpkg", "road_report.json", "landcover_accuracy.json",
                 "demo_report.json"):
        assert (tmp_path / "demo" / name).exists(), name
    assert report["summary"]["landcover"]["miou"] == acc["miou"]
