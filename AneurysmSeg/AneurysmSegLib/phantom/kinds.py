"""The input kinds real TOF-MRA comes in, made from phantom cases with their ground truth kept in line.

Real scans arrive as full heads, skull-stripped or background-masked volumes, partial slabs, small
crops around the circle of Willis, zero-filled or padded matrices, vessels-only exports, in every
intensity convention and voxel size. Each kind here is one of them, named in :data:`KINDS` so that
benchmarks and evaluations iterate over them, and made by :func:`make_kind`: scanner-side kinds
(contrast, noise, bias, voxel size, oblique slab) change the generator's parameters, so that noise
and visibility are rendered for that scanner; the others transform a rendered case. Every transform
moves the image, the labels (aneurysms, vessels, visible vessels, aneurysm instances, masks) and the
geometry together, and recomputes the ADAM locations from the labels that remain.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import scipy.fft
from scipy import ndimage

from ..core.geometry import Geometry, Image
from .render import DEFAULT_SHAPE_XYZ, PhantomCase, generate_case, location_of

COW_CROP_MM = (50.0, 50.0, 30.0)  # x, y, z: the smallest circle-of-Willis crop the pipeline must handle
SLAB_MM = 36.0  # thickness of a partial slab; the circle of Willis sits in its lower third


@dataclass(frozen=True)
class Kind:
    """One input kind: generator overrides (and a fixed voxel size), then a transform of the case."""

    name: str
    description: str
    overrides: dict = field(default_factory=dict)
    spacing: tuple[float, float, float] | None = None
    shape_xyz: tuple[int, int, int] | None = None  # a fixed matrix (the caller's is ignored)
    transform: Callable[[PhantomCase, np.random.Generator], PhantomCase] | None = None


# --------------------------------------------------------------------------------------------------
# transforms that keep image, labels and geometry in line
# --------------------------------------------------------------------------------------------------
_LABEL_FIELDS = ("vessels", "aneurysms", "visible", "instances", "brain", "head", "fat")


def relocate(case: PhantomCase) -> PhantomCase:
    """The case with its ADAM locations recomputed from the aneurysm instances that remain in view."""
    loc: list = []
    treated: list = []
    info = case.params.aneurysms
    spacing = case.geometry.spacing
    for k in range(1, int(case.instances.max(initial=0)) + 1):
        zyx = np.argwhere(case.instances == k)
        if len(zyx):
            is_treated = bool(info[k - 1]["treated"]) if k - 1 < len(info) else False
            (treated if is_treated else loc).append(location_of(zyx, spacing))
    return replace(case, locations=loc, treated_locations=treated)


def crop(case: PhantomCase, lo_xyz: Sequence[int], hi_xyz: Sequence[int]) -> PhantomCase:
    """The sub-volume ``[lo, hi)`` (x, y, z indices, clipped to the image) with its origin moved."""
    shape = np.array(case.image.array.shape[::-1])
    lo = np.clip(np.asarray(lo_xyz, dtype=int), 0, shape - 1)
    hi = np.clip(np.asarray(hi_xyz, dtype=int), lo + 1, shape)
    sl = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    geo = Geometry(case.geometry.spacing, tuple(case.geometry.index_to_lps(lo)), case.geometry.direction)
    arrays = {f: np.ascontiguousarray(getattr(case, f)[sl]) for f in _LABEL_FIELDS if getattr(case, f) is not None}
    out = replace(case, image=Image(np.ascontiguousarray(case.image.array[sl]), geo, case.image.source), geometry=geo,
                  **arrays)
    return relocate(out)


def _cow_index(case: PhantomCase) -> np.ndarray:
    return case.geometry.lps_to_index(np.asarray(case.cow_world, dtype=float))


def cow_crop(case: PhantomCase, rng: np.random.Generator, size_mm: Sequence[float] = COW_CROP_MM) -> PhantomCase:
    """A box of ``size_mm`` (x, y, z) around the circle of Willis (its centre jittered by up to 5 mm),
    as challenge data are cropped."""
    sp = np.asarray(case.geometry.spacing)
    size = np.maximum(np.round(np.asarray(size_mm, dtype=float) / sp).astype(int), 1)
    centre = _cow_index(case) + rng.uniform(-5, 5, 3) / sp + np.array([0.0, 0.0, 6.0]) / sp
    lo = np.round(centre - size / 2).astype(int)
    out = crop(case, lo, lo + size)
    out.params.kind_detail = {"crop_lo_xyz": [int(v) for v in np.clip(lo, 0, None)], "crop_mm": list(size_mm)}
    return out


def partial_slab(case: PhantomCase, rng: np.random.Generator, thickness_mm: float = SLAB_MM) -> PhantomCase:
    """A slab of ``thickness_mm`` over the whole in-plane field of view, the circle of Willis in its
    lower 20-40 %."""
    sp = np.asarray(case.geometry.spacing)
    nz = max(int(round(thickness_mm / sp[2])), 1)
    z0 = int(round(_cow_index(case)[2] - nz * rng.uniform(0.2, 0.4)))
    shape = case.image.array.shape[::-1]
    return crop(case, (0, 0, z0), (shape[0], shape[1], z0 + nz))


def _zero_outside(case: PhantomCase, keep: np.ndarray) -> PhantomCase:
    """Zero the image outside ``keep``; vessels there are no longer visible nor part of the arteries shown."""
    img = case.image.array.copy()
    img[~keep] = 0
    vessels = case.vessels & keep.astype(case.vessels.dtype)
    visible = case.visible & keep.astype(case.visible.dtype)
    return replace(case, image=Image(img, case.geometry, case.image.source), vessels=vessels, visible=visible,
                   fat=case.fat & keep)


def _brain_mask_keeping_aneurysms(case: PhantomCase) -> np.ndarray:
    """The intracranial mask plus every aneurysm sac: skull stripping as done for angiography keeps them."""
    return case.brain | ndimage.binary_dilation(case.aneurysms > 0, iterations=2)


def brain_extracted(case: PhantomCase, rng: np.random.Generator) -> PhantomCase:
    return _zero_outside(case, _brain_mask_keeping_aneurysms(case))


def background_masked(case: PhantomCase, rng: np.random.Generator) -> PhantomCase:
    return _zero_outside(case, case.head)


def vessels_only(case: PhantomCase, rng: np.random.Generator) -> PhantomCase:
    """A vessels-only export (MIP-like, as from an angiography workstation): brain-masked, everything
    below a threshold just above the brightest brain tissue set to 0 and specks under 1 mm^3 removed,
    windowed and rescaled to 0-254 in uint8."""
    keep = _brain_mask_keeping_aneurysms(case)
    img = case.image.array
    tissue = img[keep & (case.vessels == 0) & (case.aneurysms == 0)]
    thr = float(np.percentile(tissue, rng.uniform(99.0, 99.8))) if tissue.size else 0.0
    fg = keep & (img > thr)
    comps, n = ndimage.label(fg)
    sizes = np.bincount(comps.ravel(), minlength=n + 1) * float(np.prod(case.geometry.spacing))
    fg &= (sizes >= 1.0)[comps]
    low = thr * rng.uniform(0.5, 0.9)  # the export's window starts somewhat below its threshold
    out = np.where(fg, img - np.float32(low), 0.0).astype(np.float32)
    top = float(np.percentile(out[fg], 99.9)) if fg.any() else 1.0
    out = np.round(np.clip(out * (254.0 / top), 0, 254)).astype(np.float32)
    vessels = case.vessels & keep.astype(case.vessels.dtype)
    visible = case.visible & (out > 0).astype(case.visible.dtype)
    c = replace(case, image=Image(out, case.geometry, case.image.source), vessels=vessels, visible=visible,
                fat=case.fat & keep, storage_dtype="uint8")
    c.params.kind_detail = {"threshold": round(thr, 3)}
    return c


def _rescaled(case: PhantomCase, scale: float, offset: float, dtype: str, lo: float, hi: float,
              rounded: bool = True) -> PhantomCase:
    img = case.image.array * np.float32(scale) + np.float32(offset)
    if rounded:
        img = np.round(img)
    img = np.clip(img, lo, hi).astype(np.float32)
    c = replace(case, image=Image(img, case.geometry, case.image.source), storage_dtype=dtype)
    c.params.kind_detail = {"scale": float(scale), "offset": float(offset), "dtype": dtype}
    return c


def _top(case: PhantomCase) -> float:
    return max(float(np.percentile(case.image.array, 99.99)), 1e-6)


def as_uint8(case: PhantomCase, rng: np.random.Generator) -> PhantomCase:
    return _rescaled(case, 255.0 / _top(case), 0.0, "uint8", 0, 255)


def as_int16_offset(case: PhantomCase, rng: np.random.Generator) -> PhantomCase:
    """Signed 16 bit with a negative offset (air about -1024), as some converters store MR magnitude."""
    return _rescaled(case, 3000.0 / _top(case), -1024.0, "int16", -32768, 32767)


def as_uint16_4095(case: PhantomCase, rng: np.random.Generator) -> PhantomCase:
    return _rescaled(case, 4095.0 / _top(case), 0.0, "uint16", 0, 4095)


def as_float_scaled(case: PhantomCase, rng: np.random.Generator) -> PhantomCase:
    """Float32 at an arbitrary scale (10^-3 .. 10^4 of the stored range), not rounded."""
    scale = 10.0 ** rng.uniform(-3.0, 4.0) / _top(case)
    return _rescaled(case, scale, 0.0, "float32", -np.inf, np.inf, rounded=False)


def _zero_fill(a: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Band-limited (k-space zero-filling) interpolation along ``axis``: each voxel becomes ``factor``
    voxels at the centres of its subdivisions, as scanners' ZIP does (complex result)."""
    n = a.shape[axis]
    f = scipy.fft.fft(a, axis=axis)
    k = scipy.fft.fftfreq(n) * n
    c = 0.5 / factor - 0.5  # old-index position of the first new sample
    shape = [1] * a.ndim
    shape[axis] = n
    f = f * np.exp(2j * np.pi * k * c / n).reshape(shape)
    m = factor * n
    out_shape = list(a.shape)
    out_shape[axis] = m
    g = np.zeros(out_shape, dtype=np.complex64)
    h = (n + 1) // 2  # non-negative frequencies (with the Nyquist bin split for even n)
    take = [slice(None)] * a.ndim
    put = [slice(None)] * a.ndim
    take[axis], put[axis] = slice(0, h), slice(0, h)
    g[tuple(put)] = f[tuple(take)]
    take[axis], put[axis] = slice(n - (n - h), n), slice(m - (n - h), m)
    g[tuple(put)] = f[tuple(take)]
    if n % 2 == 0:  # split the Nyquist bin between +n/2 and -n/2
        take[axis] = slice(n // 2, n // 2 + 1)
        put[axis] = slice(n // 2, n // 2 + 1)
        g[tuple(put)] = 0.5 * f[tuple(take)]
        put[axis] = slice(m - n // 2, m - n // 2 + 1)
        g[tuple(put)] = 0.5 * f[tuple(take)]
    return scipy.fft.ifft(g, axis=axis) * factor


def _upsampled_geometry(geo: Geometry, factor: int) -> Geometry:
    sp = np.asarray(geo.spacing)
    new_sp = sp / np.array([factor, factor, 1])
    first = np.array([0.5 / factor - 0.5, 0.5 / factor - 0.5, 0.0])  # old index of the first new voxel
    return Geometry(tuple(new_sp), tuple(geo.index_to_lps(first)), geo.direction)


def matrix_zerofilled(case: PhantomCase, rng: np.random.Generator, factor: int = 2) -> PhantomCase:
    """In-plane matrix doubled by k-space zero filling (512 -> 1024 on a scanner); labels split 2 x 2."""
    img = np.abs(_zero_fill(_zero_fill(case.image.array, 2, factor), 1, factor)).astype(np.float32)
    if case.params.intensity_range != "float1000":
        img = np.round(img)
    geo = _upsampled_geometry(case.geometry, factor)
    arrays = {f: np.repeat(np.repeat(getattr(case, f), factor, axis=1), factor, axis=2)
              for f in _LABEL_FIELDS if getattr(case, f) is not None}
    return relocate(replace(case, image=Image(img, geo, case.image.source), geometry=geo, **arrays))


def matrix_padded(case: PhantomCase, rng: np.random.Generator) -> PhantomCase:
    """The in-plane matrix padded with zeros to twice its size (the image in the middle)."""
    nz, ny, nx = case.image.array.shape
    px, py = nx // 2, ny // 2
    pad = ((0, 0), (py, ny - py), (px, nx - px))
    geo = Geometry(case.geometry.spacing, tuple(case.geometry.index_to_lps([-px, -py, 0])), case.geometry.direction)
    img = np.pad(case.image.array, pad)
    arrays = {f: np.pad(getattr(case, f), pad) for f in _LABEL_FIELDS if getattr(case, f) is not None}
    return relocate(replace(case, image=Image(img, geo, case.image.source), geometry=geo, **arrays))


_KINDS = {k.name: k for k in (
    Kind("full_head", "the whole head with skull, fat and scalp (the generator's default)"),
    Kind("brain_extracted", "skull-stripped: zeros outside the intracranial space", transform=brain_extracted),
    Kind("background_masked", "air around the head set to zero", transform=background_masked),
    Kind("partial_slab", f"a {SLAB_MM:.0f} mm slab covering part of the head", transform=partial_slab),
    Kind("cow_crop", "crop around the circle of Willis, 50 x 50 mm in-plane, 30 mm along z", transform=cow_crop),
    Kind("matrix_zerofilled", "in-plane matrix doubled by k-space zero filling (1024^2 from 512^2)",
         transform=matrix_zerofilled),
    Kind("matrix_padded", "in-plane matrix padded with zeros to twice its size", transform=matrix_padded),
    Kind("vessels_only", "vessels-only export: background 0, uint8 (MIP-like)", transform=vessels_only),
    Kind("uint8", "stored as uint8 0-255", transform=as_uint8),
    Kind("int16_offset", "stored as int16 with a negative offset (air about -1024)", transform=as_int16_offset),
    Kind("uint16_4095", "stored as uint16 0-4095", transform=as_uint16_4095),
    Kind("float_scaled", "stored as float32 at an arbitrary scale", transform=as_float_scaled),
    Kind("low_cnr_1p5t", "1.5 T-like: low vessel contrast, more noise, more blur",
         {"contrast": 2.3, "noise": 0.1, "psf_xy": 0.8, "psf_z": 0.9, "inflow_length_mm": 220.0}),
    # contrast 7: the 99.9th/50th percentile ratio of the public TopCoW example crop (3 T), 8.0, is matched
    Kind("high_cnr_3t", "3 T-like: high vessel contrast, low noise",
         {"contrast": 7.0, "noise": 0.03, "psf_xy": 0.5, "psf_z": 0.55, "inflow_length_mm": 600.0}),
    Kind("strong_bias", "a strong receive-coil bias field (factor about 0.3-3 across the head)", {"bias": 0.55}),
    Kind("fine_0p2mm", "0.2 x 0.2 x 0.3 mm voxels (a small field of view)", spacing=(0.2, 0.2, 0.3)),
    Kind("anisotropic", "0.3 x 0.3 x 1.0 mm voxels", spacing=(0.3, 0.3, 1.0)),
    Kind("coarse_1mm", "1.0 mm isotropic voxels", spacing=(1.0, 1.0, 1.0)),
    Kind("oblique", "slab tilted 25 degrees (oblique direction matrix)", {"oblique_deg": 25.0}),
    # the failing case: the field of view of challenge data such as TopCoW. The generator places
    # the circle of Willis in the grid, so rendering this grid directly is the crop; the 7 mm offset
    # centres the ring (anterior communicating artery to basilar tip) rather than the carotid termini.
    Kind("cow_crop_challenge", "challenge-size circle-of-Willis crop: 146 x 121 x 35 voxels of 0.3 x 0.3 x 0.6 mm",
         {"cow_offset_mm": [0.0, 7.0, 0.0]}, spacing=(0.3, 0.3, 0.6), shape_xyz=(146, 121, 35)),
)}
KINDS = tuple(_KINDS)  # the names, in the order benchmarks and tables list them


def describe(kind: str) -> str:
    return _kind(kind).description


def _kind(kind: str) -> Kind:
    if kind not in _KINDS:
        raise ValueError(f"unknown input kind {kind!r}; known: {', '.join(KINDS)}")
    return _KINDS[kind]


def renders(kind: str) -> bool:
    """Whether the kind changes how the case is rendered (scanner, voxel size) rather than transforming it."""
    k = _kind(kind)
    return bool(k.overrides) or k.spacing is not None or k.shape_xyz is not None


def apply_kind(case: PhantomCase, kind: str, seed: int) -> PhantomCase:
    """The rendered ``case`` turned into input kind ``kind`` (a transform kind, or ``full_head``);
    ``seed`` drives the kind's own random choices (crop position, threshold, scale)."""
    k = _kind(kind)
    if renders(kind):
        raise ValueError(f"input kind {kind!r} is rendered, not a transform: use make_kind")
    case = replace(case, params=replace(case.params))  # the rendered case stays as it was
    if k.transform is not None:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x4B1D, KINDS.index(kind)]))
        case = k.transform(case, rng)
    case.params.input_kind = kind
    return case


def make_kind(kind: str, seed: int, shape_xyz: Sequence[int] | None = None, spacing: Sequence[float] | None = None,
              scanner: str = "train", **overrides: Any) -> PhantomCase:
    """One phantom case of input kind ``kind``, deterministic from ``seed``.

    The kind's generator parameters are applied first and ``overrides`` after them; a kind with its
    own voxel size (``fine_0p2mm``, ``anisotropic``, ``coarse_1mm``) replaces ``spacing`` and keeps
    ``shape_xyz`` (default 256 x 256 x 96), so a fine grid covers a small field of view as it does
    on scanners; ``cow_crop_challenge`` fixes both. ``params.input_kind`` names the kind in the written params.json.
    """
    k = _kind(kind)
    if k.spacing is not None:
        spacing = k.spacing
        shape_xyz = k.shape_xyz or shape_xyz or DEFAULT_SHAPE_XYZ
    case = generate_case(seed, shape_xyz, spacing, scanner, **{**k.overrides, **overrides})
    if renders(kind):
        case.params.input_kind = kind
        return case
    return apply_kind(case, kind, seed)
