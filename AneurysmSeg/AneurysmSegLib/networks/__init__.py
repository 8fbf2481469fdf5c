"""Network architectures: the coarse DeepMedic detector and the fine dual-channel SE 3D U-Net."""
