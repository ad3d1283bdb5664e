"""The dependency installer's logic: what is missing, the pip commands it builds, the offline message.

Nothing is installed: the commands are checked as argument lists, and the dialog's QProcess runner is
exercised with a harmless command.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

pytestmark = pytest.mark.qgis

GOOD = {"numpy": "1.26.4", "rasterio": "1.3.9", "pyogrio": "0.7.2", "shapely": "2.0.6", "scikit-image": "0.22.0",
        "scipy": "1.11.4", "pillow": "10.2.0", "torch": "2.3.0"}


def test_nothing_missing_means_no_issue_and_no_command() -> None:
    from road_landcover_plugin import dependencies as d

    assert d.find_issues(versions=GOOD) == []
    assert d.install_commands([], "/py") == []


def test_missing_old_and_too_new_packages_are_named() -> None:
    from road_landcover_plugin import dependencies as d

    versions = {**GOOD, "torch": None, "rasterio": "1.2.10", "numpy": "2.0.1", "shapely": "2.1.0"}
    issues = {i.distribution: i for i in d.find_issues(versions=versions)}
    assert set(issues) == {"torch", "rasterio", "numpy", "shapely"}
    assert issues["torch"].found is None and issues["torch"].problem == "not installed"
    assert "too old (need >= 1.3)" in issues["rasterio"].problem
    assert "too new (need < 2" in issues["numpy"].problem and "GDAL" in issues["numpy"].problem
    assert "too new (need < 2.1" in issues["shapely"].problem
    assert issues["numpy"].pip_spec == "numpy>=1.24,<2"


def test_cpu_and_cuda_torch_commands() -> None:
    from road_landcover_plugin import dependencies as d

    issues = d.find_issues(versions={**GOOD, "torch": None, "scipy": None})
    cpu = d.install_commands(issues, "/opt/qgis/python3", torch_build="cpu")
    assert cpu == [
        ["/opt/qgis/python3", "-m", "pip", "install", "--upgrade", "scipy>=1.10", "numpy>=1.24,<2", "shapely>=2.0,<2.1"],
        ["/opt/qgis/python3", "-m", "pip", "install", "--upgrade", "torch>=2.0",
         "--index-url", "https://download.pytorch.org/whl/cpu"],
    ]
    cuda = d.install_commands(issues, "/py", torch_build="cu121", user=True)
    assert cuda[1] == ["/py", "-m", "pip", "install", "--upgrade", "--user", "torch>=2.0",
                       "--index-url", "https://download.pytorch.org/whl/cu121"]
    default = d.install_commands(issues, "/py")
    assert "--index-url" not in default[1]
    # torch present as a CPU build on a GPU machine: reinstall from the CUDA index
    again = d.install_commands([], "/py", torch_build="cu118", reinstall_torch=True)
    assert again == [["/py", "-m", "pip", "install", "--upgrade", "torch>=2.0", "--force-reinstall",
                      "--index-url", "https://download.pytorch.org/whl/cu118"]]
    with pytest.raises(ValueError, match="cu121"):
        d.install_commands(issues, "/py", torch_build="rocm")


def test_formatted_command_and_offline_message_are_exact() -> None:
    from road_landcover_plugin import dependencies as d

    issues = d.find_issues(versions={**GOOD, "torch": None, "scikit-image": None})
    cmds = d.install_commands(issues, "/usr/bin/python3", torch_build="cpu")
    line = d.format_command(cmds[0])
    assert line == "/usr/bin/python3 -m pip install --upgrade 'scikit-image>=0.21' 'numpy>=1.24,<2' 'shapely>=2.0,<2.1'"
    text = d.offline_message(cmds, "/usr/bin/python3")
    assert "cannot reach the Python Package Index" in text
    assert line in text and d.format_command(cmds[1]) in text
    assert "/usr/bin/python3 -m pip download -d wheels torch>=2.0 --index-url https://download.pytorch.org/whl/cpu" \
        in text.replace("'", "")
    assert "--no-index --find-links wheels" in text and "Then restart QGIS." in text
    assert d.offline_message([], "/py") == "Nothing needs to be installed."


def test_cuda_status_without_importing_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    from road_landcover_plugin import dependencies as d

    monkeypatch.setattr(d, "nvidia_gpu_present", lambda: True)
    assert d.cuda_status(import_torch=False).suggested_build == "cu121"
    monkeypatch.setattr(d, "nvidia_gpu_present", lambda: False)
    status = d.cuda_status(import_torch=False)
    assert not status.usable and status.suggested_build == "cpu" and "CPU" in status.text


def test_cuda_status_here_says_cpu() -> None:
    pytest.importorskip("torch")
    import torch

    from road_landcover_plugin import dependencies as d

    status = d.cuda_status(import_torch=True)
    assert status.usable == torch.cuda.is_available()
    if not status.usable:
        assert torch.__version__ in status.text


def test_dialog_runs_commands_in_a_qprocess(qgis: Any) -> None:
    """The Install path streams the command's output into the dialog without blocking the event loop."""
    from qgis.PyQt.QtCore import QCoreApplication

    from road_landcover_plugin import dependencies as d

    dlg = d.DependencyDialog(None, "/opt/py", check_cuda=False)
    assert "/opt/py -m pip install" in dlg.commands_box.toPlainText() or not dlg.issues
    # the build choice changes the command shown
    dlg.issues = [d.Issue("torch", None, "not installed", "torch>=2.0")]
    dlg.build.setCurrentIndex(list(d.TORCH_BUILDS).index("cu124"))
    assert "https://download.pytorch.org/whl/cu124" in dlg.commands_box.toPlainText()
    finished: list[bool] = []
    dlg.installFinished.connect(finished.append)
    dlg.run_commands([[sys.executable, "-c", "print('hello from pip')"],
                      [sys.executable, "-c", "import sys; sys.exit(3)"],
                      [sys.executable, "-c", "print('never runs')"]])
    deadline = time.monotonic() + 30
    while not finished and time.monotonic() < deadline:
        QCoreApplication.processEvents()
        time.sleep(0.01)
    out = dlg.output.toPlainText()
    assert finished == [False], out
    assert "hello from pip" in out and "(exit code 3)" in out and "never runs" not in out
    assert "Installation failed" in out
    dlg.deleteLater()
