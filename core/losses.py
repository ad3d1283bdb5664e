"""Segmentation losses that honour ignored pixels: cross-entropy, dice, focal, CE+dice, soft-IoU.

Targets are class indices (``0 .. C-1``) with :data:`IGNORE_INDEX` on pixels that must not count
(unlabelled, nodata, ignored classes). Region losses (dice, soft-IoU) are averaged over the classes
present in the batch, so a chip without water does not reward predicting no water everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812 (the universal torch idiom)

from .errors import ConfigError

IGNORE_INDEX = 255
LOSSES = ("ce", "dice", "focal", "ce_dice", "soft_iou")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _probs_and_onehot(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    valid = (target != IGNORE_INDEX).unsqueeze(1).to(logits.dtype)
    probs = torch.softmax(logits.float(), dim=1) * valid
    safe = torch.where(target == IGNORE_INDEX, torch.zeros_like(target), target)
    onehot = F.one_hot(safe, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype) * valid
    return probs, onehot, valid


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice, averaged over the classes present in the target."""
    probs, onehot, _ = _probs_and_onehot(logits, target)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    present = onehot.sum(dims) > 0
    dice = (2 * inter + eps) / (denom + eps)
    return (1 - dice[present]).mean() if bool(present.any()) else logits.sum() * 0


def soft_iou_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Jaccard of the foreground classes (for roads: the road class), as in Mosinska et al."""
    probs, onehot, _ = _probs_and_onehot(logits, target)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    union = probs.sum(dims) + onehot.sum(dims) - inter
    iou = (inter + eps) / (union + eps)
    fg = iou[1:] if logits.shape[1] > 1 else iou
    return 1 - fg.mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
               gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): cross-entropy down-weighted on pixels already right."""
    logp = F.log_softmax(logits.float(), dim=1)
    ce = F.nll_loss(logp, target, weight=weight, ignore_index=IGNORE_INDEX, reduction="none")
    valid = target != IGNORE_INDEX
    if not bool(valid.any()):
        return logits.sum() * 0
    safe = torch.where(valid, target, torch.zeros_like(target))
    pt = logp.gather(1, safe.unsqueeze(1)).squeeze(1).exp()
    return ((1 - pt) ** gamma * ce)[valid].mean()


def make_loss(name: str, class_weights: torch.Tensor | None = None) -> LossFn:
    """The loss called ``name`` (see :data:`LOSSES`), with optional per-class weights for CE/focal."""

    def ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not bool((target != IGNORE_INDEX).any()):
            return logits.sum() * 0
        return F.cross_entropy(logits.float(), target, weight=class_weights, ignore_index=IGNORE_INDEX)

    if name == "ce":
        return ce
    if name == "dice":
        return dice_loss
    if name == "focal":
        return lambda logits, target: focal_loss(logits, target, class_weights)
    if name == "ce_dice":
        return lambda logits, target: ce(logits, target) + dice_loss(logits, target)
    if name == "soft_iou":
        return lambda logits, target: ce(logits, target) + soft_iou_loss(logits, target)
    raise ConfigError(f"unknown loss {name!r}; valid losses: {', '.join(LOSSES)}")
