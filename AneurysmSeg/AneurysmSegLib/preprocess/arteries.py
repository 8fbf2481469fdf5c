"""Artery extraction: a voxel is artery when its local peak stands well above the *local* tissue level,
its wall at half that peak (the paper's thresholding, made robust to bias fields and scanners)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from .masks import _block_mean, _component_table, _mask_factors, _upsample_linear

#: Artery components smaller than this (mm^3), not part of the tree, are noise specks.
MIN_SPECK_MM3 = 3.0


#: An artery candidate's local peak must stand this many robust tissue SDs above the tissue level.
SIGNIFICANCE_SD = 5.0


#: Vessel walls sit at this fraction of the way from tissue to the local peak (half maximum).
HALF_MAXIMUM = 0.5


#: Radius (mm) of the neighbourhood in which a voxel's local peak is sought.
LOCAL_MAX_MM = 0.8


#: Bounds of the significance's scaling with the local tissue brightness (:func:`bias_scale`).
BIAS_SCALE_MIN, BIAS_SCALE_MAX = 0.5, 3.0
#: Scale (mm) over which the local tissue level is averaged (bias fields vary over centimetres).
TISSUE_SMOOTH_MM = 8.0


#: The tissue statistics of the bright-tissue threshold come from this deep (mm), clear of the scalp.
DEEP_MM = 20.0


def tissue_statistics(zscored: np.ndarray, region: np.ndarray | None) -> tuple[float, float]:
    """Tissue level (median) and spread of ``region``, robust to what else the region holds.

    The spread is read from the upper quartile only ((p75 - p50) / 0.674): the lower half holds the
    dark skull, CSF and sulci that a loose intracranial mask takes in, the far tail the vessels.
    """
    values = zscored[region] if region is not None and region.any() else np.asarray(zscored).ravel()
    v = values[:: max(1, values.size // 2_000_000)]
    p50, p75 = np.percentile(v, [50, 75])
    return float(p50), max(float(p75 - p50) / 0.6745, 1e-3)


def tissue_field(zscored: np.ndarray, region: np.ndarray, spacing_zyx: Sequence[float],
                 smooth_mm: float = TISSUE_SMOOTH_MM) -> np.ndarray:
    """Local tissue level: parenchyma-only normalised Gaussian smoothing, on the ~1.4 mm grid.

    Bias fields and the inflow fade up the slab change the tissue level across the scan; measuring
    vessels against the local level keeps the half-maximum rule honest everywhere. Only voxels near
    the tissue mode (not CSF, skull or vessel) take part.
    """
    tissue, sd = tissue_statistics(zscored, region)
    parenchyma = region & (np.abs(zscored - tissue) < 2.5 * sd)
    factors = _mask_factors(spacing_zyx)
    low_sp = tuple(f * s for f, s in zip(factors, spacing_zyx))
    weight = _block_mean(parenchyma, factors)
    value = _block_mean(np.where(parenchyma, zscored, 0.0), factors)
    sigma = [smooth_mm / s for s in low_sp]
    num = ndimage.gaussian_filter(value, sigma, mode="nearest")
    den = ndimage.gaussian_filter(weight, sigma, mode="nearest")
    low = np.where(den > 0.05, num / np.maximum(den, 1e-6), tissue).astype(np.float32)
    return _upsample_linear(low, factors, spacing_zyx, zscored.shape)


def bright_threshold(zscored: np.ndarray, tissue_region: np.ndarray, region: np.ndarray) -> float:
    """Threshold (z units) for clearly bright tissue (fat, large vessels): half way up from tissue.

    Half way from the tissue level to the median of the voxels that stand more than 6 SDs above it;
    never below 4 SDs. Only used to find what to exclude: high enough that white matter or a bias
    field never merges with the vessels into one blob.
    """
    tissue, sigma = tissue_statistics(zscored, tissue_region)
    values = zscored[region]
    v = values[:: max(1, values.size // 2_000_000)]
    bright = v[v > tissue + 6.0 * sigma]
    if bright.size < 20:
        return tissue + 6.0 * sigma
    return max(tissue + 4.0 * sigma, tissue + 0.5 * (float(np.median(bright)) - tissue))


def artery_threshold(zscored: np.ndarray, brain: np.ndarray | None, k: float = SIGNIFICANCE_SD) -> float:
    """Significance threshold (z units): ``k`` robust SDs above the brain's tissue level.

    A structure is an artery candidate where its local peak exceeds this (measured from the local
    tissue level); its extent is then decided by the half-maximum rule of :func:`artery_mask`.
    """
    tissue, sigma = tissue_statistics(zscored, brain)
    return tissue + k * sigma


def local_max(array: np.ndarray, spacing_zyx: Sequence[float], radius_mm: float = LOCAL_MAX_MM) -> np.ndarray:
    """Maximum over a box of about +-``radius_mm`` (at least one voxel each way)."""
    size = [2 * max(1, int(round(radius_mm / s))) + 1 for s in spacing_zyx]
    return ndimage.maximum_filter(array, size=size, mode="nearest")


def artery_mask(zscored: np.ndarray, spacing_zyx: Sequence[float], tissue: float | np.ndarray,
                significance: float | np.ndarray, fraction: float = HALF_MAXIMUM) -> np.ndarray:
    """Local half-maximum vessel mask: above half-way from tissue to the local peak, peak significant.

    A blurred vessel's true wall sits where its profile crosses half its own peak, whatever its
    calibre, inflow enhancement or bias: a global threshold either fattens the bright carotids or
    loses the dimmer distal branches (and fades up the slab); this rule does neither. The peak must
    stand ``significance`` (z units) above the (local) ``tissue`` level so tissue noise is no vessel.
    """
    z = np.asarray(zscored, dtype=np.float32)
    rise = local_max(z, spacing_zyx) - tissue
    return (rise > significance) & (z - tissue > fraction * rise)


def remove_specks(mask: np.ndarray, spacing_zyx: Sequence[float], min_mm3: float | None = None) -> np.ndarray:
    """Drop connected components (26-connectivity) smaller than ``min_mm3`` (default MIN_SPECK_MM3)."""
    min_mm3 = MIN_SPECK_MM3 if min_mm3 is None else min_mm3
    mask = np.asarray(mask, dtype=bool)
    labels, n = _component_table(mask)
    if n == 0:
        return mask.copy()
    ids = labels[mask]
    keep = np.bincount(ids, minlength=n + 1) * float(np.prod(spacing_zyx)) >= min_mm3
    out = np.zeros(mask.shape, dtype=bool)
    out[mask] = keep[ids]
    return out


def bias_scale(tissue: float | np.ndarray, level: float, zero: float | None) -> float | np.ndarray:
    """How many times brighter the local tissue is than the median tissue ``level``, both measured from
    the zero-signal level ``zero`` (z units; None: no scaling), within [BIAS_SCALE_MIN, BIAS_SCALE_MAX].

    A receive-coil bias field multiplies signal and noise alike: where the tissue is twice as bright,
    so are its noise and texture, and an artery must rise twice as far to be as significant.
    """
    if zero is None or not isinstance(tissue, np.ndarray):
        return 1.0
    return np.clip((tissue - zero) / max(level - zero, 1e-6), BIAS_SCALE_MIN, BIAS_SCALE_MAX).astype(np.float32)


def extract_arteries(zscored: np.ndarray, spacing_zyx: Sequence[float], brain: np.ndarray | None,
                     threshold: float, tissue: float | np.ndarray | None = None,
                     min_mm3: float | None = None, zero: float | None = None) -> np.ndarray:
    """Arteries: :func:`artery_mask` inside the brain region, isolated specks removed.

    ``threshold`` is the significance level at the brain's median tissue level; ``tissue`` (a number
    or a local field, see :func:`tissue_field`) defaults to that median; with the zero-signal level
    ``zero`` the significance follows the local tissue's brightness (:func:`bias_scale`). Distal
    branches connected to the tree belong to its component and are kept whatever their size.
    """
    if tissue is None:
        tissue = tissue_statistics(zscored, brain)[0]
    reference = float(np.median(tissue[brain] if brain is not None and brain.any() else tissue)) \
        if isinstance(tissue, np.ndarray) else float(tissue)
    significance = (threshold - reference) * bias_scale(tissue, reference, zero)
    mask = artery_mask(zscored, spacing_zyx, tissue, significance)
    if brain is not None:
        mask &= brain
    return remove_specks(mask, spacing_zyx, min_mm3)
