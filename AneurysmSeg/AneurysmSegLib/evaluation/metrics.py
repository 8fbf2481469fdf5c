"""Evaluation metrics with the ADAM 2020 challenge definitions (Timmins et al. 2021).

Everything works on numpy ``[z, y, x]`` label arrays plus ``spacing_zyx`` in millimetres. Reference
labels follow the ADAM layout: 0 background, 1 (untreated) aneurysm, 2 treated aneurysm. Label 2 is
ignored everywhere: its voxels are masked out of both masks before DSC, HD and VS, and a predicted
object whose centre of mass falls inside it counts neither as a true nor as a false positive.

Edge cases (chosen so that averages over cases stay meaningful and documented):

* both masks empty: DSC = 1, VS = 1, HD = HD95 = 0 (nothing to find, nothing found);
* exactly one mask empty: DSC = 0, VS = 0, HD = HD95 = NaN (a distance to nothing is undefined;
  ADAM reports NaN too). :func:`aggregate` averages finite values only and reports how many there were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np
from scipy import ndimage

from ..core.errors import InputError

Spacing = Sequence[float]

#: ITK's ``BinaryErode`` with a ball of radius 1 (what ADAM used): the 18-neighbourhood.
BORDER_STRUCTURE = ndimage.generate_binary_structure(3, 2)
#: Connected components of predictions are 26-connected, as in ADAM's evaluation.
COMPONENT_STRUCTURE = ndimage.generate_binary_structure(3, 3)
TREATED_LABEL = 2
SCORE_KEYS = ("dsc", "hd", "hd95", "vs")


# ------------------------------------------------------------------------------------ input checks


def _binary(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask) > 0


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> None:
    if np.shape(pred) != np.shape(ref):
        raise InputError(f"prediction {np.shape(pred)} and reference {np.shape(ref)} differ in shape; "
                         "resample the prediction into the reference geometry first")
    if np.ndim(pred) != 3:
        raise InputError(f"metrics need 3D [z, y, x] arrays, got shape {np.shape(pred)}")


def _check_spacing(spacing_zyx: Spacing) -> np.ndarray:
    s = np.asarray(spacing_zyx, dtype=float)
    if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InputError(f"spacing_zyx must be three positive numbers (mm), got {spacing_zyx}")
    return s


# ------------------------------------------------------------------------------------ overlap scores


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """DSC = 2|A∩B| / (|A| + |B|) on the non-zero voxels; 1 when both are empty."""
    _check_pair(pred, ref)
    a, b = _binary(pred), _binary(ref)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def volumetric_similarity(pred: np.ndarray, ref: np.ndarray) -> float:
    """VS = 1 - ||A| - |B|| / (|A| + |B|); 1 when both are empty. Blind to position by design."""
    _check_pair(pred, ref)
    va, vb = int(_binary(pred).sum()), int(_binary(ref).sum())
    return 1.0 if va + vb == 0 else 1.0 - abs(va - vb) / (va + vb)


# ---------------------------------------------------------------------------------------- distances


def border(mask: np.ndarray) -> np.ndarray:
    """Outer shell of a mask: the mask minus its erosion (ITK ball radius 1 = 18-neighbourhood).

    Outside the array counts as background, so a mask touching the array edge keeps that face.
    """
    m = _binary(mask)
    return m & ~ndimage.binary_erosion(m, structure=BORDER_STRUCTURE)


def _directed_distances(src: np.ndarray, dst: np.ndarray, spacing_zyx: np.ndarray) -> np.ndarray:
    """Distance (mm) from every ``src`` voxel to the nearest ``dst`` voxel (both non-empty)."""
    return ndimage.distance_transform_edt(~dst, sampling=spacing_zyx)[src]


def hausdorff(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Spacing) -> tuple[float, float]:
    """(HD, HD95) in mm between the borders of two masks, ADAM's modified definition.

    HD is the largest border-to-border distance in either direction; HD95 the larger of the two
    directed 95th percentiles (numpy's linear interpolation, as ADAM). Both empty: (0, 0); exactly
    one empty: (NaN, NaN).
    """
    _check_pair(pred, ref)
    sampling = _check_spacing(spacing_zyx)
    a, b = border(pred), border(ref)
    if not a.any() and not b.any():
        return 0.0, 0.0
    if not a.any() or not b.any():
        return float("nan"), float("nan")
    # Every border voxel lies in the union's bounding box, so the distance maps cropped to it are exact.
    box = ndimage.find_objects((a | b).astype(np.uint8))[0]
    a, b = a[box], b[box]
    d_ab = _directed_distances(a, b, sampling)
    d_ba = _directed_distances(b, a, sampling)
    hd = max(d_ab.max(), d_ba.max())
    hd95 = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    return float(hd), float(hd95)


# ------------------------------------------------------------------------------- segmentation scores


def masked_pair(pred: np.ndarray, ref_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binary prediction and reference with treated-aneurysm voxels (label 2) removed from both."""
    _check_pair(pred, ref_labels)
    ref_labels = np.asarray(ref_labels)
    keep = ref_labels != TREATED_LABEL
    return _binary(pred) & keep, (ref_labels > 0) & keep


def segmentation_scores(pred: np.ndarray, ref_labels: np.ndarray, spacing_zyx: Spacing) -> dict[str, float]:
    """DSC, HD, HD95 (mm) and VS of a prediction (any non-zero = aneurysm) against ADAM labels."""
    p, r = masked_pair(pred, ref_labels)
    hd, hd95 = hausdorff(p, r, spacing_zyx)
    return {"dsc": dice(p, r), "hd": hd, "hd95": hd95, "vs": volumetric_similarity(p, r)}


# ----------------------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class DetectionResult:
    """Per-case detection counts under ADAM's rule, plus what they were computed from."""

    tp: int
    fn: int
    fp: int
    ignored: int = 0  # predicted objects centred in a treated aneurysm (label 2)
    predicted_xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)), compare=False)
    reference: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)), compare=False)

    @property
    def n_reference(self) -> int:
        return self.tp + self.fn

    def __str__(self) -> str:
        """The counts only (progress logs; the arrays stay in ``repr``)."""
        return f"tp={self.tp} fn={self.fn} fp={self.fp}" + (f" ignored={self.ignored}" if self.ignored else "")


def read_locations(path: str | Path) -> np.ndarray:
    """Read an ADAM ``location.txt``: one ``x, y, z, radius`` line per untreated aneurysm -> (N, 4)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    rows = [ln for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    try:
        table = np.array([[float(v) for v in ln.replace(",", " ").split()] for ln in rows], dtype=float)
    except ValueError:
        raise InputError(f"{path.name}: every line must be four numbers 'x, y, z, radius'") from None
    table = table.reshape(0, 4) if table.size == 0 else table
    if table.ndim != 2 or table.shape[1] != 4 or not np.all(np.isfinite(table)):
        raise InputError(f"{path.name}: every line must be four numbers 'x, y, z, radius'")
    return table


def reference_locations(ref_labels: np.ndarray, spacing_zyx: Spacing) -> np.ndarray:
    """Centre (voxel x, y, z) and maximum radius (mm) of each untreated reference aneurysm (label 1).

    The radius is the largest distance from the centre of mass to a voxel centre of the component,
    plus half the largest voxel size so that the component's outer voxels lie inside it.
    """
    sampling = _check_spacing(spacing_zyx)
    ref_labels = np.asarray(ref_labels)
    mask = (ref_labels > 0) & (ref_labels != TREATED_LABEL)
    lab, n = ndimage.label(mask, structure=COMPONENT_STRUCTURE)
    rows = []
    for i, box in enumerate(ndimage.find_objects(lab), start=1):
        idx = np.argwhere(lab[box] == i) + [s.start for s in box]
        centre = idx.mean(axis=0)
        radius = np.sqrt((((idx - centre) * sampling) ** 2).sum(axis=1)).max() + 0.5 * sampling.max()
        rows.append([*centre[::-1], radius])
    return np.array(rows, dtype=float).reshape(n, 4)


def predicted_centres(pred: np.ndarray) -> np.ndarray:
    """Centre of mass (voxel x, y, z) of every predicted object, (M, 3).

    An object is a 26-connected component of one label value: a binary mask gives its connected
    components, and touching aneurysms with different labels stay separate objects.
    """
    pred = np.asarray(pred)
    lab, _ = ndimage.label(pred > 0, structure=COMPONENT_STRUCTURE)
    centres: list[np.ndarray] = []
    for i, box in enumerate(ndimage.find_objects(lab), start=1):
        sub, comp = pred[box], lab[box] == i
        offset = np.array([s.start for s in box], dtype=float)
        for value in np.unique(sub[comp]):
            parts, m = ndimage.label(comp & (sub == value), structure=COMPONENT_STRUCTURE)
            for c in ndimage.center_of_mass(parts > 0, parts, range(1, m + 1)):
                centres.append((np.asarray(c) + offset)[::-1])
    return np.array(centres, dtype=float).reshape(-1, 3)


def detection(pred: np.ndarray, ref_labels: np.ndarray, spacing_zyx: Spacing,
              locations: np.ndarray | None = None,
              radius_unit: Literal["voxel", "mm"] = "voxel") -> DetectionResult:
    """ADAM detection counts for one case.

    A reference aneurysm is found (TP) when the centre of mass of some predicted object lies within its
    maximum radius; otherwise it is a FN. A predicted object within no reference radius is a FP,
    unless its centre of mass lies in a treated aneurysm (label 2): then it is only counted as
    ``ignored``. ``locations`` are ``location.txt`` rows (voxel x, y, z, radius); distances are
    measured in voxel units when ``radius_unit == "voxel"`` and in mm when ``"mm"``. Without
    ``locations`` the reference aneurysms are the label-1 components (:func:`reference_locations`, mm).
    """
    _check_pair(pred, ref_labels)
    sampling = _check_spacing(spacing_zyx)
    ref_labels = np.asarray(ref_labels)
    if locations is None:
        reference, scale = reference_locations(ref_labels, sampling), sampling[::-1]
    else:
        if radius_unit not in ("voxel", "mm"):
            raise InputError(f"radius_unit must be 'voxel' or 'mm', got {radius_unit!r}")
        reference = np.asarray(locations, dtype=float).reshape(-1, 4)
        scale = np.ones(3) if radius_unit == "voxel" else sampling[::-1]
    centres = predicted_centres(pred)

    nearest = np.clip(np.rint(centres[:, ::-1]).astype(int), 0, np.array(ref_labels.shape) - 1)
    treated = ref_labels[tuple(nearest.T)] == TREATED_LABEL if len(centres) else np.zeros(0, bool)
    counted = centres[~treated]
    # within[i, j]: predicted object i lies inside reference aneurysm j's radius (xyz scaled per unit)
    offsets = (counted[:, None, :] - reference[None, :, :3]) * scale
    within = np.sqrt((offsets ** 2).sum(axis=2)) <= reference[None, :, 3]
    tp = int(within.any(axis=0).sum())
    return DetectionResult(tp=tp, fn=len(reference) - tp, fp=int((~within.any(axis=1)).sum()),
                           ignored=int(treated.sum()), predicted_xyz=centres, reference=reference)


# ------------------------------------------------------------------------------------- aggregation


def _ratio(num: int, den: int) -> float:
    return num / den if den > 0 else float("nan")


def aggregate(detections: Sequence[DetectionResult],
              scores: Iterable[Mapping[str, float]] = ()) -> dict[str, float]:
    """Summary over cases: pooled sensitivity, FP per case, PPV, and mean/SD of each segmentation score.

    Sensitivity = ΣTP / (ΣTP + ΣFN) (NaN without reference aneurysms), PPV = ΣTP / (ΣTP + ΣFP) (NaN
    without detections). For every score key, ``<key>`` is the mean over cases with a finite value,
    ``<key>_sd`` the sample standard deviation and ``<key>_n`` how many cases were finite.
    """
    tp = sum(d.tp for d in detections)
    fn = sum(d.fn for d in detections)
    fp = sum(d.fp for d in detections)
    out: dict[str, float] = {
        "cases": len(detections), "tp": tp, "fn": fn, "fp": fp,
        "sensitivity": _ratio(tp, tp + fn), "fp_per_case": _ratio(fp, len(detections)), "ppv": _ratio(tp, tp + fp),
    }
    scores = list(scores)
    for key in sorted({k for s in scores for k in s}, key=lambda k: (k not in SCORE_KEYS, k)):
        values = np.array([s.get(key, np.nan) for s in scores], dtype=float)
        finite = values[np.isfinite(values)]
        out[key] = float(finite.mean()) if finite.size else float("nan")
        out[f"{key}_sd"] = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
        out[f"{key}_n"] = int(finite.size)
    return out


def rank_methods(table: Mapping[str, Mapping[str, float]],
                 higher_is_better: Mapping[str, bool]) -> dict[str, float]:
    """Timmins-style ranking score per method (lower is better), sorted best first.

    For each metric in ``higher_is_better`` the methods' values are min-max normalised to [0, 1] with
    0 for the best and 1 for the worst (all 0 when every method ties); a missing or NaN value counts
    as worst. The score is the mean over metrics.
    """
    if not table or not higher_is_better:
        raise InputError("ranking needs at least one method and one metric")
    methods = list(table)
    total = np.zeros(len(methods))
    for metric, higher in higher_is_better.items():
        values = np.array([table[m].get(metric, np.nan) for m in methods], dtype=float)
        finite = np.isfinite(values)
        if not finite.any():
            raise InputError(f"no method has a value for metric '{metric}'")
        lo, hi = values[finite].min(), values[finite].max()
        norm = np.zeros(len(methods)) if hi == lo else ((hi - values) if higher else (values - lo)) / (hi - lo)
        total += np.where(finite, norm, 1.0)
    scores = total / len(higher_is_better)
    order = sorted(range(len(methods)), key=lambda i: (scores[i], i))
    return {methods[i]: float(scores[i]) for i in order}
