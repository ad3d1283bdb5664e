"""The export in forked worker processes: the same folder as the threads, errors, deaths and cancel handled.

The worker-process export runs in a fresh Python (no Qt/QGIS loaded, so forking is allowed) and is compared
file by file with the threaded export made here.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from core.chips import ExportConfig, export_training_data
from core.errors import CanceledError, LabelError, RasterReadError
from core.vectors import read_vector, write_vector

from .test_chips import CRS, CancelAfter, make_raster

ROOT = Path(__file__).resolve().parents[2]
X0, Y0 = 500000.0, 5200000.0


def land_cover(path: Path, size: int) -> Path:
    """Polygons of 4 classes of several sizes (chips inside one, across edges, outside all) and a hole."""
    rng = np.random.default_rng(3)
    geoms, values = [], []
    for _ in range(40):
        x, y = rng.uniform(0, size, 2)
        w, h = rng.uniform(5, size / 3, 2)
        geoms.append(shapely.box(X0 + x, Y0 - y - h, X0 + x + w, Y0 - y))
        values.append(int(rng.integers(1, 5)))
    geoms[0] = shapely.box(X0, Y0 - size / 2, X0 + size / 2, Y0).difference(
        shapely.box(X0 + 10, Y0 - 30, X0 + 40, Y0 - 10))
    write_vector(path, geoms, {"classvalue": np.array(values, dtype=np.int32)}, crs=CRS, layer="labels")
    return path


def export_in_fresh_python(cfg: ExportConfig) -> dict[str, Any]:
    """Run the export in a new interpreter (where forking is safe) and return its result as a dict."""
    script = ("import json, sys; from core.chips import ExportConfig, export_training_data; "
              "r = export_training_data(ExportConfig.from_dict(json.loads(sys.argv[1]))); "
              "print(json.dumps({'chips': r.chip_count, 'processes': r.processes, 'skipped': r.skipped, "
              "'pixels': {str(k): v for k, v in r.class_pixels.items()}}))")
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(cfg.to_dict())], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def assert_same_folder(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for name in files_a:
        if name.suffix == ".gpkg":  # GeoPackages carry their creation time: compare what they hold
            va, vb = read_vector(a / name), read_vector(b / name)
            assert [g.wkb for g in va.geometries] == [g.wkb for g in vb.geometries]
            assert va.attributes.keys() == vb.attributes.keys()
            assert all(np.array_equal(va.attributes[k], vb.attributes[k]) for k in va.attributes)
        elif name.name == "dataset.json":
            da, db = (json.loads((f / name).read_text()) for f in (a, b))
            for d in (da, db):
                d.pop("created")
                for key in ("workers", "output_folder"):
                    d["parameters"].pop(key)
            assert da == db
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.parametrize("case", ["landcover_mask_rotation_nodata", "uint16_raster_labels_png",
                                  "class_raster_in_another_crs", "roads_orientation_speed"])
def test_worker_processes_make_the_same_folder_as_threads(tmp_path: Path, case: str) -> None:
    size = 160
    common: dict[str, Any] = {"tile_size_px": (32, 32), "stride_px": (16, 16), "preview_chips": 5}
    if case == "landcover_mask_rotation_nodata":
        raster = make_raster(tmp_path / "r.tif", size=size, count=4, nodata=0)
        with rasterio.open(raster, "r+") as dst:  # a nodata corner: skipped chips and ignored label pixels
            data = dst.read()
            data[:, :40, :50] = 0
            dst.write(data)
        labels = land_cover(tmp_path / "l.gpkg", size)
        write_vector(tmp_path / "m.gpkg", [shapely.box(X0 + 5, Y0 - 150, X0 + 155, Y0 - 5)], {"id": np.array([1])},
                     crs=CRS)
        extra: dict[str, Any] = {"mask_polygons": str(tmp_path / "m.gpkg"), "rotation_deg": 120.0,
                                 "max_nodata_percent": 30.0}
    elif case == "uint16_raster_labels_png":
        raster = make_raster(tmp_path / "r.tif", size=size, count=3, dtype="uint16")
        lab = np.zeros((size, size), dtype=np.uint8)
        lab[10:90, 20:140] = 2
        lab[100:150, 30:60] = 7
        labels = tmp_path / "c.tif"
        with rasterio.open(labels, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8", crs=CRS,
                           transform=Affine(1, 0, X0, 0, -1, Y0)) as dst:
            dst.write(lab, 1)
        extra = {"chip_format": "png"}
    elif case == "class_raster_in_another_crs":  # warped on the fly: each worker gets its own warped dataset
        from rasterio.warp import transform_bounds

        raster = make_raster(tmp_path / "r.tif", size=size, count=3)
        west, south, east, north = transform_bounds(CRS, "EPSG:3857", X0 - 10, Y0 - size - 10, X0 + size + 10, Y0 + 10)
        n = 200
        lab = (np.arange(n)[:, None] // 25 + np.arange(n)[None, :] // 40).astype(np.uint8) % 5
        labels = tmp_path / "c3857.tif"
        with rasterio.open(labels, "w", driver="GTiff", width=n, height=n, count=1, dtype="uint8", crs="EPSG:3857",
                           transform=Affine((east - west) / n, 0, west, 0, -(north - south) / n, north)) as dst:
            dst.write(lab, 1)
        extra = {}
    else:
        raster = make_raster(tmp_path / "r.tif", size=size, count=3)
        lines = [shapely.LineString([(X0 + 5, Y0 - 5 - k * 30), (X0 + 155, Y0 - 20 - k * 25)]) for k in range(5)]
        labels = tmp_path / "roads.gpkg"
        write_vector(labels, lines, {"speed": np.array([30.0, 50.0, 70.0, 90.0, 110.0])}, crs=CRS, layer="roads")
        extra = {"label_mode": "road_speed_bins", "speed_field": "speed", "speed_bin_width": 25.0, "orientation": True,
                 "buffer_m": 3.0}
    threads = export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "t"), workers=1, **common,
                                                 **extra))
    assert threads.processes == 1
    procs = export_in_fresh_python(ExportConfig(str(raster), str(labels), str(tmp_path / "p"), workers=3, **common,
                                                **extra))
    assert procs["processes"] == 3 and procs["chips"] == threads.chip_count > 30
    assert procs["skipped"] == threads.skipped
    if case == "landcover_mask_rotation_nodata":
        assert threads.skipped["nodata"] > 0 and threads.skipped["outside_mask"] > 0
    assert_same_folder(tmp_path / "t", tmp_path / "p")


def test_the_automatic_choice_keeps_threads_where_processes_would_change_or_not_pay(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import core.chips as chips
    from core.chips import _BandStats, _process_workers
    from core.progress import NullFeedback

    class Notes(NullFeedback):
        def __init__(self) -> None:
            self.lines: list[str] = []

        def info(self, msg: str) -> None:
            self.lines.append(msg)

    cfg = ExportConfig("r.tif", "l.gpkg", "o")
    monkeypatch.setattr(chips, "_usable_cores", lambda: 4)
    monkeypatch.setattr(chips, "_fork_refusal", lambda: None)
    byte, floats = _BandStats(3, "uint8"), _BandStats(3, "float32")
    assert _process_workers(cfg, 1000, byte, Notes()) == 4
    assert _process_workers(cfg, 1000, _BandStats(3, "uint16"), Notes()) == 4
    assert _process_workers(cfg, 100, byte, Notes()) == 1  # few chips: the fork would not pay
    assert _process_workers(ExportConfig("r", "l", "o", workers=8), 40, byte, Notes()) == 3  # one block each at most
    assert _process_workers(ExportConfig("r", "l", "o", workers=1), 1000, byte, Notes()) == 1
    notes = Notes()
    assert _process_workers(ExportConfig("r", "l", "o", workers=2), 1000, floats, notes) == 1  # a sampled statistic
    assert "threads" in notes.lines[0] and "sample" in notes.lines[0]
    notes = Notes()
    assert _process_workers(ExportConfig("r", "l", "o", workers=2, max_chips=5), 1000, byte, notes) == 1
    assert "max_chips" in notes.lines[0]
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "qgis.core", sys)  # as inside QGIS: its threads must not be forked
    notes = Notes()
    assert _process_workers(ExportConfig("r", "l", "o", workers=2), 1000, byte, notes) == 1
    assert "QGIS" in notes.lines[0]


def forking_allowed() -> None:
    from core.chips import _fork_refusal

    why = _fork_refusal()
    if why is not None:
        pytest.skip(f"worker processes are not forked in this test process: {why}")


def grid_case(tmp_path: Path) -> tuple[Path, Path]:
    """64 candidates of 16 px (8 rows of 8), in blocks of 8 shrinking to 4 (:func:`core.chips._block_starts`)."""
    raster = make_raster(tmp_path / "r.tif", size=128, count=3)
    labels = tmp_path / "l.gpkg"
    write_vector(labels, [shapely.box(X0, Y0 - 128, X0 + 128, Y0)], {"classvalue": np.array([1], dtype=np.int32)},
                 crs=CRS)
    return raster, labels


def no_worker_left() -> bool:
    return not multiprocessing.active_children()


def test_a_bad_label_value_fails_the_export_whichever_process_reads_it(tmp_path: Path) -> None:
    forking_allowed()
    raster = make_raster(tmp_path / "r.tif", size=128, count=3)
    lab = np.ones((128, 128), dtype=np.uint16)
    lab[40, 5] = 300  # candidate 17, in the third block: made by the worker or, if it starts late, by the export
    with rasterio.open(tmp_path / "c.tif", "w", driver="GTiff", width=128, height=128, count=1, dtype="uint16",
                       crs=CRS, transform=Affine(1, 0, X0, 0, -1, Y0)) as dst:
        dst.write(lab, 1)
    with pytest.raises(LabelError, match="value 300 outside 0-254"):
        export_training_data(ExportConfig(str(raster), str(tmp_path / "c.tif"), str(tmp_path / "o"),
                                          tile_size_px=(16, 16), stride_px=(16, 16), workers=2))
    assert not (tmp_path / "o").exists() and not any(p.name.startswith(".o") for p in tmp_path.iterdir())
    assert no_worker_left()


def in_workers_only(monkeypatch: pytest.MonkeyPatch, action: Any) -> None:
    """Make every forked worker run ``action`` when it sets up its block maker (the export's process is unchanged)."""
    import os

    from core.chips import _BlockMaker

    parent = os.getpid()
    real = _BlockMaker.__init__

    def setting_up(self: Any, *args: Any) -> None:
        if os.getpid() != parent:
            action()
        real(self, *args)

    monkeypatch.setattr(_BlockMaker, "__init__", setting_up)


def test_a_worker_error_reaches_the_caller_and_leaves_no_folder(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    forking_allowed()

    def fail() -> None:
        raise RasterReadError("cannot read r.tif: simulated failure in a worker")

    in_workers_only(monkeypatch, fail)
    raster, labels = grid_case(tmp_path)
    with pytest.raises(RasterReadError, match="simulated failure in a worker"):
        export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "o"), tile_size_px=(16, 16),
                                          stride_px=(16, 16), workers=2))
    assert not (tmp_path / "o").exists() and not any(p.name.startswith(".o") for p in tmp_path.iterdir())
    assert no_worker_left()


def test_a_worker_that_dies_fails_the_export_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed (out of memory, say) is noticed: a clear error, not a hang, and no folder."""
    import os

    forking_allowed()
    in_workers_only(monkeypatch, lambda: os._exit(137))
    raster, labels = grid_case(tmp_path)
    with pytest.raises(RasterReadError, match=r"worker process died \(exit code 137\)"):
        export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "o"), tile_size_px=(16, 16),
                                          stride_px=(16, 16), workers=2))
    assert not (tmp_path / "o").exists() and not any(p.name.startswith(".o") for p in tmp_path.iterdir())
    assert no_worker_left()


def test_cancel_stops_the_workers_and_leaves_no_folder(tmp_path: Path) -> None:
    forking_allowed()
    raster, labels = grid_case(tmp_path)
    with pytest.raises(CanceledError):
        export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "o"), tile_size_px=(16, 16),
                                          stride_px=(16, 16), workers=2), CancelAfter(3))
    assert not (tmp_path / "o").exists() and not any(p.name.startswith(".o") for p in tmp_path.iterdir())
    assert no_worker_left()
    import threading

    assert not [t for t in threading.enumerate() if t.name.startswith("chip-io")]


def test_worker_processes_in_this_process(tmp_path: Path) -> None:
    """The same export here (the error tests' setting) really forks, and matches the threads."""
    forking_allowed()
    raster, labels = grid_case(tmp_path)
    res = export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "p"), tile_size_px=(16, 16),
                                            stride_px=(16, 16), workers=2))
    ref = export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "t"), tile_size_px=(16, 16),
                                            stride_px=(16, 16), workers=1))
    assert (res.processes, ref.processes, res.chip_count) == (2, 1, 64)
    assert_same_folder(tmp_path / "t", tmp_path / "p")
    assert no_worker_left()


@pytest.mark.parametrize("total,processes", [(1, 2), (64, 2), (400, 2), (401, 3), (6400, 8), (10, 8)])
def test_blocks_shrink_towards_the_end_and_cover_every_candidate_once(total: int, processes: int) -> None:
    from core.chips import _BLOCK, _MIN_BLOCK, _block_starts

    starts = _block_starts(total, processes)
    sizes = np.diff(starts)
    assert starts[0] == 0 and starts[-1] == total and (sizes > 0).all()
    assert (sizes[:-1] >= _MIN_BLOCK).all() and (sizes <= _BLOCK).all()
    assert (np.diff(sizes) <= 0).all()  # never larger than the block before: the last ones are the smallest
    if total >= 400:
        assert sizes[0] == _BLOCK and sizes[-2] == _MIN_BLOCK
    assert _block_starts(total, processes) == starts  # timing plays no part


def in_the_helper(monkeypatch: pytest.MonkeyPatch, action: Any) -> list[int]:
    """Make ``preview.png`` drawing run ``action`` first in a worker (the export's process draws as usual);
    returns the list of the processes that drew it, as seen here (the export's own pid when it drew)."""
    import os

    import core.chips as chips

    parent, drawn_by = os.getpid(), []
    real = chips._write_preview

    def drawing(*args: Any) -> None:
        if os.getpid() != parent:
            action()
        else:
            drawn_by.append(parent)
        real(*args)

    monkeypatch.setattr(chips, "_write_preview", drawing)
    return drawn_by


def test_a_worker_draws_the_preview_while_the_export_writes_its_index(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    forking_allowed()
    marks = tmp_path / "helper_pids"

    def note_pid() -> None:
        import os

        with open(marks, "a") as fh:
            fh.write(f"{os.getpid()}\n")

    drawn_here = in_the_helper(monkeypatch, note_pid)
    raster, labels = grid_case(tmp_path)
    export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "p"), tile_size_px=(16, 16),
                                      stride_px=(16, 16), workers=2, preview_chips=3))
    assert not drawn_here and len(marks.read_text().split()) == 1  # drawn once, by the worker
    with rasterio.open(tmp_path / "p" / "preview.png") as ds:
        assert ds.count == 3 and ds.read().std() > 0
    monkeypatch.undo()
    export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "t"), tile_size_px=(16, 16),
                                      stride_px=(16, 16), workers=1, preview_chips=3))
    assert (tmp_path / "t" / "preview.png").read_bytes() == (tmp_path / "p" / "preview.png").read_bytes()
    assert no_worker_left()


@pytest.mark.parametrize("how", ["error", "death"])
def test_a_failed_preview_in_the_worker_fails_the_export_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 how: str) -> None:
    import os

    forking_allowed()

    def fail() -> None:
        if how == "death":
            os._exit(137)
        raise OSError(28, "No space left on device (simulated)")

    in_the_helper(monkeypatch, fail)
    raster, labels = grid_case(tmp_path)
    with pytest.raises((OSError, RasterReadError), match="No space left" if how == "error" else "died"):
        export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "o"), tile_size_px=(16, 16),
                                          stride_px=(16, 16), workers=2))
    assert not (tmp_path / "o").exists() and not any(p.name.startswith(".o") for p in tmp_path.iterdir())
    assert no_worker_left()


def test_an_error_at_the_end_stops_the_helper_and_leaves_no_folder(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The footprints fail while the worker may still draw the preview into the temporary folder."""
    import time

    import core.chips as chips

    forking_allowed()
    in_the_helper(monkeypatch, lambda: time.sleep(2))  # still drawing when the export fails

    def no_footprints(*args: Any) -> None:
        raise OSError(28, "No space left on device (simulated footprints)")

    monkeypatch.setattr(chips, "_write_footprints", no_footprints)
    raster, labels = grid_case(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(OSError, match="simulated footprints"):
        export_training_data(ExportConfig(str(raster), str(labels), str(tmp_path / "o"), tile_size_px=(16, 16),
                                          stride_px=(16, 16), workers=2))
    assert time.perf_counter() - t0 < 1.5  # the helper was stopped, not waited for
    assert not (tmp_path / "o").exists() and not any(p.name.startswith(".o") for p in tmp_path.iterdir())
    assert no_worker_left()


def test_block_counter_hands_out_blocks_and_predicts_first_chips() -> None:
    """Claims in order; a block's first chip is the sum of the published counts before it, waited for."""
    from core.chips import _BlockCounter

    counter = _BlockCounter(4)
    try:
        assert [counter.claim(lambda: None) for _ in range(5)] == [0, 1, 2, 3, 4]  # 4: past the last block
        counter.publish(0, 16)
        counter.publish(1, 0)  # every candidate outside the mask
        counter.publish(3, 5)
        assert counter.first_index(0, lambda: None) == 0 and counter.first_index(2, lambda: None) == 16
        waits: list[int] = []

        def waiting() -> None:  # block 2 is counted by "another process" after a few waits
            waits.append(1)
            if len(waits) == 3:
                counter.publish(2, 7)

        assert counter.first_index(3, waiting) == 23 and len(waits) == 3

        def gone() -> None:
            raise RasterReadError("the worker counting block 4 died")

        with pytest.raises(RasterReadError, match="died"):
            _BlockCounter(6).first_index(5, gone)
        import os

        os.read(counter._token, 1)  # as if a process had been killed while it held the lock
        with pytest.raises(RasterReadError, match="died"):
            counter.claim(gone)
    finally:
        counter.close()


def test_chips_skipped_after_their_read_in_processes_still_get_consecutive_names(tmp_path: Path) -> None:
    """A label raster with empty areas: chips are dropped only after their labels are read, so later blocks'
    predicted names are too high and are renamed, in order, without overwriting one another."""
    forking_allowed()
    raster = make_raster(tmp_path / "r.tif", size=128, count=3)
    lab = np.zeros((128, 128), dtype=np.uint8)
    lab[:, 40:] = 1
    lab[60:80, :] = 0  # whole rows of chips without a labelled pixel
    with rasterio.open(tmp_path / "c.tif", "w", driver="GTiff", width=128, height=128, count=1, dtype="uint8",
                       crs=CRS, transform=Affine(1, 0, X0, 0, -1, Y0)) as dst:
        dst.write(lab, 1)
    common: dict[str, Any] = {"tile_size_px": (16, 16), "stride_px": (8, 8)}
    procs = export_training_data(ExportConfig(str(raster), str(tmp_path / "c.tif"), str(tmp_path / "p"), workers=2,
                                              **common))
    threads = export_training_data(ExportConfig(str(raster), str(tmp_path / "c.tif"), str(tmp_path / "t"),
                                                workers=1, **common))
    assert procs.processes == 2 and procs.skipped["no_features"] > 20
    assert (procs.skipped, procs.chip_count) == (threads.skipped, threads.chip_count)
    names = sorted(p.stem for p in (tmp_path / "p" / "images").iterdir())
    assert names == [f"{i:06d}" for i in range(procs.chip_count)]
    assert_same_folder(tmp_path / "t", tmp_path / "p")
    assert no_worker_left()


def test_without_a_preview_the_helper_is_let_go(tmp_path: Path) -> None:
    """No preview to draw: the worker waiting for one sees its pipe close and exits (it once waited forever:
    every worker held a copy of the export's end of the helper's pipe)."""
    raster, labels = grid_case(tmp_path)
    cfg = ExportConfig(str(raster), str(labels), str(tmp_path / "p"), tile_size_px=(16, 16), stride_px=(16, 16),
                       workers=3, preview_chips=0)
    script = ("import json, sys, multiprocessing; from core.chips import ExportConfig, export_training_data; "
              "r = export_training_data(ExportConfig.from_dict(json.loads(sys.argv[1]))); "
              "print(r.processes, len(multiprocessing.active_children()))")
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(cfg.to_dict())], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["3", "0"]
    assert not (tmp_path / "p" / "preview.png").exists() and (tmp_path / "p" / "dataset.json").exists()


def test_the_helper_exits_when_the_export_is_killed(tmp_path: Path) -> None:
    """The export's process killed while its helper waits for the preview: the helper sees EOF and exits."""
    import os
    import signal
    import time

    raster, labels = grid_case(tmp_path)
    cfg = ExportConfig(str(raster), str(labels), str(tmp_path / "p"), tile_size_px=(16, 16), stride_px=(16, 16),
                       workers=2, preview_chips=0)
    script = ("import json, sys, time, multiprocessing; import core.chips as c\n"
              "def stuck(*a):\n"
              "    print(*[p.pid for p in multiprocessing.active_children()], flush=True); time.sleep(60)\n"
              "c._write_footprints = stuck\n"
              "c.export_training_data(c.ExportConfig.from_dict(json.loads(sys.argv[1])))\n")
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(cfg.to_dict())], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        helpers = [int(p) for p in proc.stdout.readline().split()]
        assert len(helpers) == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(helpers[0], 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(helpers[0], signal.SIGKILL)
            pytest.fail("the helper outlived the export's process by 10 s")
    finally:
        if proc.poll() is None:
            proc.kill()
