"""A training worker killed with SIGKILL mid-epoch resumes from checkpoint_last.pt to the very same model.

Run A trains N epochs without interruption. Run B is the real worker process (``python -m
core.train_worker ... --progress-json``, as QGIS starts it); it is killed with SIGKILL while epoch k
trains (after the ``@RLC`` line of epoch k-1 and a progress line of epoch k), then resumed from its
last checkpoint through the worker command line to N epochs. Same seed, so the history, the final
metrics and every weight must be equal: that needs the checkpoint to carry everything that decides
what happens next (weights, optimizer, the per-epoch shuffle and augmentation streams, the schedule).
Tiny model (U-Net, ResNet-18 width 8), 64 px chips from the real export of the 512 px sample scene,
CPU. The SIGKILL test takes 35-45 s on two shared cores (slow); the same comparison after an
in-process cancel runs in the default suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from core.train_worker import parse_line, worker_command  # noqa: E402
from core.training import TrainConfig, train_model  # noqa: E402

EPOCHS, KILL_IN_EPOCH, CHIPS = 3, 2, 20
CONFIG = TrainConfig(model="unet", encoder="resnet18", base_width=8, epochs=EPOCHS, batch_size=4, learning_rate=0.003,
                     patience=0, device="cpu", seed=11, augment=True, val_split="random")


@pytest.fixture(scope="module")
def chips(sample_scene: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real export (core.chips) of the sample scene's land-cover polygons as 64 px chips."""
    from tests.core.test_training import export_landcover_chips

    out = export_landcover_chips(sample_scene, tmp_path_factory.mktemp("kill_resume") / "chips")
    # Train on the first 20 chips only (training reads the chip list from chips.csv): 4 epochs stay quick.
    lines = (out / "chips.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) > CHIPS + 1
    (out / "chips.csv").write_text("\n".join(lines[:CHIPS + 1]) + "\n", encoding="utf-8")
    return out


def _history(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History rows without wall-clock times (the only thing allowed to differ)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _kill_during_epoch(chips: Path, output: Path, report: Path, epoch: int) -> list[dict[str, Any]]:
    """Start the worker, SIGKILL it once epoch ``epoch`` is training; returns the events it printed."""
    cmd, env = worker_command(chips, output, CONFIG, report, python=sys.executable)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    events: list[dict[str, Any]] = []
    previous_done = False
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = parse_line(line)
            if event is None:
                continue
            events.append(event)
            if event["event"] == "epoch":
                assert event["epoch"] < epoch, "the worker finished the epoch it should have been killed in"
                previous_done = event["epoch"] == epoch - 1
            elif event["event"] == "progress" and previous_done:
                os.kill(proc.pid, signal.SIGKILL)  # mid-epoch: progress lines come from the training loop
                break
    finally:
        if proc.poll() is None and not previous_done:
            proc.kill()
        proc.wait(timeout=60)
        if proc.stdin is not None:
            proc.stdin.close()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, f"worker was not killed (exit code {proc.returncode})"
    return events


class _CancelAfter:
    """Feedback that cancels once ``epochs`` epochs are done (the trainer checks it per batch)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.seen = 0

    def set_progress(self, percent: float) -> None:
        pass

    def is_canceled(self) -> bool:
        return self.seen >= self.epochs

    def info(self, message: str) -> None:
        if message.startswith("epoch "):
            self.seen += 1

    def warning(self, message: str) -> None:
        raise AssertionError(f"unexpected warning: {message}")


def _assert_same_run(a: Path, a_report: Path, b: Path, b_report: Path, epochs: int = EPOCHS) -> None:
    """Same history (times aside), metrics, best epoch, optimizer state and weights, bit for bit."""
    a_def = json.loads((a / "model.json").read_text())
    b_def = json.loads((b / "model.json").read_text())
    assert len(a_def["training"]["history"]) == epochs
    assert _history(b_def["training"]["history"]) == _history(a_def["training"]["history"])
    assert b_def["validation_metrics"] == a_def["validation_metrics"]
    for key in ("best_epoch", "best_metric", "epochs_run"):
        assert b_def["training"][key] == a_def["training"][key], key
    assert json.loads((b_report / "metrics.json").read_text()) == json.loads((a_report / "metrics.json").read_text())

    a_last = torch.load(a_report / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    b_last = torch.load(b_report / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    assert a_last["epoch"] == b_last["epoch"] == epochs
    assert a_last["model"].keys() == b_last["model"].keys()
    for name, tensor in a_last["model"].items():
        assert torch.equal(tensor, b_last["model"][name]), f"weight {name} differs after resume"
    assert len(a_last["optimizer"]["state"]) == len(b_last["optimizer"]["state"]) > 0
    for sa, sb in zip(a_last["optimizer"]["state"].values(), b_last["optimizer"]["state"].values()):
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), f"optimizer {key} differs"

    from core.model_package import load_package

    wa, wb = load_package(a).model.state_dict(), load_package(b).model.state_dict()
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), "the packages' weights differ"


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_after_cancel_equals_the_uninterrupted_run(chips: Path, tmp_path: Path, num_workers: int) -> None:
    """In process: cancel after epoch 1, resume from checkpoint_last.pt, compare with a straight run.

    With DataLoader worker processes too: each worker's augmentation stream must be re-seeded the same way
    after a resume as in the straight run.
    """
    cfg = TrainConfig(**{**CONFIG.to_dict(), "epochs": 2, "ignore_classes": (), "num_workers": num_workers})
    train_model(chips, tmp_path / "a", cfg, report_dir=tmp_path / "a_training")
    first = train_model(chips, tmp_path / "b", cfg, _CancelAfter(1), report_dir=tmp_path / "b_training")
    assert first.stopped == "canceled" and first.epochs_run == 1
    last = tmp_path / "b_training" / "checkpoint_last.pt"
    resumed = train_model(chips, tmp_path / "b", TrainConfig(**{**cfg.to_dict(), "resume_from": str(last),
                                                                 "ignore_classes": ()}),
                          report_dir=tmp_path / "b_training")
    assert resumed.stopped == "completed" and resumed.epochs_run == 2
    _assert_same_run(tmp_path / "a", tmp_path / "a_training", tmp_path / "b", tmp_path / "b_training", epochs=2)


@pytest.mark.slow
def test_sigkilled_worker_resumes_to_the_uninterrupted_result(chips: Path, tmp_path: Path) -> None:
    """The real worker, SIGKILLed in epoch 2 of 3, then the same command again with ``--resume``."""
    straight = train_model(chips, tmp_path / "a", CONFIG, report_dir=tmp_path / "a_training")
    assert straight.epochs_run == EPOCHS and straight.stopped == "completed"

    report = tmp_path / "b_training"
    events = _kill_during_epoch(chips, tmp_path / "b", report, KILL_IN_EPOCH)
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == list(range(1, KILL_IN_EPOCH))
    assert not (tmp_path / "b").exists(), "a killed run must not leave a package that looks complete"
    ckpt = torch.load(report / "checkpoint_last.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == KILL_IN_EPOCH - 1

    # Resume from the worker command line: the killed command, run again with --resume.
    cmd, env = worker_command(chips, tmp_path / "b", CONFIG, report, python=sys.executable)
    run = subprocess.run([*cmd, "--resume"], stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                         timeout=600, check=False)
    events = [e for e in map(parse_line, run.stdout.splitlines()) if e is not None]
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert any(e["event"] == "info" and f"after epoch {KILL_IN_EPOCH - 1}" in e["message"] for e in events)
    assert not [e for e in events if e["event"] == "warning"], "resume with the same settings must not warn"
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == list(range(KILL_IN_EPOCH, EPOCHS + 1))
    done = next(e for e in events if e["event"] == "done")
    assert done["stopped"] == "completed" and done["epochs_run"] == EPOCHS
    _assert_same_run(tmp_path / "a", tmp_path / "a_training", tmp_path / "b", report)


def test_resume_with_other_settings_warns(chips: Path, tmp_path: Path) -> None:
    """Resuming with another seed works but says it cannot reproduce the straight run; --resume without a
    checkpoint starts fresh."""
    import argparse

    from core.train_worker import add_train_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_train_arguments(p)
    args = p.parse_args([str(chips), str(tmp_path / "m"), "--resume"])
    assert config_from_args(args).resume_from == ""
    cfg = TrainConfig(**{**CONFIG.to_dict(), "epochs": 1, "ignore_classes": ()})
    train_model(chips, tmp_path / "m", cfg)
    last = tmp_path / "m_training" / "checkpoint_last.pt"
    assert config_from_args(args).resume_from == str(last)
    warnings: list[str] = []

    class Fb(_CancelAfter):
        def warning(self, message: str) -> None:
            warnings.append(message)

    other = TrainConfig(**{**cfg.to_dict(), "seed": 12, "batch_size": 2, "resume_from": str(last),
                           "ignore_classes": ()})
    result = train_model(chips, tmp_path / "m", other, Fb(99))
    assert result.epochs_run == 1 and result.stopped == "completed"
    assert len(warnings) == 1 and "seed 11 -> 12" in warnings[0] and "batch_size 4 -> 2" in warnings[0]
