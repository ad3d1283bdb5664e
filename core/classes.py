"""Classes (value, name, colour) and the styles that make outputs look like the user's legend.

A class table travels from the label layer into the training folder, the model package and onto
the classified raster (colour table and a QGIS ``.qml`` sidecar), so every step shows the same legend.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from .errors import ConfigError

#: A fixed, readable palette (ColorBrewer Set1/Dark2 style) for classes without a user style.
DEFAULT_PALETTE: tuple[str, ...] = (
    "#1f78b4", "#33a02c", "#e6ab02", "#e31a1c", "#a6761d", "#6a3d9a", "#ff7f00", "#b2df8a",
    "#fb9a99", "#a6cee3", "#cab2d6", "#ffff99", "#666666", "#1b9e77", "#d95f02", "#7570b3",
)


@dataclasses.dataclass(frozen=True)
class ClassInfo:
    """One class: the pixel value in label and classified rasters, a name and a ``#rrggbb`` colour."""

    value: int
    name: str
    color: str

    def __post_init__(self) -> None:
        if not 0 <= self.value <= 254:
            raise ConfigError(f"class value {self.value} is outside 0-254; renumber the classes of the label layer")
        if len(self.color) != 7 or not self.color.startswith("#"):
            raise ConfigError(f"class colour {self.color!r} is not of the form #rrggbb")

    @property
    def rgba(self) -> tuple[int, int, int, int]:
        return int(self.color[1:3], 16), int(self.color[3:5], 16), int(self.color[5:7], 16), 255

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "name": self.name, "color": self.color}


def default_color(value: int) -> str:
    """Colour of a class value in the fixed palette."""
    return DEFAULT_PALETTE[(value - 1) % len(DEFAULT_PALETTE)]


def make_classes(values: Iterable[int], names: dict[int, str] | None = None,
                 colors: dict[int, str] | None = None) -> list[ClassInfo]:
    """Build a sorted class table, filling missing names ("class N") and colours (palette)."""
    names = names or {}
    colors = colors or {}
    return [
        ClassInfo(int(v), names.get(int(v), f"class {int(v)}"), colors.get(int(v), default_color(int(v))))
        for v in sorted({int(v) for v in values})
    ]


def classes_from_json(items: Sequence[dict[str, Any]]) -> list[ClassInfo]:
    return [ClassInfo(int(c["value"]), str(c["name"]), str(c["color"])) for c in items]


def colormap(classes: Iterable[ClassInfo]) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table (as rasterio's ``write_colormap`` wants it)."""
    return {c.value: c.rgba for c in classes}


def write_paletted_qml(raster_path: str | Path, classes: Sequence[ClassInfo], band: int = 1) -> Path:
    """Write ``<raster>.qml`` so QGIS opens the raster with the class colours and names (paletted)."""
    entries = "\n".join(
        f'        <paletteEntry value="{c.value}" color="{c.color}" alpha="255" label="{escape(c.name, {chr(34): "&quot;"})}"/>'
        for c in classes
    )
    qml = f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22" styleCategories="Symbology">
  <pipe>
    <rasterrenderer type="paletted" band="{band}" opacity="1" alphaBand="-1" nodataColor="">
      <rasterTransparency/>
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>
  </pipe>
</qgis>
"""
    path = Path(raster_path).with_suffix(".qml")
    path.write_text(qml, encoding="utf-8")
    return path


def write_categorized_qml(vector_path: str | Path, field: str, classes: Sequence[ClassInfo],
                          geometry: str = "fill") -> Path:
    """Write ``<vector>.qml``: a categorized style on ``field`` with the class colours and names."""
    symbols, categories = [], []
    for i, c in enumerate(classes):
        label = escape(c.name, {'"': "&quot;"})
        categories.append(f'      <category render="true" symbol="{i}" value="{c.value}" label="{label}"/>')
        r, g, b, a = c.rgba
        layer_class = {"fill": "SimpleFill", "line": "SimpleLine", "marker": "SimpleMarker"}[geometry]
        color_key = "line_color" if geometry == "line" else "color"
        symbols.append(
            f'      <symbol type="{geometry}" name="{i}" alpha="1" force_rhr="0" clip_to_extent="1">\n'
            f'        <layer class="{layer_class}" enabled="1" pass="0" locked="0">\n'
            f'          <Option type="Map"><Option type="QString" name="{color_key}" value="{r},{g},{b},{a}"/>'
            f'<Option type="QString" name="line_width" value="0.6"/></Option>\n'
            f'        </layer>\n      </symbol>'
        )
    qml = f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22" styleCategories="Symbology">
  <renderer-v2 type="categorizedSymbol" attr="{escape(field)}" forceraster="0" symbollevels="0" enableorderby="0">
    <categories>
{chr(10).join(categories)}
    </categories>
    <symbols>
{chr(10).join(symbols)}
    </symbols>
  </renderer-v2>
</qgis>
"""
    path = Path(vector_path).with_suffix(".qml")
    path.write_text(qml, encoding="utf-8")
    return path


def classes_to_json(classes: Sequence[ClassInfo]) -> str:
    return json.dumps([c.to_dict() for c in classes], indent=2)


def class_values_from_field(raw: Sequence[Any] | Any, field: str, layer: str,
                            known_names: dict[int, str] | None = None) -> tuple[Any, dict[int, str]]:
    """Integer class values of a label field, and the class names when the field holds names, not numbers.

    Numbers (or text digits) are used as they are. A field of names (``forest``, ``water``: common in
    real label sets) is numbered: by ``known_names`` (value -> name, e.g. a classified raster's classes;
    case-insensitive) when given, else alphabetically 1..N. Export and accuracy assessment use the same
    rule, so one layer numbers the same way in every step. Empty values are an error: casting them
    would invent a class.
    """
    import numpy as np

    from .errors import LabelError

    arr = np.asarray(raw)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64), {}
    empty = sum(1 for v in arr if v is None or (isinstance(v, float) and v != v) or str(v).strip() == "")
    if empty:
        raise LabelError(f"the class field {field!r} of {layer} is empty in {empty} feature(s); fill in their "
                         "class values (0 = unlabelled) or delete those features")
    try:
        numbers = np.array([float(v) for v in arr], dtype=np.float64)
    except (TypeError, ValueError):
        numbers = None
    if numbers is not None:
        if not np.all(numbers == np.round(numbers)):
            bad = numbers[numbers != np.round(numbers)][0]
            raise LabelError(f"the class field {field!r} of {layer} holds non-integer values (e.g. {bad}); class "
                             "values must be whole numbers 1-254 (0 = unlabelled)")
        return numbers.astype(np.int64), {}
    texts = [str(v).strip() for v in arr]
    if known_names:
        lookup = {name.strip().lower(): value for value, name in known_names.items()}
        unknown = sorted({t for t in texts if t.lower() not in lookup})
        if unknown:
            raise LabelError(f"the class field {field!r} of {layer} holds class names the classified raster does "
                             f"not have: {', '.join(unknown[:5])}; its classes are "
                             f"{', '.join(f'{v} {n}' for v, n in sorted(known_names.items()))}")
        values = np.array([lookup[t.lower()] for t in texts], dtype=np.int64)
        return values, {int(v): known_names[int(v)] for v in np.unique(values)}
    ordered = sorted(set(texts), key=lambda t: (t.lower(), t))
    if len(ordered) > 254:
        raise LabelError(f"the class field {field!r} of {layer} holds {len(ordered)} different names; at most 254 "
                         "classes fit")
    numbering = {name: i for i, name in enumerate(ordered, start=1)}
    return np.array([numbering[t] for t in texts], dtype=np.int64), {i: n for n, i in numbering.items()}
