"""Where an aneurysm sits: the parent artery site with its PHASES group, the finer name, and the side.

No vessel labelling is needed: positions are taken relative to one landmark of the half-maximum artery
tree (:func:`site_landmark`), the midpoint of the two internal carotids: of the thick trunks (inscribed radius >= ``THICK_MM``
over at least ``TRUNK_MIN_LENGTH_MM`` and no thicker than ``TRUNK_MAX_MM``), the two that mirror each
other best across the tree's midline (:func:`carotid_pair`). Every TOF-MRA slab of the circle of Willis
holds them, they keep their place when communicating arteries are absent or hypoplastic, and a venous
sinus the artery mask kept has no mirror image at their height (the centroid of all trunks, used when
no pair is found, moved by about 30 mm on the bundled sample). Left-right comes from the side of that
landmark, in the image's LPS frame. A small Gaussian classifier (one diagonal Gaussian per site, with
the site's frequency as prior) on the neck centre's offset (|left-right|, anterior-posterior,
inferior-superior, in mm) names the site; it is fitted on phantom cases whose generator knows each
aneurysm's site (:func:`fit_sites`, table in :mod:`.site_table`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from ..core.geometry import Geometry

THICK_MM = 1.4  #: inscribed radius (mm) above which an artery counts as a trunk (ICA, basilar, vertebral)
#: a trunk is long: thick parts shorter than this (bounding-box diagonal) are blobs, e.g. a large
#: aneurysm the artery mask took in, which would pull the landmark towards itself
TRUNK_MIN_LENGTH_MM = 10.0
#: nor is a trunk thicker than this (inscribed radius, mm; carotids are at most about 2.7): thicker
#: parts, with a margin of this radius around them, are large aneurysms or venous sinuses that the
#: intensity-based artery mask kept
TRUNK_MAX_MM = 3.0
#: the internal carotids: two thick trunks, each this far off the midline at least, this far apart
#: (mm, L-R), and within this distance of each other in A-P and I-S (phantoms and adults: 20-45 mm apart)
PAIR_LATERAL_MM = 5.0
PAIR_SPAN_MM = (12.0, 70.0)
PAIR_TOLERANCE_MM = 15.0
MIDLINE_MM = 3.0  #: within this distance of the midline a lateral site has no reliable side
ACA = "ACA/AComm/PComm"

#: generator site key -> (name radiologists use, PHASES site group, lateral?)
SITES: dict[str, tuple[str, str, bool]] = {
    "AcomA": ("AComm", ACA, False),
    "BA_tip": ("basilar tip", "posterior", False),
    "Pericallosal": ("pericallosal", ACA, True),
    "bend_A2": ("A2", ACA, True),
    "MCA_bif": ("MCA bifurcation", "MCA", True),
    "bend_M1": ("MCA M1", "MCA", True),
    "ICA_term": ("ICA terminus", "ICA", True),
    "ICA_PcomA": ("ICA-PComm", ACA, True),
    "bend_ICA": ("ICA siphon", "ICA", True),
}


@dataclass(frozen=True)
class Location:
    key: str  #: site key (generator name without side)
    site: str  #: fine name, e.g. "MCA bifurcation"
    group: str  #: PHASES site group: ICA, MCA, ACA/AComm/PComm, posterior
    side: str  #: "left", "right" or "" (midline sites)

    @property
    def label(self) -> str:
        """"right MCA bifurcation", "AComm"."""
        return f"{self.side} {self.site}".strip()


def split_site(name: str) -> tuple[str, str]:
    """Generator site name -> (key, side): "MCA_bif_L" -> ("MCA_bif", "left")."""
    for suffix, side in (("_L", "left"), ("_R", "right")):
        if name.endswith(suffix):
            return name[: -len(suffix)], side
    return name, ""


def location_of(key: str, side: str) -> Location:
    site, group, lateral = SITES.get(key, (key, "", True))
    return Location(key, site, group, side if lateral else "")


def site_landmark(pre: Any) -> np.ndarray | None:
    """The landmark sites are named from: :func:`trunk_origin` of the scan's half-maximum artery tree.

    Not the learnt tree the detector uses: the learnt probability's walls sit inside the carotids', so
    their inscribed radius hovers at ``THICK_MM`` and the thick trunks break into pieces whose pair
    moves from case to case (on the 58 fitting phantoms up to 23 mm in I-S, and one case with no pair;
    leave-one-case-out site group 0.86 against 0.94 on the half-maximum tree, fine site 0.71 against
    0.81). ``pre``: a :class:`preprocess.Preprocessed`.
    """
    return trunk_origin(pre.half_maximum_tree, pre.coarse.geometry)


def trunk_origin(arteries: np.ndarray, geometry: Geometry, thick_mm: float = THICK_MM) -> np.ndarray | None:
    """LPS centroid of the artery voxels at least ``thick_mm`` from the wall (None without trunks)."""
    arteries = np.asarray(arteries, dtype=bool)
    if not arteries.any():
        return None
    # work inside the arteries' box plus one background voxel: the same distances, a smaller grid
    where = np.argwhere(arteries)
    offset = np.maximum(where.min(axis=0) - 1, 0)
    stop = np.minimum(where.max(axis=0) + 2, arteries.shape)
    arteries = arteries[tuple(slice(int(a), int(b)) for a, b in zip(offset, stop))]
    edt = ndimage.distance_transform_edt(arteries, sampling=geometry.spacing_zyx)
    sp = np.asarray(geometry.spacing_zyx)
    thick = edt >= thick_mm
    too_thick = edt > TRUNK_MAX_MM
    if too_thick.any():  # the blob around each too-thick core goes, the trunks it touches stay
        reach = np.ceil((TRUNK_MAX_MM + sp.max()) / sp).astype(int)
        grid = np.ogrid[tuple(slice(-r, r + 1) for r in reach)]
        ball = sum((g * s) ** 2 for g, s in zip(grid, sp)) <= (TRUNK_MAX_MM + sp.max()) ** 2
        # dilate only inside the box of the too-thick cores grown by the ball's reach: the same voxels
        # as dilating the whole grid, in a fraction of the time (cores are few and small)
        idx = np.argwhere(too_thick)
        lo, hi = np.maximum(idx.min(axis=0) - reach, 0), np.minimum(idx.max(axis=0) + reach + 1, too_thick.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        thick[box] &= ~ndimage.binary_dilation(too_thick[box], structure=ball)
    parts, n = ndimage.label(thick, structure=np.ones((3, 3, 3)))
    keep = np.zeros(n + 1, dtype=bool)
    for k, box in enumerate(ndimage.find_objects(parts), start=1):
        extent = np.array([s.stop - s.start - 1 for s in box]) * sp
        keep[k] = float(np.linalg.norm(extent)) >= TRUNK_MIN_LENGTH_MM
    idx = np.argwhere(keep[parts])
    if len(idx) < 10:
        return None
    labels = parts[tuple(idx.T)]
    centres = {int(k): geometry.index_to_lps((idx[labels == k] + offset)[:, ::-1].mean(axis=0))
               for k in np.unique(labels)}
    midline = float(geometry.index_to_lps((where + 0.0)[:, ::-1].mean(axis=0))[0])
    pair = carotid_pair(centres, midline)
    if pair is not None:
        return pair
    return geometry.index_to_lps((idx + offset)[:, ::-1].mean(axis=0))


def carotid_pair(centres: Mapping[int, np.ndarray], midline_x: float) -> np.ndarray | None:
    """Midpoint (LPS) of the two trunks that mirror each other best across the midline, the internal
    carotids; None when no two do. Other thick parts (a venous sinus the artery mask kept, an unpaired
    vessel) then move nothing: a midline sinus has no partner, a transverse sinus none at its height.

    ``centres``: part -> LPS centroid; ``midline_x``: the L-R coordinate of the artery tree's centroid.
    A pair lies on both sides (each at least ``PAIR_LATERAL_MM`` off the midline), ``PAIR_SPAN_MM``
    apart, within ``PAIR_TOLERANCE_MM`` of each other in A-P and I-S; the best has the smallest sum of
    its A-P and I-S differences and its asymmetry about the midline.
    """
    best, best_cost = None, math.inf
    pts = list(centres.values())
    for i, a in enumerate(pts):
        for b in pts[i + 1:]:
            da, db = a[0] - midline_x, b[0] - midline_x
            if da * db >= 0 or min(abs(da), abs(db)) < PAIR_LATERAL_MM:
                continue
            if not PAIR_SPAN_MM[0] <= abs(a[0] - b[0]) <= PAIR_SPAN_MM[1]:
                continue
            dy, dz = abs(a[1] - b[1]), abs(a[2] - b[2])
            if max(dy, dz) > PAIR_TOLERANCE_MM:
                continue
            cost = dy + dz + abs(da + db)
            if cost < best_cost:
                best, best_cost = (a + b) / 2.0, cost
    return best


def site_features(point_lps: Sequence[float], origin_lps: Sequence[float]) -> tuple[np.ndarray, str]:
    """(|L-R offset|, A-P offset, I-S offset) of a point from the trunk origin, and its side."""
    d = np.asarray(point_lps, dtype=float) - np.asarray(origin_lps, dtype=float)
    side = "left" if d[0] > MIDLINE_MM else "right" if d[0] < -MIDLINE_MM else ""
    return np.array([abs(d[0]), d[1], d[2]]), side


def fit_sites(samples: Iterable[tuple[str, Sequence[float]]], min_sd_mm: float = 2.0) -> dict[str, dict]:
    """Per site key: mean and SD of the features and the share of samples (the prior)."""
    by_key: dict[str, list[np.ndarray]] = {}
    for key, feat in samples:
        by_key.setdefault(key, []).append(np.asarray(feat, dtype=float))
    total = sum(len(v) for v in by_key.values())
    table = {}
    for key, feats in sorted(by_key.items()):
        f = np.stack(feats)
        sd = f.std(axis=0, ddof=1) if len(f) > 2 else np.full(3, 2 * min_sd_mm)
        table[key] = {"mean": [round(float(v), 2) for v in f.mean(axis=0)],
                      "sd": [round(float(v), 2) for v in np.maximum(sd, min_sd_mm)],
                      "prior": round(len(f) / total, 4), "n": len(f)}
    return table


def classify_site(features: np.ndarray, table: Mapping[str, Mapping]) -> str:
    """The site key with the highest posterior under the fitted diagonal Gaussians."""
    best, best_score = "", -math.inf
    for key, t in table.items():
        mean, sd = np.asarray(t["mean"]), np.asarray(t["sd"])
        score = math.log(t["prior"]) - float(np.sum(np.log(sd) + 0.5 * ((features - mean) / sd) ** 2))
        if score > best_score:
            best, best_score = key, score
    return best


def locate(point_lps: Sequence[float], origin_lps: Sequence[float] | None,
           table: Mapping[str, Mapping] | None = None) -> Location | None:
    """Site of an aneurysm whose neck (or centroid) is at ``point_lps``; None without a trunk origin."""
    if origin_lps is None:
        return None
    if table is None:
        from .site_table import SITE_TABLE as table
    feats, side = site_features(point_lps, origin_lps)
    return location_of(classify_site(feats, table), side)
