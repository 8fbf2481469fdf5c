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

from .errors import Cancelled
from .geometry import Geometry
from .preprocess import Preprocessed, coarse_roi
from .result import Seed

#: Detector components smaller than this (mm^3) are noise, not an aneurysm region.
MIN_COMPONENT_MM3 = 1.0
#: How far (mm) around the artery mask the detector runs: aneurysm lumens are bright (part of the
#: mask), so a small margin suffices for the probability-weighted centres.
ROI_MARGIN_MM = 2.0
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
    tiles: int  # output tiles evaluated
    tiles_total: int  # tiles of that size covering the whole coarse grid
    tile_size: int  # output tile edge (voxels)


def tile_origins(roi: np.ndarray, size: int) -> list[tuple[int, int, int]]:
    """Origins (multiples of ``size``) of the ``size^3`` output tiles that contain ROI voxels."""
    shape = np.asarray(roi.shape)
    blocks = -(-shape // size)
    padded = np.zeros(tuple(blocks * size), dtype=bool)
    padded[: shape[0], : shape[1], : shape[2]] = roi
    occupied = padded.reshape(blocks[0], size, blocks[1], size, blocks[2], size).any(axis=(1, 3, 5))
    return [tuple(int(v) * size for v in b) for b in np.argwhere(occupied)]  # type: ignore[misc]


#: Per-tile overhead (copying, a call into TorchScript) in the units of :func:`tile_cost`.
TILE_OVERHEAD = 20_000.0
#: Tile input voxels per batch: small tiles are batched more so that each call stays efficient.
BATCH_VOXELS = 2 * 93**3


def tile_cost(size: int) -> float:
    """Relative cost of one ``size^3`` output tile: voxels computed by DeepMedic's 8 valid layers in
    the normal pathway (input ``size + 16``) and the x3-subsampled one (input ``size / 3 + 16``)."""
    normal = sum((size + 16 - 2 * k) ** 3 for k in range(1, 9))
    sub = sum((size // 3 + 16 - 2 * k) ** 3 for k in range(1, 9))
    return float(normal + sub) + TILE_OVERHEAD


def choose_tile_size(roi: np.ndarray, candidates: Sequence[int] = tuple(range(9, 64, 3))) -> int:
    """The output tile size with the least estimated work for this ROI.

    Large tiles waste less on context but cover more empty space around a sparse vessel tree; the
    best trade-off depends on the scan, so it is computed (a few block reductions, milliseconds).
    """
    best = min(candidates, key=lambda s: (len(tile_origins(roi, s)) * tile_cost(s), s))
    return int(best)


def batch_for(size: int, context: int = 48) -> int:
    """Tiles per batch so that a batch holds about :data:`BATCH_VOXELS` input voxels."""
    return max(1, int(BATCH_VOXELS // (size + context) ** 3))


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


def run_detector(model: torch.jit.ScriptModule, volume: np.ndarray, roi: np.ndarray, *, segment_out: int,
                 context: int, pad_value: float, device: torch.device, batch_size: int = 2,
                 progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
                 sparse_head: bool = True, precision: str = "float32") -> tuple[np.ndarray, int]:
    """Aneurysm probability on the grid of ``volume`` (z-scored), computed on ROI tiles only.

    ``sparse_head`` evaluates DeepMedic's 1^3 head on ROI voxels only (:class:`SparseHead`).

    Returns the probability (0 in tiles not evaluated and outside the ROI) and the tile count.
    """
    if segment_out <= 0 or segment_out % 3:
        raise ValueError(f"coarse segment_out must be a positive multiple of 3, got {segment_out}")
    s, half = segment_out, context // 2
    origins = tile_origins(roi, s)
    prob = np.zeros(roi.shape, dtype=np.float32)
    if not origins:
        return prob, 0
    shape = np.asarray(volume.shape)
    blocks = -(-shape // s)
    after = blocks * s - shape + (context - half)
    padded = np.pad(volume.astype(np.float32, copy=False), [(half, int(a)) for a in after], constant_values=pad_value)
    sparse = SparseHead.create(model, context, device) if sparse_head else None
    for start in range(0, len(origins), batch_size):
        if cancel is not None and cancel():
            raise Cancelled("cancelled during detection")
        batch = origins[start:start + batch_size]
        inputs = torch.from_numpy(np.stack([padded[z:z + s + context, y:y + s + context, x:x + s + context]
                                            for z, y, x in batch])[:, None]).to(device)
        regions = [tuple(slice(o, min(o + s, int(n))) for o, n in zip(origin, shape)) for origin in batch]
        with torch.inference_mode(), autocast(precision, device):
            if sparse is None:
                p = torch.softmax(model(inputs).float(), dim=1)[:, 1].cpu().numpy()
                for region, tile in zip(regions, p):
                    prob[region] = tile[tuple(slice(0, r.stop - r.start) for r in region)]
            else:
                feats = sparse.features(inputs)
                picks = []
                for b, region in enumerate(regions):
                    local = np.zeros((s, s, s), dtype=bool)
                    local[tuple(slice(0, r.stop - r.start) for r in region)] = roi[region]
                    idx = torch.from_numpy(np.flatnonzero(local)).to(device)
                    picks.append(feats[b].reshape(feats.shape[1], -1).index_select(1, idx))
                points = torch.cat(picks, dim=1)
                logits = sparse.head(points[None, :, :, None, None])
                values = torch.softmax(logits.float(), dim=1)[0, 1, :, 0, 0].cpu().numpy()
                offset = 0
                for region, pick in zip(regions, picks):
                    k = pick.shape[1]
                    prob[region][roi[region]] = values[offset:offset + k]
                    offset += k
        if progress is not None:
            progress(min(1.0, (start + len(batch)) / len(origins)), "detection")
    prob[~roi] = 0.0
    return prob, len(origins)


def seeds_from_probability(prob: np.ndarray, geometry: Geometry, threshold: float = 0.5,
                           min_component_mm3: float = MIN_COMPONENT_MM3, merge_distance_mm: float = 6.4,
                           max_seeds: int = MAX_SEEDS) -> list[Seed]:
    """Components of ``prob >= threshold`` -> seeds (weighted centre, confidence = max probability).

    Ordered by confidence (then position, for determinism); a seed within ``merge_distance_mm`` of a
    more confident one is dropped (that VOI already covers it).
    """
    mask = prob >= threshold
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    voxel_mm3 = float(np.prod(geometry.spacing))
    sizes = ndimage.sum_labels(mask, labels, index) * voxel_mm3
    peaks = ndimage.maximum(prob, labels, index)
    centres = ndimage.center_of_mass(prob, labels, index)
    candidates = []
    for size, peak, centre in zip(sizes, peaks, centres):
        if size < min_component_mm3:
            continue
        lps = geometry.index_to_lps(np.asarray(centre, dtype=float)[::-1])
        candidates.append((float(peak), tuple(float(v) for v in lps)))
    candidates.sort(key=lambda c: (-c[0], c[1]))
    kept: list[Seed] = []
    for peak, lps in candidates:
        if all(np.linalg.norm(np.subtract(lps, k.position_lps)) >= merge_distance_mm for k in kept):
            kept.append(Seed(position_lps=lps, confidence=peak, source="detector"))  # type: ignore[arg-type]
        if len(kept) >= max_seeds:
            break
    for i, seed in enumerate(kept, start=1):
        seed.label = f"D{i}"
    return kept


def detect(pre: Preprocessed, model: torch.jit.ScriptModule, *, segment_out: int | None, context: int,
           device: torch.device, threshold: float = 0.5, merge_distance_mm: float = 6.4,
           roi_margin_mm: float = ROI_MARGIN_MM, batch_size: int | None = None,
           progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
           precision: str = "float32") -> Detection:
    """Run the coarse detector on the preprocessed scan and return its probability and seeds.

    ``segment_out=None`` picks the cheapest tile size for this scan (:func:`choose_tile_size`).
    """
    roi = coarse_roi(pre, margin_mm=roi_margin_mm)
    if segment_out is None:
        segment_out = choose_tile_size(roi)
    if batch_size is None:
        batch_size = batch_for(segment_out, context)
    pad = float((pre.background - pre.mean) / pre.std)
    prob, tiles = run_detector(model, pre.coarse.array, roi, segment_out=segment_out, context=context,
                               pad_value=pad, device=device, batch_size=batch_size,
                               progress=progress, cancel=cancel, precision=precision)
    total = int(np.prod(-(-np.asarray(roi.shape) // segment_out)))
    seeds = seeds_from_probability(prob, pre.coarse.geometry, threshold, merge_distance_mm=merge_distance_mm)
    return Detection(prob, roi, pre.coarse.geometry, seeds, tiles, total, segment_out)


def combine_seeds(detected: Sequence[Seed], given: Sequence[Seed] | None, use_detected: bool) -> list[Seed]:
    """Given seeds replace (``use_detected=False``) or join the detected ones; given ones first."""
    out = list(given or [])
    if use_detected:
        out.extend(detected)
    return out
