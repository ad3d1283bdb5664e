"""Writing large new files past the page cache (``O_DIRECT``), where the file system and device keep up.

An export creates thousands of 64 KB-4 MB chip files that nothing reads back during the export. Written
normally, every byte is first copied into freshly allocated page-cache pages, and the kernel writes them
back later anyway. On virtual machines whose host backs guest memory lazily, those new pages are the
dominant cost: a 256 KB chip cost 0.8-1.0 ms of CPU written normally and 0.14-0.20 ms with ``O_DIRECT``
here (the device copies straight from our buffer; the I/O thread waits without using the CPU).

Direct writes are only used where they are safe and not slower:

- Linux (``os.O_DIRECT``), on a local block file system (ext2/3/4, xfs, btrfs, f2fs): network shares turn
  every direct write into a synchronous round trip, tmpfs and FUSE may refuse it;
- while the device keeps up: a writer whose direct writes average more than :data:`SLOW_MS_PER_MB` (a disk
  without a write cache; 2.8 ms per MB on this project's virtual machine) goes back to normal writes for good;
- a file system that refuses (``EINVAL``, ``EOPNOTSUPP``) on open or write: the file is written normally and
  so is everything after it.

``RLC_DIRECT_IO=off`` turns it off, ``on`` skips the file-system check (still falls back on refusal).
The files are byte-identical either way: the whole 4 KB blocks are written from a page-aligned buffer, then
``O_DIRECT`` is cleared on the descriptor and the last partial block is written normally. (Padding to a whole
block and truncating the file instead made ext4 zero the block's tail: 0.05 ms more per file.)
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
import time
from pathlib import Path
from typing import Any

ENV = "RLC_DIRECT_IO"
LOCAL_FILE_SYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs"})
ALIGN = 4096  # covers 512-byte and 4 KB logical blocks
MIN_BYTES = 64 * 1024  # smaller files (label chips) gain nothing and would wait on the device
SLOW_MS_PER_MB = 8.0  # 125 MB/s (a disk without a write cache): better left to the page cache's write-back
_WARMUP_FILES = 4  # not timed: the first writes fault in the buffer and meet a cold device queue
_PROBE_FILES = 32  # the write speed is judged on this many direct writes after the warm-up
_REFUSED = (errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP))


def file_system_type(path: str | Path, mountinfo: str | None = None) -> str | None:
    """The type of the file system holding ``path`` (``ext4``, ``nfs``, ...), from /proc/self/mountinfo.

    ``mountinfo`` is that file's text (for tests); None when it cannot be read (not Linux).
    """
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
                mountinfo = fh.read()
        except OSError:
            return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if not sep or len(fields) < 5 or not rest:
            continue
        point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # later mounts on the same point hide earlier ones
            best, best_type = point, rest[0]
    return best_type


def direct_io_wanted(folder: str | Path) -> bool:
    """Whether new large files in ``folder`` should be written with ``O_DIRECT`` (see the module doc)."""
    setting = os.environ.get(ENV, "auto").strip().lower()
    if setting in ("0", "off", "no", "false") or not hasattr(os, "O_DIRECT"):
        return False
    if setting in ("1", "on", "yes", "true"):
        return True
    return file_system_type(folder) in LOCAL_FILE_SYSTEMS


def _nbytes(parts: list[Any]) -> int:
    """The size of a file made of ``parts`` (bytes-like)."""
    return sum(memoryview(p).nbytes for p in parts)


def write_buffered(path: str | Path, parts: list[Any]) -> None:
    """Write ``parts`` as one new file with one ``writev``: no Python file object, no buffering copy.

    The plain descriptor saves the ``fstat``/``lseek`` and buffer handling of ``open()`` (about 0.1 ms per
    file); a short write (full disk, signals) is finished or raised like ``write`` would.
    """
    total = _nbytes(parts)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o666)
    try:
        written = os.writev(fd, parts) if hasattr(os, "writev") else 0  # Windows has no writev
        if written < total:
            rest = memoryview(b"".join(parts))[written:]
            while len(rest):
                rest = rest[os.write(fd, rest):]
    finally:
        os.close(fd)


class FileWriter:
    """Writes whole new files on a few I/O threads, large ones with ``O_DIRECT`` while that works and keeps up.

    The caller (the export's main thread) only prepares the bytes: creating files and waiting for the
    device happen on ``threads`` I/O threads, which release the GIL while they do, and several direct writes
    in flight keep the device's queue busy. :meth:`write` and :meth:`run` therefore return before the file
    exists: :meth:`flush` waits for every file and raises the first error; :meth:`close` (cancel, errors)
    waits for the writes already started and drops the queued ones. At most ``max_pending`` jobs (files, or
    the files batched between :meth:`begin` and :meth:`end`) wait: bounded memory, each holds its chips'
    pixels, which must not change until written. ``threads=0`` writes on the caller's thread.
    """

    def __init__(self, direct: bool, threads: int = 2, max_pending: int = 8) -> None:
        from collections import deque
        from concurrent.futures import Future

        self.direct = direct and hasattr(os, "O_DIRECT")
        self.direct_files = 0
        self.fallback_reason: str | None = None
        self.threads = threads
        self.max_pending = max_pending
        self._pool: Any = None
        self._pending: deque[Future[None]] = deque()
        self._batch: list[tuple[Any, tuple[Any, ...]]] | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._mb = 0.0  # device speed: MB written over the time at least one probed write was in flight
        self._busy = 0.0
        self._inflight = 0
        self._busy_since = 0.0

    def write(self, path: str | Path, parts: list[Any]) -> None:
        """Queue the new file ``path`` made of ``parts`` (bytes-like, in order)."""
        self.run(self._write_one, path, parts, _nbytes(parts))

    def write_made(self, path: str | Path, make: Any, *args: Any) -> None:
        """Queue the new file ``path`` made of ``make(*args)``'s parts, computed on the I/O thread.

        For bytes whose making releases the GIL (a label chip's DEFLATE stream): off the caller's thread.
        ``args`` must not change until the file is written.
        """
        self.run(self._make_and_write, path, make, args)

    def _make_and_write(self, path: str | Path, make: Any, args: tuple[Any, ...]) -> None:
        parts = make(*args)
        self._write_one(path, parts, _nbytes(parts))

    def run(self, job: Any, *args: Any) -> None:
        """Queue ``job(*args)``, a write of another kind (a chip GDAL itself writes), in the same bounds."""
        if self.threads <= 0:
            job(*args)
        elif self._batch is not None:
            self._batch.append((job, args))
        else:
            self._submit(job, *args)

    def begin(self) -> bool:
        """Start collecting queued files into one job; False when a batch is already open (or no threads).

        Every job costs thread wake-ups and GIL hand-offs, which this project's virtual machine charges
        dearly: the export batches 4 chips' files per job (see ``core.chips._ChipSink``).
        """
        if self.threads <= 0 or self._batch is not None:
            return False
        self._batch = []
        return True

    def end(self) -> None:
        """Queue the files collected since :meth:`begin` as one job."""
        batch, self._batch = self._batch, None
        if batch is None:
            return
        if len(batch) == 1:
            self._submit(batch[0][0], *batch[0][1])
        elif batch:
            self._submit(_run_all, batch)

    def _submit(self, job: Any, *args: Any) -> None:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="chip-io")
        while len(self._pending) >= self.max_pending:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(job, *args))

    def flush(self) -> None:
        """Wait until every file is written, an open batch's included (raising the first error)."""
        self.end()
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        self._batch = None  # an open batch's files are dropped like the queued ones
        for fut in self._pending:
            fut.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _write_one(self, path: str | Path, parts: list[Any], total: int) -> None:
        if not self.direct or total < MIN_BYTES:  # (direct may have been turned off by another thread)
            write_buffered(path, parts)
            return
        try:
            self._write_direct(path, parts, total)
        except OSError as exc:
            if exc.errno not in _REFUSED:
                raise
            self._stop(f"the file system refused O_DIRECT ({exc.strerror})")
            write_buffered(path, parts)  # O_TRUNC: whatever the refused attempt left is replaced

    def _buffer(self, size: int) -> mmap.mmap:
        buf: mmap.mmap | None = getattr(self._local, "buf", None)
        if buf is None or len(buf) < size:
            if buf is not None:
                buf.close()
            buf = mmap.mmap(-1, max(size, 1 << 20))  # anonymous maps are page-aligned
            self._local.buf = buf
        return buf

    def _write_direct(self, path: str | Path, parts: list[Any], total: int) -> None:
        import fcntl

        head = total // ALIGN * ALIGN  # whole blocks, written direct; total >= MIN_BYTES, so head > 0
        view = memoryview(self._buffer(total))
        pos = 0
        for p in parts:
            b = memoryview(p).cast("B")
            view[pos:pos + b.nbytes] = b
            pos += b.nbytes
        probed = self._begin()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o666)
        try:
            done = 0
            while done < head:
                n = os.write(fd, view[done:head])
                if n <= 0 or n % ALIGN:  # a partial block cannot be continued with O_DIRECT
                    raise OSError(errno.EINVAL, "short direct write")
                done += n
            if total > head:  # the last partial block through the page cache, after the direct ones
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                while done < total:
                    done += os.write(fd, view[done:total])
        finally:
            os.close(fd)
            self._end(probed, total)

    def _begin(self) -> bool:
        """Count a direct write; True when it is one of the probed ones (after the warm-up)."""
        with self._lock:
            self.direct_files += 1
            probed = _WARMUP_FILES < self.direct_files <= _WARMUP_FILES + _PROBE_FILES
            if probed:
                if self._inflight == 0:
                    self._busy_since = time.perf_counter()
                self._inflight += 1
            return probed

    def _end(self, probed: bool, nbytes: int) -> None:
        if not probed:
            return
        with self._lock:
            self._inflight -= 1
            self._mb += nbytes / 1e6
            if self._inflight == 0:
                self._busy += time.perf_counter() - self._busy_since
            done = self.direct_files >= _WARMUP_FILES + _PROBE_FILES and self._inflight == 0
            if done and self._busy * 1e3 / self._mb > SLOW_MS_PER_MB:
                self._stop(f"direct writes took {self._busy * 1e3 / self._mb:.1f} ms per MB "
                           f"(over {SLOW_MS_PER_MB:g})")

    def _stop(self, reason: str) -> None:
        """Normal writes from now on (attribute stores are atomic: no lock, callable under :meth:`_end`'s)."""
        self.direct = False
        self.fallback_reason = reason


def _run_all(jobs: list[tuple[Any, tuple[Any, ...]]]) -> None:
    for job, args in jobs:
        job(*args)
