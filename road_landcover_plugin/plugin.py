"""The plugin: Processing provider registration, the "Road & Land Cover" menu and toolbar, the training dock,
the dependency check, and the results of each run in a layer group of its own.

Heavy work never happens here: every menu entry opens the Processing dialog of an algorithm (which runs in
Processing's background thread, or for training in a worker process), and "Train model (background, live
chart)" runs a QgsTask. Layers are added on the main thread only, when the dialog reports
``algorithmFinished`` (after Processing has loaded its outputs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsProject
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from processing_provider.environment import qgis_python
from processing_provider.provider import PROVIDER_ID, RoadLandcoverProvider

from . import dependencies, results

MENU = "&Road && Land Cover"
TOOLBAR = "Road & Land Cover"
ICON = Path(__file__).resolve().parent / "icon.svg"

#: Menu entries in workflow order: (algorithm id, menu text, on the toolbar).
STEPS: tuple[tuple[str, str, bool], ...] = (
    ("samplescene", "Sample scene…", False),
    ("exporttrainingdata", "Export training data…", True),
    ("trainmodel", "Train model…", True),
    ("classifypixels", "Classify pixels…", True),
    ("assessaccuracy", "Assess accuracy…", False),
    ("extractroads", "Extract roads…", True),
    ("vectorizeroads", "Vectorize roads…", False),
    ("evaluateroads", "Evaluate roads…", False),
)
TRAIN_PANEL_TEXT = "Train model (background, live chart)…"
CHECK_TEXT = "Check dependencies…"


class RoadLandcoverPlugin:
    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: RoadLandcoverProvider | None = None
        self.actions: list[QAction] = []
        self.toolbar: Any = None
        self.panel: Any = None
        self.dialogs: list[Any] = []  # open Processing dialogs (kept alive while shown)
        self.deps_dialog: Any = None
        self.last_group: Any = None  # the layer group of the last finished run (tests, screenshots)

    # Called by qgis_process and by the desktop (plugins with hasProcessingProvider=yes).
    def initProcessing(self) -> None:
        if self.provider is None:
            self.provider = RoadLandcoverProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()
        window = self.iface.mainWindow()
        self.toolbar = self.iface.addToolBar(TOOLBAR)
        self.toolbar.setObjectName("RoadLandcoverToolbar")
        icon = QIcon(str(ICON))
        registry = QgsApplication.processingRegistry()
        for alg_id, text, on_toolbar in STEPS:
            action = QAction(icon, text, window)
            action.setObjectName(f"roadlandcover_{alg_id}")
            alg = registry.algorithmById(f"{PROVIDER_ID}:{alg_id}")
            if alg is not None:
                action.setToolTip(f"{alg.displayName()}: {alg.shortHelpString().split(chr(10))[0]}")
            action.triggered.connect(lambda _checked=False, a=alg_id: self.open_algorithm(a))
            self._add(action, toolbar=on_toolbar)
            if alg_id == "trainmodel":
                panel_action = QAction(icon, TRAIN_PANEL_TEXT, window)
                panel_action.setObjectName("roadlandcover_training_panel")
                panel_action.setToolTip("Train in the background with a live table and loss chart (QGIS stays usable)")
                panel_action.triggered.connect(self.show_training_panel)
                self._add(panel_action, toolbar=False)
        check = QAction(CHECK_TEXT, window)
        check.setObjectName("roadlandcover_check_dependencies")
        check.triggered.connect(self.show_dependencies)
        self._add(check, toolbar=False)
        self._warn_missing_dependencies()
        self._warm_up_geo_stack()

    def _add(self, action: QAction, toolbar: bool) -> None:
        self.iface.addPluginToMenu(MENU, action)
        if toolbar and self.toolbar is not None:
            self.toolbar.addAction(action)
        self.actions.append(action)

    def unload(self) -> None:
        for dlg in list(self.dialogs):
            dlg.close()
        self.dialogs = []
        if self.deps_dialog is not None:
            self.deps_dialog.close()
            self.deps_dialog.deleteLater()
            self.deps_dialog = None
        if self.panel is not None:
            if self.panel.task is not None:
                self.panel.task.cancel()
            self.iface.removeDockWidget(self.panel)
            self.panel.deleteLater()
            self.panel = None
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
            action.deleteLater()
        self.actions = []
        if self.toolbar is not None:
            self.iface.mainWindow().removeToolBar(self.toolbar)
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # ------------------------------------------------------------------ Processing dialogs

    def open_algorithm(self, alg_id: str, parameters: dict[str, Any] | None = None) -> Any:
        """Show the Processing dialog of ``alg_id`` (non-modal, like the toolbox); returns the dialog."""
        import processing

        dlg = processing.createAlgorithmDialog(f"{PROVIDER_ID}:{alg_id}", parameters or {})
        if dlg is None:
            self.iface.messageBar().pushMessage("Road & Land Cover", f"algorithm {PROVIDER_ID}:{alg_id} is not "
                                                "available; is the plugin's provider enabled?", level=Qgis.Critical)
            return None
        alg = dlg.algorithm()
        step = next((text.rstrip("…") for a, text, _ in STEPS if a == alg_id), alg.displayName())
        dlg.algorithmFinished.connect(lambda ok, res, s=step, a=alg: self._on_algorithm_finished(s, a, ok, res))
        dlg.setAttribute(Qt.WA_DeleteOnClose, True)
        dlg.destroyed.connect(lambda *_args, d=dlg: self.dialogs.remove(d) if d in self.dialogs else None)
        self.dialogs.append(dlg)
        dlg.show()
        dlg.raise_()
        return dlg

    def _on_algorithm_finished(self, step: str, alg: Any, ok: bool, result: dict[str, Any]) -> None:
        """Main thread, after Processing loaded its outputs: move them into a group of their own and style them."""
        if not ok or not result:
            return
        destinations = {p.name() for p in alg.destinationParameterDefinitions()}
        # Outputs that are layers but not destinations (the sample scene's) are never loaded by Processing.
        extra = [o.name() for o in alg.outputDefinitions()
                 if o.type() in ("outputRaster", "outputVector", "outputLayer") and o.name() not in destinations]
        self.last_group = results.add_results_group(QgsProject.instance(), step, result, load_missing=extra)

    # ------------------------------------------------------------------ training dock

    def show_training_panel(self) -> Any:
        if self.panel is None:
            from .training_panel import TrainingPanel

            self.panel = TrainingPanel(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.panel)
        self.panel.show()
        self.panel.raise_()
        return self.panel

    # ------------------------------------------------------------------ dependencies

    def _warn_missing_dependencies(self) -> None:
        """At start-up, cheaply (no imports): name what is missing and offer the installer."""
        issues = dependencies.find_issues()
        if not issues:
            return
        commands = dependencies.install_commands(issues, qgis_python(),
                                                 dependencies.cuda_status(import_torch=False).suggested_build)
        text = ("missing or unsuitable Python packages: " + "; ".join(f"{i.distribution} {i.problem}" for i in issues)
                + ". Install with: " + " && ".join(dependencies.format_command(c) for c in commands))
        bar = self.iface.messageBar()
        widget = bar.createMessage("Road & Land Cover", text)
        from qgis.PyQt.QtWidgets import QPushButton

        button = QPushButton("Install…", widget)
        button.clicked.connect(self.show_dependencies)
        widget.layout().addWidget(button)
        bar.pushWidget(widget, Qgis.Warning, 0)

    @staticmethod
    def _warm_up_geo_stack() -> None:
        """Import the geo packages on the main thread, their native libraries kept apart from QGIS's.

        ``classFactory`` already did this first thing (core/native_libs.py); this call is a no-op then, and the
        import on the main thread matters too: pyogrio's first import checks its data files, which failed in
        Processing's background thread. What could not be isolated, or still runs against QGIS's own GDAL/GEOS,
        goes to the message log, where a crash report can point at it.
        """
        from qgis.core import QgsMessageLog

        from core import native_libs

        for name, status in native_libs.isolate_bundled_libraries().items():
            if status not in ("isolated", "not needed", "missing"):
                QgsMessageLog.logMessage(f"{name}: {status}", "Road & Land Cover", Qgis.Warning)
        for problem in native_libs.mixed_libraries():
            QgsMessageLog.logMessage(problem, "Road & Land Cover", Qgis.Warning)

    def show_dependencies(self) -> Any:
        """The dependency dialog (non-modal): status, CUDA, torch build choice, Install with live pip output."""
        if self.deps_dialog is None:
            self.deps_dialog = dependencies.DependencyDialog(self.iface.mainWindow(), qgis_python())
        self.deps_dialog.show()
        self.deps_dialog.raise_()
        return self.deps_dialog
