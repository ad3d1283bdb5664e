"""Where QGIS's Python is, so dependency messages give a pip command that works for this QGIS."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from core import deps


def qgis_python() -> str:
    """The interpreter that shares QGIS's site-packages (inside QGIS, ``sys.executable`` is QGIS itself)."""
    exe = Path(sys.executable)
    in_venv = sys.prefix != sys.base_prefix
    if in_venv and exe.name.lower().startswith("python"):
        return str(exe)
    # Embedded in QGIS, sys.executable is the first "python3" on PATH (maybe a pyenv shim of another
    # Python); the interpreter of QGIS's own libpython lives under base_exec_prefix.
    own = Path(sys.base_exec_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if os.name != "nt" and own.exists():
        return str(own)
    if exe.name.lower().startswith("python"):
        return str(exe)
    if os.name == "nt":  # OSGeo4W / standalone installer: python.exe sits in <prefix>/apps/Python3x or <prefix>/bin
        for candidate in (Path(sys.base_exec_prefix) / "python.exe", exe.parent / "python3.exe", exe.parent / "python.exe"):
            if candidate.exists():
                return str(candidate)
        return "python3"
    candidate = Path(sys.base_exec_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(candidate) if candidate.exists() else "python3"


def require(modules: tuple[str, ...], step: str) -> None:
    """Raise core's DependencyError (with the pip command for this QGIS) when ``modules`` are missing."""
    deps.require(modules, step, python=qgis_python())
