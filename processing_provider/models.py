"""The shipped graphical models (``models/*.model3``) as algorithms of the ``roadlandcover`` provider.

QGIS names a model algorithm after the model's display name, so a plain ``QgsProcessingModelAlgorithm``
added to this provider would get the id ``roadlandcover:Roads from centerlines`` (spaces included,
and changing whenever someone renames the model in the modeler). :class:`ShippedModel` keeps the
model's display name for the toolbox but takes its id from the file name, which is stable and
command-line friendly: ``models/roadsfromcenterlines.model3`` -> ``roadlandcover:roadsfromcenterlines``.

The files are built by ``scripts/build_models.py`` with QGIS's model API; open them in the graphical
modeler (*Processing ▸ Graphical Modeler ▸ Open Model*) to see or copy the chain.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsMessageLog, QgsProcessingModelAlgorithm

MODELS_DIR = Path(__file__).resolve().parent / "models"


class ShippedModel(QgsProcessingModelAlgorithm):
    """A ``.model3`` file whose algorithm name (the part of the id after the colon) is its file stem."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = Path(path)
        if not self.fromFile(str(self._path)):
            raise ValueError(f"{self._path} is not a readable Processing model (.model3)")
        self.setSourceFilePath(str(self._path))

    def name(self) -> str:
        return self._path.stem

    def displayName(self) -> str:
        return super().name()  # the model's own name, e.g. "Roads from centerlines"

    def createInstance(self) -> ShippedModel:
        # The C++ createInstance would return a plain model whose name() is the display name again.
        instance = ShippedModel(self._path)
        instance.setProvider(self.provider())
        return instance


    def reattach(self) -> None:
        """Resolve the child algorithms again and rebuild the model's outputs from them.

        A provider's algorithms are loaded before QGIS registers the provider, so while loading, the
        children (``roadlandcover:trainmodel``...) cannot be found yet and the model shows no outputs
        (``qgis_process help``, the toolbox). Called once the provider is registered.
        """
        children = self.childAlgorithms()
        for child in children.values():
            child.reattach()
        self.setChildAlgorithms(children)


def _reattach_models(provider_id: str) -> None:
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById(provider_id)
    for alg in provider.algorithms() if provider is not None else ():
        if isinstance(alg, ShippedModel):
            alg.reattach()


_listening = False


def shipped_models(folder: Path = MODELS_DIR) -> list[ShippedModel]:
    """Every readable ``.model3`` in ``folder``, sorted by id; a broken file is logged, not fatal."""
    global _listening
    if not _listening:
        from qgis.core import QgsApplication

        QgsApplication.processingRegistry().providerAdded.connect(_reattach_models)
        _listening = True
    models = []
    for path in sorted(folder.glob("*.model3")):
        try:
            models.append(ShippedModel(path))
        except ValueError as exc:
            QgsMessageLog.logMessage(str(exc), "Road & Land Cover")
    return models
