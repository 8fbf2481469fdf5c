"""Small building blocks shared by the networks (all TorchScript-compatible)."""

from __future__ import annotations

import torch
from torch import nn


class SEBlock3D(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) for 5D feature maps.

    Global average pool -> FC reduce to ``max(1, C // reduction)`` -> ReLU -> FC expand -> sigmoid,
    then each channel is multiplied by its weight in (0, 1). The paper uses it to re-weight feature
    channels of the SE U-Net; the floor of one hidden unit keeps narrow layers (16 channels with
    r = 16) valid.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError("SEBlock3D needs channels >= 1 and reduction >= 1")
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weights in (0, 1), shape (N, C, 1, 1, 1)."""
        s = x.mean(dim=(2, 3, 4))
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
        return s[:, :, None, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


class Conv1x1(nn.Conv3d):
    """1^3 convolution computed as a matrix product.

    Same parameters (and state-dict layout) as ``nn.Conv3d(c_in, c_out, 1)``. With more than one
    CPU thread PyTorch sends 1^3 kernels to oneDNN, which ran them 2-8x slower than the equivalent
    batched GEMM here (torch 2.13, 2 threads); that dominated DeepMedic's "fully connected" layers.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, d, h, w = x.shape
        o = self.weight.shape[0]
        wm = self.weight.reshape(1, o, c).expand(n, o, c)
        xf = x.reshape(n, c, d * h * w)
        b = self.bias
        if b is None:
            y = torch.bmm(wm, xf)
        else:
            y = torch.baddbmm(b.reshape(1, o, 1), wm, xf)
        return y.reshape(n, o, d, h, w)


class PreActConv3d(nn.Module):
    """DeepMedic's layer: [batch norm -> PReLU -> dropout] -> valid convolution.

    DeepMedic applies normalisation and activation to a layer's *input* (pre-activation), and skips
    them on the first layer of each pathway (the input is already z-scored).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        preactivate: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm: nn.Module = nn.BatchNorm3d(in_channels) if preactivate else nn.Identity()
        self.act: nn.Module = nn.PReLU(in_channels) if preactivate else nn.Identity()
        self.drop: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv: nn.Module = (
            Conv1x1(in_channels, out_channels)
            if kernel_size == 1
            else nn.Conv3d(in_channels, out_channels, kernel_size, padding=0, bias=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.drop(self.act(self.norm(x))))


class NormAct(nn.Module):
    """Instance norm (affine) + leaky ReLU, as in Isensee et al. 2017.

    Instance norm is computed as ``GroupNorm(C, C)`` (one group per channel: identical maths and
    parameters) because PyTorch's CPU group norm is about 3x faster than its instance norm.
    """

    def __init__(self, channels: int, negative_slope: float = 1e-2) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(channels, channels, eps=1e-5, affine=True)
        self.act = nn.LeakyReLU(negative_slope, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(x))


def init_weights(module: nn.Module, seed: int | None, prelu_init: float = 0.25, leaky_slope: float = 1e-2) -> None:
    """(Re-)initialise every parameter: He-normal convolutions, zero biases, unit norms.

    With a ``seed`` the result depends on nothing else (the global RNG is left untouched);
    without one the global torch RNG is used, so ``torch.manual_seed`` makes it reproducible.
    """
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        for m in module.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, a=leaky_slope, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                m.reset_parameters()
            elif isinstance(m, (nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm3d)):
                if m.weight is not None:
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.PReLU):
                nn.init.constant_(m.weight, prelu_init)


def center_crop3d(x: torch.Tensor, crop: int) -> torch.Tensor:
    """Remove ``crop`` voxels from both ends of each spatial axis (crop may be 0)."""
    if crop == 0:
        return x
    return x[:, :, crop:-crop, crop:-crop, crop:-crop]


def residual_add(x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """DeepMedic residual: ``x + shortcut`` with the shortcut centre-cropped to x's size and
    zero-padded in channels (or truncated) to x's channel count."""
    crop = (shortcut.shape[2] - x.shape[2]) // 2
    s = center_crop3d(shortcut, crop)
    cx = x.shape[1]
    cs = s.shape[1]
    if cs == cx:
        return x + s
    if cs > cx:
        return x + s[:, :cx]
    head = x[:, :cs] + s
    return torch.cat([head, x[:, cs:]], dim=1)


def upsample3d(x: torch.Tensor, factor: float, mode: str = "nearest") -> torch.Tensor:
    """``F.interpolate(x, scale_factor=factor, mode=mode)`` for 5-D tensors, calling the one ATen op.

    Scripting ``F.interpolate`` compiles every interpolation mode into the TorchScript file; torch
    2.12 added one (lanczos) whose op older torch cannot load, so such a file needs torch >= 2.12
    (Slicer 5.8's Python 3.9 gets at most torch 2.8). The two ops used here exist in every torch 2.x.
    """
    scales = [float(factor), float(factor), float(factor)]
    if mode == "nearest":
        return torch._C._nn.upsample_nearest3d(x, None, scales)
    if mode == "trilinear":
        return torch._C._nn.upsample_trilinear3d(x, None, False, scales)
    raise ValueError("upsample3d: mode must be 'nearest' or 'trilinear'")


class Upsample3d(nn.Module):
    """``nn.Upsample`` for 5-D tensors through :func:`upsample3d` (TorchScript files that load in torch 2.x)."""

    def __init__(self, factor: float, mode: str = "nearest") -> None:
        super().__init__()
        self.factor = float(factor)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample3d(x, self.factor, self.mode)
