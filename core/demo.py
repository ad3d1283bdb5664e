"""The main job on built-in data: ``make demo`` / ``road-landcover demo``.

Generates the sample scene, then runs each workflow step that exists on it and returns a report of
what was produced and measured. Steps are added here as they land (export, train, classify, roads,
evaluate), so the demo always exercises the whole available chain.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .progress import Feedback, NullFeedback
from .sample_data import SampleSceneConfig, generate_sample_scene


def run_demo(output: str | Path, size_px: int = 2400, feedback: Feedback | None = None) -> dict[str, Any]:
    """Run the available chain in ``output``; return a JSON-able report with timings and figures."""
    fb = feedback or NullFeedback()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"output": str(out.resolve()), "steps": {}}

    t0 = time.perf_counter()
    scene = generate_sample_scene(out / "scene", SampleSceneConfig(size_px=size_px), fb)
    description = json.loads(scene.description.read_text(encoding="utf-8"))
    report["steps"]["sample_scene"] = {
        "seconds": round(time.perf_counter() - t0, 2),
        "image": str(scene.image),
        "size_px": size_px,
        "class_pixels": {c["name"]: c["pixels"] for c in description["classes"]},
        "road_edges": description["roads"]["edges"],
        "road_length_m": description["roads"]["total_length_m"],
    }
    (out / "demo_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
