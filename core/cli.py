"""``road-landcover``: the headless command line, one subcommand per step.

The same core functions the QGIS algorithms call, for GPU servers and scripts without QGIS.
Every subcommand exits 0 on success, 2 on a bad input or parameter (with the message on stderr),
130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import CanceledError, RoadLandcoverError
from .progress import ConsoleFeedback

Handler = Callable[[argparse.Namespace, ConsoleFeedback], int]
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {}


def register(name: str, help_text: str, configure: Callable[[argparse.ArgumentParser], None],
             handler: Handler) -> None:
    """Add a subcommand: ``configure`` adds its arguments, ``handler`` runs it and returns the exit code."""
    _COMMANDS[name] = (help_text, configure, handler)


def _sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", type=Path, help="folder to create (replaced if it exists)")
    p.add_argument("--size-px", type=int, default=2400, help="width and height in pixels (default 2400)")
    p.add_argument("--cell-size-m", type=float, default=0.5, help="cell size in metres (default 0.5)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--crs", default="EPSG:32633", help="projected CRS of the scene (default EPSG:32633)")


def _sample_run(args: argparse.Namespace, fb: ConsoleFeedback) -> int:
    from .sample_data import SampleSceneConfig, generate_sample_scene

    cfg = SampleSceneConfig(size_px=args.size_px, cell_size_m=args.cell_size_m, seed=args.seed, crs=args.crs)
    scene = generate_sample_scene(args.output, cfg, fb)
    print(json.dumps({k: str(v) for k, v in vars(scene).items()}, indent=2))
    return 0


def _doctor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="device to try (auto, cuda, mps, cpu)")


def _doctor_run(args: argparse.Namespace, fb: ConsoleFeedback) -> int:
    from . import deps

    problems = deps.check(deps.DL_STACK)
    for name in deps.DL_STACK:
        req = deps.REQUIREMENTS[name]
        bad = [p for p in problems if p.requirement is req]
        print(f"{req.distribution:14s} {'MISSING: ' + bad[0].describe() if bad else 'ok'}")
    if problems:
        print(f"fix with: {deps.pip_command(problems)}")
        return 1
    from .device import select_device

    print(f"device: {select_device(args.device).description}")
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", type=Path, default=Path("build/demo"), help="working folder (default build/demo)")
    p.add_argument("--quick", action="store_true", help="a tiny run (384 px scene, 2 epochs) to check the chain")
    p.add_argument("--size-px", type=int, default=None, help="sample scene size in pixels (default 1600)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per model (default 8)")
    p.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    p.add_argument("--only", choices=("landcover", "roads"), default=None, help="run one of the two chains")


def _demo_run(args: argparse.Namespace, fb: ConsoleFeedback) -> int:
    import dataclasses

    from .demo import QUICK, DemoConfig, run_demo

    base = QUICK if args.quick else DemoConfig()
    changes: dict[str, Any] = {"device": args.device}
    if args.size_px is not None:
        changes["size_px"] = args.size_px
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.only is not None:
        changes.update(landcover=args.only == "landcover", roads=args.only == "roads")
    report = run_demo(args.output, dataclasses.replace(base, **changes), feedback=fb)
    print(json.dumps(report, indent=2))
    fb.info(f"summary: {json.dumps(report['summary'])}; full report in {Path(args.output) / 'demo_report.json'}")
    return 0


def _train_args(p: argparse.ArgumentParser) -> None:
    from .train_worker import add_train_arguments

    add_train_arguments(p)


def _train_run(args: argparse.Namespace, fb: ConsoleFeedback) -> int:
    from .train_worker import run_from_args

    return run_from_args(args, fb)


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("raster", help="image raster (any GDAL raster)")
    p.add_argument("labels", help="labels: vector file (polygons/lines/points) or classified raster")
    p.add_argument("output", help="training folder to create (replaced if it exists)")
    p.add_argument("--labels-layer", help="layer inside a multi-layer vector file")
    p.add_argument("--class-field", help="integer class field (default classvalue/value, else class 1)")
    p.add_argument("--class-name-field", help="field with class names")
    p.add_argument("--label-mode", default="classified_tiles",
                   choices=["classified_tiles", "road_binary", "road_speed_continuous", "road_speed_bins"])
    p.add_argument("--buffer-m", type=float, default=2.0, help="line half-width / point radius in metres (2)")
    p.add_argument("--speed-field", help="numeric speed field (speed modes)")
    p.add_argument("--speed-max", type=float, help="speed of the top value/bin (default: data maximum)")
    p.add_argument("--speed-bin-width", type=float, default=10.0, help="speed bin width (10)")
    p.add_argument("--orientation", action="store_true", help="also write orientation chips (road modes)")
    p.add_argument("--orientation-bin-deg", type=float, default=5.0, help="orientation bin size, degrees (5)")
    p.add_argument("--orientation-width-m", type=float, help="orientation band width, metres (2 x buffer)")
    p.add_argument("--tile-size-px", type=int, nargs="+", default=[256], help="chip size: N or X Y (256)")
    p.add_argument("--stride-px", type=int, nargs="+", default=[128], help="stride: N or X Y (128)")
    p.add_argument("--cell-size", type=float, help="cell size in raster CRS units (default the raster's)")
    p.add_argument("--resampling", default="bilinear", help="image resampling: bilinear, cubic, nearest")
    p.add_argument("--extent", type=float, nargs=4, metavar=("MINX", "MINY", "MAXX", "MAXY"))
    p.add_argument("--extent-crs", help="CRS of --extent (default the raster's)")
    p.add_argument("--mask-polygons", help="vector file: only chips fully inside its polygons")
    p.add_argument("--rotation-deg", type=float, default=0.0, help="extra chips rotated by k x angle")
    p.add_argument("--all-tiles", action="store_true", help="also export chips without labelled pixels")
    p.add_argument("--max-nodata-percent", type=float, default=25.0, help="skip chips over this nodata (25)")
    p.add_argument("--chip-format", default="tif", choices=["tif", "png", "jpg"])
    p.add_argument("--bands", type=int, nargs="+", help="1-based bands in output order (default all but alpha)")
    p.add_argument("--stretch", default="none", choices=["none", "percentile", "minmax"])
    p.add_argument("--max-chips", type=int, help="stop after this many chips")
    p.add_argument("--workers", type=int, default=0,
                   help="processes making chips: 0 = one per core (default), 1 = threads in one process")


def _export_run(args: argparse.Namespace, fb: ConsoleFeedback) -> int:
    from .chips import ExportConfig, export_training_data

    def pair(v: list[int]) -> tuple[int, int]:
        return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])

    cfg = ExportConfig(
        raster=args.raster, labels=args.labels, output_folder=args.output, labels_layer=args.labels_layer,
        class_field=args.class_field, class_name_field=args.class_name_field, label_mode=args.label_mode,
        buffer_m=args.buffer_m, speed_field=args.speed_field, speed_max=args.speed_max,
        speed_bin_width=args.speed_bin_width, orientation=args.orientation,
        orientation_bin_deg=args.orientation_bin_deg, orientation_width_m=args.orientation_width_m,
        tile_size_px=pair(args.tile_size_px), stride_px=pair(args.stride_px),
        cell_size=(args.cell_size, args.cell_size) if args.cell_size else None, resampling=args.resampling,
        extent=tuple(args.extent) if args.extent else None, extent_crs=args.extent_crs,
        mask_polygons=args.mask_polygons, rotation_deg=args.rotation_deg,
        only_tiles_with_features=not args.all_tiles, max_nodata_percent=args.max_nodata_percent,
        chip_format=args.chip_format, bands=tuple(args.bands) if args.bands else None, stretch=args.stretch,
        max_chips=args.max_chips, workers=args.workers)
    result = export_training_data(cfg, fb)
    print(json.dumps({"folder": str(result.folder), "chip_count": result.chip_count,
                      "class_pixels": {str(k): v for k, v in result.class_pixels.items()},
                      "footprints": str(result.footprints), "skipped": result.skipped,
                      "processes": result.processes}, indent=2))
    return 0


def _roads_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, help="road probability (0-1) or mask (0/1, 0/255) raster")
    p.add_argument("lines", type=Path, help="output road lines (.gpkg)")
    p.add_argument("--nodes", type=Path, default=None, help="output nodes (default: <lines>_nodes.gpkg)")
    p.add_argument("--threshold", type=float, default=0.5, help="value >= threshold is road (default 0.5)")
    p.add_argument("--min-spur-m", type=float, default=10.0, help="prune dead-end spurs shorter than this (10)")
    p.add_argument("--max-gap-m", type=float, default=15.0, help="join aligned dead ends closer than this (15)")
    p.add_argument("--max-gap-angle", type=float, default=30.0, help="max angle for gap closing, degrees (30)")
    p.add_argument("--min-component-m", type=float, default=25.0, help="drop isolated pieces shorter (25)")
    p.add_argument("--simplify-m", type=float, default=1.0, help="simplification tolerance in metres (1)")
    p.add_argument("--band", type=int, default=1)
    p.add_argument("--block-size-px", type=int, default=4096, help="block size for large rasters (4096)")
    g = p.add_argument_group("extract roads from imagery (INPUT is the image, one step: model -> probability -> lines)")
    g.add_argument("--model", type=Path, help="road model package; with it INPUT is imagery, not a probability")
    g.add_argument("--probability", type=Path, help="road probability raster to write (default: <lines>_prob.tif)")
    g.add_argument("--cell-size-m", type=float, help="inference cell size (default: the model's)")
    g.add_argument("--padding-px", type=int, help="padding per tile side (default: a quarter of the tile)")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu")


def _roads_run(args: argparse.Namespace, fb: ConsoleFeedback) -> int:
    from .roads import VectorizeConfig, extract_roads, vectorize_roads

    cfg = VectorizeConfig(threshold=args.threshold, min_spur_m=args.min_spur_m, max_gap_m=args.max_gap_m,
                          max_gap_angle_deg=args.max_gap_angle, min_component_m=args.min_component_m,
                          simplify_m=args.simplify_m, band=args.band, block_size_px=args.block_size_px)
    nodes = args.nodes or args.lines.with_name(args.lines.stem + "_nodes.gpkg")
    if args.model is None:
        result = vectorize_roads(args.input, args.lines, nodes, cfg, fb)
    else:
        prob = args.probability or args.lines.with_name(args.lines.stem + "_prob.tif")
        result = extract_roads(args.input, args.model, prob, args.lines, nodes, cfg, cell_size_m=args.cell_size_m,
                               padding_px=args.padding_px, batch_size=args.batch_size, device=args.device,
                               feedback=fb)
    print(json.dumps(result.to_dict(), indent=2))
    return 0


def _evaluate_roads_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("predicted", type=Path, help="predicted road lines")
    p.add_argument("reference", type=Path, help="reference road lines (ground truth)")
    p.add_argument("report", type=Path, help="output report .json (a .csv and a .png are written beside it)")
    _road_metric_args(p)


def _road_metric_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--tolerance-m", type=float, default=3.0, help="relaxed precision/recall tolerance (3)")
    p.add_argument("--snap-distance-m", type=float, default=4.0, help="APLS snapping (SpaceNet: 4)")
    p.add_argument("--control-point-spacing-m", type=float, default=50.0, help="APLS control points (SpaceNet: 50)")


def _evaluate_roads_run(args: argparse.Namespace, fb: ConsoleFeedback) -> int:
    from .road_metrics import REPORT_KEYS, AplsConfig, EvaluateRoadsConfig, evaluate_roads

    cfg = EvaluateRoadsConfig(tolerance_m=args.tolerance_m, apls=AplsConfig(
        snap_distance_m=args.snap_distance_m, control_point_spacing_m=args.control_point_spacing_m))
    predicted = getattr(args, "predicted", None) or args.classified  # `evaluate` with road lines lands here too
    report = evaluate_roads(predicted, args.reference, args.report, cfg, fb)
    print(json.dumps({k: report[k] for k in (*REPORT_KEYS, "pixel_iou", "parameters")}, indent=2))
    return 0


def _classify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("raster", type=Path, help="raster to classify")
    p.add_argument("model", type=Path, help="model package (folder, model.json or zip)")
    p.add_argument("output", type=Path, help="classified GeoTIFF to write")
    p.add_argument("--probability", type=Path, help="also write class probabilities (float32 GeoTIFF)")
    p.add_argument("--cell-size-m", type=float, help="output cell size (default: the model's)")
    p.add_argument("--extent", type=float, nargs=4, metavar=("XMIN", "YMIN", "XMAX", "YMAX"), help="raster CRS")
    p.add_argument("--tile-size-px", type=int, help="tile size (default: the model's)")
    p.add_argument("--padding-px", type=int, help="padding per tile side (default: a quarter of the tile)")
    p.add_argument("--blend", choices=("centre", "weighted"), default="centre")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu")
    p.add_argument("--tta", choices=("none", "flips", "dihedral"), default="none")
    p.add_argument("--tta-merge", choices=("mean", "max"), default="mean")
    p.add_argument("--no-mixed-precision", action="store_true", help="no float16 autocast on CUDA")


def _classify_run(args: argparse.Namespace, fb: ConsoleFeedback) -> int:
    from .distributed import classify_any
    from .inference import ClassifyConfig

    cfg = ClassifyConfig(args.raster, args.model, args.output, args.probability, args.cell_size_m,
                         tuple(args.extent) if args.extent else None, args.tile_size_px, args.padding_px,
                         args.blend, args.batch_size, args.device, args.tta, args.tta_merge,
                         not args.no_mixed_precision)
    result = classify_any(cfg, fb)
    if result is not None:
        print(json.dumps({"output": str(result.output_classified), "device": result.device,
                          "size_px": [result.width_px, result.height_px], "tiles": result.tiles,
                          "seconds": round(result.seconds, 2), "mpix_per_s": round(result.megapixels_per_second, 3),
                          "warnings": result.warnings}, indent=2))
    return 0


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("classified", type=Path, help="classified raster")
    p.add_argument("reference", type=Path, help="reference raster, or polygons with --class-field")
    p.add_argument("report", type=Path, help="JSON report to write (CSV and HTML beside it)")
    p.add_argument("--class-field", help="class value field of reference polygons")
    p.add_argument("--layer", help="layer of a multi-layer vector file")
    p.add_argument("--ignore", type=int, nargs="*", default=[], help="class values not evaluated")
    _road_metric_args(p.add_argument_group("road lines (when CLASSIFIED is a vector layer of predicted roads)"))


VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml")


def _evaluate_run(args: argparse.Namespace, fb: ConsoleFeedback) -> int:
    from .accuracy import AccuracyConfig, assess_accuracy

    if args.classified.suffix.lower() in VECTOR_SUFFIXES:
        return _evaluate_roads_run(args, fb)

    result = assess_accuracy(AccuracyConfig(args.classified, args.reference, args.report, args.class_field,
                                            args.layer, tuple(args.ignore)), fb)
    m = result.metrics
    print(json.dumps({"overall_accuracy": m.overall_accuracy, "kappa": m.kappa, "miou": m.miou,
                      "report": str(result.report), "html": str(result.html)}, indent=2))
    return 0


def _export_onnx_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="model package (folder, model.json or zip)")
    p.add_argument("output", type=Path, help="ONNX file to write (.onnx)")
    p.add_argument("--tile-size-px", type=int, help="square tile side of the graph (default: the model's)")
    p.add_argument("--batch-size", type=int, help="fixed batch size (default: dynamic)")
    p.add_argument("--overlap-percent", type=int, help="Deepness tiles overlap in %% (default 50: our padding)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs torch check")


def _export_onnx_run(args: argparse.Namespace, fb: ConsoleFeedback) -> int:
    from .onnx_export import OnnxExportConfig, export_onnx

    cfg = OnnxExportConfig(args.model, args.output, args.tile_size_px, args.batch_size, args.overlap_percent,
                           args.opset, not args.no_verify)
    print(json.dumps(export_onnx(cfg, fb).to_dict(), indent=2))
    return 0


register("sample", "generate the built-in sample scene (imagery + roads + land cover ground truth)",
         _sample_args, _sample_run)
register("doctor", "check the Python packages and the compute device", _doctor_args, _doctor_run)
register("classify", "classify a raster with a model package (tiled, streaming)", _classify_args, _classify_run)
register("evaluate", "accuracy of a classified raster vs reference raster/polygons, or of road lines vs reference lines",
         _evaluate_args,
         _evaluate_run)
register("train", "train a segmentation model on a training folder (writes a model package)", _train_args, _train_run)
register("demo", "run the whole workflow that is available on the built-in sample scene", _demo_args, _demo_run)
register("export", "export image and label chips for training (a training folder)", _export_args, _export_run)
register("roads", "road centerlines and nodes from a road probability/mask raster, or from imagery with --model", _roads_args, _roads_run)
register("evaluate-roads", "compare road lines with reference lines (APLS, relaxed P/R/F1, pixel IoU)",
         _evaluate_roads_args, _evaluate_roads_run)
register("export-onnx", "export a model package to ONNX with the metadata the Deepness QGIS plugin reads",
         _export_onnx_args, _export_onnx_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="road-landcover", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, configure, handler) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        configure(p)
        p.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fb = ConsoleFeedback(quiet=args.quiet)
    try:
        return int(args.handler(args, fb))
    except CanceledError as exc:
        print(f"road-landcover: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("road-landcover: interrupted", file=sys.stderr)
        return 130
    except RoadLandcoverError as exc:
        print(f"road-landcover {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
