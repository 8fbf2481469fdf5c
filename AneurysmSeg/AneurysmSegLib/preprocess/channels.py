"""The fine network's inputs for one VOI: the z-scored image and the vessel contour channel.

Training and inference call the same :func:`voi_channels`, so both see identical inputs."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from ..core.geometry import Geometry
from .arteries import HALF_MAXIMUM, artery_mask, bias_scale
from .grids import FINE_SPACING_MM, VOI_SIZE, _resample_sitk, grid_around
from .masks import _ball, zscore
from .prepared import Preprocessed

#: Isotropic dilation (mm) of the artery mask before the Sobel contour, "slightly" as in the paper.
CONTOUR_DILATION_MM = 0.5


#: How far (mm) a VOI's fine-resolution artery voxels may lie from the coarse artery tree.
GATE_MM = 1.0


#: Peak Sobel magnitude of a flat binary step with scipy's 3D Sobel (derivative 1 x smoothing 4 x 4).
_SOBEL_STEP = 16.0


def contour_channel(artery_mask: np.ndarray, spacing_zyx: Sequence[float],
                    dilation_mm: float = CONTOUR_DILATION_MM) -> np.ndarray:
    """Vessel contour: the mask dilated by an isotropic ball, then 3D Sobel magnitude, in [0, 1].

    Scaled so that a flat edge gives 1 (the peak of scipy's 3D Sobel on a binary step).
    """
    mask = np.asarray(artery_mask, dtype=bool)
    if dilation_mm > 0:
        mask = ndimage.binary_dilation(mask, structure=_ball(dilation_mm, spacing_zyx))
    m = mask.astype(np.float32)
    mag = np.zeros_like(m)
    for axis in range(3):
        g = ndimage.sobel(m, axis=axis, mode="nearest")
        mag += g * g
    return np.clip(np.sqrt(mag) / _SOBEL_STEP, 0.0, 1.0).astype(np.float32)


def zscored_on(pre: Preprocessed, dst: Geometry, shape_zyx: Sequence[int]) -> np.ndarray:
    """The original image resampled (linear) onto any grid, z-scored; air outside the image."""
    raw = _resample_sitk(pre.sitk_image(), dst, shape_zyx, True, pre.background)
    return zscore(raw, pre.mean, pre.std)


#: How the artery mask on a finer grid follows a learnt tree: "gated" = the half-maximum rule on that grid
#: within GATE_MM of the learnt coarse tree (the learnt tree decides where vessels are, the image at its
#: own resolution where their walls are); "probability" = the learnt probability resampled linearly,
#: above its threshold. Chosen by measurement (docs/training.md, the learnt artery tree).
LEARNT_MASK = "gated"
MASK_RULES = ("gated", "probability")


def arteries_on(pre: Preprocessed, dst: Geometry, shape_zyx: Sequence[int],
                zscored: np.ndarray | None = None, learnt: bool = True, rule: str = LEARNT_MASK,
                fraction: float = HALF_MAXIMUM) -> np.ndarray:
    """Artery mask at the resolution of any grid (a VOI, or the input grid for evaluation).

    Voxels of the resampled original above the artery threshold (the half-maximum rule), kept only
    within ``GATE_MM`` of the coarse artery tree, which already excludes the rim, the skull and
    isolated specks. The tree is the learnt one when preprocessing had a vessel network and
    ``learnt``, else the half-maximum tree; with a learnt tree, ``rule="probability"`` returns the
    learnt probability resampled linearly above its threshold instead (:data:`LEARNT_MASK`).
    ``fraction``: where between the tissue and the local peak the wall is put (the gated rule only).
    """
    if rule not in MASK_RULES:
        raise ValueError(f"rule must be one of {MASK_RULES}, got {rule!r}")
    use_learnt = learnt and pre.coarse_vessels is not None
    if use_learnt and rule == "probability":
        return pre.vessels_on(dst, shape_zyx) > pre.vessel_threshold
    if zscored is None:
        zscored = zscored_on(pre, dst, shape_zyx)
    tree = pre.coarse_arteries if use_learnt else pre.half_maximum_tree
    if not tree.any():
        return np.zeros(tuple(shape_zyx), dtype=bool)
    # linear > 0: within one coarse voxel of the tree; the ball adds the rest of GATE_MM
    gate = _resample_sitk(pre.sitk_tree(use_learnt), dst, shape_zyx, True, 0.0) > 1e-3
    radius = GATE_MM - pre.coarse.geometry.spacing[0] / 2.0
    if radius > 0:
        gate = ndimage.binary_dilation(gate, structure=_ball(radius, dst.spacing_zyx))
    tissue = pre.tissue_on(dst, shape_zyx)
    significance = (pre.artery_threshold - pre.tissue_level) * bias_scale(tissue, pre.tissue_level, pre.zero_level)
    return artery_mask(zscored, dst.spacing_zyx, tissue, significance, fraction) & gate


def voi_channels(pre: Preprocessed, center_lps: Sequence[float], size: int = VOI_SIZE,
                 spacing: float = FINE_SPACING_MM, channels: int = 2,
                 learnt_contour: bool = False) -> tuple[np.ndarray, Geometry]:
    """(channels, size, size, size) float32 for the fine network + the VOI grid geometry.

    Channel 0: z-scored original image on the VOI grid (linear). Channel 1 (if ``channels == 2``):
    the vessel contour (:func:`contour_channel`) of the VOI's artery mask. A VOI reaching outside the
    image is padded with air, not an error. The contour comes from the half-maximum mask, which the
    bundled fine network was trained on, unless ``learnt_contour`` (then from the learnt tree).
    """
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    geom = grid_around(pre.image.geometry, center_lps, size, spacing)
    shape = (size, size, size)
    z = zscored_on(pre, geom, shape)
    out = np.empty((channels,) + shape, dtype=np.float32)
    out[0] = z
    if channels == 2:
        out[1] = contour_channel(arteries_on(pre, geom, shape, zscored=z, learnt=learnt_contour), (spacing,) * 3)
    return out, geom
