"""ResNet-18/34/50 encoders in plain torch, with torchvision's parameter names.

torchvision cannot be imported next to the CPU torch build used here (its compiled ops are missing),
so the encoders are written out. Parameter names (``conv1``, ``bn1``, ``layer1.0.conv1`` ...,
``layer2.0.downsample.0``) match ``torchvision.models.resnet`` exactly, so ImageNet weights load from a
local ``.pth`` file or, on a machine that is online, through ``torch.hub``. The first convolution is
adapted to any band count, which is what multispectral imagery needs.

``base_width`` shrinks every layer (64 is the standard ResNet); small widths train in seconds on a
CPU for tests and demos, but only width 64 can take ImageNet weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, ModelPackageError

#: The torchvision ImageNet weights (IMAGENET1K_V1 for 18/34, IMAGENET1K_V2 for 50).
IMAGENET_URLS: dict[str, str] = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 - 3x3 - 1x1 bottleneck with the stride on the 3x3 convolution (torchvision's ResNet V1.5)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + identity)


ENCODERS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNetEncoder(nn.Module):
    """A ResNet without its classifier that returns the features at strides 2, 4, 8, 16 and 32.

    Attributes:
        channels: channel counts of the five returned feature maps.
    """

    def __init__(self, name: str = "resnet34", in_channels: int = 3, base_width: int = 64) -> None:
        super().__init__()
        if name not in ENCODERS:
            raise ConfigError(f"unknown encoder {name!r}; valid encoders: {', '.join(sorted(ENCODERS))}")
        if base_width < 4 or base_width % 4:
            raise ConfigError(f"base_width must be a multiple of 4 and at least 4, got {base_width}")
        block, layers = ENCODERS[name]
        self.name = name
        self.base_width = base_width
        self.in_channels = in_channels
        self.inplanes = base_width
        self.conv1 = nn.Conv2d(in_channels, base_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, base_width, layers[0])
        self.layer2 = self._make_layer(block, base_width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, base_width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, base_width * 8, layers[3], stride=2)
        e = block.expansion
        self.channels = (base_width, base_width * e, base_width * 2 * e, base_width * 4 * e, base_width * 8 * e)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        downsample: nn.Module | None = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers: list[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        x0 = self.relu(self.bn1(self.conv1(x)))
        x1 = self.layer1(self.maxpool(x0))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return [x0, x1, x2, x3, x4]


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Turn RGB first-layer weights (out, 3, k, k) into weights for ``in_channels`` bands.

    One band gets the sum of the RGB filters (a grey image then gives the same response as RGB);
    more bands repeat R, G, B cyclically, scaled by 3 / in_channels so activations keep their size
    (the rule of segmentation_models_pytorch and timm).
    """
    if weight.shape[1] == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = [weight[:, i % weight.shape[1]] for i in range(in_channels)]
    return torch.stack(reps, dim=1) * (weight.shape[1] / in_channels)


def load_pretrained(encoder: ResNetEncoder, source: str | Path) -> list[str]:
    """Load ImageNet weights into ``encoder`` from a ``.pth`` file, or ``"imagenet"`` via torch.hub.

    The file is read with ``weights_only=True`` (it may come from anywhere). The classifier (``fc``)
    is dropped and the first convolution adapted to the encoder's band count.

    Returns:
        The names of the parameters that were not in the file (empty for a matching ResNet).
    """
    if encoder.base_width != 64:
        raise ConfigError(
            f"pretrained ImageNet weights need the standard width 64, the encoder has base_width {encoder.base_width}; "
            "train from scratch or use base_width 64"
        )
    text = str(source)
    try:
        if text.lower() == "imagenet":
            state = torch.hub.load_state_dict_from_url(IMAGENET_URLS[encoder.name], map_location="cpu",
                                                       progress=False, weights_only=True)
        else:
            state = torch.load(Path(text), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ConfigError(f"pretrained weights file {text} does not exist; pass a torchvision ResNet .pth file") from exc
    except OSError as exc:  # URLError is an OSError: offline machine
        raise ConfigError(
            f"could not fetch ImageNet weights for {encoder.name} ({exc}); without internet, download "
            f"{IMAGENET_URLS[encoder.name]} elsewhere and pass the file instead"
        ) from exc
    except Exception as exc:
        raise ModelPackageError(f"cannot read pretrained weights {text}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
    if "conv1.weight" in state:
        state["conv1.weight"] = adapt_first_conv(state["conv1.weight"], encoder.in_channels)
    result = encoder.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ModelPackageError(
            f"{text} is not a {encoder.name} checkpoint (unexpected parameters such as {result.unexpected_keys[0]})"
        )
    return list(result.missing_keys)


def check_options(model: str, options: dict[str, object], valid: set[str]) -> None:
    """Refuse unknown architecture options with a message listing the valid ones (typos must not pass)."""
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for model {model!r}; valid: {', '.join(sorted(valid))}")
