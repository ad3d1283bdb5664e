"""Reading and writing vector layers (GeoPackage, GeoJSON, Shapefile) without QGIS.

Uses pyogrio's raw API (numpy arrays and WKB), so core needs neither fiona nor geopandas.
Geometries come back as shapely objects; attributes as a dict of numpy arrays.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from .errors import VectorReadError
from .outputs import atomic_output


@dataclasses.dataclass
class VectorData:
    """A vector layer in memory: geometries, attributes (column name -> array) and CRS (WKT or auth string)."""

    geometries: list[Any]
    attributes: dict[str, np.ndarray]
    crs: str | None
    geometry_type: str

    def __len__(self) -> int:
        return len(self.geometries)


def read_vector(path: str | Path, layer: str | int | None = None) -> VectorData:
    """Read a whole vector layer; features without geometry are dropped (they cannot label pixels)."""
    import pyogrio.raw

    try:
        meta, _fids, wkb, field_data = pyogrio.raw.read(str(path), layer=layer)
    except Exception as exc:
        raise VectorReadError(
            f"cannot read vector layer {path}{'|' + str(layer) if layer is not None else ''}: {exc}; "
            "check that the file exists and is a vector format GDAL reads (GeoPackage, GeoJSON, Shapefile)"
        ) from exc
    geoms = shapely.from_wkb(wkb) if wkb is not None else np.array([], dtype=object)
    keep = np.array([g is not None and not g.is_empty for g in geoms], dtype=bool)
    attributes = {name: np.asarray(col)[keep] for name, col in zip(meta["fields"], field_data)}
    return VectorData(
        geometries=list(np.asarray(geoms, dtype=object)[keep]),
        attributes=attributes,
        crs=meta.get("crs"),
        geometry_type=str(meta.get("geometry_type", "Unknown")),
    )


# Drivers of the usual extensions: pyogrio's own detection asks GDAL about every driver (1.4 ms per write, a
# tenth of an export's footprints). Other extensions are still detected.
_DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".shp": "ESRI Shapefile",
            ".fgb": "FlatGeobuf"}


def write_vector(
    path: str | Path,
    geometries: Sequence[Any],
    attributes: dict[str, Sequence[Any] | np.ndarray],
    crs: str | None,
    layer: str | None = None,
    geometry_type: str | None = None,
    overwrite: bool = True,
) -> Path:
    """Write one layer to a new file (format from the extension), atomically."""
    import pyogrio.raw

    final = Path(path)
    layer_name = layer or final.stem
    fields = list(attributes)
    columns = [np.asarray(attributes[f]) for f in fields]
    for name, col in zip(fields, columns):
        if len(col) != len(geometries):
            raise ValueError(f"attribute {name!r} has {len(col)} values for {len(geometries)} geometries")
    columns = [c.astype(object) if c.dtype.kind == "U" else c for c in columns]
    wkb = shapely.to_wkb(np.asarray(list(geometries), dtype=object)) if len(geometries) else np.array([], dtype=object)
    if geometry_type is None:
        kinds = {g.geom_type for g in geometries}
        geometry_type = kinds.pop() if len(kinds) == 1 else "Unknown"
    with atomic_output(final, overwrite=overwrite) as tmp, _no_sqlite_journal():
        pyogrio.raw.write(
            str(tmp),
            wkb,
            columns,
            fields,
            crs=crs,
            layer=layer_name,
            geometry_type=geometry_type,
            promote_to_multi=False,
            driver=_DRIVERS.get(final.suffix.lower()),
        )
    return final


@contextlib.contextmanager
def _no_sqlite_journal() -> Iterator[None]:
    """Write GeoPackages without SQLite's rollback journal (pyogrio's own GDAL; put back afterwards).

    Every vector file this project writes is written under a temporary name and renamed when complete
    (:func:`core.outputs.atomic_output`), so a crash leaves garbage to delete, never a half-written layer that
    a journal would have to roll back; the journal's file creation and deletion were 15 % of writing an
    export's 400 chip footprints (1.5-2 of 10-12 ms). The setting is GDAL's, process-wide, so it is only held
    during the write: reads (a user's label layer) keep SQLite's defaults. QGIS's GDAL is a separate library.
    """
    import pyogrio

    before = pyogrio.get_gdal_config_option("OGR_SQLITE_JOURNAL")
    pyogrio.set_gdal_config_options({"OGR_SQLITE_JOURNAL": "OFF"})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_SQLITE_JOURNAL": before})
