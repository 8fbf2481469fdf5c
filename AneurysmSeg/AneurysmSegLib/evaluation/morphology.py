"""Morphology table: neck, dome, ratios and site measured on phantoms against the generator's truth.

Each phantom case's ``params.json`` holds, per aneurysm, the truth written by ``phantom/truth.py``
(neck plane and width, ostium area, dome height, maximum diameter, parent and inflow artery radii,
site; the size ratio's truth takes the inflow artery, :func:`true_size_ratio`). Three
measurements per truth aneurysm, side by side:

* ``pipeline``: the aneurysm as the pipeline found it (``pipeline.segment``, ADAM's rule: a found
  component's centroid within the reference's radius), with the pipeline's own artery mask;
* ``truth sac``: the ground-truth sac mask with the same (detected) artery mask;
* ``truth masks``: ground-truth sac and vessel masks, the upper bound of the measurement itself.

The site is classified from the same landmark (the detected artery tree) in all three.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ..core.result import Morphology, Seed
from ..training.data import CaseRef
from .report import Section, fmt, markdown_table

VARIANTS = ("pipeline", "truth sac", "truth masks")


def _truth_records(ref: CaseRef) -> list[dict[str, Any]]:
    params = json.loads((ref.folder / "params.json").read_text(encoding="utf-8"))
    return [a for a in params.get("aneurysms", []) if not a.get("treated") and "neck_width_mm" in a]


def morphology_case(ref: CaseRef, models: Any, threshold: float) -> list[dict[str, Any]]:
    """One row per truth aneurysm: the truth and each variant's :class:`Morphology` (None: not found)."""
    import SimpleITK as sitk

    from ..core import pipeline
    from ..io.images import geometry_of, read_image
    from ..stages.location import site_landmark
    from ..stages.measure import measure_labels
    from ..stages.morphology import describe_aneurysms

    truth = _truth_records(ref)
    if not truth:
        return []
    image = read_image(ref.image_path)
    lab_img = sitk.ReadImage(str(ref.label_path))
    gt = sitk.GetArrayFromImage(lab_img)
    geom = geometry_of(lab_img)
    vessel_path = ref.folder / "vessels.nii.gz"
    gt_vessels = sitk.GetArrayFromImage(sitk.ReadImage(str(vessel_path))) > 0 if vessel_path.exists() else None
    pre = pipeline.prepare(image, models)
    origin = site_landmark(pre)
    res = pipeline.segment(image, models, detection_threshold=threshold, preprocessed=pre)

    comps, n = ndimage.label(gt == 1, structure=np.ones((3, 3, 3)))
    seeds = {k: Seed((0.0, 0.0, 0.0), source="truth") for k in range(1, n + 1)}
    gt_an = measure_labels(comps, geom, seeds)
    describe_aneurysms(comps, geom, gt_an, pre, origin=origin)
    gt_masks: list[Any] = [None] * len(gt_an)
    if gt_vessels is not None:
        gt_masks = measure_labels(comps, geom, seeds)
        describe_aneurysms(comps, geom, gt_masks, pre, origin=origin, vessels=gt_vessels)

    rows = []
    for t in truth:
        neck = np.asarray(t["neck_centre_lps"])
        # the ground-truth component this record belongs to: nearest centroid to the true neck
        k = int(np.argmin([np.linalg.norm(np.asarray(a.centroid_lps) - neck) for a in gt_an])) if gt_an else -1
        row: dict[str, Any] = {"case": ref.name, "truth": t}
        if k < 0:
            rows.append(row)
            continue
        ref_an = gt_an[k]
        radius = _radius(comps == ref_an.id, geom)
        row["truth sac"] = ref_an.morphology
        row["truth masks"] = gt_masks[k].morphology if gt_masks[k] is not None else None
        found = [a for a in (res.aneurysms if res is not None else [])
                 if np.linalg.norm(np.asarray(a.centroid_lps) - np.asarray(ref_an.centroid_lps)) <= radius]
        row["pipeline"] = found[0].morphology if found else None
        rows.append(row)
    return rows


def _radius(mask: np.ndarray, geom) -> float:
    """ADAM's reference radius: largest centroid-to-voxel distance plus half the largest voxel side."""
    idx = np.argwhere(mask).astype(float)
    c = idx.mean(axis=0)
    return float(np.max(np.linalg.norm((idx - c) * np.asarray(geom.spacing_zyx), axis=1)) + 0.5 * max(geom.spacing))


def true_size_ratio(truth: dict[str, Any]) -> float:
    """The generator's size ratio with the measurement's parent: the inflow artery (``inflow_radius_mm``:
    the dominant A1 of an AComm aneurysm, else the parent at the site); truth written before it
    existed has only the parent at the site."""
    radius = truth.get("inflow_radius_mm", truth["parent_radius_mm"])
    return float(truth["max_diameter_mm"]) / (2.0 * float(radius))


def scores(rows: Sequence[dict[str, Any]], variant: str) -> dict[str, Any]:
    """Agreement of one variant's measurements with the truth over the aneurysms it measured."""
    from ..stages.location import location_of, split_site

    w, h, ar, sr, group, fine, n_found, n_neck = [], [], [], [], [], [], 0, 0
    for r in rows:
        m: Morphology | None = r.get(variant)
        if m is None:
            continue
        t = r["truth"]
        n_found += 1
        key, side = split_site(t["site"])
        loc = location_of(key, side)
        group.append(m.site_group == loc.group)
        fine.append(m.site == loc.site and m.side == loc.side)
        if m.neck_width_mm is None:
            continue
        n_neck += 1
        w.append(m.neck_width_mm - t["neck_width_mm"])
        h.append(m.dome_height_mm - t["dome_height_mm"])
        ar.append(m.aspect_ratio / (t["dome_height_mm"] / t["neck_width_mm"]) - 1.0)
        if m.size_ratio is not None:
            sr.append(m.size_ratio / true_size_ratio(t) - 1.0)
        else:
            sr.append(np.inf)
    a = lambda v: np.abs(np.asarray(v, dtype=float))  # noqa: E731
    nan = float("nan")
    return {
        "aneurysms": len(rows), "measured": n_found, "with_neck": n_neck,
        "neck_width_median_abs_mm": float(np.median(a(w))) if w else nan,
        "neck_width_bias_mm": float(np.median(w)) if w else nan,
        "neck_width_within_1mm": float(np.mean(a(w) <= 1.0)) if w else nan,
        "dome_height_median_abs_mm": float(np.median(a(h))) if h else nan,
        "dome_height_bias_mm": float(np.median(h)) if h else nan,
        "aspect_ratio_within_15pct": float(np.mean(a(ar) <= 0.15)) if ar else nan,
        "size_ratio_within_20pct": float(np.mean(a(sr) <= 0.20)) if sr else nan,
        "site_group_accuracy": float(np.mean(group)) if group else nan,
        "fine_site_accuracy": float(np.mean(fine)) if fine else nan,
    }


def morphology_section(ctx: Any) -> list[Section]:
    m = ctx.models
    thr = ctx.config.detection_threshold if ctx.config.detection_threshold is not None else m.detection_threshold
    rows: list[dict[str, Any]] = []
    for g, refs in ctx.groups.items():
        for i, r in enumerate(refs):
            rows += morphology_case(r, m, thr)
            ctx.log(f"morphology {g} {i + 1}/{len(refs)}: {len(rows)} truth aneurysms so far")
    raw = {v: scores(rows, v) for v in VARIANTS}
    hdr = ["measured on", "aneurysms measured", "with a neck", "neck width: median error (mm)",
           "neck width: bias (mm)", "neck width within 1.0 mm", "dome height: median error (mm)",
           "dome height: bias (mm)", "AR within 15 %", "SR within 20 %", "site group correct", "fine site correct"]
    trows = []
    for v in VARIANTS:
        s = raw[v]
        trows.append([v, f"{s['measured']}/{s['aneurysms']}", str(s["with_neck"]),
                      fmt(s["neck_width_median_abs_mm"]), fmt(s["neck_width_bias_mm"]),
                      _pct(s["neck_width_within_1mm"]), fmt(s["dome_height_median_abs_mm"]),
                      fmt(s["dome_height_bias_mm"]), _pct(s["aspect_ratio_within_15pct"]),
                      _pct(s["size_ratio_within_20pct"]), _pct(s["site_group_accuracy"]),
                      _pct(s["fine_site_accuracy"])])
    lines = ["## Morphology (neck, dome, ratios, site) against the phantom truth", "",
             f"Detector threshold {thr:g}. Truth: the generator's exact geometry (`phantom/truth.py`). Rows: "
             "`pipeline` = aneurysms the pipeline found (ADAM's rule), measured with its own artery mask; "
             "`truth sac` = the ground-truth sac with the same detected arteries; `truth masks` = ground-truth "
             "sac and vessel masks (the measurement's upper bound). Errors are measured minus truth; ratios "
             "are relative errors (SR's truth: maximum diameter over the inflow artery's diameter, the dominant A1 for "
             "the AComm); the site is correct when group (PHASES) or fine name and side agree.", "",
             markdown_table(hdr, trows), "",
             "Targets (issue 14, aneurysms the pipeline found): neck width median error <= 0.5 mm and within "
             "1.0 mm for 80 %; dome height median error <= 0.5 mm; AR within 15 % for 80 %; SR within 20 % "
             "for 80 %; site group >= 90 %; fine site >= 75 %.", ""]
    return [Section("morphology", lines, raw)]


def _pct(v: float) -> str:
    return "n/a" if v != v else f"{100.0 * v:.0f} %"
