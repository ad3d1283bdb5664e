"""Built-in sample scene: a deterministic, realistic georeferenced scene with its ground truth.

The demo, the tutorials and the tests need imagery with labels that is not committed to the
repository. This module draws one from a seed: a road network (a primary road crossing a
secondary one, a curving tertiary road, a residential grid with T-junctions, dead-end tracks;
widths from 3.5 m to 14 m) over land cover (water with a river and a bridge, forest, field parcels,
buildings with shadows, bare ground), with texture, illumination and sensor noise, in a projected
CRS at sub-metre cells. The same seed always gives the same files.

Written files (in ``output_dir``):

- ``scene.tif``: 4 bands uint8 (red, green, blue, nir), nodata 0 in a clipped corner (an image
  footprint edge, as real orthophotos have).
- ``landcover_classes.tif``: uint8 class raster (1 water, 2 forest, 3 fields, 4 buildings,
  5 bare ground, 6 road) with a colour table and a ``.qml`` legend.
- ``landcover_polygons.gpkg``: the land-cover polygons with ``classvalue`` and ``classname``.
- ``road_centerlines.gpkg``: road centerlines noded at junctions, with ``road_id``, ``highway``,
  ``speed_kph``, ``width_m``.
- ``road_mask.tif``: 0/1 road surface mask on the scene grid.
- ``scene.json``: what was generated and how.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .classes import ClassInfo, colormap, write_categorized_qml, write_paletted_qml
from .config import StepConfig, require
from .outputs import atomic_output
from .progress import Feedback, NullFeedback, check_canceled

#: Land-cover classes of the sample scene (values, names, colours of its legend).
SAMPLE_CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(1, "water", "#1f78b4"),
    ClassInfo(2, "forest", "#1b7837"),
    ClassInfo(3, "fields", "#d9ef8b"),
    ClassInfo(4, "buildings", "#e31a1c"),
    ClassInfo(5, "bare ground", "#bf812d"),
    ClassInfo(6, "road", "#525252"),
)
WATER, FOREST, FIELDS, BUILDINGS, BARE, ROAD = (c.value for c in SAMPLE_CLASSES)

#: Road types: (highway tag, width in metres, speed in km/h, asphalt RGBN colour).
ROAD_TYPES: dict[str, tuple[float, float, tuple[int, int, int, int]]] = {
    "primary": (14.0, 90.0, (92, 92, 98, 70)),
    "secondary": (9.0, 60.0, (105, 104, 108, 78)),
    "tertiary": (7.0, 50.0, (118, 115, 112, 85)),
    "residential": (5.5, 30.0, (128, 126, 124, 90)),
    "track": (3.5, 20.0, (158, 136, 104, 112)),
}

BAND_NAMES = ("red", "green", "blue", "nir")


@dataclasses.dataclass(frozen=True)
class SampleSceneConfig(StepConfig):
    """How big and where the scene is. The default is 2400 x 2400 px at 0.5 m (1.2 km square)."""

    size_px: int = 2400
    cell_size_m: float = 0.5
    seed: int = 42
    crs: str = "EPSG:32633"
    origin_x: float = 500_000.0
    origin_y: float = 5_200_000.0
    nodata_corner: bool = True

    def validate(self) -> None:
        require(128 <= self.size_px <= 20_000, f"size_px must be 128-20000 pixels, got {self.size_px}")
        require(0.05 <= self.cell_size_m <= 10.0, f"cell_size_m must be 0.05-10 m, got {self.cell_size_m}")


@dataclasses.dataclass(frozen=True)
class SampleScene:
    """Paths of the generated files."""

    folder: Path
    image: Path
    class_raster: Path
    landcover_polygons: Path
    road_centerlines: Path
    road_mask: Path
    description: Path


# --------------------------------------------------------------------------- geometry (local metres)


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float, roughness: float = 0.25) -> Any:
    """A star-shaped noisy blob: always a valid polygon, like a lake or a forest stand."""
    from shapely.geometry import Polygon

    t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    radius = np.ones_like(t)
    for k in range(2, 7):
        radius += roughness / k * rng.uniform(0.4, 1.0) * np.sin(k * t + rng.uniform(0, 2 * np.pi))
    radius = r * np.clip(radius, 0.35, None)
    return Polygon(np.c_[cx + radius * np.cos(t), cy + radius * np.sin(t)])


def _bezier(p0: tuple[float, float], p1: tuple[float, float], p2: tuple[float, float], n: int = 80) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return np.asarray((1 - t) ** 2 * np.array(p0) + 2 * (1 - t) * t * np.array(p1) + t**2 * np.array(p2))


def _roads(rng: np.random.Generator, side: float) -> list[tuple[Any, str]]:
    """Road centerlines in local metres (0..side), with their highway type."""
    from shapely.geometry import LineString

    L = side
    ph1, ph2, ph3 = rng.uniform(0, 2 * np.pi, 3)

    def primary_y(x: np.ndarray | float) -> Any:
        return 0.55 * L + 0.06 * L * np.sin(2 * np.pi * np.asarray(x) / (0.9 * L) + ph1)

    def secondary_x(y: np.ndarray | float) -> Any:
        return 0.38 * L + 0.05 * L * np.sin(2 * np.pi * np.asarray(y) / (1.1 * L) + ph2)

    xs = np.linspace(-0.02 * L, 1.02 * L, 160)
    ys = np.linspace(-0.02 * L, 1.02 * L, 160)
    roads: list[tuple[Any, str]] = [
        (LineString(np.c_[xs, primary_y(xs)]), "primary"),
        (LineString(np.c_[secondary_x(ys), ys]), "secondary"),
    ]
    # Tertiary: leaves the secondary road (T-junction) and curves out to the east edge.
    start = (float(secondary_x(0.85 * L)), 0.85 * L)
    roads.append((LineString(_bezier(start, (0.7 * L, 0.99 * L), (1.02 * L, 0.8 * L))), "tertiary"))
    # Residential grid west of the secondary road, south of the primary: T-junctions and crossings.
    street_v = [0.12 * L, 0.22 * L, 0.32 * L, 0.42 * L]
    for v in street_v:
        roads.append((LineString([(0.05 * L, v), (float(secondary_x(v)), v)]), "residential"))
    for u in (0.08 * L, 0.17 * L, 0.26 * L):
        wobble = 0.006 * L * np.sin(np.linspace(0, np.pi, 20) + ph3)
        vs = np.linspace(street_v[0], street_v[-1], 20)
        line = np.c_[u + wobble - wobble[0], vs]
        roads.append((LineString(line), "residential"))
    # Tracks: dead ends into the forest and the fields.
    x0 = 0.7 * L
    roads.append((LineString(_bezier((x0, float(primary_y(x0))), (0.62 * L, 0.3 * L), (0.82 * L, 0.16 * L))), "track"))
    y0 = 0.7 * L
    roads.append((LineString(_bezier((float(secondary_x(y0)), y0), (0.25 * L, 0.62 * L), (0.1 * L, 0.76 * L))), "track"))
    return roads


def _node_network(roads: list[tuple[Any, str]], box: Any) -> list[tuple[Any, str]]:
    """Clip to the scene and split every road at every junction, keeping each piece's type."""
    from shapely import unary_union
    from shapely.geometry import LineString, Point

    clipped = [(line.intersection(box), kind) for line, kind in roads]
    noded = unary_union([g for g, _ in clipped])
    pieces = list(getattr(noded, "geoms", [noded]))
    out = []
    for piece in pieces:
        if not isinstance(piece, LineString) or piece.length < 1e-6:
            continue
        mid = piece.interpolate(0.5, normalized=True)
        kind = min(clipped, key=lambda gk: gk[0].distance(Point(mid.x, mid.y)))[1]
        out.append((piece, kind))
    return out


def _buildings(rng: np.random.Generator, side: float, road_surface: Any) -> list[Any]:
    """Houses in rows along the residential streets, plus a few farm buildings; never on a road."""
    from shapely import affinity
    from shapely.geometry import box

    L = side
    houses: list[Any] = []
    street_v = [0.12 * L, 0.22 * L, 0.32 * L, 0.42 * L]
    for v in street_v:
        for sign in (1, -1):
            u = 0.05 * L + rng.uniform(2, 8)
            while u < 0.33 * L:
                w, h = rng.uniform(8, 14), rng.uniform(7, 11)
                cy = v + sign * (2.75 + 4 + h / 2)
                house = affinity.rotate(box(u, cy - h / 2, u + w, cy + h / 2), rng.uniform(-6, 6))
                if not house.intersects(road_surface.buffer(1.5)) and all(not house.intersects(o.buffer(2)) for o in houses):
                    houses.append(house)
                u += w + rng.uniform(4, 9)
    for cx, cy in ((0.9 * L, 0.9 * L), (0.93 * L, 0.86 * L), (0.6 * L, 0.35 * L)):
        w, h = rng.uniform(14, 24), rng.uniform(9, 14)
        barn = affinity.rotate(box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), rng.uniform(0, 90))
        if not barn.intersects(road_surface.buffer(2)):
            houses.append(barn)
    return houses


def _river(rng: np.random.Generator, side: float) -> Any:
    """A meandering river of varying width flowing into the lake."""
    from shapely import unary_union
    from shapely.geometry import LineString

    L = side
    pts = _bezier((0.52 * L, -0.03 * L), (0.6 * L, 0.45 * L), (0.82 * L, 0.72 * L), n=120)
    normal = np.gradient(pts, axis=0)[:, ::-1] * np.array([1.0, -1.0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    pts = pts + normal * (0.02 * L * np.sin(np.linspace(0, 5 * np.pi, len(pts))))[:, None]
    widths = 8 + 8 * (0.5 + 0.5 * np.sin(np.linspace(0, 3 * np.pi, len(pts)) + rng.uniform(0, 6)))
    return unary_union(
        [LineString(pts[i : i + 2]).buffer(widths[i] / 2) for i in range(len(pts) - 1)]
    )


def _landcover(rng: np.random.Generator, side: float, road_surface: Any, houses: list[Any]) -> list[tuple[Any, int]]:
    """Non-overlapping land-cover polygons (class priority: road > building > water > forest > bare > fields)."""
    from shapely import affinity, unary_union
    from shapely.geometry import box

    L = side
    scene = box(0, 0, L, L)
    building_area = unary_union(houses) if houses else box(0, 0, 0, 0)
    water = unary_union([_blob(rng, 0.84 * L, 0.74 * L, 0.08 * L, 0.3), _river(rng, L)])
    forest = unary_union([
        _blob(rng, 0.76 * L, 0.26 * L, 0.14 * L),
        _blob(rng, 0.13 * L, 0.8 * L, 0.11 * L),
        _blob(rng, 0.52 * L, 0.9 * L, 0.07 * L),
    ])
    bare = unary_union([
        _blob(rng, 0.93 * L, 0.07 * L, 0.06 * L),
        _blob(rng, 0.22 * L, 0.6 * L, 0.035 * L),
        box(0.03 * L, 0.06 * L, 0.34 * L, 0.47 * L),  # open land between the houses of the town
    ])
    taken = unary_union([road_surface, building_area])
    features: list[tuple[Any, int]] = [(road_surface.intersection(scene), ROAD)]
    features += [(h.difference(road_surface), BUILDINGS) for h in houses]
    for geom, value in ((water, WATER), (forest, FOREST), (bare, BARE)):
        geom = geom.intersection(scene).difference(taken)
        features.append((geom, value))
        taken = unary_union([taken, geom])
    # Field parcels: a rotated grid over the rest of the scene; each parcel is its own feature.
    angle = float(rng.uniform(5, 15))
    pw, ph = 0.17 * L, 0.11 * L
    for i in range(-2, 9):
        for j in range(-2, 11):
            parcel = affinity.rotate(box(i * pw, j * ph, (i + 1) * pw, (j + 1) * ph), angle, origin=(L / 2, L / 2))
            parcel = parcel.intersection(scene).difference(taken)
            if parcel.area > 1.0:
                features.append((parcel, FIELDS))
    return [(g, v) for g, v in features if not g.is_empty and g.area > 0.01]


def _as_multipolygon(geom: Any) -> Any:
    """A valid MultiPolygon from the result of overlay operations (which may be invalid or mixed)."""
    import shapely
    from shapely.geometry import MultiPolygon, Polygon

    geom = shapely.make_valid(shapely.force_2d(geom))
    parts = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, (Polygon, MultiPolygon))]
    polygons = [p for g in parts for p in getattr(g, "geoms", [g]) if p.area > 0]
    return MultiPolygon(polygons)


# --------------------------------------------------------------------------- imagery


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-std noise with a correlation length of about ``sigma_px``."""
    from scipy import ndimage

    # Draw at a coarse resolution and zoom: same look as filtering full-size noise, far cheaper.
    step = max(1, int(sigma_px // 2))
    small = rng.standard_normal((shape[0] // step + 2, shape[1] // step + 2)).astype(np.float32)
    small = ndimage.gaussian_filter(small, max(sigma_px / step, 0.5))
    noise = ndimage.zoom(small, step, order=1)[: shape[0], : shape[1]]
    noise -= noise.mean()
    return np.asarray(noise / (noise.std() + 1e-6), dtype=np.float32)


def _render(
    rng: np.random.Generator,
    feature_ids: np.ndarray,
    feature_class: np.ndarray,
    feature_color: np.ndarray,
    feature_stripe: np.ndarray,
    cell: float,
) -> np.ndarray:
    """Turn a raster of feature ids into a textured 4-band image (float32, 0-255)."""
    from scipy import ndimage

    shape = (int(feature_ids.shape[0]), int(feature_ids.shape[1]))
    cls = feature_class[feature_ids]
    img = feature_color[feature_ids].astype(np.float32)  # (rows, cols, 4)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)

    # Field stripes (ploughing/sowing direction and spacing differ per parcel).
    fields = cls == FIELDS
    theta, period_m = feature_stripe[feature_ids, 0], feature_stripe[feature_ids, 1]
    phase = (cols * np.cos(theta) + rows * np.sin(theta)) * cell / np.maximum(period_m, 0.5)
    img[fields] *= (1.0 + 0.09 * np.sin(2 * np.pi * phase[fields]))[:, None]

    # Tree crowns: bright crowns with dark gaps, scale about 3 m.
    crowns = _smooth_noise(rng, shape, max(1.0, 1.5 / cell))
    forest = cls == FOREST
    img[forest] *= np.clip(1.0 + 0.28 * crowns[forest], 0.45, 1.6)[:, None]

    # Gentle grain on soil, fields and water; cars are left to the imagination.
    grain = _smooth_noise(rng, shape, max(1.0, 0.8 / cell))
    img *= (1.0 + 0.05 * grain)[..., None]

    # Building shadows (sun from the south-east, shadows towards the north-west).
    shadow_px = max(1, int(round(3.0 / cell)))
    building = cls == BUILDINGS
    shifted = np.zeros_like(building)
    shifted[:-shadow_px, :-shadow_px] = building[shadow_px:, shadow_px:]
    img[shifted & ~building] *= 0.55

    # Illumination and haze varying slowly over the scene, then optics and sensor noise.
    illumination = _smooth_noise(rng, shape, max(4.0, 60.0 / cell))
    img *= (1.0 + 0.07 * illumination)[..., None]
    for b in range(img.shape[2]):
        img[..., b] = ndimage.gaussian_filter(img[..., b], 0.6)
    img += rng.normal(0.0, 2.5, img.shape).astype(np.float32)
    return np.asarray(img, dtype=np.float32)


# --------------------------------------------------------------------------- main entry


def generate_sample_scene(
    output_dir: str | Path,
    config: SampleSceneConfig | None = None,
    feedback: Feedback | None = None,
) -> SampleScene:
    """Generate the sample scene into ``output_dir`` (created; replaced atomically if it exists)."""
    import rasterio
    from rasterio.features import rasterize
    from rasterio.transform import from_origin
    from shapely import affinity, unary_union
    from shapely.geometry import box

    from .vectors import write_vector

    cfg = config or SampleSceneConfig()
    fb = feedback or NullFeedback()
    rng = np.random.default_rng(cfg.seed)
    n, cell = cfg.size_px, cfg.cell_size_m
    side = n * cell
    scene_box = box(0, 0, side, side)

    fb.info(f"sample scene: {n} x {n} px at {cell} m in {cfg.crs} (seed {cfg.seed})")
    roads = _node_network(_roads(rng, side), scene_box)
    road_surface = unary_union([line.buffer(ROAD_TYPES[kind][0] / 2) for line, kind in roads]).intersection(scene_box)
    houses = _buildings(rng, side, road_surface)
    landcover = _landcover(rng, side, road_surface, houses)
    fb.set_progress(20)
    check_canceled(fb, "sample scene")

    # Local metres -> map coordinates (origin at the top-left corner of the raster).
    x0, y_top = cfg.origin_x, cfg.origin_y + side

    def to_map(g: Any) -> Any:
        return affinity.translate(g, xoff=cfg.origin_x, yoff=cfg.origin_y)

    transform = from_origin(x0, y_top, cell, cell)
    shape = (n, n)

    # Per-feature rendering attributes; roads are rendered per type, drawn last (on top).
    feats: list[tuple[Any, int, tuple[int, int, int, int], tuple[float, float]]] = []
    base = {
        WATER: (38, 58, 72, 18), FOREST: (42, 78, 40, 150), BARE: (168, 148, 120, 135),
    }
    field_colors = [(86, 132, 62, 175), (176, 164, 96, 125), (134, 104, 74, 95), (110, 146, 70, 160)]
    roof_colors = [(156, 74, 62, 72), (146, 146, 150, 110), (84, 82, 88, 64), (178, 120, 90, 96)]
    for geom, value in landcover:
        if value == ROAD:
            continue
        if value == FIELDS:
            color = field_colors[int(rng.integers(len(field_colors)))]
        elif value == BUILDINGS:
            color = roof_colors[int(rng.integers(len(roof_colors)))]
        else:
            color = base[value]
        stripe = (float(rng.uniform(0, np.pi)), float(rng.uniform(1.5, 4.0)))
        feats.append((to_map(geom), value, color, stripe))
    for line, kind in roads:
        width, _speed, color = ROAD_TYPES[kind]
        feats.append((to_map(line.buffer(width / 2)), ROAD, color, (0.0, 1.0)))

    feature_class = np.zeros(len(feats) + 1, dtype=np.uint8)
    feature_color = np.zeros((len(feats) + 1, 4), dtype=np.float32)
    feature_stripe = np.ones((len(feats) + 1, 2), dtype=np.float32)
    for i, (_g, value, color, stripe) in enumerate(feats, start=1):
        feature_class[i], feature_color[i], feature_stripe[i] = value, color, stripe
    feature_ids = rasterize(
        ((g, i) for i, (g, *_rest) in enumerate(feats, start=1)), out_shape=shape, transform=transform, dtype="int32"
    )
    fb.set_progress(40)
    check_canceled(fb, "sample scene")
    image = _render(rng, feature_ids, feature_class, feature_color, feature_stripe, cell)
    image = np.clip(np.rint(image), 1, 255).astype(np.uint8)  # 0 is reserved for nodata
    if cfg.nodata_corner:
        rr, cc = np.mgrid[0:n, 0:n]
        image[(cc - rr) > int(0.8 * n)] = 0  # the clipped top-right corner of an orthophoto footprint
    classes = feature_class[feature_ids]
    road_mask = rasterize(
        ((to_map(road_surface), 1),), out_shape=shape, transform=transform, dtype="uint8"
    )
    fb.set_progress(70)
    check_canceled(fb, "sample scene")

    profile: dict[str, Any] = {
        "driver": "GTiff", "width": n, "height": n, "crs": cfg.crs, "transform": transform,
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
    }
    with atomic_output(output_dir) as tmp:
        tmp.mkdir()
        paths = SampleScene(
            folder=Path(output_dir), image=Path(output_dir) / "scene.tif",
            class_raster=Path(output_dir) / "landcover_classes.tif",
            landcover_polygons=Path(output_dir) / "landcover_polygons.gpkg",
            road_centerlines=Path(output_dir) / "road_centerlines.gpkg",
            road_mask=Path(output_dir) / "road_mask.tif", description=Path(output_dir) / "scene.json",
        )
        with rasterio.open(tmp / "scene.tif", "w", count=4, dtype="uint8", nodata=0, photometric="RGB",
                           **profile) as dst:
            dst.write(np.moveaxis(image, -1, 0))
            for b, name in enumerate(BAND_NAMES, start=1):
                dst.set_band_description(b, name)
        with rasterio.open(tmp / "landcover_classes.tif", "w", count=1, dtype="uint8", nodata=0, **profile) as dst:
            dst.write(classes, 1)
            dst.write_colormap(1, colormap(SAMPLE_CLASSES))
            dst.set_band_description(1, "land cover class")
        write_paletted_qml(tmp / "landcover_classes.tif", SAMPLE_CLASSES)
        with rasterio.open(tmp / "road_mask.tif", "w", count=1, dtype="uint8", **profile) as dst:
            dst.write(road_mask, 1)
            dst.set_band_description(1, "road surface (1) from centerlines buffered by width_m / 2")

        names = {c.value: c.name for c in SAMPLE_CLASSES}
        polys = [to_map(g) for g, _ in landcover]
        write_vector(
            tmp / "landcover_polygons.gpkg", [_as_multipolygon(g) for g in polys],
            {"classvalue": np.array([v for _, v in landcover], dtype=np.int32),
             "classname": np.array([names[v] for _, v in landcover], dtype=object)},
            crs=cfg.crs, layer="landcover", geometry_type="MultiPolygon",
        )
        write_categorized_qml(tmp / "landcover_polygons.gpkg", "classvalue", SAMPLE_CLASSES)
        write_vector(
            tmp / "road_centerlines.gpkg", [to_map(line) for line, _ in roads],
            {"road_id": np.arange(1, len(roads) + 1, dtype=np.int32),
             "highway": np.array([k for _, k in roads], dtype=object),
             "speed_kph": np.array([ROAD_TYPES[k][1] for _, k in roads], dtype=np.float64),
             "width_m": np.array([ROAD_TYPES[k][0] for _, k in roads], dtype=np.float64)},
            crs=cfg.crs, layer="roads", geometry_type="LineString",
        )
        counts = np.bincount(classes.ravel(), minlength=7)
        description = {
            "generator": "core.sample_data", "config": cfg.to_dict(),
            "bounds": [x0, cfg.origin_y, x0 + side, y_top],
            "bands": list(BAND_NAMES), "nodata": 0,
            "classes": [{**c.to_dict(), "pixels": int(counts[c.value])} for c in SAMPLE_CLASSES],
            "roads": {
                "edges": len(roads), "total_length_m": round(sum(line.length for line, _ in roads), 1),
                "types": {k: {"width_m": v[0], "speed_kph": v[1]} for k, v in ROAD_TYPES.items()},
            },
            "files": {f.name: Path(str(getattr(paths, f.name))).name for f in dataclasses.fields(paths)
                      if f.name != "folder"},
        }
        (tmp / "scene.json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    fb.set_progress(100)
    fb.info(f"sample scene written to {output_dir}: {len(roads)} road edges, "
            f"{sum(1 for _, v in landcover if v == BUILDINGS)} buildings, "
            f"{math.fsum(line.length for line, _ in roads) / 1000:.2f} km of road")
    return paths
