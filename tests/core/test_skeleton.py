"""The shared skeleton of core: errors, configs, progress/cancel, atomic outputs, dependency checks."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from core import deps
from core.config import StepConfig, require
from core.errors import (
    CanceledError,
    ConfigError,
    DependencyError,
    LabelError,
    ModelPackageError,
    OutputError,
    RasterReadError,
    RoadLandcoverError,
)
from core.outputs import atomic_output
from core.progress import ConsoleFeedback, Feedback, NullFeedback, SubFeedback, check_canceled


@pytest.mark.parametrize(
    ("error", "builtin"),
    [(ConfigError, ValueError), (RasterReadError, OSError), (LabelError, ValueError), (OutputError, OSError),
     (ModelPackageError, ValueError), (DependencyError, ImportError)],
)
def test_errors_share_one_root_and_their_builtin(error: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(error, RoadLandcoverError)
    assert issubclass(error, builtin)
    with pytest.raises(builtin):
        raise error("x")


@dataclasses.dataclass(frozen=True)
class _Cfg(StepConfig):
    tile_size_px: int = 256
    name: str = "a"

    def validate(self) -> None:
        require(self.tile_size_px >= 32, f"tile_size_px must be at least 32, got {self.tile_size_px}")


def test_config_validates_freezes_and_round_trips(tmp_path: Path) -> None:
    cfg = _Cfg(tile_size_px=64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.tile_size_px = 1  # type: ignore[misc]
    with pytest.raises(ConfigError, match="at least 32, got 8"):
        _Cfg(tile_size_px=8)
    cfg.to_json(tmp_path / "c.json")
    assert _Cfg.from_dict(json.loads((tmp_path / "c.json").read_text())) == cfg
    with pytest.raises(ConfigError, match="unknown _Cfg option.*tile_sise_px.*valid options: name, tile_size_px"):
        _Cfg.from_dict({"tile_sise_px": 3})


class _Recorder:
    def __init__(self) -> None:
        self.progress: list[float] = []
        self.canceled = False
        self.messages: list[str] = []

    def set_progress(self, percent: float) -> None:
        self.progress.append(percent)

    def is_canceled(self) -> bool:
        return self.canceled

    def info(self, message: str) -> None:
        self.messages.append(message)

    def warning(self, message: str) -> None:
        self.messages.append("W:" + message)


def test_progress_protocol_subranges_and_cancel() -> None:
    rec = _Recorder()
    for fb in (rec, NullFeedback(), ConsoleFeedback(), SubFeedback(rec, 0, 1)):
        assert isinstance(fb, Feedback)
    sub = SubFeedback(rec, 20, 60)
    sub.set_progress(0)
    sub.set_progress(50)
    sub.set_progress(150)  # clamped
    assert rec.progress == [20, 40, 60]
    sub.warning("careful")
    assert rec.messages == ["W:careful"]
    check_canceled(sub)
    rec.canceled = True
    with pytest.raises(CanceledError, match="canceled: export"):
        check_canceled(sub, "export")


def test_atomic_output_renames_only_when_complete(tmp_path: Path) -> None:
    final = tmp_path / "out" / "result.txt"
    with atomic_output(final) as tmp:
        assert tmp.parent == final.parent and tmp.suffix == ".txt" and tmp != final
        tmp.write_text("new")
    assert final.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_output(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert final.read_text() == "new", "a failed run must keep the previous result"
    assert sorted(p.name for p in final.parent.iterdir()) == ["result.txt"], "no temporary left behind"
    with pytest.raises(OutputError, match="already exists"), atomic_output(final, overwrite=False):
        pass


def test_atomic_output_folder_and_cancel(tmp_path: Path) -> None:
    final = tmp_path / "chips"
    with pytest.raises(CanceledError), atomic_output(final) as tmp:
        tmp.mkdir()
        (tmp / "a.tif").write_bytes(b"x")
        raise CanceledError("canceled")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with atomic_output(final) as tmp:
        tmp.mkdir()
        (tmp / "dataset.json").write_text("{}")
    assert (final / "dataset.json").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_atomic_output_unwritable_folder(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(OutputError, match="not writable"), atomic_output(ro / "x.tif"):
        pass


def test_atomic_output_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="cannot create the folder"), atomic_output(tmp_path / "file" / "x.tif"):
        pass


def test_dependency_errors_name_package_and_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = deps.Requirement("rlc_definitely_missing", "rlc-missing-dist", "1.0", "rlc-missing-dist>=1.0")
    old = deps.Requirement("numpy", "numpy", "999.0", "numpy>=999")
    monkeypatch.setitem(deps.REQUIREMENTS, fake.module, fake)
    monkeypatch.setitem(deps.REQUIREMENTS, "numpy", old)
    with pytest.raises(DependencyError) as info:
        deps.require(["rlc_definitely_missing", "numpy", "shapely"], "Export training data", python="/opt/qgis/python3")
    msg = str(info.value)
    assert "Export training data needs" in msg
    assert "rlc-missing-dist is not installed" in msg and "numpy" in msg and "too old (need >= 999.0)" in msg
    assert "/opt/qgis/python3 -m pip install --upgrade 'rlc-missing-dist>=1.0' 'numpy>=999'" in msg
    assert "shapely" not in msg.split("(")[1].split(")")[0], "a satisfied requirement is not listed"
    assert [p.requirement.module for p in deps.check(["rlc_definitely_missing"], import_modules=False)] == [
        "rlc_definitely_missing"]


def test_all_real_dependencies_present() -> None:
    assert deps.check(deps.DL_STACK) == []
