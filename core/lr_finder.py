"""Learning-rate range test (Smith 2015, fastai's ``lr_find``): pick a learning rate from the data.

The learning rate grows exponentially over a few dozen batches while the smoothed loss is recorded;
the suggestion is a tenth of the rate at the loss minimum (the steepest useful descent lies about
there). The model and optimizer are restored afterwards, so the range test leaves no trace.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch


@dataclasses.dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]
    suggestion: float


def find_lr(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Callable[[], Iterable[Any]],
            step: Callable[[Any], float], start_lr: float = 1e-6, end_lr: float = 1.0, max_steps: int = 100,
            smoothing: float = 0.9) -> LRFinderResult:
    """Run the range test. ``step(batch)`` does forward, backward and optimizer step and returns the loss."""
    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(optimizer.state_dict())
    lrs: list[float] = []
    losses: list[float] = []
    ratio = (end_lr / start_lr) ** (1.0 / max(1, max_steps - 1))
    lr, avg, best = start_lr, 0.0, math.inf
    n = 0
    try:
        while n < max_steps:
            for batch in batches():
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss = step(batch)
                n += 1
                avg = smoothing * avg + (1 - smoothing) * loss
                smooth = avg / (1 - smoothing**n)
                lrs.append(lr)
                losses.append(smooth)
                best = min(best, smooth)
                if not math.isfinite(smooth) or (n > 5 and smooth > 4 * best) or n >= max_steps:
                    raise StopIteration
                lr *= ratio
    except StopIteration:
        pass
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(opt_state)
    finite = [(loss, r) for loss, r in zip(losses, lrs) if math.isfinite(loss)]
    if not finite:
        return LRFinderResult(lrs, losses, 1e-3)
    at_min = min(finite)[1]
    suggestion = float(min(max(at_min / 10.0, 1e-5), 1e-2))
    return LRFinderResult(lrs, losses, suggestion)


def plot_lr_finder(result: LRFinderResult, path: str | Path) -> Path:
    """Save the loss-versus-learning-rate curve with the suggestion marked."""
    import matplotlib  # type: ignore[import-untyped]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-untyped]

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(result.lrs, result.losses)
    ax.axvline(result.suggestion, color="red", linestyle="--", label=f"suggested {result.suggestion:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed training loss")
    ax.set_title("Learning-rate finder")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
