#!/usr/bin/env python3
"""Build the shipped Processing graphical models (``processing_provider/models/*.model3``).

The models are built with QGIS's own model API (``QgsProcessingModelAlgorithm``, child algorithms,
parameter sources) instead of being hand-written XML, so they are exactly what the graphical modeler
would save, and rebuilding them after an algorithm changes is one command:

    .venv/bin/python scripts/build_models.py            # writes processing_provider/models/
    .venv/bin/python scripts/build_models.py --check    # fails when the committed files are stale
    .venv/bin/python scripts/build_models.py --screenshots docs/img   # + modeler_<id>.png

The file name is the algorithm id inside the provider: ``roadsfromcenterlines.model3`` runs as
``roadlandcover:roadsfromcenterlines`` (see ``processing_provider/models.py``).

Both models train on one raster and measure on another (``TEST_*`` inputs): accuracy measured on the
training area says how well the network memorised it, not how well it maps. Give the same layers
twice only to check the chain, knowing the numbers are then optimistic.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "processing_provider" / "models"
GROUP = "Workflows (graphical models)"
GROUP_ID = "workflows"


def start_qgis(gui: bool = False) -> Any:
    """A headless QgsApplication with Processing and this provider, so child algorithms resolve."""
    sys.path.insert(0, str(ROOT))
    from processing_provider.headless import start_qgis as start

    return start(gui)


class ModelBuilder:
    """Thin helper over the model API: inputs, children, wiring, outputs, canvas positions."""

    def __init__(self, name: str) -> None:
        from qgis.core import QgsProcessingModelAlgorithm

        self.model = QgsProcessingModelAlgorithm(name, GROUP, GROUP_ID)
        self.help: dict[str, str] = {}
        self._inputs = 0

    def add_input(self, param: Any, help_text: str, advanced: bool = False) -> None:
        from qgis.core import QgsProcessingModelParameter, QgsProcessingParameterDefinition
        from qgis.PyQt.QtCore import QPointF

        if advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        component = QgsProcessingModelParameter(param.name())
        component.setPosition(QPointF(120 + 230 * (self._inputs % 4), 60 + 70 * (self._inputs // 4)))
        self._inputs += 1
        self.model.addModelParameter(param, component)
        self.help[param.name()] = help_text

    def add_child(self, child_id: str, alg_id: str, description: str, row: int,
                  sources: dict[str, Any], outputs: dict[str, tuple[str, str]] | None = None) -> None:
        """``sources`` maps child parameter -> ("input", NAME) | ("child", CHILD, OUTPUT) | ("expr", TEXT) | value.

        ``outputs`` maps a child output to (NAME, label): the model's destination parameter is then
        ``<child_id>:<NAME>`` (QGIS 3.22 names model outputs that way), e.g. ``extract:ROAD_LINES``.
        """
        from qgis.core import (
            QgsProcessingModelChildAlgorithm,
            QgsProcessingModelOutput,
        )
        from qgis.core import (
            QgsProcessingModelChildParameterSource as Source,
        )
        from qgis.PyQt.QtCore import QPointF

        child = QgsProcessingModelChildAlgorithm(alg_id)
        child.setChildId(child_id)
        child.setDescription(description)
        top = 60 + 70 * ((self._inputs + 3) // 4) + 40  # below the rows of inputs
        child.setPosition(QPointF(460, top + 130 * row))
        for name, value in sources.items():
            if isinstance(value, tuple) and value[0] == "input":
                source = Source.fromModelParameter(value[1])
            elif isinstance(value, tuple) and value[0] == "child":
                source = Source.fromChildOutput(value[1], value[2])
            elif isinstance(value, tuple) and value[0] == "expr":
                source = Source.fromExpression(value[1])
            else:
                source = Source.fromStaticValue(value)
            child.addParameterSources(name, [source])
        # As the modeler does when an algorithm is dropped on the canvas: every other parameter gets its
        # default as a static value, so the model is explicit and validates.
        from qgis.core import QgsApplication

        alg = QgsApplication.processingRegistry().algorithmById(alg_id)
        if alg is None:
            raise SystemExit(f"algorithm {alg_id} is not available (is the provider loaded?)")
        for definition in alg.parameterDefinitions():
            if definition.isDestination() or definition.name() in sources:
                continue
            if definition.defaultValue() is not None:
                child.addParameterSources(definition.name(), [Source.fromStaticValue(definition.defaultValue())])
        model_outputs = {}
        for i, (output, (name, label)) in enumerate((outputs or {}).items()):
            out = QgsProcessingModelOutput(name, label)
            out.setChildId(child_id)
            out.setChildOutputName(output)
            out.setMandatory(False)
            out.setPosition(QPointF(760, top + 130 * row + 40 * i))
            model_outputs[name] = out
        child.setModelOutputs(model_outputs)
        if child_id in self.model.childAlgorithms():
            raise SystemExit(f"duplicate child id {child_id}")
        self.model.addChildAlgorithm(child)

    def finish(self, description: str) -> Any:
        self.model.updateDestinationParameters()
        problems = []
        for child_id in self.model.childAlgorithms():
            ok, errors = self.model.validateChildAlgorithm(child_id)
            if not ok:
                problems.append(f"{child_id}: {errors}")
        if problems:
            raise SystemExit("model " + self.model.name() + " is invalid:\n" + "\n".join(problems))
        self.model.setHelpContent({"ALG_DESC": description, "ALG_CREATOR": "Road & Land Cover plugin",
                                   "ALG_HELP_CREATOR": "scripts/build_models.py", **self.help})
        return self.model


def common_training_inputs(b: ModelBuilder, default_tile: int) -> None:
    """Epochs, tile size and the advanced training knobs shared by both models."""
    from qgis.core import QgsProcessingParameterEnum
    from qgis.core import QgsProcessingParameterNumber as Num

    b.add_input(Num("EPOCHS", "Maximum epochs", Num.Integer, 20, False, 1, 10000),
                "Maximum training epochs; training stops earlier when validation stops improving (5 epochs).")
    b.add_input(Num("TILE_SIZE", "Chip size (pixels)", Num.Integer, default_tile, False, 16, 4096),
                "Size of the square training chips, also the inference tile size of the trained model.")
    b.add_input(QgsProcessingParameterEnum("ENCODER", "Encoder", ["resnet18", "resnet34", "resnet50"],
                                           defaultValue=1),
                "ResNet encoder of the network (resnet34 by default).", advanced=True)
    b.add_input(Num("BASE_WIDTH", "Encoder width (64 = standard ResNet)", Num.Integer, 64, False, 4, 512),
                "64 is the standard ResNet width; 16-32 train much faster on a CPU.", advanced=True)
    b.add_input(Num("BATCH_SIZE", "Batch size (chips)", Num.Integer, 8, False, 1, 4096),
                "Chips per training step (halved automatically on CUDA out-of-memory).", advanced=True)
    b.add_input(Num("LEARNING_RATE", "Learning rate (0 = find it automatically)", Num.Double, 0.0, False, 0.0, 10.0),
                "Peak learning rate; 0 runs the learning-rate finder first.", advanced=True)
    b.add_input(QgsProcessingParameterEnum("DEVICE", "Device", ["auto", "cuda", "mps", "cpu"], defaultValue=0),
                "auto picks CUDA, then Apple MPS, then the CPU (the log says which).", advanced=True)


def training_sources() -> dict[str, Any]:
    return {"EPOCHS": ("input", "EPOCHS"), "ENCODER": ("input", "ENCODER"), "BASE_WIDTH": ("input", "BASE_WIDTH"),
            "BATCH_SIZE": ("input", "BATCH_SIZE"), "LEARNING_RATE": ("input", "LEARNING_RATE"),
            "DEVICE": ("input", "DEVICE")}


def roads_model() -> Any:
    from qgis.core import (
        QgsProcessing,
        QgsProcessingParameterRasterLayer,
        QgsProcessingParameterVectorLayer,
    )
    from qgis.core import (
        QgsProcessingParameterNumber as Num,
    )

    b = ModelBuilder("Roads from centerlines")
    line = [QgsProcessing.TypeVectorLine]
    b.add_input(QgsProcessingParameterRasterLayer("IMAGERY", "Training imagery"),
                "Imagery the road model learns from.")
    b.add_input(QgsProcessingParameterVectorLayer("CENTERLINES", "Training road centerlines", line),
                "Road centerlines over the training imagery; buffered into road masks.")
    b.add_input(Num("BUFFER_M", "Road half-width for the masks (metres)", Num.Double, 2.0, False, 0.01, 1000.0),
                "Centerlines are buffered by this many metres each side (SpaceNet uses 2 m: 4 m wide roads).")
    b.add_input(QgsProcessingParameterRasterLayer("TEST_IMAGERY", "Imagery to extract roads from"),
                "Imagery the trained model maps (ideally not the training imagery, so the report is honest).")
    b.add_input(QgsProcessingParameterVectorLayer("TEST_CENTERLINES", "Reference centerlines for the evaluation", line),
                "Ground-truth centerlines covering the extraction imagery only (clip them to it).")
    common_training_inputs(b, 256)
    b.add_child("export", "roadlandcover:exporttrainingdata", "Export road mask chips", 0, {
        "INPUT_RASTER": ("input", "IMAGERY"), "INPUT_LABELS": ("input", "CENTERLINES"),
        "LABEL_MODE": 1, "BUFFER_M": ("input", "BUFFER_M"),
        "TILE_SIZE_X": ("input", "TILE_SIZE"), "TILE_SIZE_Y": ("input", "TILE_SIZE"),
        "STRIDE_X": ("expr", "@TILE_SIZE / 2"), "STRIDE_Y": ("expr", "@TILE_SIZE / 2"),
        "OUTPUT_NOFEATURE_TILES": 1,
    })
    b.add_child("train", "roadlandcover:trainmodel", "Train the road model (LinkNet)", 1, {
        "TRAINING_FOLDER": ("child", "export", "OUTPUT_FOLDER"), "MODEL": 1, **training_sources(),
    }, {"OUTPUT_MODEL": ("MODEL", "Road model package")})
    b.add_child("extract", "roadlandcover:extractroads", "Extract road centerlines", 2, {
        "INPUT_RASTER": ("input", "TEST_IMAGERY"), "MODEL": ("child", "train", "OUTPUT_MODEL"),
        "DEVICE": ("input", "DEVICE"),
    }, {"OUTPUT_LINES": ("ROAD_LINES", "Road lines")})
    b.add_child("evaluate", "roadlandcover:evaluateroads", "Evaluate against the reference (APLS)", 3, {
        "PREDICTED": ("child", "extract", "OUTPUT_LINES"), "REFERENCE": ("input", "TEST_CENTERLINES"),
    }, {"OUTPUT_REPORT": ("REPORT", "Road report (JSON)")})
    return b.finish(
        "Trains a road extractor from centerlines and measures it: Export training data (road masks buffered "
        "from the centerlines) -> Train deep learning model (LinkNet) -> Extract roads on the extraction imagery "
        "-> Evaluate roads (APLS, relaxed precision/recall) against the reference centerlines. Train on one "
        "area and extract/evaluate on another: scores measured on the training area are optimistic.")


def landcover_model() -> Any:
    from qgis.core import (
        QgsProcessing,
        QgsProcessingParameterField,
        QgsProcessingParameterMapLayer,
        QgsProcessingParameterRasterLayer,
        QgsProcessingParameterVectorLayer,
    )

    b = ModelBuilder("Land cover from polygons")
    b.add_input(QgsProcessingParameterRasterLayer("IMAGERY", "Training imagery"),
                "Imagery the land-cover model learns from (any band count).")
    b.add_input(QgsProcessingParameterVectorLayer("POLYGONS", "Training polygons",
                                                  [QgsProcessing.TypeVectorPolygon]),
                "Polygons with an integer class value (1-254); areas without polygons are unlabelled.")
    b.add_input(QgsProcessingParameterField("CLASS_FIELD", "Class value field", None, "POLYGONS",
                                            QgsProcessingParameterField.Numeric, optional=True),
                "Integer class field (default: classvalue or value when present).")
    b.add_input(QgsProcessingParameterField("CLASS_NAME_FIELD", "Class name field", None, "POLYGONS",
                                            QgsProcessingParameterField.Any, optional=True),
                "Optional field with the class names shown in the legend.")
    b.add_input(QgsProcessingParameterRasterLayer("TEST_IMAGERY", "Imagery to classify"),
                "Imagery the trained model classifies (same bands, in the same order).")
    b.add_input(QgsProcessingParameterMapLayer("REFERENCE", "Reference for the accuracy (polygons or raster)",
                                               types=[QgsProcessing.TypeVectorPolygon, QgsProcessing.TypeRaster]),
                "Validation polygons or a classified raster, ideally not the training polygons.")
    b.add_input(QgsProcessingParameterField("REFERENCE_FIELD", "Reference class field (polygons)", None, "REFERENCE",
                                            QgsProcessingParameterField.Numeric, optional=True),
                "Class field of reference polygons (ignored for a raster reference).")
    common_training_inputs(b, 256)
    b.add_child("export", "roadlandcover:exporttrainingdata", "Export classified tiles", 0, {
        "INPUT_RASTER": ("input", "IMAGERY"), "INPUT_LABELS": ("input", "POLYGONS"),
        "CLASS_FIELD": ("input", "CLASS_FIELD"), "CLASS_NAME_FIELD": ("input", "CLASS_NAME_FIELD"),
        "LABEL_MODE": 0, "TILE_SIZE_X": ("input", "TILE_SIZE"), "TILE_SIZE_Y": ("input", "TILE_SIZE"),
        "STRIDE_X": ("input", "TILE_SIZE"), "STRIDE_Y": ("input", "TILE_SIZE"),
    })
    b.add_child("train", "roadlandcover:trainmodel", "Train the land-cover model (U-Net)", 1, {
        "TRAINING_FOLDER": ("child", "export", "OUTPUT_FOLDER"), "MODEL": 0, **training_sources(),
    }, {"OUTPUT_MODEL": ("MODEL", "Land-cover model package")})
    b.add_child("classify", "roadlandcover:classifypixels", "Classify pixels", 2, {
        "INPUT_RASTER": ("input", "TEST_IMAGERY"), "MODEL": ("child", "train", "OUTPUT_MODEL"),
        "DEVICE": ("input", "DEVICE"),
    }, {"OUTPUT_CLASSIFIED": ("CLASSIFIED", "Classified raster")})
    b.add_child("assess", "roadlandcover:assessaccuracy", "Assess accuracy", 3, {
        "CLASSIFIED": ("child", "classify", "OUTPUT_CLASSIFIED"), "REFERENCE": ("input", "REFERENCE"),
        "CLASS_FIELD": ("input", "REFERENCE_FIELD"), "IGNORE_CLASSES": "0",
    }, {"OUTPUT_REPORT": ("REPORT", "Accuracy report (JSON)")})
    return b.finish(
        "Trains a land-cover U-Net from class polygons and measures it: Export training data (classified tiles) "
        "-> Train deep learning model -> Classify pixels on the imagery to classify -> Assess accuracy (overall "
        "accuracy, kappa, per-class IoU) against the reference. Use validation polygons that were not used for "
        "training: accuracy measured on the training polygons is optimistic.")


def canonical_xml(text: str) -> str:
    """QGIS writes XML attributes in a random (hash) order: canonicalize (C14N 2.0, sorted attributes) so a
    rebuild gives the same bytes and ``--check`` and git diffs show only real changes."""
    import xml.etree.ElementTree as ET

    body = text.split("<!DOCTYPE model>", 1)[-1]
    root = ET.fromstring(ET.canonicalize(body, strip_text=True))
    ET.indent(root)
    return "<!DOCTYPE model>\n" + ET.tostring(root, encoding="unicode") + "\n"


MODELS = {"roadsfromcenterlines": roads_model, "landcoverfrompolygons": landcover_model}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the shipped Processing graphical models.")
    parser.add_argument("--output", type=Path, default=MODELS_DIR)
    parser.add_argument("--check", action="store_true", help="fail when the files in --output are out of date")
    parser.add_argument("--screenshots", type=Path, help="also save each model, opened in the modeler, as DIR/<id>.png")
    args = parser.parse_args(argv)
    app = start_qgis(gui=args.screenshots is not None)
    args.output.mkdir(parents=True, exist_ok=True)
    stale = []
    for alg_name, build in MODELS.items():
        model = build()
        target = args.output / f"{alg_name}.model3"
        with tempfile.TemporaryDirectory() as tmp:
            tmp_file = Path(tmp) / target.name
            if not model.toFile(str(tmp_file)):
                raise SystemExit(f"QGIS could not write {tmp_file}")
            data = canonical_xml(tmp_file.read_text(encoding="utf-8"))
        if args.check:
            if not target.exists() or target.read_text(encoding="utf-8") != data:
                stale.append(str(target))
            continue
        partial = target.with_name(target.name + ".partial")
        partial.write_text(data, encoding="utf-8")
        partial.replace(target)
        print(f"wrote {target} ({len(model.childAlgorithms())} steps, "
              f"{len(model.parameterDefinitions())} parameters)")
    if stale:
        print("out of date (run scripts/build_models.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    if args.screenshots:
        screenshots(app[0], args.output, args.screenshots)
    return 0


def screenshots(app: Any, models_dir: Path, folder: Path) -> None:
    """The models as the graphical modeler shows them (for docs/modeler.md)."""
    from processing.modeler.ModelerDialog import ModelerDialog
    from qgis.PyQt.QtCore import QSize

    from processing_provider.models import ShippedModel

    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(models_dir.glob("*.model3")):
        dialog = ModelerDialog.create(ShippedModel(path))
        dialog.resize(QSize(1400, 1000))
        dialog.show()
        for _ in range(20):
            app.processEvents()
        target = folder / f"modeler_{path.stem}.png"
        if not dialog.grab().save(str(target)):
            raise SystemExit(f"could not save {target}")
        dialog.close()
        print(f"wrote {target}")


if __name__ == "__main__":
    sys.exit(main())
