"""Drive Processing's real batch dialog (``BatchAlgorithmDialog``) headless and write a JSON report.

Run in its own process (the widgets need a GUI ``QgsApplication``; the other provider tests share a
non-GUI one), from the repository root, with ``QT_QPA_PLATFORM=offscreen``:

    python tests/processing_provider/batch_dialog.py open-all REPORT.json
        opens every roadlandcover algorithm (models included) in the batch dialog, adds a second
        row and reads the parameters of both rows back, as the dialog does before it runs.
    python tests/processing_provider/batch_dialog.py run ALG_ID BATCH.json REPORT.json
        opens ALG_ID in the batch dialog, loads BATCH.json through the dialog's own "Open" button
        code (the file format its "Save" button writes: a list of {"PARAMETERS": {name: Python
        literal}, "OUTPUTS": {name: path}}), runs it with the dialog's own run code (one fresh
        context per row, the same algorithm object for every row, results loaded into the project)
        and reports each row's results, the errors and the layers added to the project.

This is the code path of *Toolbox ▸ right click ▸ Execute as Batch Process…*; only the file dialog is
replaced (it returns BATCH.json instead of asking).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
_APP: Any = None


def start() -> Any:
    sys.path.insert(0, str(REPO))
    from processing_provider.headless import start_qgis

    app, provider = start_qgis(gui=True)  # GUI application: the batch dialog is made of widgets
    import tests.core.test_inference  # noqa: F401  (registers the tiny test_* architectures)

    return app, provider


def open_dialog(alg_id: str) -> Any:
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().createAlgorithmById(alg_id)
    if alg is None:
        raise SystemExit(f"no algorithm {alg_id}")
    return BatchAlgorithmDialog(alg.create())  # as ProcessingToolbox.executeAlgorithmAsBatchProcess does


def open_all(report_path: Path) -> None:
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById("roadlandcover")
    report: dict[str, Any] = {}
    for alg in provider.algorithms():
        entry: dict[str, Any] = {}
        try:
            dialog = open_dialog(alg.id())
            panel = dialog.mainWidget()
            panel.addRow()
            entry["rows"] = panel.batchRowCount()
            entry["columns"] = [panel.tblParameters.horizontalHeaderItem(c).text()
                                for c in range(panel.tblParameters.columnCount())
                                if panel.tblParameters.horizontalHeaderItem(c) is not None]
            entry["row_parameters"] = [sorted(panel.parametersForRow(r, warnOnInvalid=False)[0])
                                       for r in range(panel.batchRowCount())]
            dialog.close()
        except Exception:  # report it: the test names the algorithm that fails
            entry["error"] = traceback.format_exc()
        report[alg.id()] = entry
    report_path.write_text(json.dumps(report, indent=1))


def run_batch(alg_id: str, batch_file: Path, report_path: Path) -> None:
    batch_panel_module = importlib.import_module("processing.gui.BatchPanel")  # its QFileDialog is replaced
    from qgis.core import QgsProject

    dialog = open_dialog(alg_id)
    panel = dialog.mainWidget()

    class FileDialog:  # the "Open Batch" file dialog, answered with BATCH.json
        @staticmethod
        def getOpenFileName(*_args: Any, **_kwargs: Any) -> tuple[str, str]:
            return str(batch_file), "JSON files (*.json)"

    real_file_dialog = batch_panel_module.QFileDialog
    batch_panel_module.QFileDialog = FileDialog
    try:
        panel.btnOpen.click()  # BatchPanel.load: clears the table, one row per entry of the file
    finally:
        batch_panel_module.QFileDialog = real_file_dialog

    captured: dict[str, Any] = {}
    real_finish = dialog.finish

    def finish(algorithm_results: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
        captured["results"] = algorithm_results
        captured["errors"] = errors
        real_finish(algorithm_results, errors)

    dialog.finish = finish
    panel.checkLoadLayersOnCompletion.setChecked(True)  # "Load layers on completion", as users tick it
    report: dict[str, Any] = {"rows_loaded": panel.batchRowCount()}
    dialog.runAlgorithm()  # what the Run button calls

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        sink = getattr(value, "sink", None)  # QgsProcessingOutputLayerDefinition
        if sink is not None:
            return sink.staticValue()
        return str(value)

    report["results"] = [plain(r["results"]) for r in captured.get("results", [])]
    report["parameters"] = [plain(r["parameters"]) for r in captured.get("results", [])]
    report["errors"] = plain(captured.get("errors", []))
    report["project_layers"] = sorted(
        ({"source": layer.source().split("|")[0], "name": layer.name(),
          "renderer": layer.renderer().type() if hasattr(layer, "renderer") and layer.renderer() else None,
          "labels": [c.label for c in layer.renderer().classes()]
          if layer.renderer() is not None and hasattr(layer.renderer(), "classes") else []}
         for layer in QgsProject.instance().mapLayers().values()), key=lambda e: e["source"])
    report_path.write_text(json.dumps(report, indent=1))


def main(argv: list[str]) -> int:
    global _APP
    if len(argv) == 2 and argv[0] == "open-all":
        _APP = start()  # kept in a global: deleting the application at the end of main() hangs headless
        open_all(Path(argv[1]))
        return 0
    if len(argv) == 4 and argv[0] == "run":
        _APP = start()
        run_batch(argv[1], Path(argv[2]), Path(argv[3]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # The report is written; skip the interpreter's teardown of the GUI application, which can hang
    # headless after a batch run (background task threads of QgsScopedProxyProgressTask).
    os._exit(code)
