"""DeepMedic (Kamnitsas et al. 2017), the coarse aneurysm detector, laid out for dense inference.

One input tensor ``(N, C, D+48, H+48, W+48)`` gives logits ``(N, num_classes, D, H, W)`` where each
of D, H, W is a multiple of 3 (``DeepMedic.context == 48``):

* normal pathway: the centre ``(S+16)^3`` crop at full resolution, 8 valid 3^3 convolutions -> S^3;
* subsampled pathway: the whole input average-pooled by 3 -> ``(S/3+16)^3``, 8 valid convolutions
  -> ``(S/3)^3``, repeated x3 (nearest, as DeepMedic) -> S^3, exactly aligned with the normal
  pathway (output block ``3j..3j+2`` comes from input voxels ``3j+24..3j+26``);
* concatenation -> 1^3 "fully connected" layers (BN, PReLU, dropout) -> classifier.

The paper's training segment (normal 25^3, subsampled 19^3 covering 57^3, output 9^3) is the input
57^3 -> 9^3. Dense inference tiles a volume with any S that is a multiple of 3; tiles whose
origins differ by multiples of 3 see the same pooling grid, so outputs agree at tile seams.

Receptive field: 17^3 voxels at full resolution (normal pathway) and 17^3 pooled voxels = 51^3
input voxels (subsampled pathway); the input therefore extends 24 voxels before and after the
output on each axis (for the subsampled pathway 24-26 voxels, depending on the position in the
3-voxel block).
"""

from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import nn

from .blocks import PreActConv3d, Upsample3d, center_crop3d, init_weights, residual_add

PAPER_WIDTHS: tuple[int, ...] = (30, 30, 40, 40, 40, 40, 50, 50)
PAPER_FC_WIDTHS: tuple[int, ...] = (150, 150)


class _Pathway(nn.Module):
    """8 valid 3^3 pre-activation convolutions with DeepMedic's residual connections."""

    def __init__(self, in_channels: int, widths: Sequence[int], residual_after: Sequence[int]) -> None:
        super().__init__()
        layers = []
        c = in_channels
        for i, w in enumerate(widths):
            layers.append(PreActConv3d(c, int(w), 3, preactivate=i > 0))
            c = int(w)
        self.layers = nn.ModuleList(layers)
        # residual after layer k (1-based) adds the input of layer k-1, i.e. the output of layer k-2
        flags = [False] * len(widths)
        for k in residual_after:
            if 3 <= k <= len(widths):
                flags[k - 1] = True
        self.residual_flags: list[bool] = flags
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prev2 = x  # output of layer i-2
        prev1 = x  # output of layer i-1
        i = 0
        for layer in self.layers:
            y = layer(prev1)
            if self.residual_flags[i]:
                y = residual_add(y, prev2)
            prev2 = prev1
            prev1 = y
            i += 1
        return prev1


class DeepMedic(nn.Module):
    """Two-pathway DeepMedic; see the module docstring for the input/output contract.

    ``seed`` makes the initial weights independent of the global RNG (None: use it).
    """

    context: int = 48  # input size - output size, per axis
    receptive_field_normal: int = 17  # voxels per axis at full resolution
    receptive_field_subsampled: int = 51  # 17 pooled voxels x 3

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        widths: Sequence[int] = PAPER_WIDTHS,
        sub_widths: Sequence[int] | None = None,
        fc_widths: Sequence[int] = PAPER_FC_WIDTHS,
        residual: bool = True,
        dropout: float = 0.5,
        subsample_factor: int = 3,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        sub_widths = tuple(widths) if sub_widths is None else tuple(sub_widths)
        if len(widths) != 8 or len(sub_widths) != 8:
            raise ValueError("DeepMedic needs 8 widths per pathway (the context of 48 depends on it)")
        if subsample_factor != 3:
            raise ValueError("only subsample_factor=3 is supported (DeepMedic's default)")
        self._hparams = dict(
            in_channels=int(in_channels),
            num_classes=int(num_classes),
            widths=[int(w) for w in widths],
            sub_widths=[int(w) for w in sub_widths],
            fc_widths=[int(w) for w in fc_widths],
            residual=bool(residual),
            dropout=float(dropout),
            subsample_factor=int(subsample_factor),
        )
        res = (4, 6, 8) if residual else ()
        self.normal = _Pathway(in_channels, widths, res)
        self.sub = _Pathway(in_channels, sub_widths, res)
        self.pool = nn.AvgPool3d(kernel_size=3, stride=3)
        self.upsample = Upsample3d(3.0)
        fcs = []
        c = self.normal.out_channels + self.sub.out_channels
        for i, w in enumerate(fc_widths):
            # DeepMedic: no dropout on the first FC layer's input, dropout on the later ones
            fcs.append(PreActConv3d(c, int(w), 1, preactivate=True, dropout=dropout if i > 0 else 0.0))
            c = int(w)
        self.fc = nn.Sequential(*fcs)
        self.classifier = PreActConv3d(c, num_classes, 1, preactivate=True, dropout=dropout)
        init_weights(self, seed, leaky_slope=0.25)

    def hyperparameters(self) -> dict:
        """Constructor arguments, for the model manifest and for rebuilding from a checkpoint."""
        return dict(self._hparams)

    @staticmethod
    def output_size(input_size: int | Sequence[int]) -> int | tuple[int, ...]:
        """Output size for an input size (per axis: input - 48, which must be a positive multiple of 3)."""
        if isinstance(input_size, numbers.Integral):
            input_size = int(input_size)
            out = input_size - DeepMedic.context
            if out <= 0 or out % 3:
                raise ValueError(f"DeepMedic input size {input_size} must be 48 + a positive multiple of 3")
            return out
        return tuple(int(DeepMedic.output_size(int(s))) for s in input_size)

    @staticmethod
    def input_size(output_size: int | Sequence[int]) -> int | tuple[int, ...]:
        """Input size needed for an output size (per axis: output + 48)."""
        if isinstance(output_size, numbers.Integral):
            output_size = int(output_size)
            if output_size <= 0 or output_size % 3:
                raise ValueError(f"DeepMedic output size {output_size} must be a positive multiple of 3")
            return output_size + DeepMedic.context
        return tuple(int(DeepMedic.input_size(int(s))) for s in output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normal = self.normal(center_crop3d(x, 16))
        sub = self.upsample(self.sub(self.pool(x)))
        h = torch.cat([normal, sub], dim=1)
        return self.classifier(self.fc(h))
