"""Helpers for tests that run the real QGIS: in-process (processing.run) and qgis_process as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
QGIS_PROCESS = REPO / "scripts" / "qgis_process"

_APP: Any = None


def qgis_app() -> Any:
    """Start one headless QgsApplication per test process with Processing and this provider loaded."""
    global _APP
    if _APP is not None:
        return _APP
    from processing_provider.headless import start_qgis

    _APP = start_qgis(gui=False)
    return _APP


def run_qgis_process(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
                     check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/qgis_process ARGS`` and return the completed process (text output)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([str(QGIS_PROCESS), *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"qgis_process {' '.join(args)} failed with {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def run_algorithm_json(alg_id: str, params: dict[str, Any], env: dict[str, str] | None = None,
                       check: bool = True) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    """Run an algorithm through qgis_process with ``--json``; returns the process and its parsed results."""
    args = ["--json", "run", alg_id, "--"] + [f"{k}={v}" for k, v in params.items()]
    proc = run_qgis_process(*args, env=env, check=check)
    payload = None
    start = proc.stdout.find("{")
    if start >= 0:
        try:
            payload = json.loads(proc.stdout[start:])
        except json.JSONDecodeError:
            payload = None
    return proc, payload
