"""ADAM's detection rule in physical space, with treated aneurysms (label 2) ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from . import metrics


def treated_locations(label_path: Path) -> list[tuple[np.ndarray, float]]:
    """(centre LPS, radius mm) of treated aneurysms (label 2): detections there are ignored."""
    import SimpleITK as sitk

    from ..io.images import geometry_of

    img = sitk.ReadImage(str(label_path))
    lab = sitk.GetArrayFromImage(img)
    geom = geometry_of(img)
    locs = metrics.reference_locations((lab == 2).astype(np.uint8), geom.spacing_zyx)
    return [(geom.index_to_lps(r[:3]), float(r[3])) for r in locs]


def match_detections(seeds_lps: Sequence[np.ndarray], refs: Sequence[tuple[np.ndarray, float]],
                     treated: Sequence[tuple[np.ndarray, float]] = (), voi_half_mm: float | None = None
                     ) -> metrics.DetectionResult:
    """ADAM's rule in physical space: a reference is found when a seed lies within its radius; a seed
    within no radius is a FP unless it lies in a treated aneurysm. With ``voi_half_mm`` the criterion
    is instead 'the reference centre lies inside the seed's cubic VOI' (what the fine stage needs)."""
    seeds = np.asarray(seeds_lps, dtype=float).reshape(-1, 3)
    centres = np.array([c for c, _ in refs], dtype=float).reshape(-1, 3)
    radii = np.array([r for _, r in refs], dtype=float)
    if voi_half_mm is None:
        within = np.linalg.norm(seeds[:, None] - centres[None], axis=2) <= radii[None]
    else:  # VOI axes = image axes; the grid is axis-aligned with the image, LPS rotation ignored
        within = np.abs(seeds[:, None] - centres[None]).max(axis=2) <= voi_half_mm
    ignored = np.zeros(len(seeds), bool)
    for c, r in treated:
        ignored |= np.linalg.norm(seeds - np.asarray(c)[None], axis=1) <= r
    hit = within.any(axis=0)
    fp = int((~within.any(axis=1) & ~ignored).sum())
    return metrics.DetectionResult(tp=int(hit.sum()), fn=int((~hit).sum()), fp=fp, ignored=int(ignored.sum()))
