"""The worker process: progress lines, errors, cancel, the CLI entry point, and DDP under torchrun (gloo)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from core.errors import ConfigError
from core.train_worker import TAG, parse_line, run_worker, worker_command
from core.training import TrainConfig
from tests.core.test_training_helpers import write_training_folder

TINY = TrainConfig(model="unet", encoder="resnet18", base_width=8, epochs=1, batch_size=8, learning_rate=0.003,
                   patience=0)


@pytest.fixture(scope="module")
def folder(sample_scene: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_folder(sample_scene, tmp_path_factory.mktemp("w") / "chips", "landcover")


class Recorder:
    def __init__(self, cancel_on_epoch: bool = False) -> None:
        self.progress: list[float] = []
        self.messages: list[str] = []
        self.cancel_on_epoch = cancel_on_epoch
        self.canceled = False
        self.epochs: list[dict[str, Any]] = []

    def set_progress(self, percent: float) -> None:
        self.progress.append(percent)

    def is_canceled(self) -> bool:
        return self.canceled

    def info(self, message: str) -> None:
        self.messages.append(message)
        if self.cancel_on_epoch and message.startswith("epoch "):
            self.canceled = True

    def warning(self, message: str) -> None:
        self.messages.append(message)

    def epoch(self, row: dict[str, Any]) -> None:
        self.epochs.append(row)


def test_parse_line() -> None:
    assert parse_line(TAG + '{"event": "progress", "percent": 5}') == {"event": "progress", "percent": 5}
    assert parse_line("some torch warning") is None
    assert parse_line(TAG + "{broken") is None


def test_worker_streams_progress_and_returns_the_result(folder: Path, tmp_path: Path) -> None:
    cmd, _env = worker_command(folder, tmp_path / "m.zip", TINY)
    assert cmd[1:3] == ["-m", "core.train_worker"] and "--progress-json" in cmd
    fb = Recorder()
    done = run_worker(folder, tmp_path / "m.zip", TINY, fb, python=sys.executable)
    assert done["event"] == "done" and done["epochs_run"] == 1 and done["stopped"] == "completed"
    assert "cpu" in done["device"]
    assert (tmp_path / "m.zip").is_file() and Path(done["report_dir"], "history.csv").is_file()
    assert fb.progress and max(fb.progress) == 100
    assert any(m.startswith("epoch epoch 1, train_loss") for m in fb.messages)
    # The per-epoch row also arrives structured (numbers, not a log line to parse), once per epoch.
    assert len(fb.epochs) == 1
    row = fb.epochs[0]
    assert row["epoch"] == 1 and isinstance(row["train_loss"], float) and row["train_loss"] > 0
    assert 0 <= row["miou"] <= 1 and row["best"] is True and "event" not in row


def test_worker_errors_come_back_as_core_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dataset.json"):
        run_worker(tmp_path, tmp_path / "m", TINY, python=sys.executable)


def test_cancel_stops_the_worker_and_keeps_the_best_epoch(folder: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(**{**TINY.to_dict(), "epochs": 50, "ignore_classes": ()})
    fb = Recorder(cancel_on_epoch=True)
    done = run_worker(folder, tmp_path / "m", cfg, fb, python=sys.executable)
    assert done["stopped"] == "canceled" and 1 <= done["epochs_run"] < 50
    assert json.loads((tmp_path / "m" / "model.json").read_text())["training"]["stopped"] == "canceled"


def test_cli_train(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from core.cli import main

    code = main(["-q", "train", str(folder), str(tmp_path / "cli_model"), "--encoder", "resnet18", "--base-width", "8",
                 "--epochs", "1", "--learning-rate", "0.003", "--val-split", "random"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epochs_run"] == 1 and Path(out["package"], "model.json").is_file()
    assert main(["train", str(tmp_path), str(tmp_path / "x"), "--epochs", "1"]) == 2


def test_ddp_two_processes_gloo(folder: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo): both ranks train on halves, rank 0 writes the package (~12 s)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533"]
    cfg = TrainConfig(**{**TINY.to_dict(), "epochs": 2, "ignore_classes": ()})
    done = run_worker(folder, tmp_path / "ddp", cfg, Recorder(), python=sys.executable, launcher=launcher)
    d = json.loads((tmp_path / "ddp" / "model.json").read_text())
    assert d["training"]["world_size"] == 2 and done["epochs_run"] == 2
    assert "rank 0/2" in done["device"]
