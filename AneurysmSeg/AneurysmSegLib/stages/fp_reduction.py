"""False-positive reduction: a few numbers per detector finding, and a logistic regression that scores them.

After detection and fine segmentation every finding has evidence the pipeline already computed: the
detector's peak and the size of its probability blob, the fine network's mean probability, the
mask's volume and compactness, the sac's brightness against the arteries around it, whether it
touches an artery (a neck) and how wide that artery is, and how close it lies to a face of the field
of view. The false positives measured on real scans sit on grey non-arterial patches, broken pieces of
thin vessels, bends and vessels cut by a face (docs/evaluation.md): each of those shows in one of
these numbers. A logistic regression (numpy; coefficients on standardised features, readable as
they are) turns them into a score in 0..1; findings below the operating threshold chosen on
validation cases are dropped. The classifier comes with the weights (the manifest's ``fpr`` entry,
file sha256-checked); weights without it keep every finding.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ..core.errors import ModelError
from ..core.geometry import Geometry
from ..core.result import Aneurysm

#: The evidence of one finding, in this order (the classifier file names them; version 1).
FEATURES = ("detector_logit", "detector_blob_mm3", "fine_mean", "volume_mm3", "compactness",
            "contrast", "neck", "parent_diameter_mm", "face_distance_mm")
FEATURE_VERSION = 1
FILE_FORMAT = "AneurysmSeg finding classifier"
#: The detector's probability is saturated near 1 on most findings: its logit is clipped here.
LOGIT_LIMIT = 12.0
#: Probability level of the detector blob whose size is a feature (independent of the threshold in use).
BLOB_LEVEL = 0.5
#: Distances to a face beyond this (mm) say nothing more: a finding this deep is not cut by the face.
FACE_CAP_MM = 10.0
#: Margin (mm) of the box around a finding in which the tissue and artery levels are measured.
SURROUND_MM = 4.0


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-9), 1.0 - 1e-9)
    return float(np.clip(math.log(p / (1.0 - p)), -LOGIT_LIMIT, LOGIT_LIMIT))


def detector_blobs(probability: np.ndarray) -> np.ndarray:
    """Components of the detector's probability >= :data:`BLOB_LEVEL` (26-connected), labelled once per scan."""
    labels, _ = ndimage.label(probability >= BLOB_LEVEL, structure=np.ones((3, 3, 3), dtype=bool))
    return labels


def blob_volume(blobs: np.ndarray, probability: np.ndarray, coarse: Geometry, position_lps: Sequence[float]) -> float:
    """Volume (mm^3) of the detector blob at a seed: the component holding the most probable voxel
    within one coarse voxel of it (a weighted centre can fall just outside its component); 0 if none."""
    centre = np.rint(coarse.lps_to_index(np.asarray(position_lps, dtype=float)[None])[0][::-1]).astype(int)
    lo = np.clip(centre - 1, 0, np.asarray(blobs.shape) - 1)
    hi = np.clip(centre + 2, 1, np.asarray(blobs.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    local = np.where(blobs[box] > 0, probability[box], -1.0)
    if local.size == 0 or local.max() < 0:
        return 0.0
    comp = int(blobs[box].flat[int(np.argmax(local))])
    return float(np.count_nonzero(blobs == comp) * np.prod(coarse.spacing))


def mask_evidence(mask: np.ndarray, zscored: np.ndarray, arteries: np.ndarray, spacing_zyx: Sequence[float],
                  image_box: tuple[slice, ...], image_shape: Sequence[int]) -> dict[str, float]:
    """Contrast of the sac against the arteries around it and distance to the field of view's faces.

    ``mask``, ``zscored`` and ``arteries`` cover the same crop (``image_box`` of an image of
    ``image_shape``). Contrast = (sac - tissue) / (artery - tissue) with medians: about 1 for a sac
    filled like its parent artery, lower for a grey patch; 0 when no artery is near (nothing to compare)."""
    sac = mask.astype(bool)
    ring = ~ndimage.binary_dilation(sac, iterations=1)
    vessel = arteries.astype(bool) & ring
    tissue = ring & ~arteries.astype(bool)
    contrast = 0.0
    if sac.any() and vessel.any() and tissue.any():
        t = float(np.median(zscored[tissue]))
        v = float(np.median(zscored[vessel]))
        s = float(np.median(zscored[sac]))
        contrast = float(np.clip((s - t) / max(v - t, 1e-3), -1.0, 3.0))
    where = np.argwhere(sac)
    lo = where.min(axis=0) + [b.start for b in image_box]
    hi = where.max(axis=0) + [b.start for b in image_box]
    gaps = np.minimum(lo, np.asarray(image_shape) - 1 - hi) * np.asarray(spacing_zyx, dtype=float)
    return {"contrast": contrast, "face_distance_mm": float(min(gaps.min(), FACE_CAP_MM))}


def finding_evidence(aneurysm: Aneurysm, fine_mean: float, blob_mm3: float, surround: dict[str, float]) -> dict[str, float]:
    """The :data:`FEATURES` of one measured finding (its morphology filled in)."""
    m = aneurysm.morphology
    d = max(float(aneurysm.max_diameter_mm), 1e-3)
    parent = m.parent_diameter_mm if m is not None and m.parent_diameter_mm is not None else 0.0
    has_neck = 1.0 if m is not None and m.neck_width_mm is not None else 0.0
    detector = aneurysm.seed.confidence if aneurysm.seed.source == "detector" else 1.0
    return {"detector_logit": _logit(detector), "detector_blob_mm3": float(blob_mm3), "fine_mean": float(fine_mean),
            "volume_mm3": float(aneurysm.volume_mm3),
            "compactness": float(min(aneurysm.volume_mm3 / (math.pi / 6.0 * d ** 3), 1.0)),
            "contrast": float(surround["contrast"]), "neck": has_neck, "parent_diameter_mm": float(parent),
            "face_distance_mm": float(surround["face_distance_mm"])}


def transform(evidence: dict[str, float]) -> np.ndarray:
    """Evidence -> the classifier's inputs: volumes on a log scale, the rest as they are."""
    row = []
    for name in FEATURES:
        v = float(evidence[name])
        row.append(math.log1p(max(v, 0.0)) if name.endswith("_mm3") else v)
    return np.asarray(row, dtype=float)


@dataclass(frozen=True)
class FindingClassifier:
    """Logistic regression on standardised :func:`transform` features: score = sigmoid(w . (x - mean) / scale + b).

    ``threshold``: findings scoring below it are dropped (the operating point chosen on validation; kept
    in the manifest's entry, like the detector's threshold, not in the coefficients' file)."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coefficients: tuple[float, ...]
    intercept: float
    threshold: float
    training: dict[str, Any]

    def score(self, evidence: dict[str, float]) -> float:
        z = (transform(evidence) - np.asarray(self.mean)) / np.asarray(self.scale)
        return float(1.0 / (1.0 + math.exp(-float(np.clip(z @ np.asarray(self.coefficients) + self.intercept, -50, 50)))))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FILE_FORMAT, "feature_version": FEATURE_VERSION, "features": list(FEATURES),
                "transform": "log1p for *_mm3, else as is; then (x - mean) / scale",
                "mean": list(self.mean), "scale": list(self.scale), "coefficients": list(self.coefficients),
                "intercept": self.intercept, "training": self.training}

    @classmethod
    def from_dict(cls, data: Any, threshold: float, where: str = "the classifier") -> "FindingClassifier":
        """Checked parse of :meth:`to_dict`'s output with the operating ``threshold``; ModelError naming
        what is wrong (another format, version or feature list)."""
        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
            raise ModelError(f"{where} is not an {FILE_FORMAT} file")
        if data.get("feature_version") != FEATURE_VERSION or list(data.get("features", [])) != list(FEATURES):
            raise ModelError(f"{where} has feature version {data.get('feature_version')!r}; this AneurysmSeg "
                             f"computes version {FEATURE_VERSION} ({', '.join(FEATURES)}): refit it with "
                             "`aneurysmseg train fpr`")
        try:
            vectors = [tuple(float(v) for v in data[k]) for k in ("mean", "scale", "coefficients")]
            intercept, threshold = float(data["intercept"]), float(threshold)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where} lacks or garbles {exc}") from exc
        if any(len(v) != len(FEATURES) for v in vectors) or min(vectors[1]) <= 0 or \
                not all(math.isfinite(x) for v in vectors for x in v) or not 0.0 <= threshold <= 1.0:
            raise ModelError(f"{where}: mean, scale (> 0) and coefficients need {len(FEATURES)} finite numbers "
                             "each and the threshold a probability")
        return cls(vectors[0], vectors[1], vectors[2], intercept, threshold, dict(data.get("training", {})))

    @classmethod
    def read(cls, path: str | Path, threshold: float) -> "FindingClassifier":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"finding classifier {path} cannot be read ({exc})") from exc
        return cls.from_dict(data, threshold, f"finding classifier {path}")


def evidence_for(aneurysms: Sequence[Aneurysm], labels: np.ndarray, geometry: Geometry, pre: Any,
                 probability: np.ndarray | None, fine_means: dict[int, float]) -> dict[int, dict[str, float]]:
    """Evidence of every finding (label -> features). ``probability``: the detector's map on the coarse
    grid (None when nothing was detected: given seeds only; then the blob size is 0)."""
    from ..preprocess import arteries_on, zscored_on
    from .morphology import crop_around

    blobs = detector_blobs(probability) if probability is not None else None
    boxes = ndimage.find_objects(np.asarray(labels))
    out: dict[int, dict[str, float]] = {}
    for a in aneurysms:
        if a.id > len(boxes) or boxes[a.id - 1] is None:
            continue
        sl, crop = crop_around(boxes[a.id - 1], labels.shape, geometry, margin_mm=SURROUND_MM)
        lab = np.asarray(labels[sl])
        z = zscored_on(pre, crop, lab.shape)
        surround = mask_evidence(lab == a.id, z, arteries_on(pre, crop, lab.shape, zscored=z), geometry.spacing_zyx,
                                 sl, labels.shape)
        blob = 0.0
        if blobs is not None and a.seed.source == "detector":
            blob = blob_volume(blobs, probability, pre.coarse.geometry, a.seed.position_lps)
        out[a.id] = finding_evidence(a, fine_means.get(a.id, 0.0), blob, surround)
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression by Newton's method (deterministic; the intercept is not
    penalised): weights and intercept for already standardised ``x`` (n, k) and 0/1 ``y``."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n, k = x.shape
    a = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(k + 1)
    penalty = np.full(k + 1, float(l2))
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ w, -50, 50)))
        grad = a.T @ (p - y) + penalty * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(penalty) + 1e-9 * np.eye(k + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-10:
            break
    return w[:-1], float(w[-1])


def apply(aneurysms: list[Aneurysm], labels: np.ndarray, evidence: dict[int, dict[str, float]],
          classifier: FindingClassifier | None) -> tuple[list[Aneurysm], np.ndarray, list[Aneurysm]]:
    """Attach evidence (and with a classifier, scores) to the findings and drop the detector findings
    scoring below its threshold; a finding the user seeded is always kept. Returns the kept findings
    renumbered 1..N in their order, the label image relabelled to match, and the dropped ones."""
    kept: list[Aneurysm] = []
    dropped: list[Aneurysm] = []
    for a in aneurysms:
        a.evidence = dict(evidence.get(a.id, {}))
        if classifier is not None and a.evidence and a.seed.source == "detector":
            a.finding_score = round(classifier.score(a.evidence), 4)
            if a.finding_score < classifier.threshold:
                dropped.append(a)
                continue
        kept.append(a)
    if not dropped:
        return kept, labels, dropped
    lut = np.zeros(int(labels.max()) + 1, dtype=labels.dtype)
    for new, a in enumerate(kept, start=1):
        lut[a.id] = new
        a.id = new
    for a in dropped:
        a.id = 0
    return kept, lut[labels], dropped
