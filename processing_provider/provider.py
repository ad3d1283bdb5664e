"""The Processing provider: id ``roadlandcover``, name "Road & Land Cover (Deep Learning)"."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import ALGORITHMS
from .models import shipped_models

PROVIDER_ID = "roadlandcover"
PROVIDER_NAME = "Road & Land Cover (Deep Learning)"
ICON_PATH = Path(__file__).resolve().parent / "icon.svg"


class RoadLandcoverProvider(QgsProcessingProvider):
    def id(self) -> str:
        return PROVIDER_ID

    def name(self) -> str:
        return PROVIDER_NAME

    def longName(self) -> str:
        return PROVIDER_NAME

    def icon(self) -> QIcon:
        return QIcon(str(ICON_PATH)) if ICON_PATH.exists() else super().icon()

    def loadAlgorithms(self) -> None:
        for alg in ALGORITHMS:
            self.addAlgorithm(alg())
        for model in shipped_models():  # models/*.model3 -> roadlandcover:<file name>
            self.addAlgorithm(model)
