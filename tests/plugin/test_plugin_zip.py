"""The installable zip: one plugin folder, vendored core, loads in a clean profile, survives missing packages."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.qgis_support import REPO, run_algorithm_json, run_qgis_process

pytestmark = pytest.mark.qgis


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "road_landcover_plugin.zip"
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_plugin.py"), "--output", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def clean_profile(plugin_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A brand-new QGIS profile with the zip unpacked into its plugin folder, as "Install from ZIP" does."""
    config = tmp_path_factory.mktemp("qgis_config")
    plugins = config / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(plugin_zip) as zf:
        zf.extractall(plugins)
    return {"RLC_QGIS_CONFIG": str(config), "RLC_PLUGIN_DIR": str(plugins)}


def test_zip_holds_one_plugin_folder_with_vendored_imports(plugin_zip: Path) -> None:
    with zipfile.ZipFile(plugin_zip) as zf:
        names = zf.namelist()
        assert {n.split("/")[0] for n in names} == {"road_landcover_plugin"}
        for required in ("__init__.py", "plugin.py", "metadata.txt", "icon.svg", "core/__init__.py",
                         "core/errors.py", "processing_provider/provider.py"):
            assert f"road_landcover_plugin/{required}" in names
        metadata = zf.read("road_landcover_plugin/metadata.txt").decode()
        assert "hasProcessingProvider=yes" in metadata and "qgisMinimumVersion=3.22" in metadata
        generic = re.compile(r"^\s*(from|import)\s+(core|processing_provider)\b", re.MULTILINE)
        for name in names:
            if name.endswith(".py"):
                assert not generic.search(zf.read(name).decode()), f"{name} imports a generic top-level module"
        assert not any("__pycache__" in n for n in names)


def test_installed_zip_loads_in_clean_profile(clean_profile: dict[str, str]) -> None:
    out = run_qgis_process("list", env=clean_profile).stdout
    assert "Road & Land Cover (Deep Learning)" in out and "roadlandcover:samplescene" in out


def test_installed_zip_does_not_clash_with_another_core_module(
        clean_profile: dict[str, str], tmp_path: Path) -> None:
    """Another plugin's generic ``core`` package on sys.path must not be picked up, nor shadow ours."""
    other = tmp_path / "other_plugin_path"
    (other / "core").mkdir(parents=True)
    (other / "core" / "__init__.py").write_text("raise ImportError('the other plugin core was imported')\n")
    env = {**clean_profile, "PYTHONPATH": str(other)}
    proc, result = run_algorithm_json(
        "roadlandcover:samplescene", {"SIZE_PX": 256, "OUTPUT_FOLDER": tmp_path / "scene"}, env=env)
    assert result is not None and Path(result["results"]["IMAGE"]).exists(), proc.stdout + proc.stderr


def test_plugin_loads_without_packages_and_names_the_fix(clean_profile: dict[str, str], tmp_path: Path) -> None:
    """No torch/rasterio in QGIS's Python: the provider still loads; running says what to install and how."""
    env = {**clean_profile, "RLC_VENV": str(tmp_path / "no-venv"), "PYTHONPATH": ""}
    assert "roadlandcover:samplescene" in run_qgis_process("list", env=env).stdout
    proc, _ = run_algorithm_json(
        "roadlandcover:samplescene", {"SIZE_PX": 256, "OUTPUT_FOLDER": tmp_path / "s"}, env=env, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Generate sample scene needs Python packages that are missing" in text
    assert "rasterio is not installed" in text
    assert re.search(r"-m pip install --upgrade .*'rasterio>=1\.3'", text), text[-2000:]
    assert not (tmp_path / "s").exists()
