"""Run inside a real QGIS desktop (``qgis --code``): load/unload the plugin twice, record what is left.

Writes a JSON report to $RLC_GUI_REPORT, then exits QGIS. Executed by tests/plugin/test_plugin_gui.py.
"""
import json
import os
import traceback

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QTimer
from qgis.PyQt.QtWidgets import QToolBar
from qgis.utils import iface, loadPlugin, plugins, startPlugin, unloadPlugin

NAME = "road_landcover_plugin"
report = {"steps": []}


def snapshot(label):
    menu_titles = {}
    for action in iface.pluginMenu().actions():
        menu = action.menu()
        if menu is not None:
            menu_titles[action.text()] = [a.text() for a in menu.actions()]
    toolbars = [t.objectName() for t in iface.mainWindow().findChildren(QToolBar)]
    provider = QgsApplication.processingRegistry().providerById("roadlandcover")
    report["steps"].append({
        "label": label,
        "menu": menu_titles.get("&Road && Land Cover", menu_titles.get("Road & Land Cover")),
        "toolbar": "RoadLandcoverToolbar" in toolbars,
        "provider": provider is not None,
        "algorithms": sorted(a.id() for a in provider.algorithms()) if provider else [],
        "in_plugins": NAME in plugins,
    })


def run():
    try:
        for i in range(2):
            report.setdefault("load", []).append(bool(loadPlugin(NAME)))
            report.setdefault("start", []).append(bool(startPlugin(NAME)))
            snapshot(f"loaded {i}")
            action = next(a for a in iface.mainWindow().findChildren(type(iface.actionExit()))
                          if a.objectName() == "roadlandcover_samplescene")
            report.setdefault("action_text", action.text())
            report.setdefault("unload", []).append(bool(unloadPlugin(NAME)))
            QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)  # run the deleteLater() calls
            snapshot(f"unloaded {i}")
    except Exception:
        report["error"] = traceback.format_exc()
    with open(os.environ["RLC_GUI_REPORT"], "w") as f:
        json.dump(report, f, indent=2)
    os._exit(0)


QTimer.singleShot(500, run)
