"""glibc malloc settings for the export's worker processes: keep freed chip buffers instead of unmapping them.

Each chip allocates and frees the same few buffers (its pixels, 256 KB for 4 bands of 256 px, its label,
masks, the label's DEFLATE stream). glibc's defaults hand such buffers back to the kernel: blocks over the
``mmap`` threshold are unmapped on free, and the top of the heap is trimmed once 128 KB-2x the threshold are
free. The next chip then faults every page in again; on this project's VM a new page costs 3-10 us, not the
0.1-0.3 us of bare metal, and an export took 56-68 minor faults per chip. With both thresholds fixed above the
chips' buffers they stay mapped and are reused (28-33 faults per chip, most of them the copy-on-write of the
fork). Thresholds of 2 and 8 MB did as well as 16 and 64 MB for 256 px chips of 4 bands, so they follow the
chip size: the process keeps at most a few chips' worth of free memory.

Only the export's own worker processes and its parent while it runs workers use this (never QGIS, which
never forks workers); the parent's settings are put back afterwards and the freed memory returned.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from collections.abc import Iterator

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# What glibc starts with (its dynamic adjustment is switched off by any mallopt of these two).
_DEFAULT_BYTES = 128 * 1024
_MAX_MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for the dynamic threshold (64-bit)


def thresholds(buffer_bytes: int) -> tuple[int, int]:
    """(mmap, trim) thresholds for chips whose largest buffer is ``buffer_bytes``: buffers up to twice that
    come from the heap (at least 2 MB), and up to 4 times the mmap threshold of free heap is kept."""
    mmap = min(_MAX_MMAP_THRESHOLD, max(2 << 20, 2 * buffer_bytes))
    return mmap, 4 * mmap


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    """glibc, or None. Opened by its soname: ``ctypes.util.find_library`` runs ``ldconfig -p`` in a
    subprocess (6 ms per export, forking this large process)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 -- musl and others may lack it
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory(buffer_bytes: int) -> bool:
    """Tune this process's malloc for buffers of up to ``buffer_bytes`` (see :func:`thresholds`); False where
    it is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    mmap, trim = thresholds(buffer_bytes)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim))


@contextlib.contextmanager
def freed_memory_kept(buffer_bytes: int) -> Iterator[None]:
    """:func:`keep_freed_memory` while the block runs (forked processes inherit it); then glibc's initial
    thresholds and the freed memory go back (the thresholds no longer adapt on their own: glibc has no call
    that turns that back on)."""
    tuned = keep_freed_memory(buffer_bytes)
    try:
        yield
    finally:
        libc = _libc() if tuned else None
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_BYTES)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_BYTES)
            libc.malloc_trim(0)
