"""What the input looks like before anything is assumed: field of view, background, scalp, intensities.

Real TOF-MRA arrives as full heads, partial slabs, small crops around the circle of Willis,
skull-stripped or background-masked volumes and vessels-only exports. The paper's preprocessing
assumes a full head (a bright scalp rim to peel off, air around it to normalise against); applied to
the others it removes the whole volume without a word. :func:`inspect_input` looks first, on the ~1.4 mm mask
grid (a fraction of a second), and the preprocessing then takes the branch that fits
(:func:`..preprocess`): the full-head branch is the paper's and unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from .masks import (_block_mean, _head_low, _mask_factors, _robust_range, _upsample_nearest, above_background,
                    depth_from_low, head_and_depth)

FULL_HEAD = "full head"
SLAB = "slab"
CROP = "crop"
VESSELS_ONLY = "vessels only"
FIELDS_OF_VIEW = (FULL_HEAD, SLAB, CROP, VESSELS_ONLY)

#: A face of the volume is "cut through the head" when more than this share of it is head.
CUT_FACE_SHARE = 0.5
#: ... and both ends of an axis cut when more than this share is head (a slab's top and bottom).
SLAB_FACE_SHARE = 0.25
#: A volume cut through the head on this many of its six faces is a crop (no air around it).
CROP_FACES = 5
#: A head cut at both ends of an axis shorter than this (mm) is a partial slab, not a full TOF slab.
SLAB_MM = 50.0
#: Foreground thicker than this (mm, depth inside it) is tissue; vessels are thinner.
TISSUE_DEPTH_MM = 3.5
#: Below this share of thick foreground the volume holds vessels only (no tissue around them) ...
VESSELS_ONLY_TISSUE_SHARE = 0.25
#: ... on a background where at least this share of the volume is exactly the minimum (exports set it to 0).
VESSELS_ONLY_ZERO_SHARE = 0.5
#: A field of view narrower than this (mm) along two axes holds no whole head (an adult head is 140 mm or
#: wider; the tests' synthetic heads 80 mm): a crop.
HEAD_MIN_MM = 70.0
#: A bright scalp rim: the shell under the surface (1-6 mm) has a 90th percentile this many times
#: the deep tissue's median (both above the background level); fat is 1.6-3.6 x grey matter in TOF.
SCALP_RATIO = 1.5
SHELL_MM, DEEP_TISSUE_MM = (1.0, 6.0), 15.0


@dataclass
class InputSummary:
    """What the input check found: shown in the report (``input``) with the warnings of the run."""

    field_of_view: str  #: one of FIELDS_OF_VIEW
    background: str  #: "air" (noise around the head), "zero" (masked/skull-stripped) or "none" (crop)
    scalp: bool  #: a bright scalp rim (skin and fat) surrounds the head: the paper's full-head branch
    shape_xyz: tuple[int, int, int]
    voxel_size_mm: tuple[float, float, float]
    intensity_min: float
    intensity_max: float
    integer_valued: bool  #: all voxels are whole numbers (uint8/int16/uint16 files) rather than float
    pixel_type: str = ""  #: the file's stored pixel type when known (e.g. "16-bit signed integer")
    foreground_share: float = 0.0  #: share of the volume that is head (or vessels), not background
    vessel_fraction: float = 0.0  #: artery voxels / foreground voxels (coarse grid)
    arteries_found: bool = True  #: False: none plausible, the detector searched the whole foreground
    extent_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)  #: physical size x, y, z
    notes: list[str] = field(default_factory=list)  #: how the preprocessing adapted (for the report)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("shape_xyz", "voxel_size_mm", "extent_mm"):
            d[key] = [float(v) if key != "shape_xyz" else int(v) for v in d[key]]
        for key in ("intensity_min", "intensity_max", "foreground_share", "vessel_fraction"):
            d[key] = round(float(d[key]), 6)
        return d


@dataclass
class Survey:
    """The masks the survey computed on the coarse grid, reused by the preprocessing branch."""

    field_of_view: str
    background: str
    scalp: bool
    foreground: np.ndarray  #: bool, coarse grid: brighter than the background (unfilled)
    head: np.ndarray  #: bool, coarse grid: head (filled, closed) or, for vessels only, near vessels
    depth: np.ndarray  #: float, coarse grid: mm under the head surface (from the paper's head mask)
    foreground_share: float
    padded: bool = False  #: the matrix holds the scan in a box padded with a constant (scan_box)


def _faces(mask: np.ndarray) -> list[float]:
    """Share of each of the six faces (z0, z1, y0, y1, x0, x1) covered by ``mask``."""
    out = []
    for axis in range(3):
        for end in (0, -1):
            out.append(float(np.take(mask, end, axis=axis).mean()))
    return out


def classify_view(head_low: np.ndarray, low_sp: Sequence[float], tissue_share: float, zero_share: float) -> str:
    """Field of view from the foreground's thickness, the background, the extent and the head mask's
    contact with the volume's faces.

    A thin foreground is vessels: on a zero background a vessels-only export, otherwise vessels against
    tissue with no air anywhere, a crop. A field of view narrower than any head is a crop too.
    """
    if tissue_share < VESSELS_ONLY_TISSUE_SHARE:
        return VESSELS_ONLY if zero_share >= VESSELS_ONLY_ZERO_SHARE else CROP
    extents = [n * s for n, s in zip(head_low.shape, low_sp)]
    if sorted(extents)[1] < HEAD_MIN_MM:
        return CROP
    faces = _faces(head_low)
    if sum(f > CUT_FACE_SHARE for f in faces) >= CROP_FACES:
        return CROP
    for axis in range(3):
        if min(faces[2 * axis], faces[2 * axis + 1]) > SLAB_FACE_SHARE and extents[axis] < SLAB_MM:
            return SLAB
    return FULL_HEAD


def _has_scalp(low: np.ndarray, head_low: np.ndarray, inner: np.ndarray, background: float) -> bool:
    """A bright rim under the head surface (skin and fat) that the paper's rim erosion is for."""
    shell = head_low & (inner > SHELL_MM[0]) & (inner <= SHELL_MM[1])
    deep = head_low & (inner > DEEP_TISSUE_MM)
    if shell.sum() < 50 or deep.sum() < 50:
        return False
    rim = float(np.percentile(low[shell], 90)) - background
    tissue = float(np.median(low[deep])) - background
    return tissue > 0 and rim > SCALP_RATIO * tissue


def inspect_input(raw: np.ndarray, spacing_zyx: Sequence[float]) -> Survey:
    """Classify the field of view of the coarse-grid image ``raw`` and build its head mask.

    Views with a head surface get the paper's head mask and depth (:func:`masks.head_and_depth`,
    from the same mask-grid head); crops get the whole volume as head, vessels-only volumes the
    region around their foreground.
    """
    a = np.asarray(raw, dtype=np.float32)
    factors = _mask_factors(spacing_zyx)
    low_sp = tuple(f * s for f, s in zip(factors, spacing_zyx))
    low = _block_mean(a, factors)
    box = scan_box(low)
    inside = low[box] if box is not None else low
    lo, hi = _robust_range(inside, 0.5, 99.5)
    if hi <= lo:
        lo, hi = float(inside.min()), float(inside.max())
    background_level = lo
    exact = float(np.mean(inside <= float(low.min())))  # at exactly the minimum: a masked background
    fg_low = _foreground(low, lo, hi, low_sp, box)
    thick = ndimage.distance_transform_edt(np.pad(fg_low, 1), sampling=low_sp)[1:-1, 1:-1, 1:-1]
    tissue_share = float((thick[fg_low] > TISSUE_DEPTH_MM).mean()) if fg_low.any() else 0.0
    if not fg_low.any():
        tissue_share = 1.0  # nothing stands out: treat it as tissue everywhere (a crop), the check warns
    head_low = _head_low(low, low_sp, box) if fg_low.any() else np.ones(low.shape, dtype=bool)
    view = classify_view(head_low[box] if box is not None else head_low, low_sp, tissue_share, exact)
    fg = _upsample_nearest(fg_low, factors, a.shape)
    share = float(fg_low.mean())
    if view == VESSELS_ONLY:
        near = ndimage.binary_dilation(fg_low, iterations=2)
        head = _upsample_nearest(near, factors, a.shape)
        depth = np.full(a.shape, 100.0, dtype=np.float32)
        return Survey(view, "zero" if exact > 0.2 else "air", False, fg, head, depth, share, box is not None)
    if view == CROP:
        head = np.ones(a.shape, dtype=bool)
        depth = np.full(a.shape, 100.0, dtype=np.float32)
        return Survey(view, "none", False, fg, head, depth, float(head_low.mean()), box is not None)
    inner = ndimage.distance_transform_edt(head_low, sampling=low_sp)
    head, depth = depth_from_low(head_low, inner, spacing_zyx, a.shape)
    scalp = _has_scalp(low, head_low, inner, background_level)
    return Survey(view, "zero" if exact > 0.2 else "air", scalp, fg, head, depth, float(head_low.mean()),
                  box is not None)


def paper_view(raw: np.ndarray, spacing_zyx: Sequence[float]) -> Survey:
    """What the paper assumes of every input: a full head with its scalp (no survey)."""
    head, depth = head_and_depth(np.asarray(raw, dtype=np.float32), spacing_zyx)
    return Survey(FULL_HEAD, "air", True, head, head, depth, float(head.mean()))


def scan_box(low: np.ndarray) -> tuple[slice, ...] | None:
    """The box holding the scan when its matrix was padded with a constant (zero-padded or enlarged
    matrices): the bounding box of the voxels above the minimum; None when it is the whole volume."""
    above = low > float(low.min())
    if not above.any():
        return None
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(above.any(axis=other))
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    if all(b.start == 0 and b.stop == n for b, n in zip(box, low.shape)):
        return None
    return tuple(box)


def _foreground(low: np.ndarray, lo: float, hi: float, low_sp: Sequence[float],
                box: tuple[slice, ...] | None = None) -> np.ndarray:
    """Voxels brighter than the background: Otsu on a smoothed log-scaled copy (as the head mask),
    its threshold found inside the scan's ``box``."""
    if hi <= lo:
        return np.zeros(low.shape, dtype=bool)
    return above_background(low, lo, hi, low_sp, 0.5, box)
