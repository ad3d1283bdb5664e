"""``roadlandcover:trainmodel``: train a model on an exported training folder, in a worker process."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputFolder,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from core import deps

from .base import RoadLandcoverAlgorithm
from .feedback import ProcessingFeedbackAdapter

MODELS = ("unet", "linknet", "multitask_road")
ENCODERS = ("resnet18", "resnet34", "resnet50")
SPLITS = ("blocked", "random")
WEIGHTS = ("none", "balanced")
LOSSES = ("auto", "ce", "dice", "focal", "ce_dice", "soft_iou")
MONITORS = ("auto", "valid_loss", "miou", "road_iou", "accuracy")
DEVICES = ("auto", "cuda", "mps", "cpu")


class TrainModelAlgorithm(RoadLandcoverAlgorithm):
    ALG_ID = "trainmodel"
    DISPLAY_NAME = "Train deep learning model"
    GROUP = "Deep learning"
    GROUP_ID = "deeplearning"
    REQUIRES = deps.DL_STACK
    HELP = (
        "Trains a segmentation network on a training folder written by 'Export training data' and saves a "
        "model package (model.json + weights) for 'Classify pixels'.\n\n"
        "Models: unet (land cover or roads, ResNet-18/34/50 encoder), linknet (D-LinkNet34 style, roads), "
        "multitask_road (shared ResNet-34 encoder with a road and an orientation decoder; needs orientation "
        "chips).\n\n"
        "Training runs in a separate Python process (QGIS stays responsive and safe from crashes); progress and "
        "a per-epoch table (train/validation loss, accuracy, mIoU or road IoU) appear in the log. Cancel stops "
        "after the current batch and saves the best epoch so far as the model.\n\n"
        "Validation: VAL_PERCENT of the chips; the 'blocked' split holds out whole map blocks and drops "
        "training chips that overlap them, so the score is honest for overlapping chips.\n\n"
        "Learning rate 0 runs a learning-rate finder first (plot in the report folder). Early stopping after "
        "PATIENCE epochs without improvement of the monitored metric. On CUDA, mixed precision is used and an "
        "out-of-memory error halves the batch and retries the epoch.\n\n"
        "Parameters:\n"
        "- TRAINING_FOLDER: folder with dataset.json written by 'Export training data'.\n"
        "- MODEL: unet / linknet / multitask_road (default unet). ENCODER: resnet18 / resnet34 (default) / "
        "resnet50.\n"
        "- EPOCHS: maximum epochs (20). BATCH_SIZE: chips per step (8; halved on CUDA out-of-memory).\n"
        "- LEARNING_RATE: peak of the one-cycle AdamW schedule; 0 (default) = run the finder first.\n"
        "- VAL_PERCENT: % of chips for validation (20). PATIENCE: epochs without improvement before stopping "
        "(5; 0 = never).\n"
        "- DEVICE: auto (CUDA, then Apple MPS, then CPU; always reported) / cuda / mps / cpu.\n"
        "Advanced: VAL_SPLIT blocked (default) / random; IGNORE_CLASSES comma-separated class values left out "
        "(0 always is); CLASS_WEIGHTS none / balanced (inverse frequency, capped at 10x, for ce/focal); LOSS "
        "auto (ce_dice for land cover, soft_iou for roads) / ce / dice / focal / ce_dice / soft_iou; MONITOR "
        "auto (miou, road_iou for roads) / valid_loss / miou / road_iou / accuracy; BASE_WIDTH encoder width "
        "(64 = standard ResNet, needed for pretrained weights; 16-32 train fast on a CPU); PRETRAINED "
        "'imagenet' (needs internet) or a torchvision ResNet .pth file; RESUME_FROM checkpoint_last.pt of an "
        "earlier run (continues it) or a model package (fine-tunes); MIXED_PRECISION float16 on CUDA (on); "
        "SEED makes split, initialisation and augmentation repeatable (42).\n"
        "- OUTPUT_MODEL: the model package (.zip, or a folder). OUTPUT_REPORT: report folder (default "
        "<model>_training beside it).\n\n"
        "The report folder holds history.csv, loss_curve.png, metrics.json, metrics_per_class.csv "
        "(precision, recall, F1, IoU), predictions.png and checkpoint_last.pt (for RESUME_FROM)."
    )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(QgsProcessingParameterFile(
            "TRAINING_FOLDER", self.tr("Training folder (from Export training data)"),
            QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterEnum("MODEL", self.tr("Model"), list(MODELS), defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum("ENCODER", self.tr("Encoder"), list(ENCODERS), defaultValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            "EPOCHS", self.tr("Maximum epochs"), QgsProcessingParameterNumber.Integer, 20, False, 1, 10000))
        self.addParameter(QgsProcessingParameterNumber(
            "BATCH_SIZE", self.tr("Batch size (chips)"), QgsProcessingParameterNumber.Integer, 8, False, 1, 4096))
        self.addParameter(QgsProcessingParameterNumber(
            "LEARNING_RATE", self.tr("Learning rate (0 = find it automatically)"),
            QgsProcessingParameterNumber.Double, 0.0, False, 0.0, 10.0))
        self.addParameter(QgsProcessingParameterNumber(
            "VAL_PERCENT", self.tr("Validation share (%)"), QgsProcessingParameterNumber.Double, 20.0, False, 1.0, 90.0))
        self.addParameter(QgsProcessingParameterNumber(
            "PATIENCE", self.tr("Early-stopping patience (epochs, 0 = off)"),
            QgsProcessingParameterNumber.Integer, 5, False, 0, 10000))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", self.tr("Device"), list(DEVICES), defaultValue=0))
        advanced = [
            QgsProcessingParameterEnum("VAL_SPLIT", self.tr("Validation split"), list(SPLITS), defaultValue=0),
            QgsProcessingParameterString("IGNORE_CLASSES", self.tr("Ignore classes (comma-separated values; 0 always)"),
                                         "", optional=True),
            QgsProcessingParameterEnum("CLASS_WEIGHTS", self.tr("Class weights"), list(WEIGHTS), defaultValue=0),
            QgsProcessingParameterEnum("LOSS", self.tr("Loss"), list(LOSSES), defaultValue=0),
            QgsProcessingParameterEnum("MONITOR", self.tr("Monitored metric"), list(MONITORS), defaultValue=0),
            QgsProcessingParameterNumber("BASE_WIDTH", self.tr("Encoder width (64 = standard ResNet)"),
                                         QgsProcessingParameterNumber.Integer, 64, False, 4, 512),
            QgsProcessingParameterString("PRETRAINED", self.tr("Pretrained encoder ('imagenet' or a .pth file)"),
                                         "", optional=True),
            QgsProcessingParameterFile("RESUME_FROM", self.tr("Resume from checkpoint_last.pt or a model package"),
                                       QgsProcessingParameterFile.File, optional=True),
            QgsProcessingParameterBoolean("MIXED_PRECISION", self.tr("Mixed precision on CUDA"), True),
            QgsProcessingParameterNumber("SEED", self.tr("Random seed"), QgsProcessingParameterNumber.Integer, 42),
        ]
        for p in advanced:
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(p)
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_MODEL", self.tr("Model package (.zip)"), "Model package (*.zip)"))
        self.addParameter(QgsProcessingParameterFolderDestination(
            "OUTPUT_REPORT", self.tr("Training report folder"), optional=True, createByDefault=True))
        self.addOutput(QgsProcessingOutputFolder("REPORT_FOLDER", self.tr("Report folder")))
        self.addOutput(QgsProcessingOutputFile("MODEL_FILE", self.tr("Model package")))
        self.addOutput(QgsProcessingOutputNumber("BEST_METRIC", self.tr("Best monitored metric")))
        self.addOutput(QgsProcessingOutputString("STOPPED", self.tr("How training ended")))
        self.addOutput(QgsProcessingOutputString("DEVICE_USED", self.tr("Device used")))

    def config_from_parameters(self, parameters: dict[str, Any], context: QgsProcessingContext) -> Any:
        from core.training import TrainConfig

        ignore = self.parameterAsString(parameters, "IGNORE_CLASSES", context).replace(" ", "")
        try:
            ignore_values = tuple(int(v) for v in ignore.split(",") if v)
        except ValueError as exc:
            from core.errors import ConfigError

            raise ConfigError(f"ignore classes must be comma-separated class values, got {ignore!r}") from exc
        return TrainConfig(
            model=MODELS[self.parameterAsEnum(parameters, "MODEL", context)],
            encoder=ENCODERS[self.parameterAsEnum(parameters, "ENCODER", context)],
            base_width=self.parameterAsInt(parameters, "BASE_WIDTH", context),
            pretrained=self.parameterAsString(parameters, "PRETRAINED", context).strip(),
            epochs=self.parameterAsInt(parameters, "EPOCHS", context),
            batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context),
            learning_rate=self.parameterAsDouble(parameters, "LEARNING_RATE", context),
            val_percent=self.parameterAsDouble(parameters, "VAL_PERCENT", context),
            val_split=SPLITS[self.parameterAsEnum(parameters, "VAL_SPLIT", context)],
            ignore_classes=ignore_values,
            class_weights=WEIGHTS[self.parameterAsEnum(parameters, "CLASS_WEIGHTS", context)],
            loss=LOSSES[self.parameterAsEnum(parameters, "LOSS", context)],
            monitor=MONITORS[self.parameterAsEnum(parameters, "MONITOR", context)],
            patience=self.parameterAsInt(parameters, "PATIENCE", context),
            resume_from=self.parameterAsFile(parameters, "RESUME_FROM", context) or "",
            mixed_precision=self.parameterAsBoolean(parameters, "MIXED_PRECISION", context),
            device=DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
            seed=self.parameterAsInt(parameters, "SEED", context),
        )

    def run_core(self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback,
                 core_feedback: ProcessingFeedbackAdapter) -> dict[str, Any]:
        from pathlib import Path

        from core.train_worker import find_training_python, run_worker

        from .environment import qgis_python

        config = self.config_from_parameters(parameters, context)
        folder = self.parameterAsFile(parameters, "TRAINING_FOLDER", context)
        output = self.parameterAsFileOutput(parameters, "OUTPUT_MODEL", context)
        report = self.parameterAsString(parameters, "OUTPUT_REPORT", context) or None
        python = find_training_python() or qgis_python()
        done = run_worker(folder, output, config, core_feedback, report_dir=report, python=python)
        if done.get("stopped") == "canceled":
            feedback.pushWarning(f"training was canceled; the best epoch ({done.get('best_epoch')}) was saved as {output}")
        metric = done.get("best_metric")
        feedback.pushInfo(f"model package: {output}; {done.get('monitor')} {metric:.4f} (best epoch "
                          f"{done.get('best_epoch')} of {done.get('epochs_run')}) on {done.get('device')}")
        return {"OUTPUT_MODEL": str(Path(output)), "MODEL_FILE": str(Path(output)),
                "REPORT_FOLDER": str(done.get("report_dir")), "OUTPUT_REPORT": str(done.get("report_dir")),
                "BEST_METRIC": float(metric) if metric is not None else None, "STOPPED": str(done.get("stopped")),
                "DEVICE_USED": str(done.get("device"))}
