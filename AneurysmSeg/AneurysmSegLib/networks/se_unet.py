"""Dual-channel SE 3D U-Net: the fine stage (Isensee et al. 2017 variant with SE blocks, as the paper).

Encoder (level 0 at full resolution): a 3^3 stride-1 conv, then per level below a 3^3 stride-2 conv;
each followed by a pre-activation context module (IN, LReLU, conv 3^3, dropout, IN, LReLU,
conv 3^3) summed with its input (residual), then IN + LReLU. Widths ``base_filters * 2**level``.
Decoder: upsampling module (nearest x2, conv 3^3 halving the channels, IN, LReLU), concatenation
with the skip, localisation module (conv 3^3, IN, LReLU, conv 1^3 halving, IN, LReLU); at the top
level a 3^3 conv keeps the concatenated width (Isensee). Deep supervision: 1^3 segmentation layers
on the three highest decoder levels, each upsampled (trilinear) and summed into the next
(Isensee's element-wise sum). SE blocks (Hu et al.) after the penultimate context block and after
the first upsampling module (the paper's Fig. 3).

Returns logits ``(N, out_channels, D, H, W)``; apply sigmoid (or softmax) outside. Spatial sizes
must be divisible by ``2**(depth-1)`` (16 for the default depth 5; the VOI is 64^3).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import Conv1x1, NormAct, SEBlock3D, init_weights, upsample3d

SE_POSITIONS = ("penultimate_context", "first_upsampling")


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=True)


class ContextModule(nn.Module):
    """Pre-activation residual unit body: IN-LReLU-conv3-dropout-IN-LReLU-conv3."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.na1 = NormAct(channels)
        self.conv1 = _conv3(channels, channels)
        self.drop: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.na2 = NormAct(channels)
        self.conv2 = _conv3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.na2(self.drop(self.conv1(self.na1(x)))))


class EncoderLevel(nn.Module):
    """Conv (stride 1 at the top, 2 below) -> context module + residual sum -> IN + LReLU [-> SE]."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float, se_reduction: int, se: bool) -> None:
        super().__init__()
        self.conv = _conv3(cin, cout, stride)
        self.context = ContextModule(cout, dropout)
        self.out = NormAct(cout)
        self.se: nn.Module = SEBlock3D(cout, se_reduction) if se else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = x + self.context(x)
        return self.se(self.out(x))


class UpsamplingModule(nn.Module):
    """Nearest x2 upsampling, then conv 3^3 to ``cout`` channels, IN + LReLU [-> SE]."""

    def __init__(self, cin: int, cout: int, se_reduction: int, se: bool) -> None:
        super().__init__()
        self.conv = _conv3(cin, cout)
        self.na = NormAct(cout)
        self.se: nn.Module = SEBlock3D(cout, se_reduction) if se else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = upsample3d(x, 2.0)
        return self.se(self.na(self.conv(x)))


class LocalisationModule(nn.Module):
    """Conv 3^3 (keeps width) -> IN + LReLU -> conv 1^3 to ``cout`` -> IN + LReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _conv3(cin, cin)
        self.na1 = NormAct(cin)
        self.conv2 = Conv1x1(cin, cout)
        self.na2 = NormAct(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.na2(self.conv2(self.na1(self.conv1(x))))


class DecoderLevel(nn.Module):
    """Upsampling module, concatenation with the skip, localisation module (or, at the top level,
    Isensee's 3^3 conv keeping the concatenated width), and an optional 1^3 segmentation layer."""

    def __init__(self, cin: int, cout: int, top: bool, seg_channels: int, se_reduction: int, se: bool) -> None:
        super().__init__()
        self.up = UpsamplingModule(cin, cout, se_reduction, se)
        self.loc: nn.Module = (
            nn.Sequential(_conv3(2 * cout, 2 * cout), NormAct(2 * cout)) if top else LocalisationModule(2 * cout, cout)
        )
        self.out_channels = 2 * cout if top else cout
        self.has_head = seg_channels > 0
        self.head: nn.Module = Conv1x1(self.out_channels, seg_channels) if seg_channels > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.loc(torch.cat([self.up(x), skip], dim=1))


class SEUNet3D(nn.Module):
    """Isensee-style 3D U-Net with SE blocks; ``in_channels=2`` is the paper's dual-channel input
    (z-scored vessel image + vessel contour), ``in_channels=1`` the single-channel baseline.

    ``max_filters`` caps the doubling widths (nnU-Net style): the default 16..256 network is 9.5 M
    parameters (38 MB as float32), mostly in the 256-channel bottom; a cap of 128 keeps Isensee's
    five levels at a fraction of the size. ``seed`` makes the initial weights independent of the
    global RNG (None: use it).
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        base_filters: int = 16,
        depth: int = 5,
        dropout: float = 0.3,
        se_reduction: int = 4,
        se_positions: Sequence[str] = SE_POSITIONS,
        deep_supervision: bool = True,
        max_filters: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError("SEUNet3D needs depth >= 2")
        unknown = set(se_positions) - set(SE_POSITIONS)
        if unknown:
            raise ValueError(f"unknown SE positions {sorted(unknown)}; choose from {SE_POSITIONS}")
        self._hparams = dict(
            in_channels=int(in_channels),
            out_channels=int(out_channels),
            base_filters=int(base_filters),
            depth=int(depth),
            dropout=float(dropout),
            se_reduction=int(se_reduction),
            se_positions=list(se_positions),
            deep_supervision=bool(deep_supervision),
            max_filters=None if max_filters is None else int(max_filters),
        )
        widths = [base_filters * 2**i for i in range(depth)]
        if max_filters is not None:
            widths = [min(w, int(max_filters)) for w in widths]
        self.divisor = 2 ** (depth - 1)
        enc = []
        c = in_channels
        for lvl, w in enumerate(widths):
            se = "penultimate_context" in se_positions and lvl == depth - 2
            enc.append(EncoderLevel(c, w, 1 if lvl == 0 else 2, dropout, se_reduction, se))
            c = w
        self.encoder = nn.ModuleList(enc)

        # decoder levels deepest first; segmentation layers on levels 2, 1 (deep supervision) and 0
        dec = []
        for lvl in range(depth - 2, -1, -1):
            se = "first_upsampling" in se_positions and lvl == depth - 2
            seg = out_channels if (lvl == 0 or (deep_supervision and lvl <= 2)) else 0
            dec.append(DecoderLevel(widths[lvl + 1], widths[lvl], lvl == 0, seg, se_reduction, se))
        self.decoder = nn.ModuleList(dec)
        init_weights(self, seed, leaky_slope=1e-2)

    def hyperparameters(self) -> dict:
        """Constructor arguments, for the model manifest and for rebuilding from a checkpoint."""
        return dict(self._hparams)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.divisor
        if x.shape[2] % d != 0 or x.shape[3] % d != 0 or x.shape[4] % d != 0:
            raise ValueError("SEUNet3D: spatial sizes must be divisible by 2**(depth-1)")
        skips: list[torch.Tensor] = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        n = len(skips)
        seg = torch.zeros(1)
        started = False
        for i, stage in enumerate(self.decoder):
            x = stage(x, skips[n - 2 - i])
            if started:
                seg = upsample3d(seg, 2.0, "trilinear")
            if stage.has_head:
                seg = seg + stage.head(x) if started else stage.head(x)
                started = True
        return seg
