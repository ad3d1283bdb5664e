"""The plugin in a real QGIS desktop under Xvfb: menu, toolbar, provider; load/unload twice leaves nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.qgis_support import REPO

pytestmark = [pytest.mark.qgis, pytest.mark.gui]


@pytest.mark.skipif(shutil.which("xvfb-run") is None or shutil.which("qgis") is None,
                    reason="needs the QGIS desktop and xvfb-run (make setup installs both)")
def test_load_unload_twice_leaves_no_trace(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    env = {**os.environ, "RLC_GUI_REPORT": str(report), "RLC_QGIS_CONFIG": str(tmp_path / "profile")}
    env.pop("QT_QPA_PLATFORM", None)
    proc = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", str(REPO / "scripts" / "qgis"),
         "--code", str(REPO / "tests" / "plugin" / "gui_scripts" / "load_unload.py")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert report.exists(), f"QGIS did not run the script (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    data = json.loads(report.read_text())
    assert "error" not in data, data.get("error")
    assert data["load"] == [True, True] and data["start"] == [True, True] and data["unload"] == [True, True]
    loaded0, unloaded0, loaded1, unloaded1 = data["steps"]
    for loaded in (loaded0, loaded1):
        assert loaded["provider"] and "roadlandcover:samplescene" in loaded["algorithms"]
        assert loaded["toolbar"] and loaded["in_plugins"]
        assert "Generate sample scene…" in loaded["menu"] and "Check dependencies…" in loaded["menu"]
    assert loaded0["menu"] == loaded1["menu"], "a second load must not duplicate entries"
    for unloaded in (unloaded0, unloaded1):
        assert unloaded["menu"] is None, "the plugin menu must be removed"
        assert not unloaded["provider"] and not unloaded["toolbar"] and not unloaded["in_plugins"]
