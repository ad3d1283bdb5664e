"""The model package: a JSON definition plus weights, in a folder or a zip (see docs/formats.md).

A model file is untrusted input (users share them): weights are read with
``torch.load(weights_only=True)`` or safetensors, so loading can never run code, and a zip is
extracted only after every entry has been checked to stay inside the target folder.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import io
import json
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import ModelPackageError
from .outputs import atomic_output

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "road-landcover-model"
VERSION = 1
DEFINITION = "model.json"
WEIGHTS_PT = "weights.pt"
WEIGHTS_SAFETENSORS = "weights.safetensors"
REQUIRED_KEYS = ("task", "architecture", "bands", "classes", "output_values", "normalization")


@dataclasses.dataclass
class ModelPackage:
    """A loaded package: its definition (model.json as a dict), the folder it lives in, and the model."""

    definition: dict[str, Any]
    folder: Path
    model: nn.Module

    @property
    def in_channels(self) -> int:
        return int(self.definition["architecture"]["in_channels"])

    @property
    def output_values(self) -> list[int]:
        return [int(v) for v in self.definition["output_values"]]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_package(path: str | Path, definition: dict[str, Any], state_dict: dict[str, torch.Tensor],
                 as_zip: bool | None = None) -> Path:
    """Write a package folder (or a zip when ``path`` ends in .zip or ``as_zip``), atomically."""
    import torch

    missing = [k for k in REQUIRED_KEYS if k not in definition]
    if missing:
        raise ModelPackageError(f"model definition lacks {', '.join(missing)}")
    final = Path(path)
    zipped = as_zip if as_zip is not None else final.suffix.lower() == ".zip"
    # Serialised in memory (the state dict is in memory already), so nothing is staged outside the output's
    # own temporary name: a full disk or an unwritable folder is reported for the output, and /tmp never fills.
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, buffer)
    weights = buffer.getbuffer()
    full = {
        **definition,
        "format": FORMAT,
        "version": VERSION,
        "weights": {"file": WEIGHTS_PT, "sha256": hashlib.sha256(weights).hexdigest()},
        "software": {**definition.get("software", {}), "road_landcover": __version__, "torch": torch.__version__},
        "created": definition.get("created") or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    text = json.dumps(full, indent=2) + "\n"
    with atomic_output(final) as tmp:
        if zipped:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(DEFINITION, text)
                zf.writestr(WEIGHTS_PT, weights)  # type: ignore[arg-type]
        else:
            tmp.mkdir()
            (tmp / WEIGHTS_PT).write_bytes(weights)
            (tmp / DEFINITION).write_text(text, encoding="utf-8")
    return final


def safe_extract(zip_path: str | Path, target: str | Path) -> Path:
    """Extract a zip, refusing any entry that would land outside ``target`` (zip slip) or is a link."""
    target = Path(target).resolve()
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelPackageError(f"{zip_path} is not a readable zip file ({exc}); re-export or re-download the model") from exc
    with zf:
        for info in zf.infolist():
            name = PurePosixPath(info.filename.replace("\\", "/"))
            dest = (target / Path(*name.parts)).resolve() if name.parts else target
            is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
            if name.is_absolute() or ".." in name.parts or not dest.is_relative_to(target) or is_link:
                raise ModelPackageError(
                    f"refusing model package {zip_path}: entry {info.filename!r} would be written outside its "
                    "folder (a 'zip slip' archive); only use model packages from sources you trust"
                )
        target.mkdir(parents=True, exist_ok=True)
        zf.extractall(target)
    return target


def _starts_like_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _resolve_folder(path: Path, workdir: Path) -> Path:
    if path.is_dir():
        return path
    if path.is_file() and path.name == DEFINITION:
        return path.parent
    if path.is_file() and zipfile.is_zipfile(path):
        folder = safe_extract(path, workdir / "package")
        inner = [p for p in folder.rglob(DEFINITION)]
        if len(inner) != 1:
            raise ModelPackageError(f"{path} holds {len(inner)} {DEFINITION} files; a model package holds exactly one")
        return inner[0].parent
    if not path.exists():
        raise ModelPackageError(f"model package {path} does not exist; pass the folder or zip written by training")
    if path.suffix.lower() == ".zip" or _starts_like_zip(path):
        raise ModelPackageError(f"{path} is not a readable zip file (truncated or corrupt); re-export or re-download "
                                "the model package")
    raise ModelPackageError(f"{path} is neither a model package folder nor a zip; pass the output of training")


def read_definition(path: str | Path) -> dict[str, Any]:
    """Read and check ``model.json`` of a package folder (or the file itself)."""
    p = Path(path)
    file = p / DEFINITION if p.is_dir() else p
    try:
        definition = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelPackageError(f"{p} has no {DEFINITION}; it is not a model package") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelPackageError(f"{file} is not valid JSON ({exc}); the package is corrupt") from exc
    if not isinstance(definition, dict) or definition.get("format") != FORMAT:
        raise ModelPackageError(f"{file} is not a {FORMAT} definition")
    if int(definition.get("version", 0)) > VERSION:
        raise ModelPackageError(
            f"{file} has format version {definition.get('version')}, newer than this plugin reads ({VERSION}); update the plugin"
        )
    missing = [k for k in REQUIRED_KEYS if k not in definition]
    if missing:
        raise ModelPackageError(f"{file} lacks {', '.join(missing)}; the package is incomplete")
    return definition


def load_state_dict(folder: Path, definition: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Load weights without ever unpickling code (``weights_only=True`` or safetensors)."""
    import pickle

    import torch

    name = str(definition.get("weights", {}).get("file", WEIGHTS_PT))
    file = (folder / name).resolve()
    if not file.is_relative_to(folder.resolve()) or not file.is_file():
        raise ModelPackageError(f"weights file {name!r} of {folder} is missing or outside the package")
    expected = definition.get("weights", {}).get("sha256")
    if expected and _sha256(file) != expected:
        raise ModelPackageError(f"{file} does not match the checksum in {DEFINITION}: the weights are truncated or altered")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(file), device="cpu"))
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelPackageError(
            f"{file} is not a plain tensor file: it asks to run code when loaded, which is refused "
            f"for safety ({str(exc).splitlines()[0]}); re-train or re-export the model with this plugin"
        ) from exc
    except Exception as exc:
        raise ModelPackageError(f"cannot read weights {file}: {exc}; the package is corrupt or truncated") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelPackageError(f"{file} does not hold a plain state dict of tensors")
    return state


def load_package(path: str | Path, workdir: str | Path | None = None) -> ModelPackage:
    """Load a package (folder, model.json or zip) and build its model in eval mode on the CPU.

    A zip is extracted into ``workdir`` (a fresh temporary folder when not given, which lives as
    long as the process).
    """
    from .models import build_model

    p = Path(path)
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="rlc-package-"))
    folder = _resolve_folder(p, work)
    definition = read_definition(folder)
    arch = definition["architecture"]
    model = build_model(str(arch["name"]), int(arch["in_channels"]), int(arch["num_classes"]),
                        **dict(arch.get("options", {})))
    state = load_state_dict(folder, definition)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelPackageError(
            f"the weights of {p} do not fit its architecture {arch['name']}: {str(exc).splitlines()[0]}"
        ) from exc
    model.eval()
    return ModelPackage(definition=definition, folder=folder, model=model)
