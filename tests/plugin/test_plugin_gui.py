"""The plugin in a real QGIS desktop under Xvfb.

* load/unload twice leaves nothing (menu, toolbar, provider);
* the workflow: menu entries, a Processing dialog opens from the menu and closes, the training dock trains a
  tiny model as a background task while the event loop keeps turning, and runs from Processing dialogs land in
  a layer group of their own with the right renderers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.qgis_support import REPO

pytestmark = [pytest.mark.qgis, pytest.mark.gui]


needs_desktop = pytest.mark.skipif(shutil.which("xvfb-run") is None or shutil.which("qgis") is None,
                                   reason="needs the QGIS desktop and xvfb-run (make setup installs both)")


def run_in_desktop(script: str, tmp_path: Path, extra_env: dict[str, str] | None = None,
                   timeout: float = 400) -> dict[str, Any]:
    """Run ``gui_scripts/<script>`` in the QGIS desktop under Xvfb; return the JSON report it wrote."""
    report = tmp_path / "report.json"
    env = {**os.environ, "RLC_GUI_REPORT": str(report), "RLC_QGIS_CONFIG": str(tmp_path / "profile"),
           **(extra_env or {})}
    env.pop("QT_QPA_PLATFORM", None)
    proc = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", str(REPO / "scripts" / "qgis"),
         "--code", str(REPO / "tests" / "plugin" / "gui_scripts" / script)],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )
    data: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {}
    if not data.get("done", "stage" not in data):  # scripts that save stages mark the end with "done"
        data["error"] = data.get("error") or (
            f"QGIS stopped after stage {data.get('stage')!r} (exit {proc.returncode}).\n"
            f"stderr:\n{proc.stderr[-3000:]}\nstdout (QGIS's crash handler prints its backtrace here):\n"
            f"{proc.stdout[-6000:]}")
    assert report.exists(), f"QGIS did not run the script (exit {proc.returncode}):\n{proc.stderr[-3000:]}\n" \
                            f"{proc.stdout[-6000:]}"
    return data


@needs_desktop
def test_load_unload_twice_leaves_no_trace(tmp_path: Path) -> None:
    data = run_in_desktop("load_unload.py", tmp_path)
    assert "error" not in data, data.get("error")
    assert data["load"] == [True, True] and data["start"] == [True, True] and data["unload"] == [True, True]
    loaded0, unloaded0, loaded1, unloaded1 = data["steps"]
    for loaded in (loaded0, loaded1):
        assert loaded["provider"] and "roadlandcover:samplescene" in loaded["algorithms"]
        assert loaded["toolbar"] and loaded["in_plugins"]
        assert "Sample scene…" in loaded["menu"] and "Check dependencies…" in loaded["menu"]
    assert loaded0["menu"] == loaded1["menu"], "a second load must not duplicate entries"
    for unloaded in (unloaded0, unloaded1):
        assert unloaded["menu"] is None, "the plugin menu must be removed"
        assert not unloaded["provider"] and not unloaded["toolbar"] and not unloaded["in_plugins"]


@pytest.fixture(scope="module")
def training_folder(sample_scene: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.core.test_training_helpers import write_training_folder

    return write_training_folder(sample_scene, tmp_path_factory.mktemp("gui") / "chips", "landcover")


@needs_desktop
def test_workflow_in_the_desktop(sample_scene: Any, training_folder: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "work"
    scratch.mkdir()
    data = run_in_desktop("workflow.py", tmp_path, {
        "RLC_GUI_FOLDER": str(training_folder), "RLC_GUI_SCENE": str(sample_scene.folder), "RLC_GUI_TMP": str(scratch)})
    assert "error" not in data, data.get("error")
    assert data["load"]
    # The desktop links Debian's GDAL/GEOS: the wheels' copies must be the ones rasterio/pyogrio/shapely call.
    assert data["native"]["mixed"] == [], data["native"]
    assert set(data["native"]["status"].values()) <= {"isolated", "not needed"}, data["native"]
    assert data["menu"] == ["Sample scene…", "Export training data…", "Train model…",
                            "Train model (background, live chart)…", "Classify pixels…", "Assess accuracy…",
                            "Extract roads…", "Vectorize roads…", "Evaluate roads…", "Check dependencies…"]
    assert "Classify pixels…" in data["toolbar"] and "Extract roads…" in data["toolbar"]
    dialog = data["dialog"]
    assert dialog["algorithm"] == "roadlandcover:classifypixels" and dialog["visible"] and not dialog["modal"]
    assert dialog["title"] == "Classify pixels using deep learning" and dialog["closed"]
    assert data["deps_dialog"]["visible"] and "GPU:" in data["deps_dialog"]["status"]

    # the training dock: rows, curves, per-class metrics, preview; the event loop kept turning (50 ms timer)
    t = data["training"]
    assert t["finished"] and t["model_exists"] and t["dock_visible"], t["status"]
    assert t["rows"] == 2 and t["row0"][0] == "1" and float(t["row0"][1]) > 0 and float(t["row0"][2]) > 0
    assert 0 <= float(t["row0"][4]) <= 1  # miou
    assert t["chart"] == {"train_loss": 2, "valid_loss": 2, "miou": 2, "accuracy": 2}
    assert t["classes"] == 6 and t["class_names"] == ["water", "forest", "fields", "buildings", "bare ground", "road"]
    assert t["preview"] and t["progress_bar"] == 100 and t["progress_events"] >= 1
    assert "finished after 2 epochs" in t["status"]
    expected_ticks = t["seconds"] / 0.05
    assert t["ticks"] >= 0.5 * expected_ticks, f"the event loop stalled: {t['ticks']} ticks in {t['seconds']:.1f} s"
    assert t["max_gap_s"] < 1.0, f"the GUI froze for {t['max_gap_s']:.2f} s during training"

    # Vectorize roads from its dialog: lines (core's .qml: single symbol) and nodes (categorized by kind)
    v = data["vectorize"]
    assert v["finished"], v.get("log")
    group = v["group"]
    assert group["name"].startswith("Road & Land Cover – Vectorize roads ") and group["at_top"]
    kinds = {Path(layer["source"].split("|")[0]).name: layer for layer in group["layers"]}
    assert set(kinds) == {"lines.gpkg", "nodes.gpkg"}
    assert kinds["lines.gpkg"]["features"] > 5 and kinds["lines.gpkg"]["renderer"] == "singleSymbol"
    assert kinds["nodes.gpkg"]["renderer"] == "categorizedSymbol" and kinds["nodes.gpkg"]["attribute"] == "kind"

    # Classify pixels with the model the dock trained: paletted classes, probability ramp 0-1
    c = data["classify"]
    assert c["finished"], c.get("log")
    layers = {Path(layer["source"]).name: layer for layer in c["group"]["layers"]}
    assert set(layers) == {"classified.tif", "probability.tif"}
    classified = layers["classified.tif"]
    assert classified["renderer"] == "paletted"
    assert [row[1] for row in classified["classes"]] == ["water", "forest", "fields", "buildings", "bare ground", "road"]
    assert classified["classes"][0][2] == "#1f78b4"
    prob = layers["probability.tif"]
    assert prob["renderer"] == "singlebandpseudocolor" and prob["min_max"] == [0.0, 1.0]
    assert c["group"]["layers"][0]["source"].endswith("classified.tif")  # classes drawn above probabilities

    # Sample scene: outputs Processing never loads are added to the group, styled
    s = data["scene"]["group"]
    assert s is not None, data["scene"]
    renderers = {Path(layer["source"]).name: layer["renderer"] for layer in s["layers"]}
    assert renderers == {"road_centerlines.gpkg": "singleSymbol", "landcover_polygons.gpkg": "categorizedSymbol",
                         "landcover_classes.tif": "paletted", "road_mask.tif": "paletted",
                         "scene.tif": "multibandcolor"}, data.get("log")
