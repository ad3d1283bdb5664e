"""Model registry, ResNet encoders with torchvision names, band adaptation, output shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from core.errors import ConfigError  # noqa: E402
from core.models import available_models, build_model  # noqa: E402
from core.models.resnet import ResNetEncoder, adapt_first_conv, load_pretrained  # noqa: E402

SMALL = {"encoder": "resnet18", "base_width": 8}


def test_registry_lists_valid_names_on_error() -> None:
    assert {"unet", "linknet", "multitask_road"} <= set(available_models())
    # Other test modules register throw-away models, so only require ours to be listed, in order.
    with pytest.raises(ConfigError, match=r"'segformer'; valid names: (\w+, )*linknet, (\w+, )*multitask_road, (\w+, )*unet"):
        build_model("segformer", 3, 2)
    with pytest.raises(ConfigError, match="unknown option"):
        build_model("unet", 3, 2, encoderr="resnet18")


@pytest.mark.parametrize("name", ["unet", "linknet", "multitask_road"])
@pytest.mark.parametrize("bands,size", [(1, 64), (5, 70)])
def test_output_shape_any_bands_any_size(name: str, bands: int, size: int) -> None:
    model = build_model(name, bands, 3, **SMALL).eval()
    with torch.no_grad():
        y = model(torch.randn(2, bands, size, size + 8))
    assert y.shape == (2, 3, size, size + 8)
    if name == "multitask_road":
        road, orient = model.forward_multi(torch.randn(1, bands, 64, 64))
        assert road.shape == (1, 3, 64, 64) and orient.shape == (1, 37, 64, 64)


# Parameter counts of torchvision.models.resnet18/34/50 without the fc layer (11 689 512 - 513 000, ...).
TORCHVISION_PARAMS = {"resnet18": 11_176_512, "resnet34": 21_284_672, "resnet50": 23_508_032}


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_encoder_matches_torchvision_layout(name: str) -> None:
    enc = ResNetEncoder(name, 3)
    assert sum(p.numel() for p in enc.parameters()) == TORCHVISION_PARAMS[name]
    keys = set(enc.state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
            "layer4.1.bn2.num_batches_tracked"} <= keys
    if name == "resnet50":
        assert "layer3.5.conv3.weight" in keys


def test_pretrained_file_loads_and_adapts_first_conv(tmp_path: Path) -> None:
    # A torchvision-style checkpoint (with fc, 3 input bands) written as a plain file.
    src = ResNetEncoder("resnet18", 3)
    state = {k: torch.randn_like(v, dtype=torch.float32) if v.is_floating_point() else v
             for k, v in src.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    torch.save(state, tmp_path / "resnet18.pth")
    model = build_model("unet", 4, 2, encoder="resnet18", pretrained=str(tmp_path / "resnet18.pth"))
    w = model.encoder.conv1.weight.detach()
    assert w.shape == (64, 4, 7, 7)
    # band 4 repeats red, scaled by 3/4
    assert torch.allclose(w[:, 3], state["conv1.weight"][:, 0] * 0.75)
    assert torch.allclose(model.encoder.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    one = adapt_first_conv(state["conv1.weight"], 1)
    assert torch.allclose(one[:, 0], state["conv1.weight"].sum(1))


def test_pretrained_refuses_code_and_reduced_width(tmp_path: Path) -> None:
    import os

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"conv1.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(Exception, match="(?i)weights|pretrained"):
        load_pretrained(ResNetEncoder("resnet18", 3), tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(ConfigError, match="width 64"):
        load_pretrained(ResNetEncoder("resnet18", 3, base_width=16), tmp_path / "evil.pth")
    with pytest.raises(ConfigError, match="does not exist"):
        load_pretrained(ResNetEncoder("resnet18", 3), tmp_path / "missing.pth")
