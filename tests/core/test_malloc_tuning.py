"""glibc malloc settings of the export's worker processes: freed chip buffers stay mapped while tuned."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.malloc_tuning import _libc, freed_memory_kept, thresholds

ROOT = Path(__file__).resolve().parents[2]


FAULTS = """
import resource, sys
import numpy as np
from core.malloc_tuning import freed_memory_kept

def faults_of_a_reused_buffer(nbytes=2 << 20):
    # minor page faults of allocating, filling and freeing a buffer a second time
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        buf = np.ones(nbytes, dtype=np.uint8)
        del buf
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

with freed_memory_kept(2 << 20):
    tuned = faults_of_a_reused_buffer()
print(tuned, faults_of_a_reused_buffer())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or _libc() is None, reason="glibc's mallopt is Linux only")
def test_freed_buffers_are_reused_while_tuned_and_handed_back_after() -> None:
    """In a fresh interpreter: in a long-lived one (the test run), a free chunk that earlier work left inside
    the heap may serve the buffer whatever the thresholds, which would say nothing about them."""
    proc = subprocess.run([sys.executable, "-c", FAULTS], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tuned, after = map(int, proc.stdout.split())
    pages = (2 << 20) // 4096
    assert tuned < pages // 4, tuned  # the second 2 MB buffer reuses the first one's pages
    assert after > pages // 2, after  # glibc's initial 128 KB threshold again: mapped afresh, faulted in


def test_elsewhere_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.malloc_tuning as m

    monkeypatch.setattr(m, "_libc", lambda: None)
    assert m.keep_freed_memory(1 << 20) is False
    with freed_memory_kept(1 << 20):
        pass


def test_thresholds_follow_the_chip_size_within_glibc_limits() -> None:
    assert thresholds(256 * 256 * 4 * 8) == (4 << 20, 16 << 20)
    assert thresholds(1000) == (2 << 20, 8 << 20)  # at least 2 MB
    assert thresholds(1 << 30) == (32 << 20, 128 << 20)  # glibc's ceiling for the mmap threshold
