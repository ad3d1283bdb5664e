"""U-Net with a ResNet encoder (``unet``): land cover and roads, any number of bands.

The decoder upsamples by two at each step, concatenates the encoder feature of the same stride
and applies two 3x3 convolutions, as in Ronneberger et al. 2015 and segmentation_models_pytorch's
Unet. Sizes that are not multiples of 32 work (features are resized to the skip they meet), but
tiles of a multiple of 32 avoid the interpolation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the universal torch idiom)
from torch import nn

from . import register_model
from .resnet import ResNetEncoder, check_options, load_pretrained


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UpBlock(nn.Module):
    """Upsample x2, concatenate the skip feature (if any), two conv-bn-relu."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(cin + cskip, cout)
        self.conv2 = conv_bn_relu(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))  # type: ignore[no-any-return]


class UNetDecoder(nn.Module):
    """Five up-blocks from stride 32 to full resolution; returns the last feature map."""

    def __init__(self, encoder_channels: tuple[int, ...], decoder_channels: tuple[int, ...]) -> None:
        super().__init__()
        skips = (encoder_channels[3], encoder_channels[2], encoder_channels[1], encoder_channels[0], 0)
        ins = (encoder_channels[4], *decoder_channels[:-1])
        self.blocks = nn.ModuleList(UpBlock(i, s, o) for i, s, o in zip(ins, skips, decoder_channels))
        self.out_channels = decoder_channels[-1]

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = features[4]
        skips: list[torch.Tensor | None] = [features[3], features[2], features[1], features[0], None]
        for block, skip in zip(self.blocks, skips):
            target = (int(skip.shape[-2]), int(skip.shape[-1])) if skip is not None else size
            x = block(x, skip, target)
        return x


def decoder_widths(base_width: int) -> tuple[int, int, int, int, int]:
    """Decoder widths that scale with the encoder (256..16 for the standard width 64)."""
    f = base_width / 64
    return tuple(max(4, int(round(c * f))) for c in (256, 128, 64, 32, 16))  # type: ignore[return-value]


class UNet(nn.Module):
    """ResNet-encoder U-Net returning ``num_classes`` logits at the input resolution."""

    def __init__(self, in_channels: int, num_classes: int, encoder: str = "resnet34", base_width: int = 64,
                 pretrained: str | None = None) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(encoder, in_channels, base_width)
        if pretrained:
            load_pretrained(self.encoder, pretrained)
        self.decoder = UNetDecoder(self.encoder.channels, decoder_widths(base_width))
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        size = (int(x.shape[-2]), int(x.shape[-1]))
        return self.head(self.decoder(self.encoder(x), size))  # type: ignore[no-any-return]


@register_model("unet")
def build_unet(in_channels: int, num_classes: int, **options: Any) -> nn.Module:
    """Options: ``encoder`` (resnet18/34/50, default resnet34), ``base_width`` (64), ``pretrained``."""
    check_options("unet", options, {"encoder", "base_width", "pretrained"})
    return UNet(in_channels, num_classes, **options)
