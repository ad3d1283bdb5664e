"""Tile sharding across two ranks (gloo on the CPU) gives the same single file as one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio

from core.inference import ClassifyConfig, classify_pixels
from tests.core.test_inference import make_package, read, write_raster

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
from pathlib import Path
import tests.core.test_inference  # registers the test models
from core.distributed import classify_any
from core.inference import ClassifyConfig
raster, pkg, out, prob = map(Path, sys.argv[1:5])
result = classify_any(ClassifyConfig(raster, pkg, out, output_probability=prob, tile_size_px=12, padding_px=3,
                                     blend=sys.argv[5], batch_size=2, device="cpu"))
print("RESULT", None if result is None else len(result.chunk_windows))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_gloo_ranks_write_one_identical_output(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "conv", "test_tinyconv", 2, [1, 2, 3])
    image = np.random.default_rng(11).normal(0, 1, (2, 70, 90)).astype(np.float32)
    image[:, :5, :7] = -999.0
    src = write_raster(tmp_path / "img.tif", image, nodata=-999.0)
    single, single_p = tmp_path / "single.tif", tmp_path / "single_p.tif"
    import core.inference as inference

    old = inference.CHUNK_TARGET_PX
    inference.CHUNK_TARGET_PX = 18  # many small chunks so both ranks get several
    try:
        classify_pixels(ClassifyConfig(src, pkg, single, output_probability=single_p, tile_size_px=12, padding_px=3,
                                       blend="weighted", batch_size=2, device="cpu"))
    finally:
        inference.CHUNK_TARGET_PX = old
    out, prob = tmp_path / "out" / "sharded.tif", tmp_path / "out" / "sharded_p.tif"
    port = _free_port()
    code = SCRIPT.replace("import tests.core.test_inference", "import core.inference as ci; ci.CHUNK_TARGET_PX = 18\n"
                          "import tests.core.test_inference")
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(src), str(pkg), str(out), str(prob), "weighted"],
                                      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (_o, e) in zip(procs, outputs):
        assert p.returncode == 0, e[-3000:]
    assert "RESULT None" in outputs[1][0] and "RESULT None" not in outputs[0][0]
    np.testing.assert_array_equal(read(out), read(single))
    np.testing.assert_allclose(read(prob), read(single_p), atol=1e-6)
    assert (read(out)[0, :5, :7] == 255).all()
    with rasterio.open(out) as a, rasterio.open(single) as b:
        assert a.transform == b.transform and a.crs == b.crs and a.colormap(1) == b.colormap(1)
    # Only the final files and their styles are left: no rank files, no partial files.
    assert sorted(p.name for p in out.parent.iterdir()) == ["sharded.qml", "sharded.tif", "sharded.tif.aux.xml",
                                                            "sharded_p.tif"]
