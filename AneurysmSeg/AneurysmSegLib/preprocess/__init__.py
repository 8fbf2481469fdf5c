"""The paper's preprocessing: artery extraction, z-score normalisation, vessel contour, resampling.

Everything global (head mask, statistics, intracranial region, artery tree) is computed once per
scan on the *coarse* isotropic grid, and the masks on a ~1.4 mm grid below it, which keeps a
512 x 512 x 140 scan to under two CPU-seconds. The fine network's inputs (:func:`voi_channels`) are
cut from the *original* image for each 64^3 VOI, with the artery mask recomputed at the VOI's
resolution and gated by the coarse tree, so that training and inference call the same function and
see identical inputs.

Robustness to other scanners (raw 12-bit, 0-1000, float, uint8, zeroed background, bias fields,
inflow fading) comes from scale-free choices: the head is found by Otsu on a log-scaled image,
z-score statistics come from the head only (robust percentiles), and an artery is a structure whose
local peak stands well above the *local* tissue level, its wall at half that peak. Bright tissue that
is not artery is removed by where and how thick it is, not by its brightness: the skin and fat under
the head surface, thick or superficial structures along the skull (venous sinuses) and thick pads
(orbital, skull-base fat), while the tree's deep core is never removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..core.errors import InputError
from ..core.geometry import Geometry, Image
from ..io.images import to_sitk, validate_image

COARSE_SPACING_MM = 0.7  #: coarse stage grid (isotropic); the model manifest may override it
FINE_SPACING_MM = 0.4  #: fine stage VOI grid (isotropic)
VOI_SIZE = 64  #: fine stage VOI edge in voxels

#: Isotropic dilation (mm) of the artery mask before the Sobel contour, "slightly" as in the paper.
CONTOUR_DILATION_MM = 0.5
#: Artery components smaller than this (mm^3), not part of the tree, are noise specks.
MIN_SPECK_MM3 = 3.0
#: Grid (mm) of the head / rim / blob masks: they need no finer detail, and it keeps them fast.
MASK_SPACING_MM = 1.4
#: Closing radius (mm) of the head mask: air cavities opening to the outside (sphenoid sinus, nasal
#: cavity, mastoid) are head, not skin, so the carotid siphons beside them keep their depth.
HEAD_CLOSING_MM = 10.0
#: Depth (mm under the skin) always excluded: skin and subcutaneous fat; no artery lies there.
RIM_MM = 9.0
#: Bright components with most voxels shallower than this (mm) run along the skull: venous sinuses.
SUPERFICIAL_MM = 20.0
#: ... or shallower than this fraction of the head's largest depth, whichever is less (small heads).
SUPERFICIAL_FRACTION = 0.3
#: Superficial structures lose only their voxels shallower than this (mm; or fraction of the largest
#: depth): the arterial tree's core is always deeper and survives any contact with them.
PROTECT_MM, PROTECT_FRACTION = 30.0, 0.45
#: An artery candidate's local peak must stand this many robust tissue SDs above the tissue level.
SIGNIFICANCE_SD = 5.0
#: Vessel walls sit at this fraction of the way from tissue to the local peak (half maximum).
HALF_MAXIMUM = 0.5
#: Radius (mm) of the neighbourhood in which a voxel's local peak is sought.
LOCAL_MAX_MM = 0.8
#: Scale (mm) over which the local tissue level is averaged (bias fields vary over centimetres).
TISSUE_SMOOTH_MM = 8.0
#: Excluded bright tissue takes this margin (mm) for its dimmer partial-volume edge.
RIM_MARGIN_MM = 1.5
#: Bright tissue with a core deeper than BLOB_CORE_MM of over BLOB_MIN_CORE_MM3 is fat, not vessel.
BLOB_CORE_MM, BLOB_MIN_CORE_MM3 = 2.5, 400.0
#: Thick tubes this close to the skin (mm) are venous sinuses (transverse, sagittal): the arteries
#: that shallow are thin cortical branches; a core deeper than SINUS_CORE_MM marks a sinus.
SINUS_DEPTH_MM, SINUS_CORE_MM, SINUS_MIN_CORE_MM3 = 25.0, 1.9, 30.0
#: The tissue statistics of the bright-tissue threshold come from this deep (mm), clear of the scalp.
DEEP_MM = 20.0
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
    tissue_level: float = 0.0  #: median brain tissue level (z units); artery_threshold is relative to it
    coarse_tissue: np.ndarray | None = None  #: local tissue level (z units) on the coarse grid
    _sitk_image: sitk.Image | None = field(default=None, repr=False, compare=False)
    _sitk_arteries: sitk.Image | None = field(default=None, repr=False, compare=False)
    _sitk_tissue: sitk.Image | None = field(default=None, repr=False, compare=False)

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

    def tissue_on(self, dst: Geometry, shape_zyx: Sequence[int]) -> np.ndarray | float:
        """The local tissue level resampled onto another grid (the median level if there is none)."""
        if self.coarse_tissue is None:
            return self.tissue_level
        if self._sitk_tissue is None:
            self._sitk_tissue = to_sitk(self.coarse_tissue.astype(np.float32), self.coarse.geometry)
        return _resample_sitk(self._sitk_tissue, dst, shape_zyx, True, self.tissue_level)


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


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes in 3D and in the slices of every axis (a slab's head is open at its cut faces).

    Background components are found by labelling (linear time) instead of scipy's iterative
    ``binary_fill_holes``; a component is a hole when it does not reach the border of its slice.
    """
    out = mask.copy()
    for axis in (None, 0, 1, 2):
        structure = ndimage.generate_binary_structure(3, 1)
        if axis is not None:  # connectivity within the slices perpendicular to ``axis`` only
            keep = [slice(None)] * 3
            keep[axis] = 1
            plane = np.zeros_like(structure)
            plane[tuple(keep)] = structure[tuple(keep)]
            structure = plane
        labels, n = ndimage.label(~mask, structure=structure)
        if n == 0:
            continue
        touching = np.zeros(n + 1, dtype=bool)
        for ax in range(3):
            if ax == axis:
                continue
            for edge in (0, -1):
                touching[np.take(labels, edge, axis=ax)] = True
        hole = ~touching
        hole[0] = False
        out |= hole[labels]
    return out


def _block_mean(array: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Average over factor-sized blocks (edge-padded): an anti-aliased down-sampling.

    Summed one axis at a time over strided slices, which is several times faster than a mean over
    a 6D reshaped view.
    """
    pad = [(0, (-n) % f) for n, f in zip(array.shape, factors)]
    a = np.asarray(array, dtype=np.float32)
    if any(p[1] for p in pad):
        a = np.pad(a, pad, mode="edge")
    for axis, f in enumerate(factors):
        if f > 1:
            index = [slice(None)] * 3
            parts = []
            for offset in range(f):
                index[axis] = slice(offset, None, f)
                parts.append(a[tuple(index)])
            a = np.add.reduce(parts) if len(parts) > 2 else parts[0] + parts[1]
    return a / np.float32(np.prod(factors))


def _dilate_mm(mask: np.ndarray, spacing_zyx: Sequence[float], radius_mm: float) -> np.ndarray:
    """Dilation by a ball of ``radius_mm``: a distance transform cropped to the mask's bounding box."""
    if not mask.any():
        return mask.copy()
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in spacing_zyx]
    nz = np.nonzero(mask.any(axis=(1, 2))), np.nonzero(mask.any(axis=(0, 2))), np.nonzero(mask.any(axis=(0, 1)))
    box = tuple(slice(max(0, int(i[0][0]) - p), min(n, int(i[0][-1]) + 1 + p))
                for i, p, n in zip(nz, pad, mask.shape))
    out = np.zeros_like(mask, dtype=bool)
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing_zyx) <= radius_mm
    return out


def _upsample_nearest(low: np.ndarray, factors: Sequence[int], shape_zyx: Sequence[int]) -> np.ndarray:
    """Each coarse-grid value repeated over its block (for masks, where +-half a block is fine)."""
    out = low
    for axis, f in enumerate(factors):
        if f > 1:
            out = np.repeat(out, f, axis=axis)
    return out[: shape_zyx[0], : shape_zyx[1], : shape_zyx[2]]


def _mask_factors(spacing_zyx: Sequence[float]) -> tuple[int, int, int]:
    return tuple(max(1, int(round(MASK_SPACING_MM / s))) for s in spacing_zyx)  # type: ignore[return-value]


def _upsample_linear(low: np.ndarray, factors: Sequence[int], spacing_zyx: Sequence[float],
                     shape_zyx: Sequence[int]) -> np.ndarray:
    """Linear interpolation of a block-averaged grid back onto the fine grid it came from."""
    fine = Geometry(spacing=tuple(spacing_zyx[::-1]))
    low_sp = tuple(f * s for f, s in zip(factors, spacing_zyx))
    low_origin = tuple((f - 1) * s / 2.0 for f, s in zip(factors, spacing_zyx))
    coarse = Geometry(spacing=low_sp[::-1], origin=low_origin[::-1])
    return resample(low, coarse, fine, shape_zyx, linear=True)


def _head_low(a: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Head mask of an (already down-sampled) image: threshold, components, closing, holes."""
    lo, hi = _robust_range(a, 0.5, 99.5)
    if hi <= lo:
        lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        raise InputError("the image is constant; it holds no head")
    scaled = np.log1p(np.clip((a - lo) / (hi - lo), 0, None) * 100.0)
    smooth = ndimage.gaussian_filter(scaled, sigma=[1.0 / s for s in spacing_zyx], mode="nearest")
    step = max(1, smooth.size // 1_000_000)
    mask = smooth > _air_tissue_threshold(smooth.ravel()[::step])
    labels, n = ndimage.label(mask)
    if n == 0:
        raise InputError("no head found in the image (nothing brighter than the background)")
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = sizes >= 0.1 * sizes.max()
    mask = keep[labels]
    # the closing needs no fine detail: run it on a grid twice as coarse, keep the fine mask's voxels
    half = _block_mean(mask, (2, 2, 2)) >= 0.5
    closed = _upsample_nearest(_close_mm(half, [2 * s for s in spacing_zyx], HEAD_CLOSING_MM), (2, 2, 2), mask.shape)
    return _fill_holes(mask | closed)


def _close_mm(mask: np.ndarray, spacing_zyx: Sequence[float], radius_mm: float) -> np.ndarray:
    """Morphological closing by a ball of ``radius_mm``, through two distance transforms (fast).

    The mask is edge-padded first: where the head is cut by the field of view (a slab's top and
    bottom) it continues outward and is not eroded; where air meets the border, the air continues.
    """
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in spacing_zyx]
    work = np.pad(mask, [(p, p) for p in pad], mode="edge")
    grown = ndimage.distance_transform_edt(~work, sampling=spacing_zyx) <= radius_mm
    closed = ndimage.distance_transform_edt(grown, sampling=spacing_zyx) > radius_mm
    return mask | closed[tuple(slice(p, -p) for p in pad)]


def head_and_depth(array: np.ndarray, spacing_zyx: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Head mask and signed depth (mm below the head surface, negative outside), same grid as input.

    Computed on a ~1.4 mm grid (block average, so noise and thin dark lines average out) and the
    signed distance interpolated back: the mask and distances need no finer detail, and this keeps a
    clinical scan's masks to a fraction of a second. The image border is not a surface: a slab's cut
    faces do not count as skin.
    """
    a = np.asarray(array, dtype=np.float32)
    factors = _mask_factors(spacing_zyx)
    low_sp = tuple(f * s for f, s in zip(factors, spacing_zyx))
    head = _head_low(_block_mean(a, factors), low_sp)
    h = min(low_sp) / 2.0
    # inside: distance to the surface half a voxel out; outside: -h, so that the linear
    # interpolation crosses zero half way between the last head and the first air voxel
    signed = np.where(head, ndimage.distance_transform_edt(head, sampling=low_sp) - h, -h).astype(np.float32)
    depth = _upsample_linear(signed, factors, spacing_zyx, a.shape)
    return depth > 0, depth


def head_mask(array: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Head (everything that is not air) as bool [z, y, x].

    Otsu (refined to the class medians) on a smoothed, log-scaled copy separates air from tissue
    whatever the intensity range (12-bit, 0-1000, float, uint8, background already zeroed); the large
    components are kept, small outliers dropped, and holes (dark skull, CSF, signal voids) filled.
    """
    return head_and_depth(array, spacing_zyx)[0]


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


def _component_table(mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))


def superficial_components(bright: np.ndarray, depth: np.ndarray, superficial_mm: float = SUPERFICIAL_MM,
                           protect_mm: float = PROTECT_MM) -> np.ndarray:
    """Bright structures along the inside of the skull: venous sinuses, dural and diploic signal, fat.

    A component (26-connected) of which at least half lies shallower than ``superficial_mm`` is
    superficial, and its voxels shallower than ``protect_mm`` are returned. The arterial tree's core
    (circle of Willis, siphons) lies deeper than ``protect_mm`` in any adult head, so even a tree that
    touches a sinus or the scalp through partial volume keeps its core; only distal cortical
    fragments can be lost, where aneurysms are rare and false positives are not.
    """
    labels, n = _component_table(bright)
    out = np.zeros(bright.shape, dtype=bool)
    if n == 0:
        return out
    ids, d = labels[bright], depth[bright]  # work on the bright voxels only (a few per cent)
    total = np.bincount(ids, minlength=n + 1)
    shallow = np.bincount(ids, weights=d < superficial_mm, minlength=n + 1)
    chosen = shallow >= 0.5 * np.maximum(total, 1)
    out[bright] = chosen[ids] & (d < protect_mm)
    return out


def thick_blobs(bright: np.ndarray, spacing_zyx: Sequence[float], core_mm: float = BLOB_CORE_MM,
                min_core_mm3: float = BLOB_MIN_CORE_MM3, where: np.ndarray | None = None,
                thickness: np.ndarray | None = None) -> np.ndarray:
    """Bright regions thicker than arteries (orbital or skull-base fat, sinuses), on a ~1.4 mm grid.

    A voxel is core when it lies deeper than ``core_mm`` inside the bright mask (and inside ``where``
    when given); a core of more than ``min_core_mm3`` marks a blob, returned as its core dilated back
    by ``core_mm`` + one voxel, within the bright mask. With the defaults no artery (carotid radius
    <= 2.5 mm) has a core and only giant aneurysms (> ~15 mm) reach the volume. ``thickness`` (from
    :func:`_thickness`) may be passed to share one distance transform between several calls.
    """
    factors = _mask_factors(spacing_zyx)
    low_sp = tuple(f * s for f, s in zip(factors, spacing_zyx))
    if thickness is None:
        thickness = _thickness(bright, spacing_zyx)
    core = thickness > core_mm
    if where is not None:
        core &= _block_mean(where, factors) >= 0.5
    if not core.any():
        return np.zeros_like(bright)
    labels, n = ndimage.label(core)
    sizes = np.bincount(labels.ravel()) * float(np.prod(low_sp))
    big = sizes >= min_core_mm3
    big[0] = False
    if not big.any():
        return np.zeros_like(bright)
    near = _upsample_nearest(_dilate_mm(big[labels], low_sp, core_mm + 1.5 * max(low_sp)), factors, bright.shape)
    return bright & near


def _thickness(bright: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Depth (mm) inside the bright mask, on the ~1.4 mm mask grid."""
    factors = _mask_factors(spacing_zyx)
    low_sp = tuple(f * s for f, s in zip(factors, spacing_zyx))
    return ndimage.distance_transform_edt(_block_mean(bright, factors) >= 0.5, sampling=low_sp)


def _exclude_with_margin(region: np.ndarray, excluded: np.ndarray, spacing_zyx: Sequence[float],
                         margin_mm: float) -> np.ndarray:
    """``region`` minus ``excluded`` grown by ``margin_mm`` (distance on the ~1.4 mm mask grid)."""
    if not excluded.any():
        return region
    factors = _mask_factors(spacing_zyx)
    low_sp = tuple(f * s for f, s in zip(factors, spacing_zyx))
    low = _block_mean(excluded, factors) > 0
    near = _dilate_mm(low, low_sp, margin_mm)
    return region & ~excluded & ~_upsample_nearest(near, factors, region.shape)


def brain_mask(head: np.ndarray, spacing_zyx: Sequence[float], depth: np.ndarray | None = None,
               zscored: np.ndarray | None = None, threshold: float | None = None,
               rim_mm: float = RIM_MM, margin_mm: float = RIM_MARGIN_MM) -> np.ndarray:
    """Intracranial region where arteries are sought: deep enough, away from bright non-arteries.

    The skin and the subcutaneous fat go with a physical erosion by ``rim_mm`` (distance in mm, so
    anisotropic voxels do not matter; the slab's cut faces are not skin, so the carotid siphons
    entering from below stay inside). Given the z-scored image and a threshold, bright structures
    along the inner skull surface (:func:`superficial_components`) or too thick to be vessels
    (:func:`thick_blobs`) are excluded with a ``margin_mm`` margin for their partial-volume edges.
    """
    if depth is None:
        depth = depth_mm(head, spacing_zyx)
    brain = head & (depth > rim_mm)
    if zscored is None or threshold is None:
        return brain
    bright = brain & (zscored > threshold)
    return _exclude_with_margin(brain, non_arterial(bright, depth, spacing_zyx), spacing_zyx, margin_mm)


def non_arterial(bright: np.ndarray, depth: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """The parts of a bright mask that are not arteries: sinuses and fat along the skull, fat blobs."""
    scale = float(depth.max())  # small heads (and small test volumes) scale the depths down
    excluded = superficial_components(bright, depth, min(SUPERFICIAL_MM, SUPERFICIAL_FRACTION * scale),
                                      min(PROTECT_MM, PROTECT_FRACTION * scale))
    rest = bright & ~excluded
    thickness = _thickness(rest, spacing_zyx)
    excluded |= thick_blobs(rest, spacing_zyx, thickness=thickness)
    shallow = depth < min(SINUS_DEPTH_MM, PROTECT_FRACTION * scale)
    excluded |= thick_blobs(rest, spacing_zyx, SINUS_CORE_MM, SINUS_MIN_CORE_MM3, where=shallow,
                            thickness=thickness)
    return excluded


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
                significance: float, fraction: float = HALF_MAXIMUM) -> np.ndarray:
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


def extract_arteries(zscored: np.ndarray, spacing_zyx: Sequence[float], brain: np.ndarray | None,
                     threshold: float, tissue: float | np.ndarray | None = None,
                     min_mm3: float | None = None) -> np.ndarray:
    """Arteries: :func:`artery_mask` inside the brain region, isolated specks removed.

    ``threshold`` is the significance level at the brain's median tissue level; ``tissue`` (a number
    or a local field, see :func:`tissue_field`) defaults to that median. Distal branches connected to
    the tree belong to its component and are kept whatever their size.
    """
    if tissue is None:
        tissue = tissue_statistics(zscored, brain)[0]
    reference = float(np.median(tissue[brain] if brain is not None and brain.any() else tissue)) \
        if isinstance(tissue, np.ndarray) else float(tissue)
    mask = artery_mask(zscored, spacing_zyx, tissue, threshold - reference)
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
    flat = np.asarray(image.array).ravel()
    background = float(np.percentile(flat[:: max(1, flat.size // 1_000_000)], 0.5))
    raw = _resample_sitk(img_sitk, grid, shape, True, background).astype(np.float32, copy=False)
    sp = grid.spacing_zyx
    head, depth = head_and_depth(raw, sp)
    core = depth > STATS_EROSION_MM  # the head without its partial-volume skin
    mean, std = head_statistics(raw, core if core.sum() > 1000 else head)
    z = zscore(raw, mean, std)
    deep = depth > DEEP_MM
    provisional = bright_threshold(z, deep if deep.sum() > 1000 else head, head)
    brain = brain_mask(head, sp, depth=depth, zscored=z, threshold=provisional)
    local = tissue_field(z, brain, sp)
    level = float(np.median(local[brain])) if brain.any() else 0.0
    sigma = tissue_statistics(z - local, brain)[1]
    thr = level + SIGNIFICANCE_SD * sigma
    arteries = extract_arteries(z, sp, brain, thr, tissue=local)
    arteries &= ~non_arterial(arteries, depth, sp)  # what the local rule found at the scalp's edge
    return Preprocessed(image=image, mean=mean, std=std, artery_threshold=thr, tissue_level=level,
                        coarse=Image(z, grid, image.source), coarse_head=head, coarse_brain=brain,
                        coarse_arteries=arteries, background=background, coarse_tissue=local,
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
    significance = pre.artery_threshold - pre.tissue_level
    return artery_mask(zscored, dst.spacing_zyx, pre.tissue_on(dst, shape_zyx), significance) & gate


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
