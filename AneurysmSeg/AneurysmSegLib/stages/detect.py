"""Coarse stage: DeepMedic over the vessel region only -> probability map -> VOI seeds.

DeepMedic is fully convolutional: an input block of ``(S + 48)^3`` gives an ``S^3`` output. The
coarse grid is cut into output tiles of ``S^3`` (S from the manifest, a multiple of 3, tiles at
multiples of S so every tile sees the same x3 pooling grid and seams agree), and only tiles that hold
part of the dilated artery mask are run: the field of view is mostly air, scalp and brain tissue
where no aneurysm can be. Components of the thresholded probability become seeds at their
probability-weighted centre; seeds closer than a quarter VOI are merged, since one VOI covers both.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import numpy as np
import torch
from scipy import ndimage

from ..core.errors import Cancelled
from ..core.geometry import Geometry
from ..core.result import Seed
from ..preprocess import ROI_MARGIN_MM, Preprocessed, coarse_roi
from ..preprocess.survey import CROP

#: Detector components smaller than this (mm^3) are noise, not an aneurysm region.
MIN_COMPONENT_MM3 = 1.0
#: At most this many seeds (the most confident) go to the fine stage.
MAX_SEEDS = 20

Progress = Callable[[float, str], None]
PRECISIONS = ("float32", "bfloat16")


def autocast(precision: str, device: torch.device) -> ContextManager:
    """Network arithmetic: float32 (default, exact) or bfloat16 autocast (about 2x faster on CPUs with
    AVX512-BF16/AMX and on GPUs; probabilities differ in the third decimal)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


@dataclass
class Detection:
    """Coarse-grid probability (0 outside the evaluated region), the region, and the seeds found."""

    probability: np.ndarray  # float32 [z, y, x] on ``geometry``
    roi: np.ndarray  # bool [z, y, x]: where the detector ran
    geometry: Geometry
    seeds: list[Seed]
    tiles: int  # boxes (or lattice tiles) evaluated


def tile_origins(roi: np.ndarray, size: int) -> list[tuple[int, int, int]]:
    """Origins (multiples of ``size``) of the ``size^3`` output tiles that contain ROI voxels."""
    shape = np.asarray(roi.shape)
    blocks = -(-shape // size)
    padded = np.zeros(tuple(blocks * size), dtype=bool)
    padded[: shape[0], : shape[1], : shape[2]] = roi
    occupied = padded.reshape(blocks[0], size, blocks[1], size, blocks[2], size).any(axis=(1, 3, 5))
    return [tuple(int(v) * size for v in b) for b in np.argwhere(occupied)]  # type: ignore[misc]


#: Per-box overhead (a call into TorchScript, oneDNN primitives for a new shape) in the units of
#: :func:`box_cost`; about 0.1 s per call measured on 2 cores, as much as a 9^3 box of work.
TILE_OVERHEAD = 70_000.0
#: Input voxels per batch: small boxes are batched more so that each call stays efficient.
BATCH_VOXELS = 2 * 93**3


class SparseHead:
    """DeepMedic's two pathways densely on a tile, its 1^3 "fully connected" head only on ROI voxels.

    The head (150 + 150 units per voxel) costs about twice the convolutions, yet the vessel region is
    a few percent of each tile; evaluating it per ROI voxel gives identical numbers for a fraction of
    the work. Used only when the TorchScript module exposes DeepMedic's parts (``normal``, ``sub``,
    ``pool``, ``upsample``, ``fc``, ``classifier``) and reproduces the full forward on a test input;
    any other model runs whole.
    """

    def __init__(self, model: torch.jit.ScriptModule) -> None:
        self.model = model

    @classmethod
    def create(cls, model: torch.jit.ScriptModule, context: int, device: torch.device) -> "SparseHead | None":
        parts = ("normal", "sub", "pool", "upsample", "fc", "classifier")
        if context != 48 or not all(hasattr(model, p) for p in parts):
            return None
        head = cls(model)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 1, 57, 57, 57, generator=g).to(device)
        try:
            with torch.inference_mode():
                full = model(x).float()
                feats = head.features(x)
                sparse = head.head(feats.reshape(1, feats.shape[1], -1, 1, 1)).float().reshape(full.shape)
        except (RuntimeError, AttributeError, TypeError):
            return None
        if full.shape[1] != 2 or not torch.allclose(full, sparse, atol=1e-4, rtol=1e-4):
            return None
        return head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        normal = m.normal(x[:, :, 16:-16, 16:-16, 16:-16])
        sub = m.upsample(m.sub(m.pool(x)))
        return torch.cat([normal, sub], dim=1)

    def head(self, points: torch.Tensor) -> torch.Tensor:
        """(1, C, K, 1, 1) features -> (1, classes, K, 1, 1) logits (1^3 layers act per voxel)."""
        return self.model.classifier(self.model.fc(points))


Box = tuple[tuple[int, int, int], tuple[int, int, int]]  # output origin (z, y, x), output size (z, y, x)


def box_cost(size_zyx: Sequence[int]) -> float:
    """Relative cost of a DeepMedic output box (sides multiples of 3): voxels computed by the 8 valid
    layers of the normal pathway (input side + 16) and of the x3-subsampled one (side / 3 + 16)."""
    normal = sum(float(np.prod([d + 16 - 2 * k for d in size_zyx])) for k in range(1, 9))
    sub = sum(float(np.prod([d // 3 + 16 - 2 * k for d in size_zyx])) for k in range(1, 9))
    return normal + sub + TILE_OVERHEAD


def cover_boxes(roi: np.ndarray, block: int = 6, max_size: int = 72) -> list[Box]:
    """Boxes (sides multiples of ``block``, at most ``max_size``) covering every ROI voxel cheaply.

    Recursive bisection of the occupied blocks' bounding box along its longest side, kept only where
    the two halves cost less than the whole: long runs of vessel share one box (and its context),
    while empty space between branches is skipped. DeepMedic takes any box whose sides are multiples
    of 3, and boxes at multiples of ``block`` (itself a multiple of 3) share one x3 pooling grid.
    """
    if block % 3:
        raise ValueError("block must be a multiple of 3")
    shape = np.asarray(roi.shape)
    nb = -(-shape // block)
    padded = np.zeros(tuple(nb * block), dtype=bool)
    padded[: shape[0], : shape[1], : shape[2]] = roi
    occ = padded.reshape(nb[0], block, nb[1], block, nb[2], block).any(axis=(1, 3, 5))
    limit = max(1, max_size // block)
    boxes: list[Box] = []

    def visit(lo: np.ndarray, hi: np.ndarray) -> list[Box]:
        sub = occ[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        where = np.argwhere(sub)
        if where.size == 0:
            return []
        lo, hi = lo + where.min(axis=0), lo + where.max(axis=0) + 1
        extent = hi - lo
        whole: Box = (tuple(int(v) * block for v in lo), tuple(int(v) * block for v in extent))  # type: ignore[assignment]
        if extent.max() == 1:
            return [whole]
        axis = int(np.argmax(extent))
        mid = lo.copy()
        mid[axis] = lo[axis] + extent[axis] // 2
        left_hi = hi.copy()
        left_hi[axis] = mid[axis]
        parts = visit(lo, left_hi) + visit(mid, hi)
        if extent.max() > limit or sum(box_cost(b[1]) for b in parts) < box_cost(whole[1]):
            return parts
        return [whole]

    boxes = visit(np.zeros(3, dtype=int), nb.copy())
    return sorted(boxes, key=lambda b: (b[1], b[0]))


def run_detector(model: torch.jit.ScriptModule, volume: np.ndarray, roi: np.ndarray, *, segment_out: int | None,
                 context: int, pad_value: float | None, device: torch.device, batch_size: int = 2,
                 progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
                 sparse_head: bool = True, precision: str = "float32") -> tuple[np.ndarray, int]:
    """Aneurysm probability on the grid of ``volume`` (z-scored), computed around the ROI only.

    ``segment_out`` = S: cubic S^3 output tiles on a lattice (``batch_size`` per call);
    None: the boxes of :func:`cover_boxes` (equal shapes batched up to :data:`BATCH_VOXELS`).
    ``sparse_head`` evaluates DeepMedic's 1^3 head on ROI voxels only (:class:`SparseHead`).
    Beyond the volume's faces the input is ``pad_value`` (z units) or, with None, the face's own voxels
    repeated: a crop cuts through tissue and vessels, and a vessel that ends in a constant
    "air" level looks like a blind sac to the detector (measured: false positives on the faces of crops).
    Returns the probability (0 outside the ROI) and the number of tiles/boxes evaluated.
    """
    if segment_out is not None:
        if segment_out <= 0 or segment_out % 3:
            raise ValueError(f"coarse segment_out must be a positive multiple of 3, got {segment_out}")
        boxes: list[Box] = [(o, (segment_out,) * 3) for o in tile_origins(roi, segment_out)]  # type: ignore[misc]
    else:
        boxes = cover_boxes(roi)
    prob = np.zeros(roi.shape, dtype=np.float32)
    if not boxes:
        return prob, 0
    half = context // 2
    shape = np.asarray(volume.shape)
    reach = np.max([np.add(o, d) for o, d in boxes], axis=0)
    after = np.maximum(reach - shape, 0) + (context - half)
    widths = [(half, int(a)) for a in after]
    source = volume.astype(np.float32, copy=False)
    padded = np.pad(source, widths, mode="edge") if pad_value is None else \
        np.pad(source, widths, constant_values=pad_value)
    sparse = SparseHead.create(model, context, device) if sparse_head else None

    batches: list[list[Box]] = []
    for box in boxes:
        limit = batch_size if segment_out is not None else max(1, int(BATCH_VOXELS // np.prod(np.add(box[1], context))))
        if batches and batches[-1][0][1] == box[1] and len(batches[-1]) < limit:
            batches[-1].append(box)
        else:
            batches.append([box])
    done = 0
    for batch in batches:
        if cancel is not None and cancel():
            raise Cancelled("cancelled during detection")
        size = batch[0][1]
        inputs = torch.from_numpy(np.stack([padded[z:z + size[0] + context, y:y + size[1] + context,
                                                   x:x + size[2] + context] for (z, y, x), _ in batch])[:, None]).to(device)
        regions = [tuple(slice(o, min(o + d, int(n))) for o, d, n in zip(origin, size, shape)) for origin, _ in batch]
        with torch.inference_mode(), autocast(precision, device):
            if sparse is None:
                p = torch.softmax(model(inputs).float(), dim=1)[:, 1].cpu().numpy()
                for region, tile in zip(regions, p):
                    prob[region] = tile[tuple(slice(0, r.stop - r.start) for r in region)]
            else:
                feats = sparse.features(inputs)
                picks = []
                for b, region in enumerate(regions):
                    local = np.zeros(size, dtype=bool)
                    local[tuple(slice(0, r.stop - r.start) for r in region)] = roi[region]
                    idx = torch.from_numpy(np.flatnonzero(local)).to(device)
                    picks.append(feats[b].reshape(feats.shape[1], -1).index_select(1, idx))
                logits = sparse.head(torch.cat(picks, dim=1)[None, :, :, None, None])
                values = torch.softmax(logits.float(), dim=1)[0, 1, :, 0, 0].cpu().numpy()
                offset = 0
                for region, pick in zip(regions, picks):
                    k = pick.shape[1]
                    prob[region][roi[region]] = values[offset:offset + k]
                    offset += k
        done += len(batch)
        if progress is not None:
            progress(done / len(boxes), "detection")
    prob[~roi] = 0.0
    return prob, len(boxes)


@dataclass
class Candidate:
    """One component of the thresholded probability and what became of it (for seeds and for the
    evaluation's account of missed aneurysms)."""

    component: int  #: its label in the component map
    peak: float  #: maximum probability (the seed's confidence)
    position_lps: tuple[float, float, float]  #: probability-weighted centre
    size_mm3: float
    fate: str  #: "seed", "too small", "merged" (a more confident seed is near) or "over the limit"


def seed_candidates(prob: np.ndarray, geometry: Geometry, threshold: float = 0.5,
                    min_component_mm3: float = MIN_COMPONENT_MM3, merge_distance_mm: float = 6.4,
                    max_seeds: int = MAX_SEEDS) -> tuple[np.ndarray, list[Candidate]]:
    """Component map of ``prob >= threshold`` and every component as a :class:`Candidate`, most
    confident first (then by position, for determinism): components under ``min_component_mm3`` are
    noise, a candidate within ``merge_distance_mm`` of a more confident seed is merged into it (its VOI
    covers both), and at most ``max_seeds`` become seeds."""
    mask = prob >= threshold
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return labels, []
    index = np.arange(1, n + 1)
    voxel_mm3 = float(np.prod(geometry.spacing))
    sizes = ndimage.sum_labels(mask, labels, index) * voxel_mm3
    peaks = ndimage.maximum(prob, labels, index)
    centres = ndimage.center_of_mass(prob, labels, index)
    out = []
    for comp, size, peak, centre in zip(index, sizes, peaks, centres):
        lps = geometry.index_to_lps(np.asarray(centre, dtype=float)[::-1])
        out.append(Candidate(int(comp), float(peak), tuple(float(v) for v in lps), float(size),  # type: ignore[arg-type]
                             "too small" if size < min_component_mm3 else ""))
    out.sort(key=lambda c: (-c.peak, c.position_lps))
    seeds: list[Candidate] = []
    for c in out:
        if c.fate:
            continue
        if any(np.linalg.norm(np.subtract(c.position_lps, k.position_lps)) < merge_distance_mm for k in seeds):
            c.fate = "merged"
        elif len(seeds) >= max_seeds:
            c.fate = "over the limit"
        else:
            c.fate = "seed"
            seeds.append(c)
    return labels, out


def seeds_from_probability(prob: np.ndarray, geometry: Geometry, threshold: float = 0.5,
                           min_component_mm3: float = MIN_COMPONENT_MM3, merge_distance_mm: float = 6.4,
                           max_seeds: int = MAX_SEEDS) -> list[Seed]:
    """Components of ``prob >= threshold`` -> seeds (weighted centre, confidence = max probability),
    labelled D1, D2, ... by confidence (:func:`seed_candidates`)."""
    _, candidates = seed_candidates(prob, geometry, threshold, min_component_mm3, merge_distance_mm, max_seeds)
    kept = [Seed(position_lps=c.position_lps, confidence=c.peak, source="detector")
            for c in candidates if c.fate == "seed"]
    for i, seed in enumerate(kept, start=1):
        seed.label = f"D{i}"
    return kept


def left_right_axis(geometry: Geometry) -> int:
    """The array axis ([z, y, x] order) whose direction is closest to LPS left-right: mirroring along
    it mirrors the head across (about) its midline, which keeps the anatomy a plausible head."""
    return 2 - int(np.argmax(np.abs(geometry.direction_matrix[0])))


def detector_padding(pre: Preprocessed) -> float | None:
    """What the detector sees beyond the scan's faces: the background level (z units) where the scan
    ends in air, as in training; the faces' own voxels repeated (None) where the input check found a
    crop, whose faces cut through brain and vessels. Measured on held-out crop phantoms (4 crop kinds,
    3 cases each): 15 -> 6 false positives, the same aneurysms found; on partial slabs it added
    false positives (4 -> 6 on 3 cases), so slabs and full heads keep the background level."""
    if pre.input is not None and getattr(pre.input, "field_of_view", None) == CROP:
        return None
    return float((pre.background - pre.mean) / pre.std)


def detect(pre: Preprocessed, model: torch.jit.ScriptModule, *, segment_out: int | None, context: int,
           device: torch.device, threshold: float = 0.5, merge_distance_mm: float = 6.4,
           roi_margin_mm: float = ROI_MARGIN_MM, batch_size: int | None = None,
           progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
           precision: str = "float32", flip: bool = False) -> Detection:
    """Run the coarse detector on the preprocessed scan and return its probability and seeds.

    ``segment_out=None`` covers the ROI with :func:`cover_boxes`; a number uses a lattice of cubes.
    ``flip=True`` is test-time augmentation: the detector also runs on the scan mirrored left-right
    (:func:`left_right_axis`; the detector was trained with flips along every axis) and the two
    probabilities, mirrored back, are averaged. Deterministic; it doubles the detection time.
    """
    roi = coarse_roi(pre, margin_mm=roi_margin_mm)
    pad = detector_padding(pre)
    passes = [False, True] if flip else [False]
    axis = left_right_axis(pre.coarse.geometry)
    prob = np.zeros(roi.shape, dtype=np.float32)
    tiles = 0
    for k, mirrored in enumerate(passes):
        def share(fraction: float, message: str, k: int = k) -> None:
            if progress is not None:
                progress((k + fraction) / len(passes), message)

        volume, region = pre.coarse.array, roi
        if mirrored:
            volume, region = np.flip(volume, axis), np.flip(roi, axis)
        p, n = run_detector(model, np.ascontiguousarray(volume), np.ascontiguousarray(region),
                            segment_out=segment_out, context=context, pad_value=pad, device=device,
                            batch_size=batch_size or 2, progress=share, cancel=cancel, precision=precision)
        prob += np.flip(p, axis) if mirrored else p
        tiles += n
    if flip:
        prob /= len(passes)
    seeds = seeds_from_probability(prob, pre.coarse.geometry, threshold, merge_distance_mm=merge_distance_mm)
    return Detection(prob, roi, pre.coarse.geometry, seeds, tiles)


def combine_seeds(detected: Sequence[Seed], given: Sequence[Seed] | None, use_detected: bool) -> list[Seed]:
    """Given seeds replace (``use_detected=False``) or join the detected ones; given ones first."""
    out = list(given or [])
    if use_detected:
        out.extend(detected)
    return out
