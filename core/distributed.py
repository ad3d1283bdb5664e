"""Tile sharding across ``torchrun`` ranks: several GPUs or machines classify one raster into one file.

Each rank predicts every ``world_size``-th output chunk (see :mod:`core.tiling`) into a file of its
own beside the output; rank 0 then gathers the chunk windows of the other ranks into its file chunk
by chunk (bounded memory) and renames the result into place, so the output appears only when
complete, exactly as in a single-process run. No home-made cluster code: ranks, addresses and the
process group come from ``torch.distributed`` (``torchrun`` sets the environment).

Run it as ``torchrun --nproc-per-node 4 -m core.cli classify raster.tif model.zip out.tif``; the CLI
notices the ``torchrun`` environment (``WORLD_SIZE`` > 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

from .inference import ClassifyConfig, ClassifyResult, classify_pixels
from .progress import Feedback, NullFeedback


def torchrun_world() -> tuple[int, int] | None:
    """``(rank, world_size)`` when started by torchrun with more than one process, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return int(os.environ.get("RANK", "0")), world


def classify_any(config: ClassifyConfig, feedback: Feedback | None = None) -> ClassifyResult | None:
    """Single-process classification, or the sharded one under torchrun (result on rank 0 only)."""
    if torchrun_world() is None:
        return classify_pixels(config, feedback)
    return classify_distributed(config, feedback)


def _rank_path(path: Path, rank: int, world: int) -> Path:
    return path.with_name(f".{path.stem}.rank{rank}-of-{world}{path.suffix}")


def _remove_with_sidecars(path: Path) -> None:
    for p in (path, path.with_suffix(".qml"), Path(str(path) + ".aux.xml")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def leave_process_group() -> None:
    """Destroy the default process group if one is up (a process exiting with gloo alive may abort)."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def leaving_new_process_group() -> Iterator[None]:
    """Leave the default process group on exit if the block created it (a caller's group stays up)."""
    import torch.distributed as dist

    existed = dist.is_available() and dist.is_initialized()
    try:
        yield
    finally:
        if not existed:
            leave_process_group()


def classify_distributed(config: ClassifyConfig, feedback: Feedback | None = None,
                         backend: str | None = None) -> ClassifyResult | None:
    """Classify with every rank of the (possibly new) default process group; rank 0 gets the result.

    Args:
        config: as for :func:`core.inference.classify_pixels`; every rank passes the same.
        feedback: progress and messages (only rank 0 reports; cancel is checked on every rank).
        backend: process group backend when the group is not initialised yet (default: nccl with
            CUDA, gloo otherwise).
    """
    import torch
    import torch.distributed as dist

    # A process that exits with its gloo group alive aborted now and then ("terminate called without an
    # active exception", SIGABRT) after the output was complete: leave a group made here before returning.
    with leaving_new_process_group():
        if not dist.is_initialized():
            dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
        return _classify_in_group(config, feedback)


def _classify_in_group(config: ClassifyConfig, feedback: Feedback | None) -> ClassifyResult | None:
    """:func:`classify_distributed` inside an initialised process group."""
    import rasterio
    import torch
    import torch.distributed as dist
    from rasterio.windows import Window

    from .classes import write_paletted_qml
    from .inference import write_category_names
    from .outputs import atomic_output

    rank, world = dist.get_rank(), dist.get_world_size()
    device = config.device
    if torch.cuda.is_available() and device in ("auto", "cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count()}"
    fb = feedback if (feedback is not None and rank == 0) else NullFeedback()
    final_cls = Path(config.output_classified)
    final_prob = Path(config.output_probability) if config.output_probability else None
    mine = dataclasses.replace(
        config, output_classified=_rank_path(final_cls, rank, world),
        output_probability=_rank_path(final_prob, rank, world) if final_prob else None, device=device)
    error: BaseException | None = None
    result: ClassifyResult | None = None
    try:
        result = classify_pixels(mine, fb if rank == 0 else (feedback or NullFeedback()), rank=rank, world_size=world)
    except BaseException as exc:  # every rank must reach the collective below, or the others hang
        error = exc
    status: list[object] = [None] * world
    dist.all_gather_object(status, None if error is None else f"rank {rank}: {error}")
    failures = [s for s in status if s is not None]
    if failures:
        _remove_with_sidecars(mine.output_classified)
        if mine.output_probability:
            _remove_with_sidecars(mine.output_probability)
        if error is not None:
            raise error
        raise RuntimeError(f"another rank failed: {failures[0]}")
    assert result is not None
    gathered: list[object] = [None] * world
    dist.all_gather_object(gathered, result.chunk_windows)
    windows: list[list[tuple[int, int, int, int]]] = [list(w) for w in gathered]  # type: ignore[call-overload]
    if rank == 0:
        pairs = [(final_cls, mine.output_classified)]
        if final_prob and mine.output_probability:
            pairs.append((final_prob, mine.output_probability))
        for final, own in pairs:
            with atomic_output(final, config.overwrite) as tmp:
                os.replace(own, tmp)
                with rasterio.open(tmp, "r+") as dst:
                    for other in range(1, world):
                        part = _rank_path(final, other, world)
                        with rasterio.open(part) as src:
                            for r0, r1, c0, c1 in windows[other]:
                                win = Window(c0, r0, c1 - c0, r1 - r0)
                                dst.write(src.read(window=win), window=win)
            _remove_with_sidecars(own)
        write_paletted_qml(final_cls, result.classes)
        write_category_names(final_cls, result.classes)
        result.output_classified = final_cls
        result.output_probability = final_prob
    dist.barrier()
    if rank != 0:
        _remove_with_sidecars(mine.output_classified)
        if mine.output_probability:
            _remove_with_sidecars(mine.output_probability)
        return None
    return result

