"""Fixtures shared by every test folder. Nothing here imports QGIS (tests/core must run without it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RLC_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow (make test-all)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real test data beside the checkout (../shared/data); tests skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (a fresh clone has no ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_scene(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A small built-in sample scene (512 x 512 px at 0.5 m), generated once per test session."""
    from core.sample_data import SampleSceneConfig, generate_sample_scene

    return generate_sample_scene(tmp_path_factory.mktemp("scene") / "scene", SampleSceneConfig(size_px=512))
