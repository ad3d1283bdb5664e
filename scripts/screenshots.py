"""Screenshots of the plugin in a real QGIS window, for docs/plugin.md (run inside QGIS, under Xvfb).

    .venv/bin/road-landcover demo --output build/demo          # the results to show (a few minutes on a CPU)
    xvfb-run -a -s "-screen 0 1280x800x24" scripts/qgis --code scripts/screenshots.py

Environment: RLC_SHOTS_DEMO (demo folder, default build/demo), RLC_SHOTS_OUT (default docs/img). Writes
plugin_menu.png, dialog_classify.png, training_panel.png, dependencies.png, classified_map.png, roads_map.png
(palette PNGs, each well under 300 KB), then quits QGIS.
"""
import csv
import json
import os
import time
import traceback
from pathlib import Path

from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QCoreApplication, QPoint, QTimer
from qgis.PyQt.QtGui import QGuiApplication
from qgis.utils import iface, loadPlugin, plugins, startPlugin

ROOT = Path(os.environ.get("RLC_ROOT") or Path.cwd())  # qgis --code runs the file without __file__; run from the repo root
DEMO = Path(os.environ.get("RLC_SHOTS_DEMO", ROOT / "build" / "demo"))
OUT = Path(os.environ.get("RLC_SHOTS_OUT", ROOT / "docs" / "img"))
NAME = "road_landcover_plugin"
written = {}


def pump(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QCoreApplication.processEvents()
        time.sleep(0.02)


def save(pixmap, name, max_width=1100):
    """Save as an adaptive-palette PNG (UI screenshots have few colours: small files, no visible loss)."""
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / f".{name}.tmp.png"
    pixmap.save(str(tmp), "PNG")
    from PIL import Image

    img = Image.open(tmp).convert("RGB")
    if img.width > max_width:
        img = img.resize((max_width, round(img.height * max_width / img.width)), Image.LANCZOS)
    img = img.quantize(colors=128, method=Image.MEDIANCUT, dither=Image.NONE)
    img.save(OUT / name, optimize=True)
    tmp.unlink()
    written[name] = (OUT / name).stat().st_size


def screen():
    return QGuiApplication.primaryScreen().grabWindow(0)


def render_canvas():
    canvas = iface.mapCanvas()
    canvas.refreshAllLayers()
    pump(0.5)
    canvas.waitWhileRendering()
    pump(1.0)


def main():
    loadPlugin(NAME)
    startPlugin(NAME)
    plugin = plugins[NAME]
    window = iface.mainWindow()
    window.setGeometry(0, 0, 1280, 800)  # no window manager under Xvfb: showMaximized() does nothing
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QDockWidget

    for dock in window.findChildren(QDockWidget):
        if dock.objectName() in ("Browser", "Browser2"):
            dock.hide()
    layers_dock = next((d for d in window.findChildren(QDockWidget) if d.objectName() == "Layers"), None)
    if layers_dock is not None:
        window.resizeDocks([layers_dock], [330], Qt.Horizontal)
    pump(2)
    scene = DEMO / "scene" / "scene.tif"
    imagery = QgsRasterLayer(str(scene), "Imagery (sample scene)")
    QgsProject.instance().addMapLayer(imagery)
    iface.mapCanvas().setExtent(imagery.extent())
    render_canvas()

    # 1. the plugin menu
    bar = window.menuBar()
    plugins_action = next(a for a in bar.actions() if a.menu() is iface.pluginMenu())
    top_left = bar.mapToGlobal(bar.actionGeometry(plugins_action).bottomLeft())
    iface.pluginMenu().popup(top_left)
    pump(0.5)
    sub_action = next(a for a in iface.pluginMenu().actions() if a.menu() is not None and "Road" in a.text())
    iface.pluginMenu().setActiveAction(sub_action)
    geo = iface.pluginMenu().actionGeometry(sub_action)
    sub_action.menu().popup(iface.pluginMenu().mapToGlobal(QPoint(geo.right(), geo.top())))
    pump(0.8)
    shot = screen()
    sub = sub_action.menu()
    right = sub.mapToGlobal(QPoint(sub.width(), sub.height()))
    save(shot.copy(0, 0, min(shot.width(), right.x() + 40), min(shot.height(), right.y() + 40)), "plugin_menu.png")
    sub.hide()
    iface.pluginMenu().hide()
    pump(0.3)

    # 2. a Processing dialog, opened from the menu, with its inputs filled in
    dlg = plugin.open_algorithm("classifypixels", {"INPUT_RASTER": str(scene),
                                                   "MODEL": str(DEMO / "landcover_model.zip")})
    dlg.resize(900, 640)
    pump(1.0)
    save(dlg.grab(), "dialog_classify.png")
    dlg.close()

    # 3. the training dock, showing the demo's real training (history, per-class metrics, preview)
    from road_landcover_plugin.training_task import TrainingTask

    panel = plugin.show_training_panel()
    report_dir = DEMO / "landcover_model_training"
    panel.folder.setFilePath(str(DEMO / "chips_landcover"))
    panel.output.setFilePath(str(DEMO / "landcover_model.zip"))
    config_file = report_dir / "train_config.json"
    if config_file.is_file():  # show the settings the demo really trained with
        cfg = json.loads(config_file.read_text())
        panel.encoder.setCurrentText(str(cfg.get("encoder", "resnet34")))
        for widget, key in ((panel.base_width, "base_width"), (panel.epochs, "epochs"), (panel.batch, "batch_size"),
                            (panel.patience, "patience")):
            widget.setValue(int(cfg.get(key, widget.value())))
        panel.lr.setValue(float(cfg.get("learning_rate", 0.0)))
    with open(report_dir / "history.csv", newline="") as f:
        for row in csv.DictReader(f):
            panel.on_epoch(dict(row))
    done = TrainingTask(DEMO / "chips_landcover", DEMO / "landcover_model.zip", None, report_dir=report_dir)
    done.result = {"report_dir": str(report_dir)}
    panel.task = done
    metrics = json.loads((report_dir / "metrics.json").read_text())
    panel.on_finished(True, f"Training finished after {panel.table.rowCount()} epochs: mIoU {metrics['miou']:.3f}, "
                            f"accuracy {metrics['accuracy']:.3f} (validation chips). Model: landcover_model.zip")
    panel.tabs.setCurrentIndex(0)
    window.resizeDocks([panel], [520], Qt.Horizontal)
    pump(1.0)
    save(panel.grab(), "training_panel.png")
    panel.tabs.setCurrentIndex(2)
    pump(0.5)
    save(panel.grab(), "training_preview.png")
    panel.hide()

    # 4. the dependency dialog
    deps = plugin.show_dependencies()
    deps.reinstall.setChecked(True)  # e.g. switching torch to a CUDA build: shows the command it would run
    deps.build.setCurrentIndex(deps.build.findData("cu121"))
    pump(0.8)
    save(deps.grab(), "dependencies.png")
    deps.close()

    iface.messageBar().clearWidgets()

    # 5. a classified result on the canvas, in its own group
    from road_landcover_plugin import results

    classified = DEMO / "landcover_classified.tif"
    group = results.add_results_group(QgsProject.instance(), "Classify pixels",
                                      {"OUTPUT_CLASSIFIED": str(classified)}, load_missing=True)
    layer = group.findLayers()[0].layer()
    iface.mapCanvas().setExtent(layer.extent())
    iface.layerTreeView().setCurrentLayer(layer)
    render_canvas()
    save(window.grab(), "classified_map.png")
    group.setItemVisibilityChecked(False)

    # 6. extracted roads (lines and junctions) over the imagery and the road probability
    roads = results.add_results_group(QgsProject.instance(), "Extract roads", {
        "OUTPUT_LINES": str(DEMO / "roads.gpkg"), "OUTPUT_NODES": str(DEMO / "road_nodes.gpkg"),
        "OUTPUT_PROBABILITY": str(DEMO / "road_probability.tif")}, load_missing=True)
    for node in roads.findLayers():
        if isinstance(node.layer(), QgsRasterLayer):
            node.setItemVisibilityChecked(False)
    lines = next(n.layer() for n in roads.findLayers() if n.layer().source().split("|")[0].endswith("roads.gpkg"))
    iface.mapCanvas().setExtent(lines.extent().buffered(20))
    render_canvas()
    save(window.grab(), "roads_map.png")


def run():
    report = OUT / "screenshots.json"
    try:
        main()
        status = {"written": written}
    except Exception:
        status = {"written": written, "error": traceback.format_exc()}
    OUT.mkdir(parents=True, exist_ok=True)
    print(json.dumps(status, indent=2))
    if status.get("error"):
        report.write_text(json.dumps(status, indent=2))
    os._exit(0 if "error" not in status else 1)


QTimer.singleShot(1000, run)
