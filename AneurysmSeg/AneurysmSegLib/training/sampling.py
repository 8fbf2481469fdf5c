"""Training samples: adaptive dilation, coarse segments (50/50 fg/bg) and jittered fine VOIs.

Everything here is pure numpy on cached arrays and draws from an explicit ``numpy.random.Generator``,
so an epoch's samples depend only on the seed and the epoch number (resume reproduces them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

COARSE_IN = 57  #: DeepMedic training segment input (25^3 normal pathway + context): 57 -> 9
COARSE_OUT = 9
MIN_RADIUS_MM = 3.5  #: adaptive dilation grows every aneurysm to at least this equivalent radius
MIN_MARGIN_MM = 0.7  #: ... and by at least this margin (one coarse voxel)
#: background segments: vessels, hard vessel places (bifurcations, bends, loops: where vessels crowd),
#: bright non-vessel tissue (fat, skull base), any head voxel
BG_MIX = (0.3, 0.3, 0.2, 0.2)
#: vessel voxels whose 7^3 neighbourhood holds more vessel than this quantile are "hard" places
HARD_QUANTILE = 0.75
#: size classes (equivalent diameter, mm) that fine-stage sampling balances: small aneurysms are rare
#: and hardest, so each class is drawn equally often
SIZE_EDGES_MM = (3.0, 6.0)


def equivalent_radius_mm(voxels: int, spacing_zyx: Sequence[float]) -> float:
    """Radius of the sphere with the component's volume."""
    vol = voxels * float(np.prod(spacing_zyx))
    return float((3.0 * vol / (4.0 * np.pi)) ** (1.0 / 3.0))


def adaptive_dilation(mask: np.ndarray, spacing_zyx: Sequence[float], min_radius_mm: float = MIN_RADIUS_MM,
                      min_margin_mm: float = MIN_MARGIN_MM) -> np.ndarray:
    """Dilate each aneurysm by ``max(min_margin, min_radius - r_eq)`` mm (small ones grow more).

    The coarse detector is trained to find *regions*: a 2 mm aneurysm becomes a ~7 mm blob that a
    0.7 mm grid and a 9^3 output can learn, while a 10 mm one keeps roughly its shape.
    """
    mask = np.asarray(mask, dtype=bool)
    sp = np.asarray(spacing_zyx, dtype=float)
    out = mask.copy()
    lab, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 3))
    for i, box in enumerate(ndimage.find_objects(lab), start=1):
        comp_full = lab[box] == i
        d = max(min_margin_mm, min_radius_mm - equivalent_radius_mm(int(comp_full.sum()), sp))
        pad = np.ceil(d / sp).astype(int) + 1
        lo = [max(0, s.start - p) for s, p in zip(box, pad)]
        hi = [min(dim, s.stop + p) for s, dim, p in zip(box, mask.shape, pad)]
        sub = tuple(slice(a, b) for a, b in zip(lo, hi))
        comp = lab[sub] == i
        dist = ndimage.distance_transform_edt(~comp, sampling=sp)
        out[sub] |= dist <= d
    return out


# ------------------------------------------------------------------------------------------ cropping


def crop(array: np.ndarray, start: Sequence[int], size: Sequence[int], fill: float = 0.0) -> np.ndarray:
    """``array[start:start+size]`` over the last 3 axes, filled with ``fill`` outside the array."""
    spatial = array.shape[-3:]
    lead = array.shape[:-3]
    out = np.full(lead + tuple(size), fill, dtype=array.dtype)
    src, dst = [], []
    for s, n, dim in zip(start, size, spatial):
        a, b = max(0, s), min(dim, s + n)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    out[(Ellipsis, *dst)] = array[(Ellipsis, *src)]
    return out


# ------------------------------------------------------------------------------------------ coarse


@dataclass
class CoarseVolume:
    """One case on the coarse grid: z-scored image, dilated target and candidate centres (flat idx)."""

    name: str
    image: np.ndarray  # float16/32 [z, y, x]
    target: np.ndarray  # uint8 dilated aneurysm mask
    fg: np.ndarray  # int flat indices of target voxels
    vessel: np.ndarray  # arteries outside the target
    bright: np.ndarray  # bright non-vessel tissue (fat rim, skull-base fat) outside the target
    head: np.ndarray  # a subsample of head voxels outside the target
    fill: float = field(default=-3.0)  # value outside the image (air)
    hard: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # crowded vessel places


def hard_places(arteries: np.ndarray, vessel: np.ndarray, quantile: float = HARD_QUANTILE) -> np.ndarray:
    """The ``vessel`` voxels (flat indices) where vessels crowd: bifurcations, bends, loops, the siphon.

    The vessel fraction of each voxel's 7^3 neighbourhood is high exactly where a branch leaves,
    a vessel turns back or two run side by side, which is where the detector's false positives sit
    and where aneurysms grow; the voxels above its ``quantile`` among vessel voxels are returned (none
    where every vessel voxel looks alike).
    """
    if len(vessel) == 0:
        return np.zeros(0, np.int64)
    density = ndimage.uniform_filter(np.asarray(arteries, dtype=np.float32), size=7).ravel()[vessel]
    return np.asarray(vessel[density > np.quantile(density, quantile)], dtype=np.int64)


def coarse_segment(vol: CoarseVolume, flat_index: int, in_size: int = COARSE_IN,
                   out_size: int = COARSE_OUT) -> tuple[np.ndarray, np.ndarray]:
    """Input segment (in_size^3, float32) and target (out_size^3, int64) centred on one voxel."""
    c = np.array(np.unravel_index(int(flat_index), vol.image.shape))
    x = crop(vol.image, c - in_size // 2, (in_size,) * 3, vol.fill).astype(np.float32)
    y = crop(vol.target, c - out_size // 2, (out_size,) * 3, 0).astype(np.int64)
    return x, y


def coarse_sample(vols: Sequence[CoarseVolume], rng: np.random.Generator, foreground: bool,
                  bg_mix: Sequence[float] = BG_MIX, in_size: int = COARSE_IN,
                  out_size: int = COARSE_OUT) -> tuple[np.ndarray, np.ndarray]:
    """One segment (x (1, in^3), y (out^3)) centred on a target voxel or on a background place.

    Foreground: a case drawn uniformly among cases with aneurysms, a voxel of its dilated target.
    Background: vessels, hard vessel places, bright non-vessel tissue and the head in the
    proportions ``bg_mix`` (an empty category falls back to the head), so the detector learns to
    reject exactly what looks like an aneurysm to a threshold.
    """
    with_fg = [v for v in vols if len(v.fg)]
    if foreground and with_fg:
        v = with_fg[int(rng.integers(len(with_fg)))]
        idx = v.fg[int(rng.integers(len(v.fg)))]
    else:
        v = vols[int(rng.integers(len(vols)))]
        mix = np.asarray(bg_mix, float)
        kind = int(rng.choice(len(mix), p=mix / mix.sum()))
        pool = (v.vessel, v.hard, v.bright, v.head)[kind] if len(mix) == 4 else (v.vessel, v.bright, v.head)[kind]
        if len(pool) == 0:
            pool = v.head if len(v.head) else np.arange(v.image.size)
        idx = pool[int(rng.integers(len(pool)))]
    x, y = coarse_segment(v, int(idx), in_size, out_size)
    return x[None], y


def sample_coarse_batch(vols: Sequence[CoarseVolume], rng: np.random.Generator, batch: int = 10,
                        fg_fraction: float = 0.5, bg_mix: Sequence[float] = BG_MIX,
                        in_size: int = COARSE_IN, out_size: int = COARSE_OUT
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x (B,1,in,in,in), y (B,out,out,out), is_fg (B,)): exactly round(B * fg_fraction) foreground
    (:func:`coarse_sample` from one generator, e.g. a fixed validation set)."""
    with_fg = any(len(v.fg) for v in vols)
    n_fg = int(round(batch * fg_fraction)) if with_fg else 0
    pairs = [coarse_sample(vols, rng, b < n_fg, bg_mix, in_size, out_size) for b in range(batch)]
    return (np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]),
            np.array([b < n_fg for b in range(batch)]))


# ------------------------------------------------------------------------------------------ fine


@dataclass
class FineVOIs:
    """Large VOIs (size ``big`` >= 64) of one case; a 64^3 crop at an offset is a jittered VOI.

    ``images`` (K, 2, B, B, B) from ``preprocess.voi_channels`` (channel 0 z-scored image,
    channel 1 vessel contour), ``labels`` (K, B, B, B) uint8, ``kinds`` 0 = aneurysm-centred,
    1 = background (vessel region or normal case).
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    kinds: np.ndarray
    diameters: np.ndarray | None = None  #: equivalent diameter (mm) of each aneurysm VOI's label, NaN else

    @property
    def big(self) -> int:
        return int(self.images.shape[-1])


def voi_crop(vois: FineVOIs, k: int, offset: Sequence[int], size: int = 64,
             channels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(channels, size^3) float32 and (size^3) uint8 crop of VOI ``k`` starting at ``offset`` (z, y, x).

    A crop at offset ``o`` of a ``B``-voxel VOI equals ``voi_channels`` at the centre moved by
    ``(o - (B - size) / 2) * spacing`` along each image axis (same grid points), apart from the
    contour channel's outermost two voxels.
    """
    sl = tuple(slice(int(o), int(o) + size) for o in offset)
    x = np.asarray(vois.images[k, :channels][(slice(None), *sl)], dtype=np.float32)
    y = np.asarray(vois.labels[k][sl], dtype=np.uint8)
    return x, y


def jitter_offset(rng: np.random.Generator, big: int, size: int = 64, max_jitter: int | None = None,
                  p_centred: float = 0.2) -> np.ndarray:
    """Offset (z, y, x) of a 64^3 crop: centred with probability ``p_centred``, else uniform within
    ``max_jitter`` voxels of the centre per axis (the detector's seed is never exactly centred)."""
    centre = (big - size) // 2
    limit = centre if max_jitter is None else min(centre, int(max_jitter))
    if limit == 0 or rng.random() < p_centred:
        return np.full(3, centre, dtype=int)
    return centre + rng.integers(-limit, limit + 1, size=3)


def size_class(diameter_mm: float, edges: Sequence[float] = SIZE_EDGES_MM) -> int:
    """0 below the first edge (< 3 mm), 1 between (3-6 mm), 2 above (>= 6 mm)."""
    return int(np.searchsorted(np.asarray(edges, float), float(diameter_mm), side="right"))


def sample_fine(cases: Sequence[FineVOIs], rng: np.random.Generator, p_aneurysm: float = 0.7,
                size: int = 64, channels: int = 2, max_jitter: int | None = None, balance_sizes: bool = False
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """One training VOI: (x (C, size^3), y (size^3), kind). Aneurysm VOIs with probability
    ``p_aneurysm`` (when any exist), otherwise a background VOI. ``balance_sizes`` draws the size
    class of an aneurysm VOI uniformly first (:data:`SIZE_EDGES_MM`), then a VOI of that class."""
    pools: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
    classes: dict[int, list[tuple[int, int]]] = {}
    for ci, c in enumerate(cases):
        for k, kind in enumerate(c.kinds):
            pools[int(kind)].append((ci, k))
            if int(kind) == 0 and balance_sizes and c.diameters is not None:
                classes.setdefault(size_class(float(c.diameters[k])), []).append((ci, k))
    want = 0 if (pools[0] and (not pools[1] or rng.random() < p_aneurysm)) else 1
    pool = pools[want]
    if want == 0 and classes:
        pool = classes[sorted(classes)[int(rng.integers(len(classes)))]]
    ci, k = pool[int(rng.integers(len(pool)))]
    c = cases[ci]
    off = jitter_offset(rng, c.big, size, max_jitter)
    x, y = voi_crop(c, k, off, size, channels)
    return x, y, want
