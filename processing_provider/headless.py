"""Start QGIS without a desktop, with Processing and this provider: for scripts, tests and servers.

One place for the start-up sequence (prefix path, offscreen platform, Processing's own Python plugins,
then our provider), so the model builder, the tests and the batch-dialog driver start QGIS alike.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

QGIS_PREFIX = "/usr"
PROCESSING_PLUGINS = "/usr/share/qgis/python/plugins"


def start_qgis(gui: bool = False) -> tuple[Any, Any]:
    """A QgsApplication (widgets when ``gui``, still offscreen) and the registered provider."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
    from qgis.core import QgsApplication

    QgsApplication.setPrefixPath(QGIS_PREFIX, True)
    app = QgsApplication([], gui)
    app.initQgis()
    if PROCESSING_PLUGINS not in sys.path:
        sys.path.append(PROCESSING_PLUGINS)
    from processing.core.Processing import Processing

    Processing.initialize()
    from .provider import RoadLandcoverProvider

    provider = RoadLandcoverProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    return app, provider
