"""Run inside a real QGIS desktop (``qgis --code``): the plugin's menu, dialogs, training dock and result groups.

Steps: load the plugin; list its menu; open a Processing dialog from its menu action and close it; train a tiny
model from the training dock as a background task while a QTimer counts event-loop turns; run Vectorize roads
and Classify pixels through their Processing dialogs and record the layer group each run lands in.
Writes a JSON report to $RLC_GUI_REPORT, then exits QGIS. Executed by tests/plugin/test_plugin_gui.py.
Inputs: $RLC_GUI_FOLDER (training folder), $RLC_GUI_SCENE (sample scene folder), $RLC_GUI_TMP (scratch).
"""
import json
import os
import time
import traceback
from pathlib import Path

from qgis.core import QgsProject
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QTimer
from qgis.PyQt.QtWidgets import QAction
from qgis.utils import iface, loadPlugin, plugins, startPlugin

NAME = "road_landcover_plugin"
report = {}
TMP = Path(os.environ["RLC_GUI_TMP"])
SCENE = Path(os.environ["RLC_GUI_SCENE"])


def wait_until(condition, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        QCoreApplication.processEvents()
        time.sleep(0.01)
    return condition()


def action(name):
    return next(a for a in iface.mainWindow().findChildren(QAction) if a.objectName() == name)


def describe_group(group):
    if group is None:
        return None
    layers = []
    for node in group.findLayers():
        layer = node.layer()
        renderer = layer.renderer()
        entry = {"name": layer.name(), "type": int(layer.type()), "renderer": renderer.type() if renderer else None,
                 "source": layer.source()}
        if renderer is not None and renderer.type() == "paletted":
            entry["classes"] = [[c.value, c.label, c.color.name()] for c in renderer.classes()]
        if renderer is not None and renderer.type() == "singlebandpseudocolor":
            entry["min_max"] = [renderer.classificationMin(), renderer.classificationMax()]
        if renderer is not None and renderer.type() == "categorizedSymbol":
            entry["attribute"] = renderer.classAttribute()
        entry["features"] = layer.featureCount() if hasattr(layer, "featureCount") else None
        layers.append(entry)
    top = QgsProject.instance().layerTreeRoot().children()
    return {"name": group.name(), "layers": layers, "at_top": bool(top) and top[0] is group}


def run_dialog(plugin, alg_id, params, timeout_s=180):
    plugin.last_group = None
    dlg = plugin.open_algorithm(alg_id, params)
    done = []
    dlg.algorithmFinished.connect(lambda ok, res: done.append((ok, dict(res))))
    dlg.runAlgorithm()
    wait_until(lambda: bool(done), timeout_s)
    wait_until(lambda: plugin.last_group is not None, 5)
    info = {"finished": done[0][0] if done else None, "group": describe_group(plugin.last_group),
            "messages": [w.text() for w in dlg.messageBar().items() if hasattr(w, "text")]}
    if not info["finished"]:
        from qgis.PyQt.QtWidgets import QTextEdit

        log = dlg.findChild(QTextEdit, "txtLog")
        info["log"] = log.toPlainText()[-3000:] if log is not None else None
    dlg.close()
    return info


def save(stage):
    """Write the report so far (atomically), so a crash later still shows how far the script got."""
    report["stage"] = stage
    path = Path(os.environ["RLC_GUI_REPORT"])
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, path)


def run():
    from qgis.core import QgsApplication

    log = report.setdefault("log", [])
    QgsApplication.messageLog().messageReceived.connect(
        lambda message, tag, level: log.append(f"{tag}: {message}") if tag == "Road & Land Cover" else None)
    try:
        report["load"] = bool(loadPlugin(NAME)) and bool(startPlugin(NAME))
        plugin = plugins[NAME]
        for a in iface.pluginMenu().actions():
            if a.menu() is not None and "Road" in a.text():
                report["menu"] = [x.text() for x in a.menu().actions()]
        report["toolbar"] = [a.text() for a in plugin.toolbar.actions()]
        from core import native_libs

        report["native"] = {"status": dict(native_libs.STATUS), "mixed": native_libs.mixed_libraries(),
                            "in_use": native_libs.describe()}
        save("loaded")

        # a Processing dialog opens from the menu, non-modal, and closes
        action("roadlandcover_classifypixels").trigger()
        dlg = plugin.dialogs[-1]
        wait_until(dlg.isVisible, 10)
        report["dialog"] = {"visible": dlg.isVisible(), "title": dlg.windowTitle(), "modal": dlg.isModal(),
                            "algorithm": dlg.algorithm().id()}
        dlg.close()
        QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
        wait_until(lambda: not plugin.dialogs, 5)
        report["dialog"]["closed"] = not plugin.dialogs
        save("dialog")

        # dependency dialog (non-modal; logic is tested headless)
        action("roadlandcover_check_dependencies").trigger()
        report["deps_dialog"] = {"visible": plugin.deps_dialog.isVisible(),
                                 "status": plugin.deps_dialog.status.text()}
        plugin.deps_dialog.close()
        save("dependencies")

        # training dock: a tiny training in the background while the event loop turns
        action("roadlandcover_training_panel").trigger()
        panel = plugin.panel
        from core.training import TrainConfig

        ticks = []
        timer = QTimer()
        timer.timeout.connect(lambda: ticks.append(time.monotonic()))
        timer.start(50)
        t0 = time.monotonic()
        cfg = TrainConfig(encoder="resnet18", base_width=8, epochs=2, batch_size=8, learning_rate=0.003, patience=0,
                          device="cpu")
        progress = []
        task = panel.start(os.environ["RLC_GUI_FOLDER"], str(TMP / "model.zip"), cfg)
        task.progressChanged.connect(progress.append)
        finished = wait_until(lambda: panel.task is None, 240)
        elapsed = time.monotonic() - t0
        timer.stop()
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        report["training"] = {
            "finished": finished, "seconds": elapsed, "ticks": len(ticks), "max_gap_s": max(gaps) if gaps else None,
            "dock_visible": panel.isVisible(), "rows": panel.table.rowCount(),
            "row0": [panel.table.item(0, c).text() if panel.table.item(0, c) else "" for c in
                     range(panel.table.columnCount())] if panel.table.rowCount() else [],
            "chart": {k: len(v) for k, v in panel.chart.series().items()},
            "classes": panel.classes.rowCount(),
            "class_names": [panel.classes.item(r, 1).text() for r in range(panel.classes.rowCount())],
            "preview": not panel.preview.pixmap().isNull() if panel.preview.pixmap() is not None else False,
            "progress_bar": panel.progress.value(), "progress_events": len(progress), "status": panel.status.text(),
            "model_exists": (TMP / "model.zip").is_file(), "log_lines": panel.log.blockCount(),
        }
        save("training")

        # results groups from Processing dialogs
        report["vectorize"] = run_dialog(plugin, "vectorizeroads", {
            "INPUT_RASTER": str(SCENE / "road_mask.tif"), "OUTPUT_LINES": str(TMP / "lines.gpkg"),
            "OUTPUT_NODES": str(TMP / "nodes.gpkg")})
        save("vectorize")
        if (TMP / "model.zip").is_file():
            report["classify"] = run_dialog(plugin, "classifypixels", {
                "INPUT_RASTER": str(SCENE / "scene.tif"), "MODEL": str(TMP / "model.zip"),
                "OUTPUT_CLASSIFIED": str(TMP / "classified.tif"), "OUTPUT_PROBABILITY": str(TMP / "probability.tif")})
            save("classify")
        report["scene"] = run_dialog(plugin, "samplescene", {"SIZE_PX": 256, "OUTPUT_FOLDER": str(TMP / "scene2")})
    except Exception:
        report["error"] = traceback.format_exc()
    report["done"] = True
    save("done")
    os._exit(0)


QTimer.singleShot(500, run)
