"""Where the missed aneurysms go: the whole pipeline on one case, and for every reference aneurysm it
does not find, the first step that lost it.

The steps, in pipeline order (and whose fault each is):

* outside the detector region: no voxel within the aneurysm's radius belongs to the region the
  detector runs on (the artery mask + :data:`preprocess.ROI_MARGIN_MM`) - preprocessing;
* too small for the coarse grid: a sac under two coarse voxels across that the detector did not
  flag, or flagged as a component under the noise limit - the grid;
* below the threshold: the detector ran there, its probability stayed under the threshold (on a
  larger sac, also when only a component under the noise limit cleared it) - the detector network;
* merged with a neighbour: a component reaches the aneurysm but its seed was dropped for a more
  confident seed nearby (or the seed limit) - seed merging;
* lost at VOI placement: a component reaches the aneurysm but its seed (the probability-weighted
  centre) lies outside the aneurysm's radius, and the fine stage, which keeps the object nearest the
  seed, did not recover it - seed placement;
* segmented with its vessel: a seed lies on the aneurysm and the prediction overlaps it, but the
  predicted object's centre lies outside the aneurysm (sac and parent artery as one object) - the
  fine network;
* missed by the fine stage: a seed lies on the aneurysm, nothing is predicted there - the fine network;
* dropped by the false-positive reduction: a seed lies on the aneurysm and the fine stage segmented
  it, but the finding classifier scored it below its threshold (stages/fp_reduction.py).

Everything is computed from one run of the stages (preprocessing, detection, :func:`pipeline.segment`
with the detected seeds, which is what ``segment`` itself does), so the whole-volume table comes from
the same run.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from ..training.data import CaseRef
from . import metrics
from .tables import segment_with_and_without_screening, unscreened_row

#: reason -> (the step that lost it, whose fault: "network" or "pipeline"); "found" is no miss.
REASONS: dict[str, tuple[str, str]] = {
    "found": ("", ""),
    "outside the detector region": ("region (preprocessing)", "pipeline"),
    "too small for the coarse grid": ("coarse grid", "pipeline"),
    "below the threshold": ("detector", "network"),
    "merged with a neighbour": ("seed merging", "pipeline"),
    "lost at VOI placement": ("seed placement", "pipeline"),
    "segmented with its vessel": ("fine stage", "network"),
    "missed by the fine stage": ("fine stage", "network"),
    "dropped by the false-positive reduction": ("finding classifier", "classifier"),
}


def _sphere(geometry: Any, shape: Sequence[int], centre_lps: np.ndarray, radius_mm: float) -> tuple[np.ndarray, ...]:
    """Index arrays (z, y, x) of the grid voxels whose centres lie within ``radius_mm`` of a point."""
    c = geometry.lps_to_index(np.asarray(centre_lps, dtype=float))[::-1]
    reach = np.ceil(radius_mm / np.asarray(geometry.spacing_zyx)).astype(int) + 1
    lo = np.maximum(np.floor(c - reach).astype(int), 0)
    hi = np.minimum(np.ceil(c + reach).astype(int) + 1, np.asarray(shape))
    if np.any(hi <= lo):
        return (np.zeros(0, int),) * 3
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), axis=-1).reshape(-1, 3)
    lps = geometry.index_to_lps(grid[:, ::-1].astype(float))
    inside = grid[np.linalg.norm(lps - np.asarray(centre_lps)[None], axis=1) <= radius_mm]
    return tuple(inside.T)


def classify(*, found: bool, roi_voxels: int, peak: float, threshold: float, diameter_mm: float, coarse_mm: float,
             fates: Sequence[str], seed_on_aneurysm: bool, overlaps: bool, rejected: bool = False) -> str:
    """The first step (:data:`REASONS`) that lost an aneurysm, from what each step saw of it.

    ``fates`` are those of the detector components that reach the aneurysm
    (:class:`stages.detect.Candidate`), ``seed_on_aneurysm`` whether a seed lies within its radius,
    ``overlaps`` whether the final labels touch it, ``rejected`` whether a finding the false-positive
    reduction dropped was seeded on it.
    """
    if found:
        return "found"
    if roi_voxels == 0:
        return "outside the detector region"
    if seed_on_aneurysm:
        if overlaps:
            return "segmented with its vessel"
        return "dropped by the false-positive reduction" if rejected else "missed by the fine stage"
    small = diameter_mm < 2.0 * coarse_mm
    if peak < threshold or not fates:
        return "too small for the coarse grid" if small else "below the threshold"
    if "merged" in fates or "over the limit" in fates:
        return "merged with a neighbour"
    if "seed" in fates:
        return "lost at VOI placement"
    # only components under the noise limit reach it: the grid's fault on a small sac, else the threshold's
    return "too small for the coarse grid" if small else "below the threshold"


def explain_case(ref: CaseRef, models: Any, threshold: float | None = None, flip: bool = False,
                 screen: bool = True) -> dict[str, Any]:
    """The pipeline on one case: the whole-volume detection and scores, plus one row per reference
    aneurysm with what each step saw of it and the :func:`classify` reason (with a finding classifier
    and ``screen``, also the detection and scores without it: ``unscreened``)."""
    import SimpleITK as sitk

    from ..io import images as io
    from ..preprocess import preprocess
    from ..stages import detect as det
    from ..stages.vessels import preprocess_options as vessel_options

    thr = models.detection_threshold if threshold is None else float(threshold)
    image = io.read_image(ref.image_path)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(ref.label_path)))
    t = time.time()
    pre = preprocess(image, coarse_spacing=models.coarse_spacing[0], **vessel_options(models))
    merge_mm = models.voi_size * models.fine_spacing[0] / 4
    found = det.detect(pre, models.coarse, segment_out=None, context=models.coarse_context, device=models.device,
                       threshold=thr, merge_distance_mm=merge_mm, flip=flip)
    res, before = segment_with_and_without_screening(image, models, screen, preprocessed=pre, detection=found)
    secs = time.time() - t
    pred = res.labels if res is not None else np.zeros(labels.shape, np.uint16)
    sp = image.geometry.spacing_zyx
    detection = metrics.detection(pred, labels, sp)
    out: dict[str, Any] = {"case": ref.name, "detection": detection, "seconds": secs, "aneurysms": [],
                           "input": res.input if res is not None else {},
                           "warnings": res.warnings if res is not None else []}
    if ((labels > 0) & (labels != metrics.TREATED_LABEL)).any():
        out["scores"] = metrics.segmentation_scores((pred > 0).astype(np.uint8), labels, sp)
    if before is not None:
        out["unscreened"] = unscreened_row(before, labels, sp)

    from scipy import ndimage

    components, listed = det.seed_candidates(found.probability, found.geometry, thr, merge_distance_mm=merge_mm)
    candidates = {c.component: c for c in listed}
    ref_lab, _ = ndimage.label((labels > 0) & (labels != metrics.TREATED_LABEL), structure=metrics.COMPONENT_STRUCTURE)
    seeds = np.array([s.position_lps for s in found.seeds], dtype=float).reshape(-1, 3)
    dropped = np.array([a.seed.position_lps for a in (res.rejected if res is not None else [])],
                       dtype=float).reshape(-1, 3)
    objects = detection.predicted_xyz
    coarse = found.geometry
    half_voxel = 0.5 * float(max(coarse.spacing))
    for j, (x, y, z, radius) in enumerate(detection.reference):
        centre = image.geometry.index_to_lps(np.array([x, y, z]))
        voxels = int((ref_lab == j + 1).sum())
        diameter = float((6.0 * voxels * float(np.prod(sp)) / np.pi) ** (1.0 / 3.0))
        off = (objects - np.array([x, y, z])[None]) * np.asarray(sp)[::-1]
        is_found = bool(len(off) and (np.linalg.norm(off, axis=1) <= radius).any())
        near = _sphere(coarse, found.probability.shape, centre, radius + half_voxel)
        roi_voxels = int(found.roi[near].sum())
        peak = float(found.probability[near].max()) if len(near[0]) else 0.0
        fates = [candidates[int(c)].fate for c in np.unique(components[near]) if c > 0]
        dist = np.linalg.norm(seeds - centre[None], axis=1) if len(seeds) else np.zeros(0)
        seed_on = bool((dist <= radius).any())
        overlaps = bool((pred[ref_lab == j + 1] > 0).any())
        rejected = bool(len(dropped) and (np.linalg.norm(dropped - centre[None], axis=1) <= radius).any())
        reason = classify(found=is_found, roi_voxels=roi_voxels, peak=peak, threshold=thr, diameter_mm=diameter,
                          coarse_mm=float(coarse.spacing[0]), fates=fates, seed_on_aneurysm=seed_on, overlaps=overlaps,
                          rejected=rejected)
        out["aneurysms"].append({
            "case": ref.name, "aneurysm": j + 1, "diameter_mm": diameter, "radius_mm": float(radius),
            "roi_voxels": roi_voxels, "peak_probability": peak, "nearest_seed_mm": float(dist.min()) if len(dist) else
            float("inf"), "components": len(fates), "overlaps": overlaps, "reason": reason})
    return out


def reason_counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many aneurysms each reason holds (every reason listed, zeros included)."""
    counts = {r: 0 for r in REASONS}
    for a in rows:
        counts[a["reason"]] += 1
    return counts
