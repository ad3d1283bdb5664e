"""Model package safety: weights that would run code and zips escaping their folder are refused."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from core.errors import ModelPackageError  # noqa: E402
from core.model_package import load_package, save_package  # noqa: E402
from core.models import build_model  # noqa: E402

DEFINITION = {"task": "landcover", "architecture": {"name": "unet", "in_channels": 3, "num_classes": 2,
                                                    "options": {"encoder": "resnet18", "base_width": 8}},
              "bands": [{"index": i, "name": f"b{i}"} for i in (1, 2, 3)],
              "classes": [{"value": 1, "name": "a", "color": "#ff0000"}, {"value": 2, "name": "b", "color": "#00ff00"}],
              "output_values": [1, 2], "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]}}


def _model() -> torch.nn.Module:
    return build_model("unet", 3, 2, encoder="resnet18", base_width=8)


def test_round_trip_folder_and_zip(tmp_path: Path) -> None:
    model = _model().eval()
    x = torch.randn(1, 3, 64, 64)
    for target in (tmp_path / "pkg", tmp_path / "pkg.zip"):
        save_package(target, DEFINITION, model.state_dict())
        pkg = load_package(target, workdir=tmp_path / f"work-{target.name}")
        with torch.no_grad():
            assert torch.allclose(pkg.model(x), model(x), atol=1e-6)
        assert pkg.output_values == [1, 2]


def test_saving_stages_nothing_outside_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full or missing temporary folder must not break saving: only the output's own folder is written."""
    import hashlib
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no such folder"))
    out = tmp_path / "out"
    out.mkdir()
    model = _model()
    for target in (out / "pkg", out / "pkg.zip"):
        save_package(target, DEFINITION, model.state_dict())
    assert sorted(p.name for p in out.iterdir()) == ["pkg", "pkg.zip"]
    assert sorted(p.name for p in (out / "pkg").iterdir()) == ["model.json", "weights.pt"]
    definition = json.loads((out / "pkg" / "model.json").read_text())
    weights = (out / "pkg" / "weights.pt").read_bytes()
    assert definition["weights"]["sha256"] == hashlib.sha256(weights).hexdigest()
    with zipfile.ZipFile(out / "pkg.zip") as zf:
        assert zf.namelist() == ["model.json", "weights.pt"]
        assert zf.read("weights.pt") == weights


def test_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    save_package(tmp_path / "pkg", DEFINITION, _model().state_dict())
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    weights = tmp_path / "pkg" / "weights.pt"
    torch.save({"conv1.weight": Evil()}, weights)
    # keep the checksum right so the refusal comes from the unpickler, not from the hash check
    definition = json.loads((tmp_path / "pkg" / "model.json").read_text())
    definition["weights"].pop("sha256")
    (tmp_path / "pkg" / "model.json").write_text(json.dumps(definition))
    with pytest.raises(ModelPackageError, match="refused|plain tensor|cannot read weights"):
        load_package(tmp_path / "pkg")
    assert not marker.exists()


@pytest.mark.parametrize("entry", ["../escaped.txt", "/abs/escaped.txt", "sub/../../escaped.txt"])
def test_zip_slip_is_refused(tmp_path: Path, entry: str) -> None:
    save_package(tmp_path / "pkg.zip", DEFINITION, _model().state_dict())
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(tmp_path / "pkg.zip") as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr(entry, "owned")
    work = tmp_path / "work" / "inner"
    with pytest.raises(ModelPackageError, match="outside its folder"):
        load_package(bad, workdir=work)
    assert not (tmp_path / "work" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not list((tmp_path / "work").rglob("*.txt"))
