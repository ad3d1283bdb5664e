"""CUDA out-of-memory backoff, proven on the CPU by injecting the error into the batch step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.inference import BatchPredictor, ClassifyConfig, classify_pixels, is_out_of_memory
from core.model_package import load_package
from core.progress import NullFeedback
from tests.core.test_inference import make_package, read, write_raster


class Collect(NullFeedback):
    """Feedback that keeps the warnings."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def oom_above(limit: int, model: torch.nn.Module, seen: list[int]):  # type: ignore[no-untyped-def]
    """A batch step that fails like CUDA does when the batch holds more than ``limit`` tiles."""

    def step(x: torch.Tensor) -> torch.Tensor:
        seen.append(int(x.shape[0]))
        if x.shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return model(x)

    return step


def test_oom_detection() -> None:
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_predictor_halves_batch_and_retries_without_losing_tiles(tmp_path: Path) -> None:
    pkg = load_package(make_package(tmp_path / "p", "test_onehot", 1, [0, 1, 2]))
    seen: list[int] = []
    fb = Collect()
    pred = BatchPredictor(pkg.model, torch.device("cpu"), batch_size=8, num_outputs=3,
                          step=oom_above(2, pkg.model, seen), feedback=fb)
    tiles = np.random.default_rng(0).integers(0, 3, (11, 1, 6, 6)).astype(np.float32)
    probs = pred.predict(tiles)
    assert pred.batch_size == 2 and pred.halvings == 2
    assert seen[:3] == [8, 4, 2] and all(s <= 2 for s in seen[3:])
    np.testing.assert_array_equal(probs.argmax(axis=1), tiles[:, 0])
    assert len(fb.warnings) == 2 and "batch size 8; retrying with 4" in fb.warnings[0]


def test_oom_with_single_tile_is_a_clear_memory_error(tmp_path: Path) -> None:
    pkg = load_package(make_package(tmp_path / "p", "test_onehot", 1, [0, 1]))
    pred = BatchPredictor(pkg.model, torch.device("cpu"), 4, 2, step=oom_above(0, pkg.model, []))
    with pytest.raises(MemoryError, match="single tile"):
        pred.predict(np.zeros((3, 1, 4, 4), np.float32))


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    pkg = load_package(make_package(tmp_path / "p", "test_onehot", 1, [0, 1]))
    calls: list[int] = []

    def broken(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        BatchPredictor(pkg.model, torch.device("cpu"), 4, 2, step=broken).predict(np.zeros((3, 1, 4, 4), np.float32))
    assert calls == [1]


def test_classify_survives_oom_with_identical_output(tmp_path: Path) -> None:
    pkg_path = make_package(tmp_path / "p", "test_onehot", 1, [0, 1, 2, 3])
    classes = np.random.default_rng(2).integers(0, 4, (40, 50)).astype(np.uint8)
    src = write_raster(tmp_path / "in.tif", classes)
    seen: list[int] = []
    fb = Collect()
    result = classify_pixels(ClassifyConfig(src, pkg_path, tmp_path / "o.tif", tile_size_px=10, padding_px=2,
                                            batch_size=16, device="cpu"), fb,
                             step=oom_above(3, load_package(pkg_path).model, seen))
    np.testing.assert_array_equal(read(tmp_path / "o.tif")[0], classes)
    assert result.batch_size == 2 and max(seen[1:]) <= 8
    assert any("reduced to 2" in w for w in result.warnings)
