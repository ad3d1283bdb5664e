"""Which third-party packages a step needs, and a helpful error when they are missing.

The plugin must load inside any QGIS, even one whose Python lacks torch: each algorithm calls
:func:`require` first, which names what is missing and the exact pip command to fix it.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import re
import shlex
import sys
from collections.abc import Iterable

from .errors import DependencyError


@dataclasses.dataclass(frozen=True)
class Requirement:
    """One importable package: its import name, its pip distribution name and minimum version."""

    module: str
    distribution: str
    min_version: str
    pip_spec: str


#: Everything core may need, by import name. Steps ask for subsets.
REQUIREMENTS: dict[str, Requirement] = {
    r.module: r
    for r in (
        Requirement("numpy", "numpy", "1.24", "numpy>=1.24,<2"),
        Requirement("rasterio", "rasterio", "1.3", "rasterio>=1.3"),
        Requirement("pyogrio", "pyogrio", "0.7", "pyogrio>=0.7"),
        Requirement("shapely", "shapely", "2.0", "shapely>=2.0,<2.1"),
        Requirement("skimage", "scikit-image", "0.21", "scikit-image>=0.21"),
        Requirement("scipy", "scipy", "1.10", "scipy>=1.10"),
        Requirement("PIL", "pillow", "9.1", "pillow>=9.1"),
        Requirement("torch", "torch", "2.0", "torch>=2.0"),
        Requirement("onnx", "onnx", "1.14", "onnx>=1.14"),
        Requirement("onnxruntime", "onnxruntime", "1.15", "onnxruntime>=1.15"),
    )
}

#: What the data-handling steps (export, vectorize, evaluate) need.
GEO_STACK = ("numpy", "rasterio", "pyogrio", "shapely", "skimage", "scipy", "PIL")
#: What the deep-learning steps (train, classify) need on top.
DL_STACK = (*GEO_STACK, "torch")
#: What ONNX export needs (optional extra ``.[onnx]``; not part of the plugin's start-up check).
ONNX_STACK = ("numpy", "torch", "onnx", "onnxruntime")


@dataclasses.dataclass(frozen=True)
class Problem:
    """A requirement that is not met: missing (``found`` is None) or too old."""

    requirement: Requirement
    found: str | None

    def describe(self) -> str:
        r = self.requirement
        if self.found is None:
            return f"{r.distribution} is not installed"
        return f"{r.distribution} {self.found} is too old (need >= {r.min_version})"


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        match = re.match(r"\d+", piece)
        parts.append(int(match.group()) if match else 0)
    return tuple(parts)


def check(modules: Iterable[str] = DL_STACK, import_modules: bool = True) -> list[Problem]:
    """Return the unmet requirements among ``modules`` (import names).

    With ``import_modules`` each package is imported to be sure it works (what an algorithm does
    before running); without, only its presence and installed version are looked up, which is
    cheap enough for plugin start-up (importing torch there would slow QGIS down by seconds).
    """
    problems = []
    for name in modules:
        req = REQUIREMENTS[name]
        if not import_modules:
            try:
                found = importlib.metadata.version(req.distribution)
            except importlib.metadata.PackageNotFoundError:
                problems.append(Problem(req, None))
                continue
            if _version_tuple(found) < _version_tuple(req.min_version):
                problems.append(Problem(req, found))
            continue
        try:
            module = importlib.import_module(name)
        except Exception:  # broken installs raise more than ImportError (e.g. missing shared libraries)
            problems.append(Problem(req, None))
            continue
        version = getattr(module, "__version__", None)
        if version is None:
            try:
                version = importlib.metadata.version(req.distribution)
            except importlib.metadata.PackageNotFoundError:
                version = "0"
        if _version_tuple(str(version)) < _version_tuple(req.min_version):
            problems.append(Problem(req, str(version)))
    return problems


def pip_command(problems: Iterable[Problem], python: str | None = None) -> str:
    """The exact command that installs what is missing into the given interpreter."""
    specs = " ".join(shlex.quote(p.requirement.pip_spec) for p in problems)
    return f"{shlex.quote(python or sys.executable)} -m pip install --upgrade {specs}"


def require(modules: Iterable[str], step: str, python: str | None = None) -> None:
    """Raise :class:`DependencyError` naming what ``step`` lacks and how to install it."""
    problems = check(modules)
    if problems:
        what = "; ".join(p.describe() for p in problems)
        raise DependencyError(
            f"{step} needs Python packages that are missing from this Python ({what}). "
            f"Install them with: {pip_command(problems, python)}"
        )
