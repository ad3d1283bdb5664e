"""Export a model package to ONNX with the metadata the Deepness QGIS plugin reads.

Deepness (PUTvision/qgis-plugin-deepness) runs any ONNX segmentation model on a map layer. What it
does, from its source (``src/deepness/processing/models/model_base.py``, ``segmentor.py``,
``preprocessing_utils.py``, ``map_processor/map_processor_segmentation.py``, ``tile_params.py``):

- it reads a square tile of ``tile_size`` px at ``resolution`` cm/px from the layer, in the layer's
  own data type, divides it by 255, subtracts ``standardization_mean`` and divides by
  ``standardization_std`` (per channel), and feeds float32 NCHW to the single graph input;
- it takes the size of that input from the graph (``input_shape[-1]``), so height and width must be
  fixed numbers; the batch may be dynamic;
- the Segmentor's single output is ``[batch, classes, size, size]`` probabilities: values below
  ``seg_thresh`` are zeroed, then the argmax over channels is the class (one channel: > 0 is the
  class); ``class_names`` names the channels ``0..n-1``;
- tiles overlap by ``tiles_overlap`` percent of the tile, and only the centre of each tile (half
  the overlap cut on each side) is kept, as our centre blend does.

So the exported graph takes exactly what Deepness feeds with identity standardization
(``raw / 255``) and contains everything else our inference does: ``x * 255`` gives the raw values
back, then the package's stretch and normalisation, the network, and softmax (or, for a single
road logit, ``[1 - sigmoid, sigmoid]``). The metadata says mean 0 / std 1 per channel, no threshold
and no small-segment removal, so Deepness's class map equals our Classify Pixels' argmax. See
docs/onnx.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .config import StepConfig, require
from .errors import ConfigError, DependencyError, ModelPackageError
from .progress import Feedback, NullFeedback

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .model_package import ModelPackage

#: ONNX opset of the exported graph: ONNX Runtime 1.13 (2022) and later run it.
DEFAULT_OPSET = 17
#: Names of the graph's single input and output.
INPUT_NAME = "input"
OUTPUT_NAME = "output"
#: Deepness divides every pixel value by this before standardizing (``normalize_values_to_01``).
DEEPNESS_SCALE = 255.0
#: Metadata keys that Deepness reads (``ModelBase.get_metadata_*``); values are JSON text.
DEEPNESS_KEYS = ("model_type", "class_names", "resolution", "tile_size", "tiles_overlap",
                 "standardization_mean", "standardization_std", "seg_thresh", "seg_small_segment")
#: Our own metadata key: the package's definition summary (classes with values and colours, bands...).
PACKAGE_KEY = "road_landcover_package"
#: Largest absolute difference between ONNX Runtime and torch probabilities accepted by the self-check.
VERIFY_TOLERANCE = 1e-4
METRE_UNITS = ("metre", "meter", "m", "metres", "meters")


@dataclasses.dataclass(frozen=True)
class OnnxExportConfig(StepConfig):
    """Parameters of Export to ONNX.

    Attributes:
        model: model package folder, its ``model.json`` or a zip.
        output: the ``.onnx`` file to write.
        tile_size_px: side of the square tile the graph takes; ``None`` uses the package's.
        batch_size: fixed batch of the graph; ``None`` makes it dynamic (current Deepness handles
            both; some older releases accept only 1).
        tiles_overlap_percent: Deepness's overlap between tiles; ``None`` gives twice our default
            padding (a quarter of the tile per side), i.e. 50 %.
        opset: ONNX opset version.
        verify: run the written graph with ONNX Runtime on a random batch and compare with torch.
        overwrite: replace an existing output.
    """

    model: str | Path
    output: str | Path
    tile_size_px: int | None = None
    batch_size: int | None = None
    tiles_overlap_percent: int | None = None
    opset: int = DEFAULT_OPSET
    verify: bool = True
    overwrite: bool = True

    def validate(self) -> None:
        require(Path(self.output).suffix.lower() == ".onnx", f"the output {self.output} must be an .onnx file")
        require(self.tile_size_px is None or 8 <= self.tile_size_px <= 8192,
                f"tile size must be 8 to 8192 px, got {self.tile_size_px}; leave it empty to use the model's")
        require(self.batch_size is None or self.batch_size >= 1,
                f"batch size must be 1 or more (or empty for a dynamic batch), got {self.batch_size}")
        require(self.tiles_overlap_percent is None or 0 <= self.tiles_overlap_percent <= 90,
                f"tiles overlap must be 0 to 90 percent, got {self.tiles_overlap_percent}")
        require(11 <= self.opset <= 21, f"opset must be 11 to 21, got {self.opset}")


@dataclasses.dataclass
class OnnxExportResult:
    """What was written, for the log, the Processing results and the tests."""

    output: Path
    metadata: dict[str, str]
    input_shape: list[int | str]
    output_shape: list[int | str]
    opset: int
    max_abs_diff: float | None
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        deepness = {k: json.loads(v) for k, v in self.metadata.items() if k in DEEPNESS_KEYS}
        return {"output": str(self.output), "deepness_metadata": deepness, "input_shape": self.input_shape,
                "output_shape": self.output_shape, "opset": self.opset, "max_abs_diff": self.max_abs_diff,
                "warnings": self.warnings}


def require_onnx(python: str | None = None, runtime: bool = True) -> None:
    """Raise :class:`DependencyError` with the pip command when onnx (or onnxruntime) is missing.

    The command pins ``numpy<2`` too: without it pip upgrades numpy for onnx's own dependencies,
    which breaks QGIS's GDAL bindings in the same Python.
    """
    from . import deps

    wanted = ("onnx", "onnxruntime") if runtime else ("onnx",)
    problems = deps.check(wanted)
    if problems:
        what = "; ".join(p.describe() for p in problems)
        pinned = [*problems, deps.Problem(deps.REQUIREMENTS["numpy"], None)]
        raise DependencyError(
            f"ONNX export needs Python packages that are missing ({what}). "
            f"Install them with: {deps.pip_command(pinned, python)}"
        )


# --------------------------------------------------------------------------------------------------
# The graph: Deepness's input in, our probabilities out
# --------------------------------------------------------------------------------------------------


def _graph_module(package: ModelPackage) -> nn.Module:
    """The package's network wrapped with our preprocessing and probabilities (see the module doc)."""
    import torch
    from torch import nn

    from .inference import InputSpec

    spec = InputSpec.from_definition(package.definition)

    class DeepnessGraph(nn.Module):
        mean: torch.Tensor
        std: torch.Tensor
        low: torch.Tensor
        span: torch.Tensor

        def __init__(self, network: nn.Module) -> None:
            super().__init__()
            self.network = network
            shape = (1, -1, 1, 1)
            self.register_buffer("mean", torch.as_tensor(spec.mean, dtype=torch.float32).view(shape))
            self.register_buffer("std", torch.as_tensor(spec.std, dtype=torch.float32).view(shape))
            self.stretch = spec.stretch_low is not None and spec.stretch_high is not None
            low = spec.stretch_low if spec.stretch_low is not None else np.zeros_like(spec.mean)
            high = spec.stretch_high if spec.stretch_high is not None else np.ones_like(spec.mean)
            span = np.maximum(high - low, 1e-12).astype(np.float32)
            self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32).view(shape))
            self.register_buffer("span", torch.as_tensor(span, dtype=torch.float32).view(shape))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raw = x * DEEPNESS_SCALE  # Deepness fed raw / 255
            if self.stretch:
                raw = torch.clamp((raw - self.low) / self.span, 0.0, 1.0) * 255.0
            logits = self.network((raw - self.mean) / self.std)
            if logits.shape[1] == 1:  # one road logit -> [background, road], as our inference does
                p = torch.sigmoid(logits)
                return torch.cat([1.0 - p, p], dim=1)
            return torch.softmax(logits, dim=1)

    return DeepnessGraph(package.model).eval()


def _tile_size(definition: dict[str, Any], override: int | None) -> int:
    if override is not None:
        return override
    t = definition.get("tile_size_px", 256)
    if isinstance(t, (list, tuple)):
        if len(t) != 2 or int(t[0]) != int(t[1]):
            raise ModelPackageError(
                f"the package's tile size {list(t)} is not square; Deepness needs square tiles: give a tile size")
        t = t[0]
    return int(t)


def _class_names(package: ModelPackage) -> list[str]:
    from .inference import package_classes

    if str(package.definition.get("task")) == "roads":
        return ["background", "road"]
    return [c.name for c in package_classes(package.definition)]


def _check_package(package: ModelPackage) -> tuple[int, int]:
    """(input channels, output channels of the graph); refuses what Deepness cannot use."""
    d = package.definition
    values = package.output_values
    outputs = int(d["architecture"]["num_classes"])
    task = str(d.get("task"))
    if task not in ("landcover", "roads"):
        raise ModelPackageError(f"the package's task is {task!r}; only landcover and roads models can be exported")
    if outputs not in (1, len(values)):
        raise ModelPackageError(
            f"the network has {outputs} outputs but the package lists {len(values)} output values; "
            "the package is inconsistent")
    if outputs == 1 and task != "roads":
        raise ModelPackageError("a land-cover package with a single output channel cannot be exported; re-train it")
    return package.in_channels, max(2, outputs)


def deepness_metadata(package: ModelPackage, tile: int, overlap_percent: int,
                      warn: list[str] | None = None) -> dict[str, str]:
    """The ``metadata_props`` (key -> JSON text) Deepness reads, plus our package summary."""
    d = package.definition
    n = package.in_channels
    names = _class_names(package)
    meta: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": {str(i): name for i, name in enumerate(names)},
        "tile_size": tile,
        "tiles_overlap": overlap_percent,
        # Normalisation is inside the graph: Deepness must only divide by 255.
        "standardization_mean": [0.0] * n,
        "standardization_std": [1.0] * n,
        # No threshold and no small-segment removal: the class map is the plain argmax, as ours.
        "seg_thresh": 0.0,
        "seg_small_segment": 0,
    }
    cell = d.get("cell_size")
    cell_m = float(cell[0] if isinstance(cell, (list, tuple)) else cell) if cell else None
    units = str(d.get("cell_size_units", "metre")).lower()
    if cell_m and units in METRE_UNITS:
        meta["resolution"] = round(cell_m * 100.0, 6)  # Deepness: centimetres per pixel
    elif warn is not None:
        warn.append(f"the model's cell size is {cell_m} {units}, not metres: no 'resolution' written; set the "
                    "resolution in Deepness by hand (Deepness works only on layers in a metric CRS)")
    from .inference import package_classes

    classes = package_classes(d)
    meta[PACKAGE_KEY] = {
        "format": d.get("format"), "version": d.get("version"), "task": d.get("task"),
        "architecture": d.get("architecture"),
        "bands": d.get("bands"),
        "channels": [{"channel": i, "value": v, "name": nm} for i, (v, nm) in
                     enumerate(zip(package.output_values if len(package.output_values) >= 2 else [0, 1], names))],
        "classes": [{"value": c.value, "name": c.name, "color": c.color} for c in classes],
        "normalization": d.get("normalization"), "stretch": d.get("stretch"),
        "input": "raw pixel values / 255 (Deepness's own scaling); stretch and normalisation are in the graph",
        "output": "class probabilities per channel (softmax, or [1 - p, p] for one road logit)",
        "cell_size": d.get("cell_size"), "cell_size_units": d.get("cell_size_units"), "crs": d.get("crs"),
        "tile_size_px": d.get("tile_size_px"), "validation_metrics": d.get("validation_metrics"),
        "created": d.get("created"), "software": d.get("software"),
    }
    return {k: json.dumps(v) for k, v in meta.items()}


def _overlap_percent(tile: int, override: int | None) -> int:
    """Deepness's overlap for our default padding (a quarter of the tile each side: 2 x 25 % = 50 %)."""
    if override is not None:
        return override
    padding = tile // 4
    return int(round(100.0 * 2 * padding / tile))


def _export_bytes(graph: nn.Module, channels: int, tile: int, batch: int | None, opset: int) -> bytes:
    """Trace ``graph`` with the TorchScript exporter (works offline, no onnxscript needed)."""
    import torch

    example = torch.rand(batch or 2, channels, tile, tile)
    dynamic = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if batch is None else None
    with tempfile.TemporaryDirectory(prefix="rlc-onnx-") as work, warnings.catch_warnings(), torch.no_grad():
        # Tracing warns about int(shape) in the decoders (sizes are fixed per tile, as intended)
        # and that this exporter is the legacy one.
        warnings.simplefilter("ignore")
        path = Path(work) / "graph.onnx"
        torch.onnx.export(graph, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic,
                          do_constant_folding=True)
        return path.read_bytes()


def _set_shape(value_info: Any, dims: list[int | str]) -> None:
    """Write a fixed or named shape: the exporter's shape inference names some dims oddly, and
    Deepness reads the tile size from the input and checks the output is square."""
    shape = value_info.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d


def _shape_of(value_info: Any) -> list[int | str]:
    return [d.dim_param if d.dim_param else int(d.dim_value) for d in value_info.type.tensor_type.shape.dim]


def verify_onnx(path: str | Path, graph: nn.Module, channels: int, tile: int, batch: int | None,
                seed: int = 0) -> float:
    """Largest absolute difference between ONNX Runtime and torch on a random batch in [0, 1]."""
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(seed)
    x = rng.random((batch or 3, channels, tile, tile), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: x})[0]
    with torch.no_grad():
        want = graph(torch.from_numpy(x)).numpy()
    if got.shape != want.shape:
        raise ModelPackageError(f"the exported graph returns shape {got.shape}, torch {want.shape}")
    return float(np.max(np.abs(got - want)))


def export_onnx(config: OnnxExportConfig, feedback: Feedback | None = None,
                package: ModelPackage | None = None) -> OnnxExportResult:
    """Write ``config.output``: the package's network as an ONNX graph with Deepness's metadata.

    Raises:
        ModelPackageError: the package is unusable or cannot be expressed for Deepness.
        DependencyError: onnx (or, to verify, onnxruntime) is not installed.
        OutputError: the output cannot be written.
    """
    require_onnx(runtime=config.verify)
    import onnx

    from .model_package import load_package
    from .outputs import atomic_output

    fb = feedback or NullFeedback()
    notes: list[str] = []
    pkg = package if package is not None else load_package(config.model)
    channels, out_channels = _check_package(pkg)
    tile = _tile_size(pkg.definition, config.tile_size_px)
    arch = str(pkg.definition["architecture"]["name"])
    if tile % 32:
        notes.append(f"tile size {tile} is not a multiple of 32: the {arch} network resizes features inside; "
                     "a multiple of 32 is faster and matches training better")
    overlap = _overlap_percent(tile, config.tiles_overlap_percent)
    fb.info(f"exporting {arch} ({channels} bands -> {out_channels} classes) for {tile} x {tile} px tiles, "
            f"batch {config.batch_size or 'dynamic'}, opset {config.opset}")
    fb.set_progress(5.0)
    graph = _graph_module(pkg)
    try:
        data = _export_bytes(graph, channels, tile, config.batch_size, config.opset)
    except Exception as exc:  # the exporter's errors are many and untyped
        raise ModelPackageError(
            f"torch could not export the {arch} network to ONNX opset {config.opset}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; try another opset or tile size"
        ) from exc
    fb.set_progress(60.0)
    model = onnx.load_model_from_string(data)
    batch_dim: int | str = config.batch_size if config.batch_size is not None else "batch"
    _set_shape(model.graph.input[0], [batch_dim, channels, tile, tile])
    _set_shape(model.graph.output[0], [batch_dim, out_channels, tile, tile])
    metadata = deepness_metadata(pkg, tile, overlap, notes)
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "road-landcover"
    model.producer_version = __version__
    model.doc_string = (f"road-landcover {pkg.definition.get('task')} model ({arch}) exported for Deepness: input "
                        "float32 NCHW raw/255, output class probabilities; see metadata_props")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelPackageError(f"the exported ONNX graph is invalid: {exc}") from exc
    max_diff: float | None = None
    with atomic_output(config.output, config.overwrite) as tmp:
        onnx.save_model(model, str(tmp))
        if config.verify:
            fb.set_progress(80.0)
            max_diff = verify_onnx(tmp, graph, channels, tile, config.batch_size)
            if not math.isfinite(max_diff) or max_diff > VERIFY_TOLERANCE:
                raise ModelPackageError(
                    f"the ONNX graph's probabilities differ from torch's by up to {max_diff:.3g} (more than "
                    f"{VERIFY_TOLERANCE:g}); the export is not faithful, nothing was written. Try another opset")
            fb.info(f"verified with ONNX Runtime: probabilities within {max_diff:.2g} of torch")
    for n in notes:
        fb.warning(n)
    fb.set_progress(100.0)
    fb.info(f"wrote {config.output} ({Path(config.output).stat().st_size / 1e6:.1f} MB); load it in Deepness "
            "(model type Segmentor, parameters filled from its metadata)")
    return OnnxExportResult(output=Path(config.output), metadata=metadata, input_shape=_shape_of(model.graph.input[0]),
                            output_shape=_shape_of(model.graph.output[0]), opset=config.opset,
                            max_abs_diff=max_diff, warnings=notes)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded ``metadata_props`` of an ONNX file (as Deepness reads them: ``json.loads``)."""
    require_onnx(runtime=False)
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:
        raise ConfigError(f"{path} is not a readable ONNX file: {exc}") from exc
    return {p.key: json.loads(p.value) for p in model.metadata_props}
