"""Batch mode through Processing's own batch dialog (BatchAlgorithmDialog / BatchPanel), headless.

``batch_dialog.py`` runs in a subprocess with a GUI QgsApplication on the offscreen platform: it opens
the algorithm in the real batch dialog, loads a batch file through the dialog's "Open" code, runs
it with the dialog's "Run" code (one fresh context per row, the same algorithm object for every
row, results loaded into the project) and reports back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from tests.qgis_support import REPO

pytestmark = pytest.mark.qgis

SCRIPT = Path(__file__).resolve().parent / "batch_dialog.py"


def run_script(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("qgis.core", reason="QGIS Python bindings are not installed (run make setup)")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_every_algorithm_opens_in_the_batch_dialog(tmp_path: Path) -> None:
    report_path = tmp_path / "open_all.json"
    proc = run_script("open-all", str(report_path))
    assert report_path.exists(), f"exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    report = json.loads(report_path.read_text())
    expected = {"roadlandcover:samplescene", "roadlandcover:exporttrainingdata", "roadlandcover:trainmodel",
                "roadlandcover:classifypixels", "roadlandcover:assessaccuracy", "roadlandcover:extractroads",
                "roadlandcover:vectorizeroads", "roadlandcover:evaluateroads",
                "roadlandcover:roadsfromcenterlines", "roadlandcover:landcoverfrompolygons"}
    assert expected <= set(report)
    for alg_id, entry in report.items():
        assert "error" not in entry, f"{alg_id} fails in the batch dialog:\n{entry['error']}"
        assert entry["rows"] == 2
        assert len(entry["row_parameters"]) == 2 and entry["row_parameters"][0] == entry["row_parameters"][1]
    assert "OUTPUT_CLASSIFIED" in report["roadlandcover:classifypixels"]["row_parameters"][0]
    assert "train:MODEL" in report["roadlandcover:roadsfromcenterlines"]["row_parameters"][0]


def test_classify_pixels_batch_of_two_rasters(tmp_path: Path) -> None:
    """Two rows, one model: each output is its own input's classification, loaded and styled in the project."""
    from tests.core.test_inference import make_package, write_raster

    pkg = make_package(tmp_path / "onehot.zip", "test_onehot", 1, [0, 1, 2, 3, 4])  # class = input value
    rng = np.random.default_rng(0)
    inputs: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    for i, (shape, origin) in enumerate((((30, 40), (500000.0, 5000000.0)), ((25, 33), (500100.0, 5000100.0)))):
        data = rng.integers(0, 5, shape).astype(np.uint8)
        inputs.append(data)
        src = write_raster(tmp_path / f"in{i}.tif", data, origin=origin)
        # The batch file format of the dialog's Save/Open buttons: parameter values as Python literals.
        rows.append({"PARAMETERS": {"INPUT_RASTER": repr(str(src)), "MODEL": repr(str(pkg)), "TILE_SIZE": "16",
                                    "PADDING": "4", "DEVICE": "3"},
                     "OUTPUTS": {"OUTPUT_CLASSIFIED": str(tmp_path / f"out{i}.tif")}})
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps(rows))
    report_path = tmp_path / "report.json"
    proc = run_script("run", "roadlandcover:classifypixels", str(batch), str(report_path))
    assert report_path.exists(), f"exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    report = json.loads(report_path.read_text())
    assert report["rows_loaded"] == 2 and report["errors"] == []
    assert [p["INPUT_RASTER"] for p in report["parameters"]] == [str(tmp_path / "in0.tif"), str(tmp_path / "in1.tif")]
    assert [r["OUTPUT_CLASSIFIED"] for r in report["results"]] == [str(tmp_path / "out0.tif"),
                                                                    str(tmp_path / "out1.tif")]
    for i, data in enumerate(inputs):
        with rasterio.open(tmp_path / f"out{i}.tif") as out, rasterio.open(tmp_path / f"in{i}.tif") as src:
            assert (out.transform, out.shape, out.crs) == (src.transform, src.shape, src.crs)
            np.testing.assert_array_equal(out.read(1), data)  # row i classified row i's raster, nothing mixed
    layers = {Path(layer["source"]).name: layer for layer in report["project_layers"]}
    assert set(layers) == {"out0.tif", "out1.tif"}
    for layer in layers.values():
        # The post-processor set by the algorithm styles each loaded result (it must outlive the run).
        assert layer["renderer"] == "paletted"
        assert layer["labels"] == ["class0", "class1", "class2", "class3", "class4"]
