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

import numpy as np

from ..core.errors import InputError
from ..core.geometry import Image
from ..io.images import to_sitk, validate_image
from .arteries import DEEP_MM, SIGNIFICANCE_SD, bias_scale, bright_threshold, extract_arteries, tissue_field, tissue_statistics
from .channels import arteries_on, contour_channel, voi_channels, zscored_on
from .grids import COARSE_SPACING_MM, FINE_SPACING_MM, VOI_SIZE, _resample_sitk, coarse_grid, grid_around, resample
from .masks import STATS_EROSION_MM, brain_mask, dilate_mm, head_and_depth, head_statistics, non_arterial, zscore
from .prepared import Preprocessed
from .survey import FULL_HEAD, SLAB, VESSELS_ONLY, InputSummary, inspect_input, paper_view
from .vessels import VesselModel, tree_from_probability, vessel_features

__all__ = [  # the package's API; the submodules hold the parts (grids, masks, arteries, channels)
    "COARSE_SPACING_MM", "FINE_SPACING_MM", "InputSummary", "PREPROCESS_VERSION", "ROI_MARGIN_MM", "VOI_SIZE",
    "Preprocessed", "arteries_on",
    "coarse_grid", "coarse_roi", "contour_channel", "extract_arteries", "grid_around", "head_and_depth",
    "preprocess", "resample", "roi_around_arteries", "voi_channels", "zscore", "zscored_on", "VesselModel",
    "vessel_features",
]

#: Version of what preprocessing produces (masks, z-score, channels). Training caches are keyed on it:
#: bump it whenever a change alters any array a network sees, and only then (an edit to a comment
#: must not throw away a cache of hours).
#: 2: the input check (crops, skull-stripped and vessels-only volumes normalised on their tissue or
#: vessels) and an artery significance that follows the local tissue brightness (bias fields).
PREPROCESS_VERSION = 2


#: Without a scalp (crops, skull-stripped or vessels-only volumes) the z-score is anchored on the brain
#: tissue where a full head's statistics put it: median TISSUE_Z, upper-quartile SD TISSUE_SD_Z (measured
#: on phantom full heads: medians -0.22 to 0.12, SDs 0.18 to 0.49), so the networks see familiar values.
TISSUE_Z, TISSUE_SD_Z = 0.0, 0.35
#: A vessels-only volume has no tissue: its background goes to TISSUE_Z and its median vessel voxel
#: this far above it (full heads' median artery voxel: 0.5 to 3.3 above the tissue, 2 typical).
VESSEL_RISE_Z = 2.0
#: Without a scalp, depths count from the brain surface; this much scalp and skull is added back so
#: that the rules made for full heads (sinuses along the skull, the protected deep core) still fit.
NO_SCALP_DEPTH_MM = 10.0
#: An artery tree smaller than this (mm^3) is not plausible: the detector then searches everywhere.
MIN_TREE_MM3 = 30.0
#: Arteries covering more of the foreground than this are not plausible either (not a TOF-MRA?).
MAX_VESSEL_FRACTION = 0.3
#: Voxels coarser than this (mm, any axis) lose small aneurysms: the input check says so.
COARSE_VOXEL_MM = 1.5

NO_ARTERIES_WARNING = ("no arteries found: is this a TOF-MRA? The detector searched the whole foreground "
                       "instead of the vessel region")


#: Default cut of the learnt vessel probability (the model's manifest entry gives its own).
VESSEL_THRESHOLD = 0.5


def preprocess(image: Image, coarse_spacing: float = COARSE_SPACING_MM, adapt: bool = True,
               vessels: VesselModel | None = None, vessel_threshold: float = VESSEL_THRESHOLD) -> Preprocessed:
    """Head, statistics, intracranial region and arteries of one scan, all on the coarse grid.

    The input is surveyed first (:func:`survey.inspect_input`): a full head or slab with its scalp takes the
    paper's branch unchanged; crops, skull-stripped and vessels-only volumes keep their whole
    foreground and are normalised on their tissue (or vessels). No step may leave nothing: an empty
    region falls back to the one before it, and an implausible artery tree makes the detector search
    the whole foreground, each with a warning in ``Preprocessed.warnings``. ``adapt=False`` forces
    the paper's branch on any input with a global significance (what the pipeline did before the input
    check and the bias-following significance; the benchmark's baseline).

    ``vessels`` (a learnt vessel model, ``stages.vessels.VesselSegmenter``) makes the artery tree the
    coarse voxels whose vessel probability exceeds ``vessel_threshold``; the half-maximum tree is kept
    as ``classical_arteries`` (the fine network's contour channel was trained on it). Without a model
    the half-maximum tree is the tree.
    """
    validate_image(image)
    src = image.geometry
    grid, shape = coarse_grid(src, image.array.shape, coarse_spacing)
    img_sitk = to_sitk(np.asarray(image.array, dtype=np.float32), src)
    flat = np.asarray(image.array).ravel()
    background = float(np.percentile(flat[:: max(1, flat.size // 1_000_000)], 0.5))
    raw = _resample_sitk(img_sitk, grid, shape, True, background).astype(np.float32, copy=False)
    sp = grid.spacing_zyx
    view = inspect_input(raw, sp) if adapt else paper_view(raw, sp)
    notes: list[str] = ["matrix padded around the scan: the padding is not taken for air"] if view.padded else []
    warnings: list[str] = []
    head, depth = view.head, view.depth
    if not head.any():
        head = np.ones(raw.shape, dtype=bool)
        warnings.append("no head found in the image: the whole volume was searched")
    paper = view.field_of_view in (FULL_HEAD, SLAB) and view.scalp
    if paper:
        core = depth > STATS_EROSION_MM  # the head without its partial-volume skin
        mean, std = head_statistics(raw, core if core.sum() > 1000 else head)
    elif view.field_of_view == VESSELS_ONLY:
        mean, std = _vessel_statistics(raw, view.foreground, background)
        notes.append("vessels only: normalised on the vessels, no tissue, no scalp removed")
    else:
        if view.field_of_view in (FULL_HEAD, SLAB):
            depth = depth + np.float32(NO_SCALP_DEPTH_MM)
            notes.append("no scalp rim (skull-stripped or masked): nothing peeled off the surface")
        else:
            notes.append("crop: no head surface, the whole volume is searched")
        mean, std = _tissue_statistics(raw, head, depth)
    z = zscore(raw, mean, std)
    if view.field_of_view == VESSELS_ONLY:
        brain = head
        level = TISSUE_Z
        local: np.ndarray | None = None
        zero = None
        sigma = tissue_statistics(z, ~view.foreground)[1] if (~view.foreground).any() else 0.0
        thr = level + max(SIGNIFICANCE_SD * sigma, 0.25 * VESSEL_RISE_Z)
        arteries = extract_arteries(z, sp, brain, thr, tissue=level)
    else:
        deep = depth > DEEP_MM
        provisional = bright_threshold(z, deep if deep.sum() > 1000 else head, head)
        brain = brain_mask(head, sp, depth=depth, zscored=z, threshold=provisional)
        if not brain.any():
            brain = head
            notes.append("no intracranial region under the scalp: the whole head is searched")
        local = tissue_field(z, brain, sp)
        level = float(np.median(local[brain]))
        zero = (background - mean) / std if adapt else None  # significance follows a bias field
        sigma = tissue_statistics((z - local) / bias_scale(local, level, zero), brain)[1]
        thr = level + SIGNIFICANCE_SD * sigma
        arteries = extract_arteries(z, sp, brain, thr, tissue=local, zero=zero)
        arteries &= ~non_arterial(arteries, depth, sp)  # what the local rule found at the scalp's edge
    classical, probability = arteries, None
    if vessels is not None:
        features = vessel_features(z, brain, local if local is not None else level, level, thr, zero)
        probability = np.asarray(vessels(features), dtype=np.float32)
        arteries = tree_from_probability(probability, vessel_threshold, sp)
    voxel_mm3 = float(np.prod(sp))
    region = view.foreground if view.field_of_view == VESSELS_ONLY else head
    fraction = float(arteries.sum()) / max(1, int(region.sum()))
    found = bool(arteries.sum() * voxel_mm3 >= MIN_TREE_MM3)
    if not found:
        warnings.append(NO_ARTERIES_WARNING)
    elif fraction > MAX_VESSEL_FRACTION:
        warnings.append(f"bright structures cover {100 * fraction:.0f}% of the scan, far more than arteries "
                        "do: is this a TOF-MRA?")
    if view.field_of_view == VESSELS_ONLY:
        warnings.append("the volume holds vessels only (no tissue around them): the networks were trained "
                        "on TOF-MRA with tissue; check the result")
    if max(src.spacing) > COARSE_VOXEL_MM:
        warnings.append(f"voxels of {max(src.spacing):.2f} mm are coarser than TOF-MRA usually has: small "
                        "aneurysms may be missed")
    summary = _summary(image, view, fraction, found, notes)
    return Preprocessed(image=image, mean=mean, std=std, artery_threshold=thr, tissue_level=level,
                        coarse=Image(z, grid, image.source), coarse_head=head, coarse_brain=brain,
                        coarse_arteries=arteries, background=background, coarse_tissue=local,
                        input=summary, warnings=warnings, roi_fallback=not found, zero_level=zero, _sitk_image=img_sitk,
                        classical_arteries=classical, coarse_vessels=probability, vessel_threshold=vessel_threshold)


def _tissue_statistics(raw: np.ndarray, head: np.ndarray, depth: np.ndarray) -> tuple[float, float]:
    """mean/std that put the tissue's median at TISSUE_Z and its upper-quartile SD at TISSUE_SD_Z."""
    core = head & (depth > STATS_EROSION_MM)
    p50, sd = tissue_statistics(raw, core if core.sum() > 1000 else head)
    std = sd / TISSUE_SD_Z
    return p50 - TISSUE_Z * std, std


def _vessel_statistics(raw: np.ndarray, foreground: np.ndarray, background: float) -> tuple[float, float]:
    """mean/std that put the background at TISSUE_Z and the median vessel VESSEL_RISE_Z above it."""
    vessels = raw[foreground] if foreground.any() else raw.ravel()
    rise = float(np.median(vessels)) - background
    if not rise > 0:
        raise InputError("the image has no contrast; it cannot be normalised")
    std = rise / VESSEL_RISE_Z
    return background - TISSUE_Z * std, std


def _summary(image: Image, view, fraction: float, found: bool, notes: list[str]) -> InputSummary:
    a = np.asarray(image.array)
    sample = a.ravel()[:: max(1, a.size // 1_000_000)]
    lo, hi = float(a.min()), float(a.max())
    integer = bool(np.all(np.mod(sample, 1) == 0))
    g = image.geometry
    pixel_type = image.pixel_type or str(a.dtype)
    return InputSummary(field_of_view=view.field_of_view, background=view.background, scalp=view.scalp,
                        shape_xyz=tuple(int(v) for v in a.shape[::-1]), voxel_size_mm=tuple(g.spacing),
                        intensity_min=lo, intensity_max=hi, integer_valued=integer, pixel_type=pixel_type,
                        foreground_share=view.foreground_share, vessel_fraction=fraction, arteries_found=found,
                        extent_mm=tuple(float(n * s) for n, s in zip(a.shape[::-1], g.spacing)), notes=notes)


#: The coarse detector looks within this distance (mm) of the extracted arteries: aneurysm lumens are
#: bright (part of the mask), so a small margin suffices for the probability-weighted centres.
ROI_MARGIN_MM = 2.0


def roi_around_arteries(arteries: np.ndarray, head: np.ndarray, spacing_zyx, margin_mm: float = ROI_MARGIN_MM
                        ) -> np.ndarray:
    """bool: ``arteries`` dilated by ``margin_mm`` (exact Euclidean distance), within ``head``.

    The distance transform runs in the arteries' bounding box grown by the margin only (same mask:
    nothing farther lies within the margin); over a 512 x 512 x 140 scan's whole coarse grid it cost
    1.6 CPU-seconds, in the box 0.35."""
    if not arteries.any():
        return np.zeros_like(arteries)
    return dilate_mm(arteries, spacing_zyx, margin_mm) & head


def coarse_roi(pre: Preprocessed, margin_mm: float = ROI_MARGIN_MM) -> np.ndarray:
    """bool on the coarse grid: where the coarse detector runs (:func:`roi_around_arteries`).

    Without a plausible artery tree (``roi_fallback``) the whole foreground: searching everywhere is
    slow, returning nothing would be silently wrong.
    """
    if pre.roi_fallback:
        return pre.coarse_head.copy()
    return roi_around_arteries(pre.coarse_arteries, pre.coarse_head, pre.coarse.geometry.spacing_zyx, margin_mm)
