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
    p.add_argument("--size-px", type=int, default=2400, help="sample scene size in pixels")


def _demo_run(args: argparse.Namespace, fb: ConsoleFeedback) -> int:
    from .demo import run_demo

    report = run_demo(args.output, size_px=args.size_px, feedback=fb)
    print(json.dumps(report, indent=2))
    return 0


register("sample", "generate the built-in sample scene (imagery + roads + land cover ground truth)",
         _sample_args, _sample_run)
register("doctor", "check the Python packages and the compute device", _doctor_args, _doctor_run)
register("demo", "run the whole workflow that is available on the built-in sample scene", _demo_args, _demo_run)


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
