"""core/native_libs.py: the wheels' GDAL/GEOS kept to themselves (see the module's docstring for why).

The QGIS side is proven where QGIS links its own GDAL: tests/processing_provider/test_qgis_process.py and the
desktop workflow in tests/plugin/test_plugin_gui.py. Here: the pieces, in fresh interpreters.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core import native_libs

REPO = Path(__file__).resolve().parents[2]


def run_fresh(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          check=True, timeout=120)
    result: dict = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_extension_modules_are_named_like_their_imports() -> None:
    import rasterio

    names = native_libs._extension_modules("rasterio", Path(rasterio.__file__).parent)
    assert "rasterio._io" in names and "rasterio._base" in names
    assert all(n.startswith("rasterio.") and ".cpython" not in n and not n.endswith(".so") for n in names)


def test_bundled_version_reads_the_wheel_library_name() -> None:
    import rasterio
    import shapely

    gdal = native_libs.bundled_version("rasterio", "libgdal")
    if gdal is None:
        pytest.skip("rasterio is not a wheel with bundled GDAL here (built against the system's)")
    assert rasterio.__gdal_version__ == gdal  # plain Python: the wheel's own GDAL is the only one
    geos = native_libs.bundled_version("shapely", "libgeos")
    assert geos is None or shapely.geos_version_string == geos
    assert native_libs.bundled_version("no_such_package_xyz", "libgdal") is None


def test_isolation_in_a_fresh_interpreter() -> None:
    got = run_fresh("""
        import json, sys
        from core import native_libs
        status = native_libs.isolate_bundled_libraries()
        again = native_libs.isolate_bundled_libraries()
        import rasterio
        print(json.dumps({"status": status, "again": again, "flags": sys.getdlopenflags(),
                          "mixed": native_libs.mixed_libraries(), "describe": native_libs.describe()}))
    """)
    expected = "isolated" if hasattr(__import__("os"), "RTLD_DEEPBIND") else "not needed"
    assert got["status"]["rasterio"] == expected and got["status"]["pyogrio"] == expected
    assert got["status"]["shapely"] == expected
    assert got["again"] == got["status"], "a second call changes nothing"
    assert got["flags"] == 2, "the interpreter's dlopen flags are restored (RTLD_NOW)"
    assert got["mixed"] == []
    assert got["describe"].startswith("shapely GEOS ") or "rasterio GDAL " in got["describe"]


def test_a_package_imported_first_is_reported_not_reloaded() -> None:
    got = run_fresh("""
        import json
        import rasterio
        from core import native_libs
        print(json.dumps(native_libs.isolate_bundled_libraries(("rasterio", "no_such_package_xyz"), ())))
    """)
    if got["rasterio"] == "not needed":
        pytest.skip("no RTLD_DEEPBIND on this platform")
    assert got == {"rasterio": "already imported", "no_such_package_xyz": "missing"}


def test_mixed_libraries_names_the_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_libs, "runtime_versions",
                        lambda: {"rasterio GDAL": ("3.6.2", "3.10.3"), "shapely GEOS": ("3.11.4", "3.11.4"),
                                 "pyogrio GDAL": ("3.12.4", None)})
    problems = native_libs.mixed_libraries()
    assert len(problems) == 1
    assert problems[0].startswith("rasterio GDAL 3.6.2 is in use, but the wheel ships 3.10.3")
    assert "restart QGIS" in problems[0]
