"""Fine stage: one 64^3 VOI per seed through the SE U-Net, masks pasted back onto the input grid.

Each VOI's sigmoid probability is resampled (linear, SimpleITK) only onto the input voxels inside
that VOI's bounding box, overlapping VOIs are merged by maximum, and the result thresholded. In each
VOI only the connected component nearest its seed is kept (the aneurysm; vessel fragments elsewhere
in the cube are not). Components claimed by several seeds become one aneurysm. Labels are numbered
1..N by descending volume (ties by position), so the same input always gives the same labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage

from ..core.errors import Cancelled
from ..core.geometry import Geometry
from ..core.result import Seed
from ..preprocess import Preprocessed, resample, voi_channels
from .detect import autocast

Progress = Callable[[float, str], None]
_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


@dataclass
class VoiPrediction:
    seed: Seed
    geometry: Geometry  # the VOI grid (isotropic, axes = input axes)
    probability: np.ndarray  # float32 (size, size, size)


@dataclass
class Refined:
    labels: np.ndarray  # uint16 [z, y, x] in the input geometry, 1..N
    seeds: dict[int, Seed]  # label -> the (most confident) seed that found it
    confidences: dict[int, float]
    fine_means: dict[int, float] = field(default_factory=dict)  # label -> mean fine probability over it


def predict_vois(pre: Preprocessed, model: torch.jit.ScriptModule, seeds: Sequence[Seed], *, voi_size: int,
                 spacing: float, channels: int, device: torch.device, batch_size: int = 2,
                 progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
                 precision: str = "float32") -> list[VoiPrediction]:
    """Sigmoid probability of every seed's VOI, in batches of ``batch_size``."""
    out: list[VoiPrediction] = []
    for start in range(0, len(seeds), batch_size):
        if cancel is not None and cancel():
            raise Cancelled("cancelled during fine segmentation")
        batch = seeds[start:start + batch_size]
        cut = [voi_channels(pre, s.position_lps, size=voi_size, spacing=spacing, channels=channels) for s in batch]
        inputs = torch.from_numpy(np.stack([c[0] for c in cut])).to(device)
        with torch.inference_mode(), autocast(precision, device):
            probs = torch.sigmoid(model(inputs).float()[:, 0]).cpu().numpy()
        out.extend(VoiPrediction(s, geom, p) for s, (_, geom), p in zip(batch, cut, probs))
        if progress is not None:
            progress(min(1.0, (start + len(batch)) / len(seeds)), "fine segmentation")
    return out


def voi_box(voi: Geometry, size: int, image: Geometry, shape_zyx: Sequence[int]) -> tuple[slice, slice, slice] | None:
    """Input-grid index box (z, y, x slices) holding the VOI's extent; None when it lies outside."""
    corners = np.array([[i, j, k] for i in (-0.5, size - 0.5) for j in (-0.5, size - 0.5) for k in (-0.5, size - 0.5)])
    idx = image.lps_to_index(voi.index_to_lps(corners))  # (x, y, z)
    lo = np.maximum(np.floor(idx.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(idx.max(axis=0)).astype(int) + 1, np.asarray(shape_zyx[::-1]))
    if np.any(hi <= lo):
        return None
    return (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))


def paste(predictions: Sequence[VoiPrediction], image: Geometry, shape_zyx: Sequence[int],
          threshold: float = 0.5, max_seed_distance_mm: float | None = None) -> Refined:
    """Merge the VOI probabilities on the input grid and keep, per VOI, the component nearest its seed."""
    shape_zyx = tuple(int(s) for s in shape_zyx)
    boxes = []
    for pred in predictions:
        size = pred.probability.shape[0]
        boxes.append(voi_box(pred.geometry, size, image, shape_zyx))
    valid = [b for b in boxes if b is not None]
    labels_out = np.zeros(shape_zyx, dtype=np.uint16)
    if not valid:
        return Refined(labels_out, {}, {})
    # Work inside the union of the VOI boxes only.
    lo = np.min([[s.start for s in b] for b in valid], axis=0)
    hi = np.max([[s.stop for s in b] for b in valid], axis=0)
    union = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    merged = np.zeros(tuple(hi - lo), dtype=np.float32)
    for pred, box in zip(predictions, boxes):
        if box is None:
            continue
        sub_shape = tuple(s.stop - s.start for s in box)
        sub_geom = _sub_geometry(image, box)
        p = resample(pred.probability, pred.geometry, sub_geom, sub_shape, linear=True, default=0.0)
        local = tuple(slice(s.start - int(o), s.stop - int(o)) for s, o in zip(box, lo))
        np.maximum(merged[local], p, out=merged[local])
    components, n = ndimage.label(merged >= threshold, structure=_STRUCTURE)
    if n == 0:
        return Refined(labels_out, {}, {})

    claimed: dict[int, list[Seed]] = {}
    for pred, box in zip(predictions, boxes):
        if box is None:
            continue
        size = pred.probability.shape[0]
        limit = max_seed_distance_mm if max_seed_distance_mm is not None else size * pred.geometry.spacing[0] / 4
        comp = _nearest_component(components, lo, box, image, pred.seed, limit)
        if comp:
            claimed.setdefault(comp, []).append(pred.seed)
    if not claimed:
        return Refined(labels_out, {}, {})

    # Order: descending volume, then bounding-box position (deterministic).
    counts = np.bincount(components.ravel(), minlength=n + 1)
    starts = ndimage.find_objects(components)
    order = sorted(claimed, key=lambda c: (-int(counts[c]), tuple(s.start for s in starts[c - 1])))
    lut = np.zeros(n + 1, dtype=np.uint16)
    seeds: dict[int, Seed] = {}
    conf: dict[int, float] = {}
    means: dict[int, float] = {}
    fine_confidence = ndimage.mean(merged, components, index=order)  # mean probability over each aneurysm
    for new, (comp, own) in enumerate(zip(order, fine_confidence), start=1):
        lut[comp] = new
        best = max(claimed[comp], key=lambda s: s.confidence)
        seeds[new] = best
        # The detector's probability when it proposed the aneurysm; for a user's seed (whose 1.0 says
        # nothing about the finding) the fine stage's own mean probability over the aneurysm.
        detected = [s.confidence for s in claimed[comp] if s.source == "detector"]
        conf[new] = float(max(detected)) if detected else round(float(own), 4)
        means[new] = float(own)
    labels_out[union] = lut[components]
    return Refined(labels_out, seeds, conf, means)


def _sub_geometry(image: Geometry, box: tuple[slice, slice, slice]) -> Geometry:
    start_xyz = [box[2].start, box[1].start, box[0].start]
    return Geometry(spacing=image.spacing, origin=tuple(image.index_to_lps(start_xyz)), direction=image.direction)


def _nearest_component(components: np.ndarray, offset_zyx: np.ndarray, box: tuple[slice, slice, slice],
                       image: Geometry, seed: Seed, limit_mm: float) -> int:
    """Label of the component inside ``box`` nearest (physically) to the seed, 0 if none within limit."""
    local = tuple(slice(s.start - int(o), s.stop - int(o)) for s, o in zip(box, offset_zyx))
    sub = components[local]
    idx = np.argwhere(sub > 0)
    if idx.size == 0:
        return 0
    zyx = idx + np.array([s.start for s in box])
    points = image.index_to_lps(zyx[:, ::-1].astype(float))
    dist = np.linalg.norm(points - np.asarray(seed.position_lps), axis=1)
    best = int(np.argmin(dist))
    if dist[best] > limit_mm:
        return 0
    return int(sub[tuple(idx[best])])
