"""Tiny 3D U-Net for the artery tree on the coarse grid: vessel probability from the preprocessed scan.

Three levels (full, 1/2, 1/4 resolution), widths ``(w0, w1, w2)`` (default 8, 16, 16: 41k parameters),
3^3 convolutions with leaky ReLU and no normalisation layer, so that the output at a voxel depends
only on the inputs within its receptive field (:data:`RECEPTIVE_HALF_WIDTH` voxels each way): slabs
cut with that much overlap give the same probabilities as the whole volume. The skip at full
resolution is a sum (not a concatenation) to keep the full-resolution work, which dominates the
inference time on a 512 x 512 x 140 scan, to two 8-channel layers. Returns logits ``(N, 1, D, H, W)``;
spatial sizes must be divisible by 4.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import Conv1x1, init_weights, upsample3d

#: Voxels each way on which one output voxel depends (measured: 19 before, 18 after; 20 is safe).
RECEPTIVE_HALF_WIDTH = 20


def _conv3(cin: int, cout: int) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, 3, padding=1, bias=True)


class VesselUNet(nn.Module):
    """Vessel probability (logits) per voxel of the coarse grid from the vessel features."""

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (8, 16, 16), seed: int | None = 0,
                 negative_slope: float = 0.01) -> None:
        super().__init__()
        w0, w1, w2 = (int(w) for w in widths)
        self._hp = {"in_channels": int(in_channels), "widths": [w0, w1, w2], "negative_slope": float(negative_slope)}
        self.slope = float(negative_slope)
        self.enc0 = _conv3(in_channels, w0)
        self.enc1a, self.enc1b = _conv3(w0, w1), _conv3(w1, w1)
        self.enc2a, self.enc2b = _conv3(w1, w2), _conv3(w2, w2)
        self.dec1 = _conv3(w1 + w2, w1)
        self.up0 = Conv1x1(w1, w0)
        self.dec0 = _conv3(w0, w0)
        self.head = Conv1x1(w0, 1)
        init_weights(self, seed, leaky_slope=negative_slope)

    def hyperparameters(self) -> dict:
        return dict(self._hp)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.slope) if self.training else F.leaky_relu_(x, self.slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In eval mode activations and the skip sum are computed in place: on a 512 x 512 x 140 scan
        # that keeps two instead of three full-resolution 8-channel tensors alive (stages.vessels);
        # the values are the same. upsample3d instead of F.interpolate keeps the TorchScript file
        # loadable by torch 2.x (networks.blocks.upsample3d).
        a = self._act(self.enc0(x))
        b = self._act(self.enc1b(self._act(self.enc1a(F.max_pool3d(a, 2)))))
        c = self._act(self.enc2b(self._act(self.enc2a(F.max_pool3d(b, 2)))))
        b = self._act(self.dec1(torch.cat([b, upsample3d(c, 2.0)], 1)))
        up = upsample3d(self.up0(b), 2.0)
        a = a + up if self.training else a.add_(up)
        return self.head(self._act(self.dec0(a)))
