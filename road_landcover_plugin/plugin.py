"""The plugin: Processing provider registration, the "Road & Land Cover" menu and toolbar.

Heavy work never happens here: every menu entry opens the Processing dialog of an algorithm,
which runs in Processing's background thread (or, for training, in a worker process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QMessageBox

from core import deps
from processing_provider.algorithms import ALGORITHMS
from processing_provider.environment import qgis_python
from processing_provider.provider import PROVIDER_ID, RoadLandcoverProvider

MENU = "&Road && Land Cover"
TOOLBAR = "Road & Land Cover"
ICON = Path(__file__).resolve().parent / "icon.svg"


class RoadLandcoverPlugin:
    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: RoadLandcoverProvider | None = None
        self.actions: list[QAction] = []
        self.toolbar: Any = None

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
        for alg_cls in ALGORITHMS:
            alg = alg_cls()
            action = QAction(QIcon(str(ICON)), alg.DISPLAY_NAME + "…", window)
            action.setObjectName(f"roadlandcover_{alg.ALG_ID}")
            action.setToolTip(alg.HELP.split("\n")[0])
            action.triggered.connect(lambda _checked=False, alg_id=alg.ALG_ID: self.open_algorithm(alg_id))
            self._add(action, toolbar=True)
        check = QAction("Check dependencies…", window)
        check.setObjectName("roadlandcover_check_dependencies")
        check.triggered.connect(self.show_dependencies)
        self._add(check, toolbar=False)
        self._warn_missing_dependencies()

    def _add(self, action: QAction, toolbar: bool) -> None:
        self.iface.addPluginToMenu(MENU, action)
        if toolbar and self.toolbar is not None:
            self.toolbar.addAction(action)
        self.actions.append(action)

    def unload(self) -> None:
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

    # ------------------------------------------------------------------ actions

    def open_algorithm(self, alg_id: str) -> None:
        import processing

        processing.execAlgorithmDialog(f"{PROVIDER_ID}:{alg_id}", {})

    def _warn_missing_dependencies(self) -> None:
        problems = deps.check(deps.DL_STACK, import_modules=False)
        if problems:
            self.iface.messageBar().pushMessage(
                "Road & Land Cover",
                "missing Python packages: " + "; ".join(p.describe() for p in problems)
                + f". Install with: {deps.pip_command(problems, qgis_python())}",
                level=Qgis.Warning,
                duration=0,
            )

    def show_dependencies(self) -> None:
        problems = deps.check(deps.DL_STACK)
        if problems:
            text = ("Missing or too old:\n" + "\n".join(f"- {p.describe()}" for p in problems)
                    + f"\n\nInstall with:\n{deps.pip_command(problems, qgis_python())}")
        else:
            from core.device import select_device

            text = f"All packages are installed.\nCompute device: {select_device('auto').description}"
        QMessageBox.information(self.iface.mainWindow(), "Road & Land Cover: dependencies", text)
