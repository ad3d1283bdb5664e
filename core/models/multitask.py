"""Multi-task road extractor (``multitask_road``): road segmentation + road orientation.

As in Batra et al. 2019 ("Improved road connectivity by joint learning of orientation and
segmentation") and ArcGIS's MultiTaskRoadExtractor: one shared ResNet encoder feeds two LinkNet
decoders, one predicting the road mask and one predicting, per pixel, the road's orientation bin
(``orientation_bins`` bins plus a "no road" class). Learning orientation makes the network reason
about the continuity of roads, which reduces gaps at occlusions.

``forward`` returns only the road logits, so inference treats it like any segmentation model;
training calls :meth:`MultiTaskRoad.forward_multi` to get both outputs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import register_model
from .linknet import LinkNetDecoder
from .resnet import ResNetEncoder, check_options, load_pretrained


class MultiTaskRoad(nn.Module):
    """Shared encoder, a road decoder (``num_classes`` logits) and an orientation decoder (bins + 1)."""

    def __init__(self, in_channels: int, num_classes: int, encoder: str = "resnet34", base_width: int = 64,
                 orientation_bins: int = 36, dblock: bool = True, pretrained: str | None = None) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(encoder, in_channels, base_width)
        if pretrained:
            load_pretrained(self.encoder, pretrained)
        self.orientation_bins = orientation_bins
        self.road_decoder = LinkNetDecoder(self.encoder.channels, num_classes, dblock)
        self.orientation_decoder = LinkNetDecoder(self.encoder.channels, orientation_bins + 1, dblock)

    def forward_multi(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        features = self.encoder(x)
        return self.road_decoder(features, size), self.orientation_decoder(features, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        size = (int(x.shape[-2]), int(x.shape[-1]))
        return self.road_decoder(self.encoder(x), size)  # type: ignore[no-any-return]


@register_model("multitask_road")
def build_multitask(in_channels: int, num_classes: int, **options: Any) -> nn.Module:
    """Options: ``encoder`` (resnet34), ``base_width`` (64), ``orientation_bins`` (36), ``dblock``, ``pretrained``."""
    check_options("multitask_road", options, {"encoder", "base_width", "orientation_bins", "dblock", "pretrained"})
    return MultiTaskRoad(in_channels, num_classes, **options)
