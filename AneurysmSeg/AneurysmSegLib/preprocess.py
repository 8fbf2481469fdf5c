"""The paper's preprocessing: artery extraction, z-score normalisation, vessel contour, resampling.

Everything global (head mask, statistics, intracranial region, artery mask) is computed once per
scan on the *coarse* isotropic grid, which keeps a 512 x 512 x 140 scan to about a second on two
cores. The fine network's inputs (:func:`voi_channels`) are then cut from the *original* image for
each 64^3 VOI, with the artery mask re-thresholded at the VOI's resolution and gated by the coarse
artery tree, so that training and inference call the same function and see identical inputs.

Robustness to other scanners (raw 12-bit, 0-1000, float, uint8, zeroed background, bias fields)
comes from scale-free choices: the head is found by Otsu on a log-scaled image, statistics are taken
from the head only and clipped to robust percentiles, and the artery threshold is placed relative to
the brain's own tissue and vessel levels rather than at a fixed number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .errors import InputError
from .geometry import Geometry, Image
from .io import to_sitk, validate_image

COARSE_SPACING_MM = 0.7  #: coarse stage grid (isotropic); the model manifest may override it
FINE_SPACING_MM = 0.4  #: fine stage VOI grid (isotropic)
VOI_SIZE = 64  #: fine stage VOI edge in voxels

#: Isotropic dilation (mm) of the artery mask before the Sobel contour, "slightly" as in the paper.
CONTOUR_DILATION_MM = 0.5
#: Bright components smaller than this (mm^3) and not part of the tree are noise specks.
MIN_SPECK_MM3 = 3.0
#: Depth (mm below the head surface) bounds for the excluded scalp / fat / skull rim.
RIM_MIN_MM, RIM_MAX_MM = 3.0, 20.0
#: How far (mm) a VOI's fine-resolution artery voxels may lie from the coarse artery tree.
GATE_MM = 1.0
#: Statistics skip the outer head surface (mm): its partial-volume voxels depend on the air around.
STATS_EROSION_MM = 1.5
#: Peak Sobel magnitude of a flat binary step with scipy's 3D Sobel (derivative 1 x smoothing 4 x 4).
_SOBEL_STEP = 16.0


@dataclass
class Preprocessed:
    """Global preprocessing of one scan, computed once and reused for the coarse input and every VOI."""

    image: Image  #: the input image as read (float32, input geometry)
    mean: float  #: z-score statistics from the head (not the air)
    std: float
    artery_threshold: float  #: threshold in z-score units used for artery extraction
    coarse: Image  #: z-scored image on the coarse grid (linear, SimpleITK), axes = input axes
    coarse_head: np.ndarray  #: bool [z, y, x] on the coarse grid: head (for statistics)
    coarse_brain: np.ndarray  #: bool on the coarse grid: intracranial region (no scalp/fat/skull)
    coarse_arteries: np.ndarray  #: bool on the coarse grid: extracted arteries
    background: float = 0.0  #: raw intensity used to pad outside the image (the air level)
    rim_mm: float = 0.0  #: depth of the excluded rim below the head surface
    _sitk_image: sitk.Image | None = field(default=None, repr=False, compare=False)
    _sitk_arteries: sitk.Image | None = field(default=None, repr=False, compare=False)

    def sitk_image(self) -> sitk.Image:
        """The original image as SimpleITK, converted once (each VOI resamples from it)."""
        if self._sitk_image is None:
            self._sitk_image = to_sitk(np.asarray(self.image.array, dtype=np.float32), self.image.geometry)
        return self._sitk_image

    def sitk_arteries(self) -> sitk.Image:
        """The coarse artery mask as a float SimpleITK image, converted once (gates every VOI)."""
        if self._sitk_arteries is None:
            self._sitk_arteries = to_sitk(self.coarse_arteries.astype(np.float32), self.coarse.geometry)
        return self._sitk_arteries


# ------------------------------------------------------------------------------------ grids, resampling


def grid_around(geometry: Geometry, center_lps: Sequence[float], size: int, spacing: float) -> Geometry:
    """Geometry of a size^3 isotropic grid centred on ``center_lps``, axes = the input's axes."""
    d = geometry.direction_matrix
    half = spacing * (size - 1) / 2.0
    origin = np.asarray(center_lps, dtype=float) - d @ np.full(3, half)
    return Geometry(spacing=(spacing,) * 3, origin=tuple(origin), direction=geometry.direction)


def coarse_grid(geometry: Geometry, shape_zyx: Sequence[int], spacing: float) -> tuple[Geometry, tuple[int, int, int]]:
    """Isotropic grid covering the same physical box as the input (corner to corner), same axes."""
    extent_xyz = np.asarray(shape_zyx[::-1], dtype=float) * np.asarray(geometry.spacing)
    size_xyz = np.maximum(1, np.round(extent_xyz / spacing)).astype(int)
    corner = geometry.index_to_lps(np.full(3, -0.5))
    origin = corner + geometry.direction_matrix @ np.full(3, spacing / 2.0)
    grid = Geometry(spacing=(spacing,) * 3, origin=tuple(origin), direction=geometry.direction)
    return grid, (int(size_xyz[2]), int(size_xyz[1]), int(size_xyz[0]))


def _resample_sitk(img: sitk.Image, dst: Geometry, dst_shape_zyx: Sequence[int], linear: bool,
                   default: float) -> np.ndarray:
    f = sitk.ResampleImageFilter()
    f.SetSize([int(s) for s in dst_shape_zyx[::-1]])
    f.SetOutputSpacing(dst.spacing)
    f.SetOutputOrigin(dst.origin)
    f.SetOutputDirection(dst.direction)
    f.SetInterpolator(sitk.sitkLinear if linear else sitk.sitkNearestNeighbor)
    f.SetDefaultPixelValue(float(default))
    return sitk.GetArrayFromImage(f.Execute(img))


def resample(array: np.ndarray, src: Geometry, dst: Geometry, dst_shape_zyx: Sequence[int],
             linear: bool = True, default: float = 0.0) -> np.ndarray:
    """SimpleITK Resample of an array from one grid onto another (nearest for labels when linear=False).

    Linear returns float32; nearest keeps the input's dtype (bool in, bool out).
    """
    array = np.asarray(array)
    if linear:
        return _resample_sitk(to_sitk(array.astype(np.float32, copy=False), src), dst, dst_shape_zyx,
                              True, default).astype(np.float32, copy=False)
    work = array.astype(np.uint8) if array.dtype == bool else array
    out = _resample_sitk(to_sitk(work, src), dst, dst_shape_zyx, False, default)
    return out.astype(array.dtype, copy=False)


# ------------------------------------------------------------------------------------- masks, statistics


def _ball(radius_mm: float, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Boolean ellipsoidal structuring element that is a ball of ``radius_mm`` in physical space."""
    r = [max(0, int(np.floor(radius_mm / s + 1e-6))) for s in spacing_zyx]
    zz, yy, xx = np.ogrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1, -r[2]:r[2] + 1]
    s = spacing_zyx
    return (zz * s[0]) ** 2 + (yy * s[1]) ** 2 + (xx * s[2]) ** 2 <= radius_mm ** 2 + 1e-9


def _robust_range(values: np.ndarray, lo: float = 0.5, hi: float = 99.5) -> tuple[float, float]:
    """Percentiles on a deterministic subsample (fast on big volumes)."""
    v = values.ravel()
    step = max(1, v.size // 2_000_000)
    a, b = np.percentile(v[::step], [lo, hi])
    return float(a), float(b)


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu threshold of a 1D sample (between-class variance maximum of its histogram)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def _air_tissue_threshold(values: np.ndarray) -> float:
    """Otsu, then refined to the midpoint of the two class medians.

    Otsu alone moves with the share of air in the field of view; the medians of air and tissue do
    not, so the head mask (and its statistics) stay put when the field of view grows.
    """
    t = _otsu(values)
    for _ in range(10):
        low, high = values[values <= t], values[values > t]
        if low.size == 0 or high.size == 0:
            break
        new = 0.5 * (float(np.median(low)) + float(np.median(high)))
        if abs(new - t) < 1e-6:
            break
        t = new
    return t


def _fill_holes_slicewise(mask: np.ndarray) -> np.ndarray:
    """Fill 2D holes in the slices of every axis: a slab's head is open at its cut faces in 3D."""
    out = ndimage.binary_fill_holes(mask)
    for axis in range(3):
        structure = np.zeros((3, 3, 3), dtype=bool)
        plane = [slice(None)] * 3
        plane[axis] = 1
        structure[tuple(plane)] = ndimage.generate_binary_structure(2, 1)
        out |= ndimage.binary_fill_holes(mask, structure=structure)
    return out


def head_mask(array: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Head (everything that is not air) as bool [z, y, x].

    Otsu on a smoothed, log-scaled copy separates air from tissue whatever the intensity range
    (12-bit, 0-1000, float, uint8, background already zeroed); the largest components are kept,
    small outliers dropped, and holes (dark skull, CSF, signal voids) filled.
    """
    a = np.asarray(array, dtype=np.float32)
    lo, hi = _robust_range(a, 0.5, 99.5)
    if hi <= lo:
        lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        raise InputError("the image is constant; it holds no head")
    scaled = np.log1p(np.clip((a - lo) / (hi - lo), 0, None) * 100.0)
    sigma = [1.0 / s for s in spacing_zyx]  # about 1 mm
    smooth = ndimage.gaussian_filter(scaled, sigma=sigma, mode="nearest")
    step = max(1, smooth.size // 1_000_000)
    mask = smooth > _air_tissue_threshold(smooth.ravel()[::step])
    labels, n = ndimage.label(mask)
    if n == 0:
        raise InputError("no head found in the image (nothing brighter than the background)")
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= 0.1 * sizes.max()) + 1
    mask = np.isin(labels, keep)
    mask = ndimage.binary_closing(mask, structure=_ball(2.0, spacing_zyx), border_value=0) | mask
    return _fill_holes_slicewise(mask)


def head_statistics(array: np.ndarray, head: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the head, clipped to its 0.5-99.5 percentiles (robust)."""
    values = np.asarray(array, dtype=np.float64)[head]
    if values.size < 10:
        raise InputError("the head region is too small to normalise the image")
    lo, hi = _robust_range(values)
    values = np.clip(values, lo, hi)
    mean, std = float(values.mean()), float(values.std())
    if not std > 0:
        raise InputError("the head region has no contrast; the image cannot be normalised")
    return mean, std


def zscore(array: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(array - mean) / std as float32."""
    return ((np.asarray(array, dtype=np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32, copy=False)


def depth_mm(head: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Distance (mm) of each head voxel to the head surface; the image border is not a surface."""
    return ndimage.distance_transform_edt(head, sampling=spacing_zyx).astype(np.float32)


def estimate_rim_mm(zscored: np.ndarray, depth: np.ndarray, threshold: float,
                    bin_mm: float = 1.0) -> float:
    """Depth of the bright scalp/fat rim plus skull, from the profile of bright voxels vs depth.

    The subcutaneous fat makes the shallow depths bright; the skull underneath is dark. The rim ends
    where the fraction of bright voxels has fallen from its shallow peak to the brain's own (vessel)
    level. Without a bright rim (fat-suppressed or skull-stripped images) the minimum is returned.
    """
    bins = np.arange(0.0, RIM_MAX_MM + 10.0 + bin_mm, bin_mm)
    inside = depth > 0
    idx = np.digitize(depth[inside], bins) - 1
    bright = zscored[inside] > threshold
    n = np.bincount(idx, minlength=bins.size)[: bins.size - 1].astype(float)
    k = np.bincount(idx, weights=bright, minlength=bins.size)[: bins.size - 1]
    frac = k / np.maximum(n, 1)
    deep = float(np.median(frac[int(RIM_MAX_MM / bin_mm):])) if n[int(RIM_MAX_MM / bin_mm):].sum() else 0.0
    shallow = frac[: int(RIM_MAX_MM / bin_mm)]
    peak = int(np.argmax(shallow))
    if shallow[peak] < max(3 * deep, 0.02):
        return RIM_MIN_MM
    level = max(0.5 * deep, 0.002) if deep > 0 else 0.002
    after = np.flatnonzero(shallow[peak:] <= max(level, deep))
    end = (peak + int(after[0])) * bin_mm if after.size else RIM_MAX_MM
    return float(np.clip(end + 2.0 * bin_mm, RIM_MIN_MM, RIM_MAX_MM))


def brain_mask(head: np.ndarray, spacing_zyx: Sequence[float], rim_mm: float = 8.0,
               depth: np.ndarray | None = None) -> np.ndarray:
    """Intracranial region: head voxels deeper than ``rim_mm`` below the head surface.

    The scalp, subcutaneous fat and skull form a shell of roughly constant thickness under the
    surface, so a physical erosion (distance transform in mm) removes them while the skull base
    vessels (carotid siphons, deep in the head, entering through the slab's cut face) stay inside.
    """
    if depth is None:
        depth = depth_mm(head, spacing_zyx)
    return depth > rim_mm


def artery_threshold(zscored: np.ndarray, brain: np.ndarray) -> float:
    """Adaptive artery threshold (z units): half way from the tissue level to the vessel level.

    Tissue level and spread come from the brain's median and MAD; the vessel level is the median of
    the clearly-bright voxels (more than 6 robust SDs above tissue). Half-maximum is where the
    partial-volume edge of a blurred vessel sits, so large vessels keep their true calibre; the
    threshold never drops below 4 SDs (noise) so distal branches survive only if they stand out.
    """
    values = zscored[brain] if brain is not None and brain.any() else zscored.ravel()
    step = max(1, values.size // 2_000_000)
    v = values[::step]
    tissue = float(np.median(v))
    sigma = 1.4826 * float(np.median(np.abs(v - tissue)))
    sigma = max(sigma, 1e-3)
    bright = v[v > tissue + 6.0 * sigma]
    if bright.size < 20:
        return tissue + 6.0 * sigma
    vessel = float(np.median(bright))
    return max(tissue + 4.0 * sigma, tissue + 0.5 * (vessel - tissue))


def remove_specks(mask: np.ndarray, spacing_zyx: Sequence[float], min_mm3: float = MIN_SPECK_MM3) -> np.ndarray:
    """Drop connected components (26-connectivity) smaller than ``min_mm3``."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel()) * float(np.prod(spacing_zyx))
    keep = sizes >= min_mm3
    keep[0] = False
    return keep[labels]


def extract_arteries(zscored: np.ndarray, spacing_zyx: Sequence[float], brain: np.ndarray | None,
                     threshold: float, min_mm3: float = MIN_SPECK_MM3) -> np.ndarray:
    """Arteries: z-score above ``threshold`` inside the brain region, isolated specks removed.

    Distal branches connected to the tree belong to its component and are kept whatever their size.
    """
    mask = np.asarray(zscored) > threshold
    if brain is not None:
        mask &= brain
    return remove_specks(mask, spacing_zyx, min_mm3)


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


# ------------------------------------------------------------------------------------------ the stages


def preprocess(image: Image, coarse_spacing: float = COARSE_SPACING_MM) -> Preprocessed:
    """Head, statistics, intracranial region and arteries of one scan, all on the coarse grid."""
    validate_image(image)
    src = image.geometry
    grid, shape = coarse_grid(src, image.array.shape, coarse_spacing)
    img_sitk = to_sitk(np.asarray(image.array, dtype=np.float32), src)
    background = float(np.percentile(np.asarray(image.array).ravel()[:: max(1, image.array.size // 1_000_000)], 0.5))
    raw = _resample_sitk(img_sitk, grid, shape, True, background).astype(np.float32, copy=False)
    sp = grid.spacing_zyx
    head = head_mask(raw, sp)
    depth = depth_mm(head, sp)
    core = depth > STATS_EROSION_MM  # the head without its partial-volume skin
    mean, std = head_statistics(raw, core if core.sum() > 1000 else head)
    z = zscore(raw, mean, std)
    provisional = artery_threshold(z, depth > RIM_MAX_MM)
    rim = estimate_rim_mm(z, depth, provisional)
    brain = brain_mask(head, sp, rim, depth=depth)
    thr = artery_threshold(z, brain)
    arteries = extract_arteries(z, sp, brain, thr)
    return Preprocessed(image=image, mean=mean, std=std, artery_threshold=thr,
                        coarse=Image(z, grid, image.source), coarse_head=head, coarse_brain=brain,
                        coarse_arteries=arteries, background=background, rim_mm=rim,
                        _sitk_image=img_sitk)


def coarse_roi(pre: Preprocessed, margin_mm: float = 6.0) -> np.ndarray:
    """bool on the coarse grid: arteries dilated by ``margin_mm``, where the coarse detector runs."""
    sp = pre.coarse.geometry.spacing_zyx
    if not pre.coarse_arteries.any():
        return np.zeros_like(pre.coarse_arteries)
    dist = ndimage.distance_transform_edt(~pre.coarse_arteries, sampling=sp)
    return (dist <= margin_mm) & pre.coarse_head


def zscored_on(pre: Preprocessed, dst: Geometry, shape_zyx: Sequence[int]) -> np.ndarray:
    """The original image resampled (linear) onto any grid, z-scored; air outside the image."""
    raw = _resample_sitk(pre.sitk_image(), dst, shape_zyx, True, pre.background)
    return zscore(raw, pre.mean, pre.std)


def arteries_on(pre: Preprocessed, dst: Geometry, shape_zyx: Sequence[int],
                zscored: np.ndarray | None = None) -> np.ndarray:
    """Artery mask at the resolution of any grid (a VOI, or the input grid for evaluation).

    Voxels of the resampled original above the artery threshold, kept only within ``GATE_MM`` of the
    coarse artery tree, which already excludes the rim, the skull and isolated specks.
    """
    if zscored is None:
        zscored = zscored_on(pre, dst, shape_zyx)
    tree = pre.coarse_arteries
    if not tree.any():
        return np.zeros(tuple(shape_zyx), dtype=bool)
    # linear > 0: within one coarse voxel of the tree; the ball adds the rest of GATE_MM
    gate = _resample_sitk(pre.sitk_arteries(), dst, shape_zyx, True, 0.0) > 1e-3
    radius = GATE_MM - pre.coarse.geometry.spacing[0] / 2.0
    if radius > 0:
        gate = ndimage.binary_dilation(gate, structure=_ball(radius, dst.spacing_zyx))
    return (zscored > pre.artery_threshold) & gate


def voi_channels(pre: Preprocessed, center_lps: Sequence[float], size: int = VOI_SIZE,
                 spacing: float = FINE_SPACING_MM, channels: int = 2) -> tuple[np.ndarray, Geometry]:
    """(channels, size, size, size) float32 for the fine network + the VOI grid geometry.

    Channel 0: z-scored original image on the VOI grid (linear). Channel 1 (if ``channels == 2``):
    the vessel contour (:func:`contour_channel`) of the VOI's artery mask. A VOI reaching outside the
    image is padded with air, not an error.
    """
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    geom = grid_around(pre.image.geometry, center_lps, size, spacing)
    shape = (size, size, size)
    z = zscored_on(pre, geom, shape)
    out = np.empty((channels,) + shape, dtype=np.float32)
    out[0] = z
    if channels == 2:
        out[1] = contour_channel(arteries_on(pre, geom, shape, zscored=z), (spacing,) * 3)
    return out, geom
