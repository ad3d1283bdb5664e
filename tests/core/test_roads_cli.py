"""``road-landcover roads`` and ``road-landcover evaluate-roads`` on the sample scene."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.cli import main


def test_cli_roads_then_evaluate(sample_scene: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = tmp_path / "roads.gpkg"
    assert main(["-q", "roads", str(sample_scene.road_mask), str(lines), "--min-spur-m", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["edge_count"] > 20 and Path(out["nodes"]) == tmp_path / "roads_nodes.gpkg"
    assert lines.exists() and (tmp_path / "roads_nodes.gpkg").exists()
    report = tmp_path / "eval.json"
    assert main(["-q", "evaluate-roads", str(lines), str(sample_scene.road_centerlines), str(report)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["apls"] > 0.95 and printed["parameters"]["control_point_spacing_m"] == 50.0
    assert report.exists() and report.with_suffix(".csv").exists() and report.with_suffix(".png").exists()
    # `evaluate` (the name) sees road lines and gives the same road metrics.
    report2 = tmp_path / "eval2.json"
    assert main(["-q", "evaluate", str(lines), str(sample_scene.road_centerlines), str(report2),
                 "--tolerance-m", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["apls"] == printed["apls"]


def test_cli_roads_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["roads", str(tmp_path / "missing.tif"), str(tmp_path / "l.gpkg")]) == 2
    assert "cannot open the road raster" in capsys.readouterr().err
