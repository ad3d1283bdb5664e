#!/usr/bin/env python3
"""Build ``dist/road_landcover_plugin.zip`` for the Plugin Manager's "Install from ZIP".

The zip holds one folder, ``road_landcover_plugin/``, with ``core`` and ``processing_provider``
inside it. Their absolute imports (``from core.x import y``) are rewritten to the plugin's own
package (``from road_landcover_plugin.core.x import y``), the way pip's vendoring does, so the
installed plugin never puts generic top-level ``core`` or ``processing_provider`` modules on
``sys.path`` where they could clash with other plugins.
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "road_landcover_plugin"
VENDORED = ("core", "processing_provider")
IMPORT_RE = re.compile(r"^(\s*)(from|import)\s+(" + "|".join(VENDORED) + r")(\.|\s)", re.MULTILINE)
BARE_IMPORT_RE = re.compile(r"^\s*import\s+(" + "|".join(VENDORED) + r")\s*$", re.MULTILINE)
SKIP_PARTS = {"__pycache__", ".mypy_cache", ".pytest_cache"}


def rewrite_imports(source: str, origin: str) -> str:
    """Point absolute imports of the vendored packages at the plugin package."""
    if BARE_IMPORT_RE.search(source):
        raise SystemExit(f"{origin}: use 'from core import x' instead of a bare 'import core' (cannot be vendored)")
    return IMPORT_RE.sub(lambda m: f"{m.group(1)}{m.group(2)} {PLUGIN}.{m.group(3)}{m.group(4)}", source)


def iter_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not SKIP_PARTS.intersection(p.parts) and p.suffix not in {".pyc", ".pyo"}
    )


def build(output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        sources = [(ROOT / PLUGIN, PLUGIN)] + [(ROOT / name, f"{PLUGIN}/{name}") for name in VENDORED]
        for folder, prefix in sources:
            for path in iter_files(folder):
                arcname = f"{prefix}/{path.relative_to(folder).as_posix()}"
                data = path.read_bytes()  # read_bytes follows symlinks (metadata.txt, icon.svg)
                if path.suffix == ".py":
                    data = rewrite_imports(data.decode("utf-8"), str(path)).encode("utf-8")
                zf.writestr(arcname, data)
        for extra in ("LICENSE", "README.md"):
            if (ROOT / extra).exists():
                zf.write(ROOT / extra, f"{PLUGIN}/{extra}")
    tmp.replace(output)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=ROOT / "dist" / f"{PLUGIN}.zip")
    args = parser.parse_args(argv)
    path = build(args.output)
    print(f"built {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
