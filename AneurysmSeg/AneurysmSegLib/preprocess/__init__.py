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
from scipy import ndimage

from ..core.geometry import Image
from ..io.images import to_sitk, validate_image
from .arteries import DEEP_MM, SIGNIFICANCE_SD, bright_threshold, extract_arteries, tissue_field, tissue_statistics
from .channels import arteries_on, contour_channel, voi_channels, zscored_on
from .grids import COARSE_SPACING_MM, FINE_SPACING_MM, VOI_SIZE, _resample_sitk, coarse_grid, grid_around, resample
from .masks import STATS_EROSION_MM, brain_mask, head_and_depth, head_statistics, non_arterial, zscore
from .prepared import Preprocessed

__all__ = [  # the package's API; the submodules hold the parts (grids, masks, arteries, channels)
    "COARSE_SPACING_MM", "FINE_SPACING_MM", "PREPROCESS_VERSION", "ROI_MARGIN_MM", "VOI_SIZE", "Preprocessed", "arteries_on",
    "coarse_grid", "coarse_roi", "contour_channel", "extract_arteries", "grid_around", "head_and_depth",
    "preprocess", "resample", "roi_around_arteries", "voi_channels", "zscore", "zscored_on",
]

#: Version of what preprocessing produces (masks, z-score, channels). Training caches are keyed on it:
#: bump it whenever a change alters any array a network sees, and only then (an edit to a comment
#: must not throw away a cache of hours).
PREPROCESS_VERSION = 1


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


#: The coarse detector looks within this distance (mm) of the extracted arteries: aneurysm lumens are
#: bright (part of the mask), so a small margin suffices for the probability-weighted centres.
ROI_MARGIN_MM = 2.0


def roi_around_arteries(arteries: np.ndarray, head: np.ndarray, spacing_zyx, margin_mm: float = ROI_MARGIN_MM
                        ) -> np.ndarray:
    """bool: ``arteries`` dilated by ``margin_mm`` (exact Euclidean distance), within ``head``."""
    if not arteries.any():
        return np.zeros_like(arteries)
    dist = ndimage.distance_transform_edt(~arteries, sampling=spacing_zyx)
    return (dist <= margin_mm) & head


def coarse_roi(pre: Preprocessed, margin_mm: float = ROI_MARGIN_MM) -> np.ndarray:
    """bool on the coarse grid: where the coarse detector runs (:func:`roi_around_arteries`)."""
    return roi_around_arteries(pre.coarse_arteries, pre.coarse_head, pre.coarse.geometry.spacing_zyx, margin_mm)
