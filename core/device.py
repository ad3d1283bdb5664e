"""Explicit, reported device choice: ``auto`` picks CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


@dataclasses.dataclass(frozen=True)
class DeviceChoice:
    """The torch device to use and a sentence saying why, for the log and the report."""

    device: torch.device
    description: str


def select_device(requested: str = "auto") -> DeviceChoice:
    """Resolve ``requested`` (auto/cuda/cuda:N/mps/cpu) to an available torch device."""
    import torch

    req = requested.strip().lower()
    if req not in DEVICE_CHOICES and not req.startswith("cuda:"):
        raise ConfigError(f"unknown device {requested!r}; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
    cuda_ok = torch.cuda.is_available()
    mps_ok = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if req == "auto":
        if cuda_ok:
            req = "cuda"
        elif mps_ok:
            req = "mps"
        else:
            return DeviceChoice(torch.device("cpu"), "cpu (auto: no CUDA or MPS device is available)")
    if req.startswith("cuda"):
        if not cuda_ok:
            raise ConfigError(
                f"device {requested!r} was requested but CUDA is not available to torch {torch.__version__} "
                "(no NVIDIA GPU, driver, or a CPU-only torch build); use device auto or cpu, or install a CUDA build of torch"
            )
        dev = torch.device(req)
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {requested!r}: only {torch.cuda.device_count()} CUDA device(s) are present")
        name = torch.cuda.get_device_name(index)
        total = torch.cuda.get_device_properties(index).total_memory / 2**30
        return DeviceChoice(dev, f"cuda:{index} ({name}, {total:.0f} GiB)")
    if req == "mps":
        if not mps_ok:
            raise ConfigError("device 'mps' was requested but Apple MPS is not available; use auto or cpu")
        return DeviceChoice(torch.device("mps"), "mps (Apple GPU)")
    return DeviceChoice(torch.device("cpu"), f"cpu ({torch.get_num_threads()} threads)")
