"""LinkNet / D-LinkNet (``linknet``): a light road extractor with a ResNet encoder.

LinkNet (Chaurasia and Culurciello 2017) adds each decoder output to the encoder feature of the
same stride instead of concatenating, which keeps the decoder cheap. D-LinkNet (Zhou et al. 2018,
winner of DeepGlobe road extraction) puts a cascade of dilated convolutions at the centre so the
receptive field covers long, thin, occluded roads; ``dblock`` switches it on (default).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the universal torch idiom)
from torch import nn

from . import register_model
from .resnet import ResNetEncoder, check_options, load_pretrained


class DBlock(nn.Module):
    """Cascaded dilated 3x3 convolutions (dilation 1, 2, 4, 8) whose outputs are summed."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=d, dilation=d) for d in (1, 2, 4, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        h = x
        for conv in self.convs:
            h = torch.relu(conv(h))
            out = out + h
        return out


class LinkDecoderBlock(nn.Module):
    """1x1 reduce, x2 transposed conv, 1x1 expand (LinkNet's decoder block)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = max(cin // 4, 16)
        self.reduce = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True))
        self.up = nn.Sequential(nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1, bias=False),
                                nn.BatchNorm2d(mid), nn.ReLU(inplace=True))
        self.expand = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.up(self.reduce(x))
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.expand(x)  # type: ignore[no-any-return]


class LinkNetDecoder(nn.Module):
    """Decoder from stride 32 to stride 2 with additive skips, then a full-resolution head."""

    def __init__(self, encoder_channels: tuple[int, ...], num_classes: int, dblock: bool) -> None:
        super().__init__()
        c = encoder_channels
        self.center: nn.Module = DBlock(c[4]) if dblock else nn.Identity()
        self.dec4 = LinkDecoderBlock(c[4], c[3])
        self.dec3 = LinkDecoderBlock(c[3], c[2])
        self.dec2 = LinkDecoderBlock(c[2], c[1])
        self.dec1 = LinkDecoderBlock(c[1], c[0])
        mid = max(c[0] // 2, 32)
        self.final = nn.Sequential(
            nn.ConvTranspose2d(c[0], mid, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(mid, num_classes, 3, padding=1),
        )

    def forward(self, f: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        def hw(t: torch.Tensor) -> tuple[int, int]:
            return int(t.shape[-2]), int(t.shape[-1])

        x = self.center(f[4])
        x = self.dec4(x, hw(f[3])) + f[3]
        x = self.dec3(x, hw(f[2])) + f[2]
        x = self.dec2(x, hw(f[1])) + f[1]
        x = self.dec1(x, hw(f[0]))  # stride 2: the stem feature is not added (it is pre-pooling)
        x = self.final(x)
        if hw(x) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x  # type: ignore[no-any-return]


class LinkNet(nn.Module):
    """ResNet-encoder LinkNet (D-LinkNet with ``dblock``) returning logits at the input resolution."""

    def __init__(self, in_channels: int, num_classes: int, encoder: str = "resnet34", base_width: int = 64,
                 dblock: bool = True, pretrained: str | None = None) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(encoder, in_channels, base_width)
        if pretrained:
            load_pretrained(self.encoder, pretrained)
        self.decoder = LinkNetDecoder(self.encoder.channels, num_classes, dblock)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.decoder(self.encoder(x), (int(x.shape[-2]), int(x.shape[-1])))  # type: ignore[no-any-return]


@register_model("linknet")
def build_linknet(in_channels: int, num_classes: int, **options: Any) -> nn.Module:
    """Options: ``encoder`` (default resnet34: LinkNet34), ``base_width`` (64), ``dblock`` (True), ``pretrained``."""
    check_options("linknet", options, {"encoder", "base_width", "dblock", "pretrained"})
    return LinkNet(in_channels, num_classes, **options)
