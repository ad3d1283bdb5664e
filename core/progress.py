"""The small progress/cancel protocol that core depends on.

Core never sees a ``QgsProcessingFeedback``; the Processing provider adapts it to
:class:`Feedback`, the CLI uses :class:`ConsoleFeedback`, and the training worker prints
machine-readable lines. Long loops call :func:`check_canceled` once per tile, batch or epoch.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO, runtime_checkable

from .errors import CanceledError


@runtime_checkable
class Feedback(Protocol):
    """What core needs from whoever runs it.

    Training also calls ``epoch(row)`` on a feedback that has such a method (optional, so plain feedbacks
    stay valid): ``row`` is the per-epoch table row as numbers (``epoch``, ``train_loss``, ``valid_loss``,
    ``accuracy``, ``miou``/``road_iou``, ``seconds``, ``lr``, ``batch_size``, ``best``), for tables and
    live charts that should not parse the log line.
    """

    def set_progress(self, percent: float) -> None:
        """Report progress in percent (0-100)."""

    def is_canceled(self) -> bool:
        """Whether the user asked to stop."""

    def info(self, message: str) -> None:
        """Report a line of information for the user."""

    def warning(self, message: str) -> None:
        """Report something the user should look at, without stopping."""


class NullFeedback:
    """Feedback that ignores everything and is never canceled (library use, tests)."""

    def set_progress(self, percent: float) -> None:
        pass

    def is_canceled(self) -> bool:
        return False

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass


class ConsoleFeedback:
    """Feedback for the command line: messages to stderr, progress at most every ``interval_s``."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 2.0, quiet: bool = False) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._interval_s = interval_s
        self._last = 0.0
        self._quiet = quiet

    def set_progress(self, percent: float) -> None:
        now = time.monotonic()
        if self._quiet or (now - self._last < self._interval_s and percent < 100.0):
            return
        self._last = now
        print(f"progress: {percent:5.1f}%", file=self._stream, flush=True)

    def is_canceled(self) -> bool:
        return False

    def info(self, message: str) -> None:
        if not self._quiet:
            print(message, file=self._stream, flush=True)

    def warning(self, message: str) -> None:
        print(f"warning: {message}", file=self._stream, flush=True)


class SubFeedback:
    """Maps 0-100 % of a sub-step onto ``[start, end]`` % of the parent, sharing cancel and messages."""

    def __init__(self, parent: Feedback, start: float, end: float) -> None:
        self._parent = parent
        self._start = start
        self._span = end - start

    def set_progress(self, percent: float) -> None:
        self._parent.set_progress(self._start + self._span * max(0.0, min(100.0, percent)) / 100.0)

    def is_canceled(self) -> bool:
        return self._parent.is_canceled()

    def info(self, message: str) -> None:
        self._parent.info(message)

    def warning(self, message: str) -> None:
        self._parent.warning(message)


def check_canceled(feedback: Feedback, what: str = "") -> None:
    """Raise :class:`CanceledError` when the user asked to stop."""
    if feedback.is_canceled():
        raise CanceledError(f"canceled{': ' + what if what else ''}")


def report_epoch(feedback: Any, row: dict[str, Any]) -> None:
    """Hand a per-epoch row to ``feedback.epoch`` when the feedback has one (see :class:`Feedback`)."""
    on_epoch = getattr(feedback, "epoch", None)
    if callable(on_epoch):
        on_epoch(dict(row))
