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


def test_demo_runs_the_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "demo", "--output", str(tmp_path / "demo"), "--size-px", "256"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"]["sample_scene"]["road_edges"] > 10
    assert (tmp_path / "demo" / "demo_report.json").exists()
