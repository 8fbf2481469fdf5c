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
import functools
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import numpy as np
import torch
from scipy import ndimage

from ..core.errors import Cancelled
from ..core.geometry import Geometry
from ..core.result import Seed
from ..networks.blocks import center_crop3d
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
#: ROI voxels per call of DeepMedic's head in :class:`SparseHead` mode.
HEAD_VOXELS = 32768


class SparseHead:
    """DeepMedic's normal pathway densely per tile, its subsampled pathway once over the region's
    bounding box, its 1^3 "fully connected" head only on ROI voxels.

    The head (150 + 150 units per voxel) costs about twice the convolutions, yet the vessel region is
    a few percent of each tile; evaluating it per ROI voxel gives the same numbers for a fraction of
    the work. The subsampled pathway sees the x3-pooled scan, whose cells are the same for every tile
    (tiles start at multiples of 3): computed once over the region's box, each ROI voxel takes the
    output of its cell, where per tile it cost its own 16 cells of context on each side (a third of
    the detector's time on a 512 x 512 x 140 scan). Used only when the TorchScript module exposes
    DeepMedic's parts (``normal``, ``sub``, ``pool``, ``fc``, ``classifier``) and this reproduces the
    full forward on a test input; any other model runs whole.
    """

    #: Voxels the normal pathway's input extends beyond its output on each side (8 valid 3^3 layers).
    NORMAL_REACH = 8
    #: Pooled cells the subsampled pathway's input extends beyond its output on each side.
    SUB_REACH = 8

    def __init__(self, model: torch.jit.ScriptModule, layered: bool = False) -> None:
        self.model = model
        self.layered = layered

    @classmethod
    def create(cls, model: torch.jit.ScriptModule, context: int, device: torch.device,
               precision: str = "float32") -> "SparseHead | None":
        """The sparse head for ``model``, or None when it does not reproduce the full forward. On a CPU
        in float32 the pathways run layer by layer (:meth:`pathway`) when that reproduces it too."""
        parts = ("normal", "sub", "pool", "fc", "classifier")
        if context != 48 or not all(hasattr(model, p) for p in parts):
            return None
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 1, 57, 57, 57, generator=g).to(device)
        try:
            with torch.inference_mode():
                full = model(x).float()
        except (RuntimeError, AttributeError, TypeError):
            return None
        if full.ndim != 5 or full.shape[1] != 2:
            return None
        for layered in ([True, False] if device.type == "cpu" and precision == "float32" else [False]):
            head = cls(model, layered)
            try:
                with torch.inference_mode():
                    normal = head.normal(x[:, :, 16:-16, 16:-16, 16:-16])[0].reshape(-1, 9 ** 3)
                    cells = torch.from_numpy(np.indices((9, 9, 9)).reshape(3, -1) // 3)
                    sub = head.cells(head.subsampled(x)[0], cells)
                    sparse = head.head(torch.cat([normal, sub])[None, :, :, None, None]).float().reshape(full.shape)
            except (RuntimeError, AttributeError, TypeError, ValueError):
                continue
            if torch.allclose(full, sparse, atol=1e-4, rtol=1e-4):
                return head
        return None

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, S+16, ...) full-resolution input -> (N, C, S, ...) normal-pathway features."""
        return self.pathway(self.model.normal, x) if self.layered else self.model.normal(x)

    def subsampled(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 3(T+16), ...) input, starting on the pooling grid -> (N, C, T, ...) features per
        pooled cell (cell t is output voxels 3t..3t+2 of the full forward on the same input)."""
        pooled = self.model.pool(x)
        return self.pathway(self.model.sub, pooled) if self.layered else self.model.sub(pooled)

    @staticmethod
    def pathway(path: torch.jit.ScriptModule, x: torch.Tensor) -> torch.Tensor:
        """DeepMedic's pathway (``networks.deepmedic._Pathway``) layer by layer, each convolution by
        oneDNN on channels-last activations. Torch's own choice sends small inputs (fewer than 20480
        channels x depth x height, as in small boxes and the subsampled pathway) to its slow im2col
        kernel and the rest to oneDNN with a reorder per layer; measured on 2 cores (one thread,
        torch 2.13): a 24 x 24 x 30 box's normal pathway 0.48 -> 0.08 s, a 36^3 one 0.30 -> 0.18 s.
        Same parameters and arithmetic; the sums' order differs (features within about 1e-5)."""
        layers = [getattr(path.layers, str(i)) for i in range(len(list(path.layers.children())))]
        flags = list(path.residual_flags)
        if len(flags) != len(layers):
            raise ValueError("pathway layers and residual flags disagree")
        prev2 = prev1 = x
        for layer, residual in zip(layers, flags):
            h = layer.drop(layer.act(layer.norm(prev1))).contiguous(memory_format=torch.channels_last_3d)
            conv = layer.conv
            if tuple(conv.weight.shape[2:]) != (3, 3, 3) or list(conv.padding) != [0, 0, 0] \
                    or list(conv.stride) != [1, 1, 1] or list(conv.dilation) != [1, 1, 1] or conv.groups != 1:
                raise ValueError("not a valid 3^3 convolution")
            y = torch.mkldnn_convolution(h, conv.weight, conv.bias, [0, 0, 0], [1, 1, 1], [1, 1, 1], 1)
            if residual:  # networks.blocks.residual_add, in place on the fresh output (no copy, no cat)
                crop = (prev2.shape[2] - y.shape[2]) // 2
                shortcut = center_crop3d(prev2, crop)
                c = min(y.shape[1], shortcut.shape[1])
                y[:, :c] += shortcut[:, :c]
            prev2, prev1 = prev1, y
        return prev1

    @staticmethod
    def cells(features: torch.Tensor, cells_zyx: torch.Tensor) -> torch.Tensor:
        """(C, T, T, T) per-cell features at (3, K) cell indices -> (C, K)."""
        t = features.shape[1:]
        flat = (cells_zyx[0] * t[1] + cells_zyx[1]) * t[2] + cells_zyx[2]
        return features.reshape(features.shape[0], -1).index_select(1, flat.to(features.device))

    def head(self, points: torch.Tensor) -> torch.Tensor:
        """(1, C, K, 1, 1) features -> (1, classes, K, 1, 1) logits (1^3 layers act per voxel)."""
        return self.model.classifier(self.model.fc(points))


Box = tuple[tuple[int, int, int], tuple[int, int, int]]  # output origin (z, y, x), output size (z, y, x)


def box_cost(size_zyx: Sequence[int]) -> float:
    """Relative cost of a DeepMedic output box (sides multiples of 3): voxels computed by the 8 valid
    layers of the normal pathway (input side + 16) and of the x3-subsampled one (side / 3 + 16)."""
    return _box_cost(*(int(d) for d in size_zyx), TILE_OVERHEAD)


@functools.lru_cache(maxsize=None)
def _box_cost(z: int, y: int, x: int, overhead: float) -> float:
    # Plain integer arithmetic, cached: cover_boxes asks for a few hundred sizes thousands of times
    # (numpy's prod per call made the box cover cost 1.8 CPU-seconds on a 512 x 512 x 140 scan).
    normal = sum(float((z + 16 - 2 * k) * (y + 16 - 2 * k) * (x + 16 - 2 * k)) for k in range(1, 9))
    sub = sum(float((z // 3 + 16 - 2 * k) * (y // 3 + 16 - 2 * k) * (x // 3 + 16 - 2 * k)) for k in range(1, 9))
    return normal + sub + overhead


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
    sparse = SparseHead.create(model, context, device, precision) if sparse_head else None

    batches: list[list[Box]] = []
    for box in boxes:
        limit = batch_size if segment_out is not None else max(1, int(BATCH_VOXELS // np.prod(np.add(box[1], context))))
        if batches and batches[-1][0][1] == box[1] and len(batches[-1]) < limit:
            batches[-1].append(box)
        else:
            batches.append([box])
    if sparse is not None:
        _run_sparse(sparse, padded, roi, batches, len(boxes), device, precision, prob, progress, cancel)
        return prob, len(boxes)
    done = 0
    for batch in batches:
        if cancel is not None and cancel():
            raise Cancelled("cancelled during detection")
        size = batch[0][1]
        inputs = torch.from_numpy(np.stack([padded[z:z + size[0] + context, y:y + size[1] + context,
                                                   x:x + size[2] + context] for (z, y, x), _ in batch])[:, None]).to(device)
        regions = [tuple(slice(o, min(o + d, int(n))) for o, d, n in zip(origin, size, shape)) for origin, _ in batch]
        with torch.inference_mode(), autocast(precision, device):
            p = torch.softmax(model(inputs).float(), dim=1)[:, 1].cpu().numpy()
        for region, tile in zip(regions, p):
            prob[region] = tile[tuple(slice(0, r.stop - r.start) for r in region)]
        done += len(batch)
        if progress is not None:
            progress(done / len(boxes), "detection")
    prob[~roi] = 0.0
    return prob, len(boxes)


def _run_sparse(sparse: SparseHead, padded: np.ndarray, roi: np.ndarray, batches: list[list[Box]], total: int,
                device: torch.device, precision: str, prob: np.ndarray, progress: Progress | None,
                cancel: Callable[[], bool] | None) -> None:
    """:func:`run_detector` with a :class:`SparseHead`: fills ``prob`` at the ROI voxels.

    ``padded`` is the scan with DeepMedic's 24 voxels of context before each face (and at least as
    many after the boxes' reach). The ROI voxels' normal-pathway features are gathered box by box,
    the subsampled pathway runs once over the ROI's bounding box, and the head over the ROI voxels
    in their C order (that of ``prob[roi]``), :data:`HEAD_VOXELS` at a time."""
    where = np.nonzero(roi)
    count = len(where[0])
    shape = roi.shape
    flat_roi = np.flatnonzero(roi)  # sorted: a voxel's rank in it is its column in ``normal``
    reach = SparseHead.NORMAL_REACH
    normal: torch.Tensor | None = None
    done = 0
    with torch.inference_mode(), autocast(precision, device):
        for batch in batches:
            if cancel is not None and cancel():
                raise Cancelled("cancelled during detection")
            size = batch[0][1]
            # the normal pathway's input: 16 of the 24 context voxels are the subsampled pathway's only
            inputs = torch.from_numpy(np.stack([
                padded[z + 24 - reach:z + size[0] + 24 + reach, y + 24 - reach:y + size[1] + 24 + reach,
                       x + 24 - reach:x + size[2] + 24 + reach] for (z, y, x), _ in batch])[:, None]).to(device)
            feats = sparse.normal(inputs)
            if normal is None:
                normal = torch.zeros((feats.shape[1], count), dtype=feats.dtype, device=device)
            for b, (origin, _) in enumerate(batch):
                region = tuple(slice(o, min(o + d, int(n))) for o, d, n in zip(origin, size, shape))
                inside = np.nonzero(roi[region])  # box-local positions (the region is the box's corner)
                idx = torch.from_numpy(np.ravel_multi_index(inside, size)).to(device)
                picked = feats[b].reshape(feats.shape[1], -1).index_select(1, idx)
                flat = np.ravel_multi_index(tuple(i + r.start for i, r in zip(inside, region)), shape)
                rank = torch.from_numpy(np.searchsorted(flat_roi, flat)).to(device)
                normal.index_copy_(1, rank, picked.to(normal.dtype))
            done += len(batch)
            if progress is not None:
                progress(0.95 * done / total, "detection")
        if normal is None:
            return
        # subsampled pathway over the ROI's bounding box: cells lo..hi of the pooled padded scan hold
        # the ROI voxels' cells (p // 3) and their 8 cells of context after each (the padding's 24
        # voxels before the scan are the 8 before)
        cells = np.stack(where) // 3
        lo, hi = cells.min(axis=1), cells.max(axis=1) + 2 * SparseHead.SUB_REACH + 1
        if any(3 * h > n for h, n in zip(hi, padded.shape)):
            raise ValueError("the padded scan is too short for the subsampled pathway's context")
        block = padded[lo[0] * 3:hi[0] * 3, lo[1] * 3:hi[1] * 3, lo[2] * 3:hi[2] * 3]
        sub = sparse.subsampled(torch.from_numpy(np.ascontiguousarray(block))[None, None].to(device))[0]
        values = np.empty(count, dtype=np.float32)
        for start in range(0, count, HEAD_VOXELS):  # in parts: the head's activations of every ROI
            stop = min(count, start + HEAD_VOXELS)  # voxel at once would add ~150 MB to the peak
            part = torch.from_numpy(cells[:, start:stop] - lo[:, None])
            points = torch.cat([normal[:, start:stop], sparse.cells(sub, part).to(normal.dtype)])
            logits = sparse.head(points[None, :, :, None, None])
            values[start:stop] = torch.softmax(logits.float(), dim=1)[0, 1, :, 0, 0].cpu().numpy()
        prob[where] = values
    if progress is not None:
        progress(1.0, "detection")


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
    # Statistics over the components' voxels only (ndimage's per-label functions scan the whole grid:
    # 1.3 CPU-seconds on a 512 x 512 x 140 scan). The same sums in the same voxel order as
    # ndimage.sum_labels / center_of_mass (np.bincount), so the same numbers to the last bit.
    where = np.nonzero(mask)
    comp_of, values = labels[where], prob[where]
    sizes = np.bincount(comp_of, minlength=n + 1)[1:] * voxel_mm3
    peaks = np.full(n + 1, -np.inf, dtype=values.dtype)
    np.maximum.at(peaks, comp_of, values)
    weight = np.bincount(comp_of, weights=values, minlength=n + 1)[1:]
    centres = np.stack([np.bincount(comp_of, weights=values * c.astype(float), minlength=n + 1)[1:] / weight
                        for c in where], axis=1)
    out = []
    for comp, size, peak, centre in zip(index, sizes, peaks[1:], centres):
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
