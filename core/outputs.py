"""Write outputs so that a failure or a cancel never leaves something that looks complete.

Every file or folder is written under a temporary name beside its final place and renamed
(atomic on one file system) only when complete; on any exception the temporary is removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError, RoadLandcoverError

_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# GDAL and SQLite report a full disk in words, without an errno ("Write failed", "disk I/O error").
_DISK_FULL_WORDS = ("no space left", "disk full", "disk quota", "file too large", "disk i/o error")
_LOW_SPACE_BYTES = 16 * 1024 * 1024


def prepare_output(path: str | Path, overwrite: bool = True) -> Path:
    """Check that ``path`` can be written; create its parent folder. Returns it as a Path."""
    final = Path(path).expanduser()
    if final.exists() and not overwrite:
        raise OutputError(f"output {final} already exists; choose another name or allow overwriting")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {final.parent} for output {final.name}: {exc}") from exc
    if not os.access(final.parent, os.W_OK):
        raise OutputError(f"the folder {final.parent} is not writable; choose an output in a writable folder")
    return final


def _temp_sibling(final: Path) -> Path:
    # Keep the suffix so drivers that pick the format from the extension still work.
    return final.with_name(f".{final.stem}.partial-{uuid.uuid4().hex[:8]}{final.suffix}")


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether a write failed because the disk (or quota) is full: by errno, by GDAL's/SQLite's words,
    or, for the I/O errors that say neither, by the space left in ``folder`` at the time of the failure."""
    if isinstance(exc, RoadLandcoverError) or not isinstance(exc, Exception):
        return False
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        return True
    if any(w in str(exc).lower() for w in _DISK_FULL_WORDS):
        return True
    if isinstance(exc, (OSError, RuntimeError)):
        try:
            return shutil.disk_usage(folder).free < _LOW_SPACE_BYTES
        except OSError:
            return False
    return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_output(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path for a file or folder; rename it to ``path`` when the block succeeds.

    A folder output is created by the caller (``tmp.mkdir()``). An existing output is replaced only
    after the new one is complete, so a failed run keeps the previous result.
    """
    final = prepare_output(path, overwrite)
    tmp = _temp_sibling(final)
    try:
        yield tmp
    except BaseException as exc:
        full = _disk_full(exc, final.parent)
        _remove(tmp)
        if full:
            raise OutputError(
                f"writing {final} failed because the disk is full ({exc}); free some space or choose an output "
                "on another disk, then run again (nothing was written under that name)"
            ) from exc
        raise
    if not tmp.exists():
        raise OutputError(f"internal error: nothing was written for {final}")
    try:
        if final.exists() and (final.is_dir() or tmp.is_dir()):
            # A folder cannot replace a folder in one rename: move the old one aside first.
            old = _temp_sibling(final)
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)  # one atomic step: a kill leaves the old file or the new one
    except OSError as exc:
        _remove(tmp)
        raise OutputError(f"could not move the finished output into place at {final}: {exc}") from exc


@contextlib.contextmanager
def atomic_outputs(*paths: str | Path, overwrite: bool = True) -> Iterator[tuple[Path, ...]]:
    """Temporary paths for outputs that belong together (lines + nodes, a report and its tables).

    None of them is renamed into place unless the whole block succeeds, so a failure never leaves
    one half of a set that reads as a finished result.
    """
    with contextlib.ExitStack() as stack:
        yield tuple(stack.enter_context(atomic_output(p, overwrite)) for p in paths)
