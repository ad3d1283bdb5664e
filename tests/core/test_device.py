"""Explicit, reported device choice."""

from __future__ import annotations

import pytest
import torch

from core.device import select_device
from core.errors import ConfigError


def test_cpu_and_auto() -> None:
    assert select_device("cpu").device.type == "cpu"
    auto = select_device("auto")
    if not torch.cuda.is_available():
        assert auto.device.type in ("cpu", "mps") and "auto" in auto.description
    else:
        assert auto.device.type == "cuda"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_without_cuda_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="CUDA is not available.*use device auto or cpu"):
        select_device("cuda")


def test_unknown_device_lists_choices() -> None:
    with pytest.raises(ConfigError, match="choose one of auto, cuda, mps, cpu"):
        select_device("tpu")
