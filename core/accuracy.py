"""Assess accuracy: a classified raster against a reference raster or reference polygons.

The reference is brought onto the classified raster's grid (rasters: nearest-neighbour, reprojected
when needed; polygons: rasterized block by block with their class field, pixel-centre rule), then a
confusion matrix is accumulated over blocks (bounded memory) and turned into the figures of
:mod:`core.metrics`. Outputs, all written atomically beside each other:

* ``<report>.json``: ``overall_accuracy``, ``kappa``, ``miou``, ``per_class`` (precision, recall, f1,
  iou, support per class value), the confusion matrix and how it was made;
* ``<report>.csv``: the per-class table; ``<report>_confusion.csv``: the confusion matrix;
* ``<report>.html``: a one-page summary with both tables.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .config import StepConfig, require
from .errors import LabelError, RasterReadError
from .metrics import AccuracyMetrics, ConfusionAccumulator, metrics_from_confusion
from .outputs import atomic_outputs
from .progress import Feedback, NullFeedback, check_canceled

BLOCK_ROWS = 512
_NO_REFERENCE = -1


@dataclasses.dataclass(frozen=True)
class AccuracyConfig(StepConfig):
    """Parameters of Assess Accuracy.

    Attributes:
        classified: classified raster (band 1; its nodata is not evaluated).
        reference: reference raster (band 1) or polygon layer.
        output_report: JSON report path; the CSV and HTML files go beside it.
        class_field: class value field of reference polygons (required for polygons).
        reference_layer: layer name inside a multi-layer vector file.
        ignore_classes: class values not evaluated (pixels whose reference is one of them are skipped).
    """

    classified: Path
    reference: Path
    output_report: Path
    class_field: str | None = None
    reference_layer: str | None = None
    ignore_classes: tuple[int, ...] = ()

    def validate(self) -> None:
        require(Path(self.output_report).suffix.lower() == ".json",
                f"the report {self.output_report} must be a .json file (CSV and HTML are written beside it)")


@dataclasses.dataclass
class AccuracyResult:
    metrics: AccuracyMetrics
    report: Path
    csv: Path
    confusion_csv: Path
    html: Path
    class_names: dict[int, str]
    #: The JSON report's content; ``result["miou"]`` etc. read it like the file.
    body: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.body[key]


def _is_raster(path: Path) -> bool:
    import rasterio

    try:
        with rasterio.open(path):
            return True
    except Exception:
        return False


def _class_names(src: Any) -> dict[int, str]:
    """Names from our CLASS_NAMES tag ("1:water,2:forest") when the classified raster has one."""
    tag = src.tags().get("CLASS_NAMES", "")
    names: dict[int, str] = {}
    for item in tag.split(","):
        value, _, name = item.partition(":")
        if value.strip().lstrip("-").isdigit() and name:
            names[int(value)] = name
    return names


def _windows(height: int, width: int) -> Iterator[Any]:
    from rasterio.windows import Window

    for row in range(0, height, BLOCK_ROWS):
        yield Window(0, row, width, min(BLOCK_ROWS, height - row))


def _reference_polygons(config: AccuracyConfig, crs: Any,
                        known_names: dict[int, str] | None = None) -> tuple[list[Any], np.ndarray]:
    import shapely
    from rasterio.warp import transform_geom

    from .vectors import read_vector

    vec = read_vector(config.reference, config.reference_layer)
    if not config.class_field:
        raise LabelError(f"{config.reference} is a vector layer: give the field that holds the class values (CLASS_FIELD)")
    if config.class_field not in vec.attributes:
        raise LabelError(
            f"{config.reference} has no field {config.class_field!r}; its fields are {', '.join(vec.attributes) or 'none'}"
        )
    from .classes import class_values_from_field

    # Names in the class field are matched with the classified raster's class names (else numbered as the
    # export numbers them); nulls are an error, casting them would invent a class.
    values, _names = class_values_from_field(vec.attributes[config.class_field], config.class_field,
                                             str(config.reference), known_names or None)
    geoms = vec.geometries
    if not geoms:
        raise LabelError(f"{config.reference} holds no features; nothing to assess against")
    if vec.crs and crs is not None:
        from rasterio.crs import CRS

        if CRS.from_user_input(vec.crs) != crs:
            geoms = [shapely.geometry.shape(transform_geom(vec.crs, crs, shapely.geometry.mapping(g))) for g in geoms]
    return geoms, values


def assess_accuracy(config: AccuracyConfig, feedback: Feedback | None = None) -> AccuracyResult:
    """Compare ``config.classified`` with the reference; write the JSON, CSV and HTML reports."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.features import rasterize
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import transform as window_transform

    fb = feedback or NullFeedback()
    ignore = {int(v) for v in config.ignore_classes}
    try:
        cls_src = rasterio.open(config.classified)
    except Exception as exc:
        raise RasterReadError(f"cannot open the classified raster {config.classified}: {exc}") from exc
    with cls_src:
        names = _class_names(cls_src)
        cls_nodata = cls_src.nodata
        height, width = cls_src.height, cls_src.width
        polygons = None if _is_raster(Path(config.reference)) else _reference_polygons(config, cls_src.crs, names)
        ref_ds: Any = None
        ref_src: Any = None
        ref_nodata: float | None = None
        tree = None
        if polygons is None:
            ref_src = rasterio.open(config.reference)
            ref_nodata = ref_src.nodata
            same_grid = (ref_src.crs == cls_src.crs and ref_src.transform == cls_src.transform
                         and ref_src.shape == cls_src.shape)
            ref_ds = ref_src if same_grid else WarpedVRT(
                ref_src, crs=cls_src.crs, transform=cls_src.transform, width=width, height=height,
                resampling=Resampling.nearest, nodata=ref_nodata)
        else:
            import shapely

            tree = shapely.STRtree(polygons[0])
        # Classes: those the classified raster names (its package), plus every reference value seen.
        seen: set[int] = set(names)
        acc: ConfusionAccumulator | None = None
        try:
            windows = list(_windows(height, width))
            for pass_no in (0, 1):  # pass 0 collects the class values, pass 1 counts (bounded memory)
                for n, win in enumerate(windows):
                    check_canceled(fb, "assess accuracy")
                    pred = cls_src.read(1, window=win)
                    if polygons is None:
                        ref = ref_ds.read(1, window=win).astype(np.int64)
                        valid = np.ones(ref.shape, bool) if ref_nodata is None else ref != ref_nodata
                    else:
                        assert tree is not None
                        from shapely.geometry import box

                        wt = window_transform(win, cls_src.transform)
                        b = rasterio.windows.bounds(win, cls_src.transform)
                        hits = tree.query(box(*b))
                        shapes = [(polygons[0][i], int(polygons[1][i])) for i in hits]
                        ref = (rasterize(shapes, out_shape=(int(win.height), int(win.width)), transform=wt,
                                         fill=_NO_REFERENCE, dtype="int32").astype(np.int64)
                               if shapes else np.full((int(win.height), int(win.width)), _NO_REFERENCE, np.int64))
                        valid = ref != _NO_REFERENCE
                    if cls_nodata is not None:
                        valid &= pred != cls_nodata
                    if pass_no == 0:
                        seen |= set(np.unique(ref[valid]).tolist()) | set(np.unique(pred[valid]).tolist())
                    else:
                        assert acc is not None
                        acc.update(ref, pred, valid)
                        fb.set_progress(50.0 + 50.0 * (n + 1) / len(windows))
                    if pass_no == 0:
                        fb.set_progress(50.0 * (n + 1) / len(windows))
                if pass_no == 0:
                    classes = sorted(v for v in seen if v not in ignore and v != _NO_REFERENCE)
                    acc = ConfusionAccumulator(classes)
        finally:
            if ref_ds is not None and ref_ds is not ref_src:
                ref_ds.close()
            if ref_src is not None:
                ref_src.close()
    assert acc is not None
    metrics = metrics_from_confusion(acc.matrix, acc.classes)
    if metrics.evaluated_pixels == 0:
        raise LabelError(
            f"no pixel of {config.classified} has a reference value in {config.reference} (outside nodata and ignored "
            "classes); check that they overlap and that the class field / ignored classes are right"
        )
    return _write_reports(config, metrics, names, ignore)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _write_reports(config: AccuracyConfig, metrics: AccuracyMetrics, names: dict[int, str],
                   ignore: set[int]) -> AccuracyResult:
    report_path = Path(config.output_report)
    csv_path = report_path.with_suffix(".csv")
    confusion_path = report_path.with_name(report_path.stem + "_confusion.csv")
    html_path = report_path.with_suffix(".html")
    body = metrics.to_dict()
    for v, item in body["per_class"].items():
        item["name"] = names.get(int(v), f"class {v}")
    body["ignored_classes"] = sorted(ignore)
    body["classified"] = str(config.classified)
    body["reference"] = str(config.reference)
    body["class_field"] = config.class_field
    label = [names.get(c, f"class {c}") for c in metrics.classes]
    rows = "\n".join(
        f"<tr><td>{v}</td><td>{html.escape(name)}</td><td>{_fmt(m.precision)}</td><td>{_fmt(m.recall)}</td>"
        f"<td>{_fmt(m.f1)}</td><td>{_fmt(m.iou)}</td><td>{m.support}</td></tr>"
        for (v, m), name in zip(metrics.per_class.items(), label))
    head = "".join(f"<th>{html.escape(n)}</th>" for n in [*label, "other"])
    matrix_rows = "\n".join(
        f"<tr><th>{html.escape(n)}</th>" + "".join(f"<td>{x}</td>" for x in row) + "</tr>"
        for n, row in zip([*label, "other"], metrics.matrix.tolist()))
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Accuracy assessment</title>
<style>body{{font-family:sans-serif}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #999;padding:3px 8px;text-align:right}}</style></head><body>
<h1>Accuracy assessment</h1>
<p>Classified: {html.escape(str(config.classified))}<br>Reference: {html.escape(str(config.reference))}
{'(field ' + html.escape(config.class_field) + ')' if config.class_field else ''}<br>
Evaluated pixels: {metrics.evaluated_pixels}; ignored classes: {', '.join(map(str, sorted(ignore))) or 'none'}</p>
<p><b>Overall accuracy</b> {_fmt(metrics.overall_accuracy)} &nbsp; <b>Kappa</b> {_fmt(metrics.kappa)}
&nbsp; <b>mIoU</b> {_fmt(metrics.miou)}</p>
<h2>Per class</h2>
<table><tr><th>value</th><th>name</th><th>precision</th><th>recall</th><th>F1</th><th>IoU</th><th>support</th></tr>
{rows}
</table>
<h2>Confusion matrix (rows: reference, columns: prediction)</h2>
<table><tr><th></th>{head}</tr>
{matrix_rows}
</table></body></html>
"""
    # One report in four files: none is put in place unless all four were written.
    with atomic_outputs(csv_path, confusion_path, html_path, report_path) as (csv_tmp, confusion_tmp, html_tmp,
                                                                               report_tmp):
        with open(csv_tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["class_value", "class_name", "precision", "recall", "f1", "iou", "support", "predicted"])
            for (v, m), name in zip(metrics.per_class.items(), label):
                w.writerow([v, name, _fmt(m.precision), _fmt(m.recall), _fmt(m.f1), _fmt(m.iou), m.support,
                            m.predicted])
        with open(confusion_tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["reference \\ prediction", *[str(c) for c in metrics.classes], "other"])
            for c, row in zip([*[str(c) for c in metrics.classes], "other"], metrics.matrix.tolist()):
                w.writerow([c, *row])
        html_tmp.write_text(page, encoding="utf-8")
        report_tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return AccuracyResult(metrics, report_path, csv_path, confusion_path, html_path, names, body)
