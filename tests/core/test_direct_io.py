"""Direct (O_DIRECT) chip writing: same bytes as normal writes, used only where it is safe, falls back cleanly."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from core import direct_io
from core.direct_io import FileWriter, direct_io_wanted, file_system_type

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 27 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw
41 27 0:40 / /mnt/nas rw,relatime - nfs4 server:/export rw
42 41 8:1 / /mnt/nas/local\\040disk rw,relatime - xfs /dev/sdb1 rw
43 27 0:41 / /mnt/nas2 rw - cifs //srv/share rw
"""

needs_direct = pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this platform")


@pytest.mark.parametrize(("path", "fs"), [
    ("/", "ext4"), ("/home/user/chips", "ext4"), ("/dev/shm/x", "tmpfs"), ("/mnt/nas/chips", "nfs4"),
    ("/mnt/nas/local disk/chips", "xfs"), ("/mnt/nas2", "cifs"), ("/mnt/nas2x/a", "ext4"),
])
def test_file_system_type_takes_the_innermost_mount(path: str, fs: str) -> None:
    assert file_system_type(path, MOUNTINFO) == fs


def test_direct_io_is_wanted_only_on_local_file_systems(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(direct_io.ENV, raising=False)
    monkeypatch.setattr(direct_io, "file_system_type", lambda path: "nfs4")
    assert not direct_io_wanted(tmp_path)
    monkeypatch.setattr(direct_io, "file_system_type", lambda path: "ext4")
    assert direct_io_wanted(tmp_path) == hasattr(os, "O_DIRECT")
    monkeypatch.setenv(direct_io.ENV, "off")
    assert not direct_io_wanted(tmp_path)
    monkeypatch.setattr(direct_io, "file_system_type", lambda path: "cifs")
    monkeypatch.setenv(direct_io.ENV, "on")
    assert direct_io_wanted(tmp_path) == hasattr(os, "O_DIRECT")


def _parts(rng: np.random.Generator, n: int) -> list[object]:
    """A header, a pixel buffer (memoryview, as the chip writer passes it) and a suffix: ``n`` bytes in all."""
    head = bytearray(rng.integers(0, 256, 301, dtype=np.uint8).tobytes())
    body = rng.integers(0, 256, n - 301 - 17, dtype=np.uint8)
    return [head, memoryview(body).cast("B"), b"s" * 17]


@needs_direct
def test_direct_writes_give_the_same_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    writer = FileWriter(direct=True)
    sizes = [direct_io.MIN_BYTES, direct_io.MIN_BYTES + 1, 262144 + 431, 3 * 1024 * 1024 + 7, 1000, 2 * 1024 * 1024]
    expected = {}
    for k, n in enumerate(sizes + sizes[::-1]):  # shrinking sizes reuse the grown buffers
        parts = _parts(rng, n)
        (tmp_path / f"old{k}").write_bytes(b"x" * (n + 9000))  # overwriting a longer file truncates it
        for name in (f"new{k}", f"old{k}"):
            writer.write(tmp_path / name, parts)
            expected[name] = b"".join(bytes(p) for p in parts)  # type: ignore[call-overload]
    writer.flush()
    writer.close()
    for name, data in expected.items():
        assert (tmp_path / name).read_bytes() == data, name
    if writer.fallback_reason is None:  # this file system took direct writes (else it refused: also fine)
        assert writer.direct_files == 2 * 2 * (len(sizes) - 1)  # all but the 1000-byte file
    else:
        assert "refused" in writer.fallback_reason or "ms per MB" in writer.fallback_reason


def test_a_refusing_file_system_gets_normal_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = FileWriter(direct=True)
    writer.direct = True  # even where os.O_DIRECT is missing, the fallback is exercised

    def refuse(path: object, parts: object, total: int) -> float:
        Path(str(path)).write_bytes(b"partial")  # a refused attempt may leave a stub: it must be replaced
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(writer, "_write_direct", refuse)
    parts = _parts(np.random.default_rng(1), 200_000)
    writer.write(tmp_path / "a.tif", parts)
    writer.flush()
    assert (tmp_path / "a.tif").read_bytes() == b"".join(bytes(p) for p in parts)  # type: ignore[call-overload]
    assert not writer.direct and "refused O_DIRECT" in (writer.fallback_reason or "")


def test_other_write_errors_are_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = FileWriter(direct=True)
    writer.direct = True

    def full(path: object, parts: object, total: int) -> float:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "_write_direct", full)
    writer.write(tmp_path / "a.tif", _parts(np.random.default_rng(2), 100_000))
    with pytest.raises(OSError, match="No space"):
        writer.flush()
    writer.close()


@needs_direct
def test_a_slow_device_goes_back_to_normal_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct_io, "SLOW_MS_PER_MB", 0.0)  # every device is "slow"
    writer = FileWriter(direct=True)
    rng = np.random.default_rng(3)
    expected = {}
    for k in range(direct_io._WARMUP_FILES + direct_io._PROBE_FILES + 20):
        parts = _parts(rng, direct_io.MIN_BYTES + k)
        writer.write(tmp_path / f"{k}.bin", parts)
        expected[k] = b"".join(bytes(p) for p in parts)  # type: ignore[call-overload]
    writer.flush()
    writer.close()
    for k, data in expected.items():
        assert (tmp_path / f"{k}.bin").read_bytes() == data, k
    assert not writer.direct and "ms per MB" in (writer.fallback_reason or "refused")
    # Files already queued when the probe ended may still go direct: the switch stops the ones after them.
    assert writer.direct_files == 0 or direct_io._WARMUP_FILES + direct_io._PROBE_FILES <= writer.direct_files < len(expected)


def test_a_batch_is_one_job_written_on_flush(tmp_path: Path) -> None:
    import threading

    writer = FileWriter(direct=True, threads=2)
    rng = np.random.default_rng(4)
    ran_on: list[int] = []
    expected = {}
    assert writer.begin() and not writer.begin()  # batches do not nest
    for k in range(3):
        parts = _parts(rng, 70_000 + k)
        writer.write(tmp_path / f"{k}.bin", parts)
        expected[k] = b"".join(bytes(p) for p in parts)  # type: ignore[call-overload]
        writer.run(lambda: ran_on.append(threading.get_ident()))
    made = _parts(rng, 5000)
    writer.write_made(tmp_path / "made.bin", lambda a, b: [a, b], made[0], made[1])
    assert not writer._pending  # nothing queued before the batch ends
    writer.flush()  # ends the open batch, then waits
    writer.close()
    for k, data in expected.items():
        assert (tmp_path / f"{k}.bin").read_bytes() == data
    assert (tmp_path / "made.bin").read_bytes() == bytes(made[0]) + bytes(made[1])  # type: ignore[call-overload]
    assert len(ran_on) == 3 and len(set(ran_on)) == 1 and ran_on[0] != threading.get_ident()


def test_close_drops_an_open_batch(tmp_path: Path) -> None:
    writer = FileWriter(direct=False, threads=2)
    writer.begin()
    writer.write(tmp_path / "dropped.bin", [b"x" * 10])
    writer.close()
    writer.flush()
    assert not (tmp_path / "dropped.bin").exists()
