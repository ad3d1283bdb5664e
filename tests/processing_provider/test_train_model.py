"""roadlandcover:trainmodel through processing.run and qgis_process, and the TrainingTask, in a real QGIS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.core.test_training_helpers import write_training_folder

PARAMS = {"MODEL": 0, "ENCODER": 0, "BASE_WIDTH": 8, "EPOCHS": 1, "BATCH_SIZE": 8, "LEARNING_RATE": 0.003,
          "VAL_PERCENT": 20, "PATIENCE": 0, "DEVICE": 3}


@pytest.fixture(scope="module")
def folder(sample_scene: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_folder(sample_scene, tmp_path_factory.mktemp("p") / "chips", "landcover")


def test_processing_run_trains_in_a_worker(qgis: Any, folder: Path, tmp_path: Path) -> None:
    import processing

    result = processing.run("roadlandcover:trainmodel", {**PARAMS, "TRAINING_FOLDER": str(folder),
                                                         "OUTPUT_MODEL": str(tmp_path / "model.zip"),
                                                         "OUTPUT_REPORT": str(tmp_path / "report")})
    assert Path(result["OUTPUT_MODEL"]).is_file() and result["STOPPED"] == "completed"
    assert 0 <= result["BEST_METRIC"] <= 1 and "cpu" in result["DEVICE_USED"]
    assert (tmp_path / "report" / "metrics_per_class.csv").is_file()
    import zipfile

    d = json.loads(zipfile.ZipFile(tmp_path / "model.zip").read("model.json"))
    assert d["architecture"]["name"] == "unet" and d["output_values"] == [1, 2, 3, 4, 5, 6]


def test_bad_folder_is_a_processing_exception(qgis: Any, tmp_path: Path) -> None:
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="dataset.json"):
        processing.run("roadlandcover:trainmodel", {**PARAMS, "TRAINING_FOLDER": str(tmp_path),
                                                     "OUTPUT_MODEL": str(tmp_path / "m.zip")})
    assert not (tmp_path / "m.zip").exists()


def test_qgis_process_trainmodel(folder: Path, tmp_path: Path) -> None:
    from tests.qgis_support import run_algorithm_json

    _, payload = run_algorithm_json("roadlandcover:trainmodel", {
        **PARAMS, "TRAINING_FOLDER": folder, "OUTPUT_MODEL": tmp_path / "q.zip", "OUTPUT_REPORT": tmp_path / "r"})
    assert payload is not None and Path(payload["results"]["OUTPUT_MODEL"]).is_file()
    assert payload["results"]["STOPPED"] == "completed"


def test_training_task_reports_metrics(qgis: Any, folder: Path, tmp_path: Path) -> None:
    import sys

    from core.training import TrainConfig
    from road_landcover_plugin.training_task import TrainingTask

    cfg = TrainConfig(encoder="resnet18", base_width=8, epochs=1, learning_rate=0.003, patience=0)
    task = TrainingTask(folder, tmp_path / "t", cfg, python=sys.executable)
    rows: list[dict[str, str]] = []
    task.epochEnded.connect(rows.append)
    ok = task.run()  # run synchronously here; QgsApplication.taskManager() calls the same method
    task.finished(ok)
    assert ok, task.error
    assert task.result is not None and task.result["epochs_run"] == 1
    assert rows and rows[0]["epoch"] == "1" and "miou" in rows[0]
    assert "finished after 1 epochs" in task.summary() and "miou" in task.summary()
    canceled = TrainingTask(folder, tmp_path / "c", cfg, python=sys.executable)
    canceled.cancel()
    assert canceled.run() is False and "canceled" in (canceled.error or "")
    assert not (tmp_path / "c").exists()
