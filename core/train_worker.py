"""The training worker: a separate process that trains and streams machine-readable progress lines.

Inside QGIS, training must not run in the QGIS process (``sys.executable`` is the QGIS binary, torch
DataLoader workers or a CUDA crash would take QGIS down). The Processing algorithm and the GUI task
start ``python -m core.train_worker FOLDER OUTPUT [options]`` with an interpreter that has torch
(:func:`find_training_python`) and read its stdout: every line starting with :data:`TAG` is a JSON
event (``start``, ``progress``, ``info``, ``warning``, ``lr_finder``, ``epoch``, ``oom``, ``done``,
``error``); :func:`parse_line` decodes one. Cancel is a ``cancel`` line on the worker's stdin (works
on every OS) or SIGTERM; the worker then stops after the current batch, writes the package from the
best checkpoint and exits with code 130.

The same entry point is the headless CLI (``road-landcover train``) and runs under ``torchrun``
for multi-GPU DistributedDataParallel training; only rank 0 prints events.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .errors import CanceledError, ConfigError, RoadLandcoverError
from .progress import Feedback, NullFeedback, report_epoch

TAG = "@RLC "
EXIT_OK, EXIT_CRASH, EXIT_ERROR, EXIT_CANCELED = 0, 1, 2, 130


class WorkerError(RoadLandcoverError, RuntimeError):
    """The training worker failed (its message, or how it crashed with the end of its log)."""


# --------------------------------------------------------------------------- arguments (shared with the CLI)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The ``road-landcover train`` / ``python -m core.train_worker`` arguments."""
    p.add_argument("folder", type=Path, help="training folder written by the export step (has dataset.json)")
    p.add_argument("output", type=Path, help="model package to write: a folder, or a .zip")
    p.add_argument("--report-dir", type=Path, default=None,
                   help="checkpoints, history.csv, curves, metrics (default: <output>_training beside the package)")
    p.add_argument("--model", default="unet", help="unet, linknet or multitask_road (default unet)")
    p.add_argument("--encoder", default="resnet34", choices=("resnet18", "resnet34", "resnet50"),
                   help="ResNet encoder (default resnet34)")
    p.add_argument("--base-width", type=int, default=64, help="encoder width; 64 = standard ResNet (default)")
    p.add_argument("--pretrained", default="", help="'imagenet' (needs internet) or a torchvision ResNet .pth file")
    p.add_argument("--epochs", type=int, default=20, help="maximum number of epochs (default 20)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="chips per step (default 8); halved automatically on CUDA out-of-memory")
    p.add_argument("--learning-rate", type=float, default=0.0, help="peak learning rate; 0 = run the finder (default)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    p.add_argument("--val-percent", type=float, default=20.0,
                   help="share of chips held out for validation, in percent (default 20)")
    p.add_argument("--val-split", default="blocked", choices=("blocked", "random"),
                   help="blocked (default): whole map blocks held out, overlapping training chips dropped; "
                        "random: chips at random")
    p.add_argument("--ignore-classes", default="", help="comma-separated class values to ignore (0 always is)")
    p.add_argument("--class-weights", default="none", choices=("none", "balanced"),
                   help="balanced: inverse class frequency (capped at 10x) for ce/focal (default none)")
    p.add_argument("--loss", default="auto", help="auto, ce, dice, focal, ce_dice, soft_iou")
    p.add_argument("--monitor-metric", dest="monitor", default="auto", choices=("auto", "valid_loss", "miou", "road_iou", "accuracy"),
                   help="metric for the best checkpoint and early stopping (auto: miou, road_iou for roads)")
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (0 = off)")
    p.add_argument("--resume-from", default="", help="checkpoint_last.pt to resume, or a model package to fine-tune")
    p.add_argument("--resume", action="store_true",
                   help="continue from the report folder's checkpoint_last.pt when there is one (after a crash, a "
                        "kill or a cancel; same seed and settings give the same model as an uninterrupted run), "
                        "else start fresh: the same command can simply be run again")
    p.add_argument("--no-mixed-precision", action="store_true", help="train in float32 on CUDA too")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu")
    p.add_argument("--seed", type=int, default=42, help="seed of split, initialisation, augmentation (default 42)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument("--no-augment", action="store_true",
                   help="switch off flips/quarter turns and radiometric jitter")
    p.add_argument("--progress-json", action="store_true",
                   help=f"print machine-readable '{TAG.strip()} {{json}}' progress lines on stdout and read "
                        "'cancel' from stdin (used by QGIS)")


def config_from_args(args: argparse.Namespace) -> Any:
    from .training import TrainConfig, default_report_dir

    try:
        ignore = tuple(int(v) for v in str(args.ignore_classes).replace(" ", "").split(",") if v)
    except ValueError as exc:
        raise ConfigError(f"ignore classes must be comma-separated integers, got {args.ignore_classes!r}") from exc
    resume_from = str(args.resume_from or "")
    if getattr(args, "resume", False) and not resume_from:
        last = Path(args.report_dir or default_report_dir(args.output)) / "checkpoint_last.pt"
        resume_from = str(last) if last.is_file() else ""
    return TrainConfig(
        model=args.model, encoder=args.encoder, base_width=args.base_width, pretrained=args.pretrained,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        weight_decay=args.weight_decay, val_percent=args.val_percent, val_split=args.val_split,
        ignore_classes=ignore, class_weights=args.class_weights, loss=args.loss, monitor=args.monitor,
        patience=args.patience, resume_from=resume_from, mixed_precision=not args.no_mixed_precision,
        device=args.device, seed=args.seed, num_workers=args.num_workers, augment=not args.no_augment,
    )


def config_to_args(config: Any) -> list[str]:
    """Command-line arguments that reproduce a TrainConfig (for starting the worker)."""
    c = config
    args = ["--model", c.model, "--encoder", c.encoder, "--base-width", str(c.base_width), "--epochs", str(c.epochs),
            "--batch-size", str(c.batch_size), "--learning-rate", repr(float(c.learning_rate)),
            "--weight-decay", repr(float(c.weight_decay)), "--val-percent", repr(float(c.val_percent)),
            "--val-split", c.val_split, "--class-weights", c.class_weights, "--loss", c.loss,
            "--monitor-metric", c.monitor, "--patience", str(c.patience), "--device", c.device, "--seed", str(c.seed),
            "--num-workers", str(c.num_workers)]
    if c.pretrained:
        args += ["--pretrained", c.pretrained]
    if c.ignore_classes:
        args += ["--ignore-classes", ",".join(str(v) for v in c.ignore_classes)]
    if c.resume_from:
        args += ["--resume-from", c.resume_from]
    if not c.mixed_precision:
        args.append("--no-mixed-precision")
    if not c.augment:
        args.append("--no-augment")
    return args


# --------------------------------------------------------------------------- worker side


class _WorkerFeedback:
    """Feedback that prints events and is canceled by a stdin 'cancel' line or SIGTERM."""

    def __init__(self, stream: TextIO, rank0: bool) -> None:
        self.stream = stream
        self.rank0 = rank0
        self.canceled = threading.Event()
        self._last = 0.0
        self._last_percent = -1.0

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        if self.rank0:
            line = TAG + json.dumps({"event": kind, **data}, default=str)
            print(line, file=self.stream, flush=True)

    def set_progress(self, percent: float) -> None:
        # Every half second, and on every whole percent, so short epochs still show (and can be told) apart.
        now = time.monotonic()
        if now - self._last >= 0.5 or percent >= 100 or percent - self._last_percent >= 1.0:
            self._last, self._last_percent = now, float(percent)
            self.emit("progress", {"percent": round(float(percent), 2)})

    def is_canceled(self) -> bool:
        return self.canceled.is_set()

    def info(self, message: str) -> None:
        pass  # the trainer emits info events itself

    def warning(self, message: str) -> None:
        self.emit("warning", {"message": message})


def _watch_stdin(flag: threading.Event) -> None:
    try:
        for line in sys.stdin:
            if line.strip().lower() == "cancel":
                flag.set()
                return
    except (OSError, ValueError):
        return


def run_from_args(args: argparse.Namespace, feedback: Feedback | None = None) -> int:
    """Run training from parsed arguments (the CLI handler and the worker's main)."""
    from .training import train_model

    config = config_from_args(args)
    if not args.progress_json:
        fb = feedback or NullFeedback()
        result = train_model(args.folder, args.output, config, fb, args.report_dir)
        print(json.dumps(result.to_dict(), indent=2))
        return EXIT_CANCELED if result.stopped == "canceled" else EXIT_OK
    rank0 = int(os.environ.get("RANK", "0")) == 0
    wfb = _WorkerFeedback(sys.stdout, rank0)
    signal.signal(signal.SIGTERM, lambda *_: wfb.canceled.set())
    threading.Thread(target=_watch_stdin, args=(wfb.canceled,), daemon=True).start()
    try:
        result = train_model(args.folder, args.output, config, wfb, args.report_dir, events=wfb.emit)
    except CanceledError as exc:
        wfb.emit("canceled", {"message": str(exc)})
        return EXIT_CANCELED
    except RoadLandcoverError as exc:
        wfb.emit("error", {"type": type(exc).__name__, "message": str(exc)})
        return EXIT_ERROR
    except Exception as exc:  # a bug or a crash in torch: report it with its traceback, never silently
        wfb.emit("error", {"type": type(exc).__name__, "message": f"{type(exc).__name__}: {exc}",
                           "traceback": traceback.format_exc()})
        return EXIT_CRASH
    return EXIT_CANCELED if result.stopped == "canceled" else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train_worker", description="Road & Land Cover training worker")
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except RoadLandcoverError as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        from .distributed import leave_process_group

        leave_process_group()  # torchrun (DDP) workers: leave the gloo/nccl group before exiting


# --------------------------------------------------------------------------- client side


def parse_line(line: str) -> dict[str, Any] | None:
    """Decode one worker stdout line: the event dict, or None for ordinary output."""
    if not line.startswith(TAG):
        return None
    try:
        event = json.loads(line[len(TAG):])
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def find_training_python() -> str | None:
    """An interpreter that can import torch: $RLC_TRAINING_PYTHON, torch's virtual environment, or this Python.

    Returns None when none is found (inside QGIS the caller then uses QGIS's own Python, with this
    process's ``sys.path`` passed on so it finds the same packages).
    """
    env = os.environ.get("RLC_TRAINING_PYTHON")
    if env:
        return env
    # torch's own virtual environment first: inside QGIS, sys.executable is whatever "python3" the
    # embedding found on PATH (a pyenv shim, say), not necessarily one that has torch.
    try:
        import importlib.util

        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        for parent in Path(spec.origin).resolve().parents:
            if (parent / "pyvenv.cfg").is_file():
                for exe in (parent / "bin" / "python", parent / "Scripts" / "python.exe"):
                    if exe.exists():
                        return str(exe)
    if Path(sys.executable).name.lower().startswith("python"):
        return sys.executable
    return None


def worker_command(folder: str | Path, output: str | Path, config: Any, report_dir: str | Path | None = None,
                   python: str | None = None, launcher: Sequence[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start the worker (``launcher`` e.g. ``["torchrun", "--nproc-per-node", "2"]``)."""
    module = (__spec__.name if __spec__ is not None else __name__)
    if module == "__main__":
        module = "core.train_worker"
    top = sys.modules[module.split(".")[0]]
    root = str(Path(str(top.__file__)).resolve().parent.parent)
    exe = python or find_training_python() or sys.executable
    start = list(launcher) if launcher else [exe]
    cmd = [*start, "-m", module, str(folder), str(output), *config_to_args(config), "--progress-json"]
    if report_dir is not None:
        cmd += ["--report-dir", str(report_dir)]
    paths = [root] + [p for p in sys.path if p and Path(p).is_dir() and p != root]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}
    return cmd, env


def run_worker(folder: str | Path, output: str | Path, config: Any, feedback: Feedback | None = None,
               report_dir: str | Path | None = None, python: str | None = None,
               launcher: Sequence[str] | None = None, cancel_grace_s: float = 120.0) -> dict[str, Any]:
    """Train in a worker process, forwarding its progress to ``feedback``; returns the ``done`` event.

    Cancel (``feedback.is_canceled()``) asks the worker to stop; it saves the best checkpoint as the
    package (the returned dict then has ``stopped == "canceled"``) or, before the first epoch ends,
    :class:`CanceledError` is raised. A worker that fails raises its error type when it is one of
    core's, else :class:`WorkerError` with the end of its log.
    """
    fb = feedback or NullFeedback()
    cmd, env = worker_command(folder, output, config, report_dir, python, launcher)
    fb.info("starting training worker: " + " ".join(cmd[:4]) + " ...")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, bufsize=1)
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    tail: list[str] = []
    done: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    cancel_sent: float | None = None
    eof = False
    while not eof:
        if cancel_sent is None and fb.is_canceled():
            cancel_sent = time.monotonic()
            fb.info("cancel requested: the worker stops after the current batch and keeps the best checkpoint")
            try:
                assert proc.stdin is not None
                proc.stdin.write("cancel\n")
                proc.stdin.flush()
            except OSError:
                proc.terminate()
        if cancel_sent is not None and time.monotonic() - cancel_sent > cancel_grace_s and proc.poll() is None:
            proc.kill()
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            eof = True
            break
        event = parse_line(line)
        if event is None:
            tail = [*tail, line.rstrip()][-40:]
            continue
        kind = event["event"]
        if kind == "progress":
            fb.set_progress(float(event["percent"]))
        elif kind == "info":
            fb.info(str(event.get("message", "")))
        elif kind == "warning":
            fb.warning(str(event.get("message", "")))
        elif kind == "epoch":
            report_epoch(fb, {k: v for k, v in event.items() if k != "event"})
        elif kind == "done":
            done = event
        elif kind == "error":
            error = event
    code = proc.wait()
    for stream in (proc.stdin, proc.stdout):  # both pipes, or Python warns about an unclosed file
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    if done is not None:
        return done
    if error is not None:
        from . import errors

        cls = getattr(errors, str(error.get("type")), None)
        message = str(error.get("message"))
        if isinstance(cls, type) and issubclass(cls, RoadLandcoverError):
            raise cls(message)
        raise WorkerError(f"the training worker failed: {message}\n{error.get('traceback', '')}")
    if code == EXIT_CANCELED or cancel_sent is not None:
        raise CanceledError("training canceled before the first epoch finished; no model was saved")
    raise WorkerError(
        f"the training worker exited with code {code} without a result (crashed or killed, e.g. out of memory); "
        "last output:\n" + "\n".join(tail[-20:])
    )


if __name__ == "__main__":
    sys.exit(main())
