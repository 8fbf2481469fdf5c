"""Network architectures: the coarse DeepMedic detector and the fine dual-channel SE 3D U-Net."""

from .blocks import SEBlock3D
from .deepmedic import PAPER_FC_WIDTHS, PAPER_WIDTHS, DeepMedic
from .se_unet import SEUNet3D

__all__ = ["DeepMedic", "SEUNet3D", "SEBlock3D", "PAPER_WIDTHS", "PAPER_FC_WIDTHS"]
