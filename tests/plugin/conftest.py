from __future__ import annotations

from typing import Any

import pytest

from tests.qgis_support import qgis_app


@pytest.fixture(scope="session")
def qgis() -> Any:
    """The headless QgsApplication with Processing and the provider registered."""
    pytest.importorskip("qgis.core", reason="QGIS Python bindings are not installed (run make setup)")
    return qgis_app()
