"""The paper's weighted Dice loss (WDL) and the plain soft Dice loss it reduces to at beta = 0.

    WDL = (1 - dsc)^beta * ( -2 (sum GT*P + S/2) / (sum GT^2 + sum P^2 + S) ),   S = 1e-4

The second factor is minus the soft Dice ``dsc`` itself, so the loss is **negative, in [-1, 0]**:
-1 is a perfect overlap for beta = 0. The weight ``(1 - dsc)^beta`` is detached (no gradient
through it): it scales each sample's gradient up when its overlap is poor, which is the paper's
intent (focus on hard samples/edges). Note the *value* ``-dsc (1 - dsc)^beta`` is not monotonic in
the overlap for beta > 0 (its minimum is at dsc = 1/(1 + beta)); monitor training with
:func:`soft_dice` or the beta = 0 loss, not with the WDL value. The gradient always points towards
a larger overlap.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

SMOOTH = 1e-4


Reduce = Callable[[torch.Tensor], torch.Tensor]


def soft_dice(probs: torch.Tensor, target: torch.Tensor, smooth: float = SMOOTH, per_sample: bool = True,
              reduce: Reduce | None = None) -> torch.Tensor:
    """Soft Dice ``2 (sum GT*P + S/2) / (sum GT^2 + sum P^2 + S)``.

    Sums run over every axis but the batch axis (all channels and voxels) when ``per_sample``;
    the result then has shape (N,). Otherwise one value for the whole batch (shape ()); ``reduce``
    then combines the two sums (stacked) with other processes' first (distributed training: the
    Dice of the batch over all processes).
    """
    if probs.shape != target.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and target {tuple(target.shape)} differ in shape")
    target = target.to(probs.dtype)
    dims = tuple(range(1, probs.dim())) if per_sample else tuple(range(probs.dim()))
    inter = (probs * target).sum(dim=dims)
    denom = (target * target).sum(dim=dims) + (probs * probs).sum(dim=dims)
    if reduce is not None and not per_sample:
        inter, denom = reduce(torch.stack([inter, denom]))
    return 2.0 * (inter + smooth / 2.0) / (denom + smooth)


def weighted_dice_loss(
    probs: torch.Tensor,
    target: torch.Tensor,
    beta: float = 1.0,
    smooth: float = SMOOTH,
    per_sample: bool = True,
    reduce: Reduce | None = None,
) -> torch.Tensor:
    """WDL (mean over the batch when ``per_sample``); ``probs`` are probabilities (after sigmoid).
    ``reduce``: see :func:`soft_dice`.

    Returns a scalar in [-1, 0]; see the module docstring for why it is negative.
    """
    if beta < 0:
        raise ValueError("beta must be >= 0 (the paper uses [0, 1])")
    dsc = soft_dice(probs, target, smooth, per_sample, reduce)
    weight = (1.0 - dsc.detach()).clamp_min(0.0) ** beta
    return (weight * -dsc).mean()


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = SMOOTH, per_sample: bool = True) -> torch.Tensor:
    """Plain soft Dice loss ``-dsc`` (WDL with beta = 0), in [-1, 0]: the paper's baseline."""
    return weighted_dice_loss(probs, target, beta=0.0, smooth=smooth, per_sample=per_sample)


class WeightedDiceLoss(nn.Module):
    """Module form of :func:`weighted_dice_loss`; ``logits=True`` applies a sigmoid to the input first."""

    def __init__(self, beta: float = 1.0, smooth: float = SMOOTH, per_sample: bool = True, logits: bool = False) -> None:
        super().__init__()
        self.beta = float(beta)
        self.smooth = float(smooth)
        self.per_sample = bool(per_sample)
        self.logits = bool(logits)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = torch.sigmoid(pred) if self.logits else pred
        return weighted_dice_loss(probs, target, self.beta, self.smooth, self.per_sample)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, smooth={self.smooth}, per_sample={self.per_sample}, logits={self.logits}"
