"""Which Python packages QGIS's Python lacks, whether CUDA works, and a dialog that installs what is missing.

The logic (:func:`find_issues`, :func:`install_commands`, :func:`offline_message`) is plain Python so it can be
tested without installing anything; :class:`DependencyDialog` shows it and runs pip in a :class:`QProcess`, so
QGIS stays responsive while pip downloads torch (hundreds of MB).

Why separate pip calls: torch comes from PyTorch's own index (``--index-url``) when a CPU-only or a specific CUDA
build is wanted, and the other packages from PyPI; mixing both in one call would make pip look for rasterio on
PyTorch's index.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import shlex
import shutil
import socket
import subprocess
from collections.abc import Sequence
from typing import Any

from qgis.PyQt import QtCore, QtWidgets

from core import deps

#: Builds of torch the installer offers: label, pip index URL ("" = PyPI's default build).
TORCH_BUILDS: dict[str, tuple[str, str]] = {
    "default": ("PyPI default (CUDA on Linux, CPU on Windows and macOS)", ""),
    "cpu": ("CPU only (smallest download, no GPU)", "https://download.pytorch.org/whl/cpu"),
    "cu118": ("NVIDIA CUDA 11.8 (older drivers)", "https://download.pytorch.org/whl/cu118"),
    "cu121": ("NVIDIA CUDA 12.1", "https://download.pytorch.org/whl/cu121"),
    "cu124": ("NVIDIA CUDA 12.4 (recent drivers)", "https://download.pytorch.org/whl/cu124"),
}

#: Upper bounds QGIS itself imposes (core's check only knows minimum versions).
UPPER_BOUNDS: dict[str, tuple[str, str]] = {
    # distribution: (first bad version, why)
    "numpy": ("2", "QGIS's GDAL bindings are built against numpy 1.x and fail to import with numpy 2"),
    "shapely": ("2.1", "shapely 2.1 with QGIS's older GEOS in the same process fails (WKB output dimension)"),
}


@dataclasses.dataclass(frozen=True)
class Issue:
    """One package that must be installed or changed, with the pip requirement that fixes it."""

    distribution: str
    found: str | None
    problem: str
    pip_spec: str


@dataclasses.dataclass(frozen=True)
class CudaStatus:
    """What the GPU situation is, in words, and which torch build to suggest."""

    usable: bool
    text: str
    suggested_build: str


def _version_tuple(version: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version string; "2.1.0rc1" -> (2, 1, 0)."""
    return tuple(_leading_int(piece) for piece in version.split("+")[0].split(".")[:3])


def _leading_int(text: str) -> int:
    digits = ""
    for ch in text:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else 0


def installed_version(distribution: str) -> str | None:
    """The installed version of a pip distribution, or None (cheap: reads metadata, imports nothing)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def find_issues(modules: Sequence[str] = deps.DL_STACK, versions: dict[str, str | None] | None = None) -> list[Issue]:
    """Missing, too old and too new packages among ``modules`` (import names, as in :mod:`core.deps`).

    Args:
        modules: import names to check.
        versions: installed versions by distribution name (tests); default: looked up with importlib.metadata.
    """
    issues = []
    for module in modules:
        req = deps.REQUIREMENTS[module]
        found = versions.get(req.distribution) if versions is not None else installed_version(req.distribution)
        if found is None:
            issues.append(Issue(req.distribution, None, "not installed", req.pip_spec))
            continue
        if _version_tuple(found) < _version_tuple(req.min_version):
            issues.append(Issue(req.distribution, found, f"{found} is too old (need >= {req.min_version})", req.pip_spec))
            continue
        bound = UPPER_BOUNDS.get(req.distribution)
        if bound and _version_tuple(found) >= _version_tuple(bound[0]):
            issues.append(Issue(req.distribution, found, f"{found} is too new (need < {bound[0]}: {bound[1]})",
                                req.pip_spec))
    return issues


def nvidia_gpu_present() -> bool:
    """An NVIDIA driver is installed (its ``nvidia-smi`` tool is on PATH): a CUDA build of torch is worth it."""
    return shutil.which("nvidia-smi") is not None


def cuda_status(import_torch: bool = True) -> CudaStatus:
    """Whether torch can use CUDA here, and which build to install when it cannot.

    ``import_torch=False`` (plugin start-up) avoids importing torch, which takes seconds.
    """
    gpu = nvidia_gpu_present()
    suggested = "cu121" if gpu else "cpu"
    if import_torch:
        try:
            import torch
        except Exception as exc:  # broken installs raise more than ImportError
            return CudaStatus(False, f"torch cannot be imported ({type(exc).__name__}: {exc})", suggested)
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            return CudaStatus(True, f"CUDA is usable: {name} (torch {torch.__version__}, CUDA {torch.version.cuda})",
                              "cu121")
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        if gpu:
            return CudaStatus(False, f"an NVIDIA driver is present but torch {torch.__version__} ({build}) cannot use "
                                     "it; reinstall torch with a CUDA build matching your driver", suggested)
        return CudaStatus(False, f"no NVIDIA GPU found; torch {torch.__version__} ({build}) trains on the CPU "
                                 "(slow but works)", "cpu")
    if gpu:
        return CudaStatus(False, "an NVIDIA driver is present (CUDA not checked yet: open Check dependencies)",
                          suggested)
    return CudaStatus(False, "no NVIDIA GPU found: training will use the CPU", "cpu")


def install_commands(issues: Sequence[Issue], python: str, torch_build: str = "default",
                     reinstall_torch: bool = False, user: bool = False) -> list[list[str]]:
    """The pip command lines (argument lists) that fix ``issues`` in the interpreter ``python``.

    Args:
        torch_build: key of :data:`TORCH_BUILDS`; anything but ``default`` installs torch from PyTorch's index.
        reinstall_torch: also (re)install torch when it is present (e.g. a CPU build on a GPU machine).
        user: add ``--user`` (when QGIS's Python is not writable, e.g. a system Python).
    """
    if torch_build not in TORCH_BUILDS:
        raise ValueError(f"unknown torch build {torch_build!r}; choose one of {', '.join(TORCH_BUILDS)}")
    base = [python, "-m", "pip", "install", "--upgrade"] + (["--user"] if user else [])
    others = [i.pip_spec for i in issues if i.distribution != "torch"]
    if others:
        # Keep pip from pulling numpy 2 or shapely 2.1 in as a dependency of what it upgrades.
        named = {i.distribution for i in issues}
        others += [deps.REQUIREMENTS[m].pip_spec for m in ("numpy", "shapely")
                   if deps.REQUIREMENTS[m].distribution not in named]
    want_torch = reinstall_torch or any(i.distribution == "torch" for i in issues)
    commands = []
    if others:
        commands.append([*base, *others])
    if want_torch:
        torch_spec = deps.REQUIREMENTS["torch"].pip_spec
        index = TORCH_BUILDS[torch_build][1]
        cmd = [*base, torch_spec]
        if reinstall_torch:
            cmd.append("--force-reinstall")
        if index:
            cmd += ["--index-url", index]
        commands.append(cmd)
    return commands


def format_command(argv: Sequence[str]) -> str:
    """One command line to paste into a terminal (Windows quoting on Windows)."""
    if os.name == "nt":
        return subprocess.list2cmdline(list(argv))
    return shlex.join(argv)


def offline_message(commands: Sequence[Sequence[str]], python: str) -> str:
    """What to do without internet: the exact commands, and how to carry wheels over from an online computer."""
    if not commands:
        return "Nothing needs to be installed."
    lines = ["This computer cannot reach the Python Package Index (pypi.org), so nothing was installed.",
             "", "On a computer with internet access, run in a terminal:", ""]
    lines += ["  " + format_command(c) for c in commands]
    lines += ["", "Without internet here: download the packages on a computer with the same operating system and "
              "Python version, copy the folder over, and install from it:", ""]
    for c in commands:
        args = [a for a in c[5:] if a not in ("--user", "--force-reinstall")]
        download = [python, "-m", "pip", "download", "-d", "wheels", *args]
        lines.append("  " + format_command(download))
    specs = [a for c in commands for a in c[5:] if not a.startswith("-") and "://" not in a]
    lines.append("  " + format_command([python, "-m", "pip", "install", "--no-index", "--find-links", "wheels", *specs]))
    lines += ["", "Then restart QGIS."]
    return "\n".join(lines)


def pypi_reachable(host: str = "pypi.org", port: int = 443, timeout_s: float = 3.0) -> bool:
    """Can we open a connection to the package index? (A quick check before starting a long pip run.)"""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def externally_managed(python_prefix: str | None = None) -> bool:
    """The interpreter refuses pip installs (PEP 668, e.g. Debian's and Ubuntu's system Python)."""
    import sysconfig

    stdlib = sysconfig.get_paths()["stdlib"] if python_prefix is None else python_prefix
    return os.path.isfile(os.path.join(stdlib, "EXTERNALLY-MANAGED"))


def summary_text(issues: Sequence[Issue], cuda: CudaStatus) -> str:
    """A plain-text report for the message bar and the dialog."""
    if issues:
        text = "Missing or unsuitable packages:\n" + "\n".join(f"- {i.distribution}: {i.problem}" for i in issues)
    else:
        text = "All required packages are installed."
    return text + f"\nGPU: {cuda.text}"


# --------------------------------------------------------------------------- the dialog (Qt)


class DependencyDialog(QtWidgets.QDialog):
    """The "Check dependencies" dialog: status, torch build choice, the commands, Install, and pip output."""

    installFinished = QtCore.pyqtSignal(bool)  # noqa: N815 (Qt naming)

    def __init__(self, parent: Any, python: str, check_cuda: bool = True) -> None:
        super().__init__(parent)
        self.setObjectName("RoadLandcoverDependencyDialog")
        self.setWindowTitle("Road & Land Cover: dependencies")
        self.python = python
        self.issues = find_issues()
        self.cuda = cuda_status(import_torch=check_cuda and not any(i.distribution == "torch" for i in self.issues))
        self.queue: list[list[str]] = []
        self.process: Any = None
        self.ok = True
        layout = QtWidgets.QVBoxLayout(self)
        self.status = QtWidgets.QLabel(summary_text(self.issues, self.cuda))
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(QtCore.Qt.TextSelectableByMouse)
        layout.addWidget(self.status)
        form = QtWidgets.QFormLayout()
        self.build = QtWidgets.QComboBox()
        for key, (label, _url) in TORCH_BUILDS.items():
            self.build.addItem(label, key)
        self.build.setCurrentIndex(list(TORCH_BUILDS).index(self.cuda.suggested_build))
        form.addRow("torch build", self.build)
        self.reinstall = QtWidgets.QCheckBox("reinstall torch (e.g. to switch from a CPU to a CUDA build)")
        self.reinstall.setChecked(False)
        form.addRow("", self.reinstall)
        self.user = QtWidgets.QCheckBox("install for this user only (--user)")
        self.user.setChecked(externally_managed())
        form.addRow("", self.user)
        layout.addLayout(form)
        layout.addWidget(QtWidgets.QLabel("Commands (run them yourself in a terminal if you prefer):"))
        self.commands_box = QtWidgets.QPlainTextEdit()
        self.commands_box.setReadOnly(True)
        self.commands_box.setMaximumHeight(90)
        layout.addWidget(self.commands_box)
        self.output = QtWidgets.QPlainTextEdit()
        self.output.setReadOnly(True)
        self.output.setPlaceholderText("pip's output appears here")
        layout.addWidget(self.output, 1)
        buttons = QtWidgets.QHBoxLayout()
        self.install_button = QtWidgets.QPushButton("Install")
        self.install_button.setObjectName("install")
        self.cancel_button = QtWidgets.QPushButton("Stop")
        self.cancel_button.setEnabled(False)
        close = QtWidgets.QPushButton("Close")
        buttons.addStretch(1)
        for b in (self.install_button, self.cancel_button, close):
            buttons.addWidget(b)
        layout.addLayout(buttons)
        self.install_button.clicked.connect(self.install)
        self.cancel_button.clicked.connect(self.stop)
        close.clicked.connect(self.close)
        self.build.currentIndexChanged.connect(self.refresh_commands)
        self.reinstall.toggled.connect(self.refresh_commands)
        self.user.toggled.connect(self.refresh_commands)
        self.refresh_commands()
        self.resize(720, 520)

    def commands(self) -> list[list[str]]:
        return install_commands(self.issues, self.python, str(self.build.currentData()),
                                reinstall_torch=self.reinstall.isChecked(), user=self.user.isChecked())

    def refresh_commands(self, *_args: Any) -> None:
        cmds = self.commands()
        self.commands_box.setPlainText("\n".join(format_command(c) for c in cmds) or "nothing to install")
        self.install_button.setEnabled(bool(cmds) and self.process is None)

    def install(self, *_args: Any, check_online: bool = True) -> None:
        cmds = self.commands()
        if check_online and cmds and not pypi_reachable():
            self.output.setPlainText(offline_message(cmds, self.python))
            return
        self.run_commands(cmds)

    def run_commands(self, commands: list[list[str]]) -> None:
        """Run the command lines one after the other in a QProcess, streaming their output."""
        self.queue = [list(c) for c in commands]
        self.ok = True
        self.install_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._next()

    def _next(self) -> None:
        if not self.queue or not self.ok:
            self.process = None
            self.cancel_button.setEnabled(False)
            self.output.appendPlainText(
                "\nDone. Restart QGIS so it loads the new packages." if self.ok else "\nInstallation failed "
                "(see above). You can run the commands in a terminal instead.")
            self.refresh_commands()
            self.installFinished.emit(self.ok)
            return
        cmd = self.queue.pop(0)
        self.output.appendPlainText("$ " + format_command(cmd))
        proc = QtCore.QProcess(self)
        proc.setProcessChannelMode(QtCore.QProcess.MergedChannels)
        proc.readyReadStandardOutput.connect(self._read)
        proc.finished.connect(self._done)
        proc.errorOccurred.connect(self._error)
        self.process = proc
        proc.start(cmd[0], cmd[1:])

    def _read(self) -> None:
        if self.process is not None:
            data = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
            self.output.insertPlainText(data)
            self.output.ensureCursorVisible()

    def _done(self, code: int, _status: Any = None) -> None:
        self._read()
        if code != 0:
            self.ok = False
            self.output.appendPlainText(f"(exit code {code})")
        self._next()

    def _error(self, error: Any) -> None:
        if error == QtCore.QProcess.FailedToStart:
            self.ok = False
            self.output.appendPlainText(f"could not start {self.process.program()}")
            self._next()

    def stop(self) -> None:
        if self.process is not None:
            self.queue = []
            self.ok = False
            self.process.kill()
