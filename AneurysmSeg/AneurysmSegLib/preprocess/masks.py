"""Head, depth under the skin, intracranial region and the bright tissue that is not artery.

Computed on a ~1.4 mm grid (MASK_SPACING_MM): these masks need no finer detail, which keeps a
clinical-size scan fast. Scale-free choices (Otsu on a log-scaled image, robust percentiles) keep
them independent of the intensity convention."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from ..core.errors import InputError
from ..core.geometry import Geometry
from .grids import resample

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


#: Excluded bright tissue takes this margin (mm) for its dimmer partial-volume edge.
RIM_MARGIN_MM = 1.5


#: Bright tissue with a core deeper than BLOB_CORE_MM of over BLOB_MIN_CORE_MM3 is fat, not vessel.
BLOB_CORE_MM, BLOB_MIN_CORE_MM3 = 2.5, 400.0


#: Thick tubes this close to the skin (mm) are venous sinuses (transverse, sagittal): the arteries
#: that shallow are thin cortical branches; a core deeper than SINUS_CORE_MM marks a sinus.
SINUS_DEPTH_MM, SINUS_CORE_MM, SINUS_MIN_CORE_MM3 = 25.0, 1.9, 30.0


#: Statistics skip the outer head surface (mm): its partial-volume voxels depend on the air around.
STATS_EROSION_MM = 1.5


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


def dilate_mm(mask: np.ndarray, spacing_zyx: Sequence[float], radius_mm: float) -> np.ndarray:
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


def above_background(a: np.ndarray, lo: float, hi: float, spacing_zyx: Sequence[float], sigma_mm: float,
                     box: tuple[slice, ...] | None = None) -> np.ndarray:
    """Voxels brighter than the background: Otsu on a log-scaled copy of ``a`` (``lo``..``hi`` mapped to
    0..100 before the log, so the threshold does not depend on the intensity convention) smoothed by
    ``sigma_mm``; the threshold is found inside ``box`` (a scan padded in its matrix) and nothing outside
    it is foreground. Shared by the head mask and the input check."""
    scaled = np.log1p(np.clip((a - lo) / (hi - lo), 0, None) * 100.0)
    smooth = ndimage.gaussian_filter(scaled, sigma=[sigma_mm / s for s in spacing_zyx], mode="nearest")
    values = smooth[box] if box is not None else smooth
    step = max(1, values.size // 1_000_000)
    mask = smooth > _air_tissue_threshold(values.ravel()[::step])
    if box is not None:
        mask &= _box_mask(a.shape, box)
    return mask


def _head_low(a: np.ndarray, spacing_zyx: Sequence[float], valid: tuple[slice, ...] | None = None) -> np.ndarray:
    """Head mask of an (already down-sampled) image: threshold, components, closing, holes.

    ``valid``: the box that holds the scan when the matrix was padded (zeros around its field of
    view); the threshold is found inside it and nothing outside it is head.
    """
    inside = a[valid] if valid is not None else a
    lo, hi = _robust_range(inside, 0.5, 99.5)
    if hi <= lo:
        lo, hi = float(inside.min()), float(inside.max())
    if hi <= lo:
        raise InputError("the image is constant; it holds no head")
    mask = above_background(a, lo, hi, spacing_zyx, 1.0, valid)
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


def _box_mask(shape: Sequence[int], box: tuple[slice, ...]) -> np.ndarray:
    out = np.zeros(tuple(shape), dtype=bool)
    out[box] = True
    return out


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
    return depth_from_low(head, ndimage.distance_transform_edt(head, sampling=low_sp), spacing_zyx, a.shape)


def depth_from_low(head_low: np.ndarray, inner_low: np.ndarray, spacing_zyx: Sequence[float],
                   shape_zyx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Head mask and signed depth on the fine grid from the mask grid's head and its inner distances."""
    factors = _mask_factors(spacing_zyx)
    h = min(f * s for f, s in zip(factors, spacing_zyx)) / 2.0
    # inside: distance to the surface half a voxel out; outside: -h, so that the linear
    # interpolation crosses zero half way between the last head and the first air voxel
    signed = np.where(head_low, inner_low - h, -h).astype(np.float32)
    depth = _upsample_linear(signed, factors, spacing_zyx, shape_zyx)
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
    near = _upsample_nearest(dilate_mm(big[labels], low_sp, core_mm + 1.5 * max(low_sp)), factors, bright.shape)
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
    near = dilate_mm(low, low_sp, margin_mm)
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
