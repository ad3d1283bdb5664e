"""Keep the GDAL, PROJ and GEOS bundled in the rasterio, pyogrio and shapely wheels to themselves.

Inside QGIS (the desktop and ``qgis_process``) the program itself links the system's GDAL, PROJ and GEOS,
so their symbols sit in the process's global scope. A wheel's bundled ``libgdal-<hash>.so`` is loaded
later, and the dynamic linker resolves its calls global scope first: thousands of calls of rasterio's
GDAL 3.10 went into Debian's GDAL 3.6 (``rasterio.__gdal_version__`` even reported 3.6.2). Two GDALs
mixed in one call chain corrupt the heap: the QGIS desktop died with ``free(): invalid pointer`` in about
one run in four of the GUI test, and pyogrio failed to find its data files in a background thread.

The cure is the loader's ``RTLD_DEEPBIND``: a library opened with it looks up symbols in its own
dependency tree before the global scope. It only applies to the ``dlopen`` that loads a library, so
every compiled module of these packages is imported once, up front, with that flag
(:func:`isolate_bundled_libraries`), before anything else imports them. Outside QGIS (plain Python)
the flag changes nothing: the wheels' libraries are the only ones there. Where the flag does not exist
(Windows, macOS, musl) each package's DLLs are already private to it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

#: Packages whose wheels bundle libraries that a GIS host program also links (GDAL, PROJ, GEOS, libtiff).
ISOLATED = ("shapely", "rasterio", "pyogrio", "PIL")

#: Packages whose compiled modules call only privately named symbols, but whose bundled libraries
#: (OpenBLAS kernels, libgfortran) would bind to the host's copies: preloading those libraries is enough.
PRELOADED = ("scipy",)

#: What :func:`isolate_bundled_libraries` did per package (last call), for the dependency report.
STATUS: dict[str, str] = {}


def _package_root(package: str) -> Path | None:
    """The folder of an installed package (without importing it), or None when it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _extension_modules(package: str, root: Path) -> list[str]:
    """Dotted names of the compiled modules inside ``root`` (``_io.cpython-311-x86_64-linux-gnu.so``,
    ``_io.abi3.so``)."""
    names = []
    for so in sorted(root.rglob("*.so")):
        rel = so.relative_to(root)
        stem = rel.name.split(".", 1)[0]
        names.append(".".join((package, *rel.parent.parts, stem)))
    return names


def _preload(package: str, deepbind: int) -> str:
    """Load the libraries of ``<package>.libs`` with ``RTLD_DEEPBIND`` before the package loads them."""
    import ctypes

    root = _package_root(package)
    if root is None:
        return "missing"
    libs = sorted((root.parent / f"{root.name}.libs").glob("*.so*"))
    pending, error = list(libs), ""
    while pending:  # their hashed dependencies are found by soname once loaded: load leaves first, by retrying
        failed = []
        for lib in pending:
            try:
                ctypes.CDLL(str(lib), mode=os.RTLD_NOW | deepbind)
            except OSError as exc:
                failed.append(lib)
                error = str(exc)
        if len(failed) == len(pending):
            return f"import failed: {error}"
        pending = failed
    return "isolated" if libs else "not needed"


def isolate_bundled_libraries(packages: tuple[str, ...] = ISOLATED,
                              preloaded: tuple[str, ...] = PRELOADED) -> dict[str, str]:
    """Import ``packages`` and all their compiled modules with ``RTLD_DEEPBIND`` (once per process), and
    load the bundled libraries of ``preloaded`` the same way.

    Returns per package: ``isolated``, ``already imported`` (someone imported it first: it runs with
    whatever bindings it got), ``missing``, or ``not needed`` (no ``RTLD_DEEPBIND`` on this platform).
    Never raises: a package that fails to import is reported by the dependency check instead.
    """
    deepbind = getattr(os, "RTLD_DEEPBIND", None)
    for package in packages:
        if package in STATUS:
            continue
        if deepbind is None:
            STATUS[package] = "not needed"
            continue
        if package in sys.modules:
            STATUS[package] = "already imported"
            continue
        root = _package_root(package)
        if root is None:
            STATUS[package] = "missing"
            continue
        flags = sys.getdlopenflags()
        sys.setdlopenflags(os.RTLD_NOW | deepbind)
        try:
            for name in _extension_modules(package, root):
                try:
                    importlib.import_module(name)
                except Exception:  # optional or test-only modules of the package; the rest still counts
                    continue
            importlib.import_module(package)
            STATUS[package] = "isolated"
        except Exception as exc:  # a broken install: the dependency check names it
            STATUS[package] = f"import failed: {type(exc).__name__}: {exc}"
        finally:
            sys.setdlopenflags(flags)
    for package in preloaded:
        if package not in STATUS:
            STATUS[package] = ("not needed" if deepbind is None else
                               "already imported" if package in sys.modules else _preload(package, deepbind))
    return {p: STATUS[p] for p in (*packages, *preloaded)}


def bundled_version(package: str, library: str) -> str | None:
    """Version of ``library`` (e.g. ``libgdal``) in the wheel's ``<package>.libs`` folder, or None."""
    root = _package_root(package)
    if root is None:
        return None
    for lib in sorted((root.parent / f"{root.name}.libs").glob(f"{library}-*.so.*")):
        match = re.search(r"(\d+\.\d+\.\d+)$", lib.name)
        if match:
            return match.group(1)
    return None


def runtime_versions() -> dict[str, tuple[str | None, str | None]]:
    """``{library user: (version in use, version bundled in its wheel or None)}`` for imported packages."""
    found: dict[str, tuple[str | None, str | None]] = {}
    if "rasterio" in sys.modules:
        found["rasterio GDAL"] = (getattr(sys.modules["rasterio"], "__gdal_version__", None),
                                  bundled_version("rasterio", "libgdal"))
    if "pyogrio" in sys.modules:
        found["pyogrio GDAL"] = (getattr(sys.modules["pyogrio"], "__gdal_version_string__", None),
                                 bundled_version("pyogrio", "libgdal"))
    if "shapely" in sys.modules:
        found["shapely GEOS"] = (getattr(sys.modules["shapely"], "geos_version_string", None),
                                 bundled_version("shapely", "libgeos"))
    return found


def mixed_libraries() -> list[str]:
    """Sentences for each package that runs against another copy of its library than the one it ships."""
    return [f"{who} {used} is in use, but the wheel ships {shipped}: another program's copy was loaded first "
            "(something imported it before the Road & Land Cover plugin loaded); restart QGIS, and report "
            "it if it persists"
            for who, (used, shipped) in runtime_versions().items()
            if used and shipped and not str(used).startswith(shipped)]


def describe() -> str:
    """One line for logs: the native library versions in use (``rasterio GDAL 3.10.3, ...``)."""
    return ", ".join(f"{who} {used}" for who, (used, _) in runtime_versions().items()) or "no geo packages loaded"
