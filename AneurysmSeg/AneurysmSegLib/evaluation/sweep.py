"""The detector threshold swept over the whole pipeline, and the operating threshold chosen from it.

One preprocessing and one detector pass per case (the expensive part); every threshold then only
turns the same probability map into seeds (:func:`stages.detect.seeds_from_probability`), runs the
fine stage on the seeds not seen at an earlier threshold and pastes the masks (what
``pipeline.segment`` does), so a sweep of a dozen thresholds costs little more than one run. The
choice rule (:func:`choose_threshold`) is the clinical one: sensitivity first, with at most
:data:`MAX_FP_PER_CASE` false positives per case where any threshold achieves that.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from ..training.data import CaseRef
from . import metrics
from .report import Section, fmt, markdown_table

#: thresholds of the sweep: the detectors' probabilities crowd near 1, so the grid does too
SWEEP_THRESHOLDS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)
#: the false positives per case an operating threshold may cost (issue 11's target)
MAX_FP_PER_CASE = 0.5


def sweep_case(ref: CaseRef, models: Any, thresholds: Sequence[float] = SWEEP_THRESHOLDS,
               flip: bool = False) -> dict[str, Any]:
    """Whole-volume detection and scores of one case at every threshold, from one detector pass."""
    import SimpleITK as sitk

    from ..io import images as io
    from ..preprocess import preprocess
    from ..stages import detect as det
    from ..stages import refine

    image = io.read_image(ref.image_path)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(ref.label_path)))
    sp = image.geometry.spacing_zyx
    has_aneurysm = bool(((labels > 0) & (labels != metrics.TREATED_LABEL)).any())
    t0 = time.time()
    pre = preprocess(image, coarse_spacing=models.coarse_spacing[0])
    merge_mm = models.voi_size * models.fine_spacing[0] / 4
    t1 = time.time()
    found = det.detect(pre, models.coarse, segment_out=None, context=models.coarse_context, device=models.device,
                       threshold=max(thresholds), merge_distance_mm=merge_mm, flip=flip)
    detect_seconds = time.time() - t1
    batch = 2 if models.device.type == "cuda" else 1
    vois: dict[tuple[float, ...], refine.VoiPrediction] = {}  # seed position -> its VOI's prediction
    out: dict[str, Any] = {"case": ref.name, "detect_seconds": detect_seconds, "by_threshold": {}}
    for thr in sorted({float(t) for t in thresholds}):
        seeds = det.seeds_from_probability(found.probability, found.geometry, thr, merge_distance_mm=merge_mm)
        new = [s for s in seeds if tuple(s.position_lps) not in vois]
        for p in refine.predict_vois(pre, models.fine, new, voi_size=models.voi_size, spacing=models.fine_spacing[0],
                                     channels=models.fine_channels, device=models.device, batch_size=batch):
            vois[tuple(p.seed.position_lps)] = p
        predictions = [refine.VoiPrediction(s, vois[tuple(s.position_lps)].geometry,
                                            vois[tuple(s.position_lps)].probability) for s in seeds]
        pred = refine.paste(predictions, image.geometry, image.array.shape).labels
        row: dict[str, Any] = {"detection": metrics.detection(pred, labels, sp), "seeds": len(seeds)}
        if has_aneurysm:
            row["scores"] = metrics.segmentation_scores((pred > 0).astype(np.uint8), labels, sp)
        out["by_threshold"][thr] = row
    out["seconds"] = time.time() - t0
    return out


def sweep_summary(rows: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """Whole-volume figures of the cases ``rows`` at one threshold of their sweep."""
    picked = [r["by_threshold"][threshold] for r in rows]
    agg = metrics.aggregate([p["detection"] for p in picked], [p["scores"] for p in picked if "scores" in p])
    agg["threshold"] = threshold
    agg["seeds_per_case"] = float(np.mean([p["seeds"] for p in picked])) if picked else float("nan")
    return agg


def choose_threshold(summaries: Sequence[dict[str, Any]], max_fp_per_case: float = MAX_FP_PER_CASE) -> dict[str, Any]:
    """The operating point: among thresholds with at most ``max_fp_per_case`` false positives per case,
    the highest sensitivity (then fewer false positives, then the higher threshold); when none is
    that clean, the fewest false positives (then the higher sensitivity and threshold)."""
    if not summaries:
        raise ValueError("no thresholds to choose from")

    def sens(s: dict[str, Any]) -> float:
        return float(s["sensitivity"]) if np.isfinite(s["sensitivity"]) else -1.0

    ok = [s for s in summaries if s["fp_per_case"] <= max_fp_per_case]
    if ok:
        return max(ok, key=lambda s: (sens(s), -s["fp_per_case"], s["threshold"]))
    return max(summaries, key=lambda s: (-s["fp_per_case"], sens(s), s["threshold"]))


def sweep_section(ctx: Any) -> list[Section]:
    """One row per data folder and threshold, and the operating threshold :func:`choose_threshold` picks."""
    thresholds = tuple(ctx.config.thresholds or SWEEP_THRESHOLDS)
    flip = bool(ctx.config.detector_flip)
    res: dict[str, list[dict[str, Any]]] = {}
    for g, refs in ctx.groups.items():
        rows = []
        for i, r in enumerate(refs):
            rows.append(sweep_case(r, ctx.models, thresholds, flip=flip))
            best = rows[-1]["by_threshold"]
            ctx.log(f"sweep {g} {i + 1}/{len(refs)}: " + " ".join(
                f"{t:g}:{best[t]['detection'].tp}/{best[t]['detection'].n_reference}+{best[t]['detection'].fp}"
                for t in sorted(best)) + f" ({rows[-1]['seconds']:.0f} s)")
        res[g] = rows
    groups = dict(res)
    if len(groups) > 1:
        groups["all"] = [r for rows in res.values() for r in rows]
    hdr = ["data", "threshold", "cases", "aneurysms", "found", "sensitivity", "FP/case", "PPV", "DSC", "HD95 (mm)",
           "seeds/case"]
    trows, raw, chosen = [], {}, []
    for g, rows in groups.items():
        summaries = [sweep_summary(rows, float(t)) for t in sorted({float(t) for t in thresholds})]
        pick = choose_threshold(summaries)
        for a in summaries:
            mark = " **(chosen)**" if a is pick else ""
            trows.append([g, f"{a['threshold']:g}{mark}", fmt(a["cases"]), fmt(a["tp"] + a["fn"]), fmt(a["tp"]),
                          fmt(a["sensitivity"]), fmt(a["fp_per_case"]), fmt(a["ppv"]), fmt(a.get("dsc")),
                          fmt(a.get("hd95"), 1), fmt(a["seeds_per_case"], 1)])
        detect_s = float(np.mean([r["detect_seconds"] for r in rows]))
        total_s = float(np.mean([r["seconds"] for r in rows]))
        raw[g] = {"summaries": summaries, "chosen": pick["threshold"], "detect_seconds_per_case": detect_s,
                  "seconds_per_case": total_s,
                  "cases": [{"case": r["case"], "detect_seconds": r["detect_seconds"], "seconds": r["seconds"],
                             "by_threshold": {t: {"tp": v["detection"].tp, "fn": v["detection"].fn,
                                                  "fp": v["detection"].fp, "seeds": v["seeds"],
                                                  **v.get("scores", {})} for t, v in r["by_threshold"].items()}}
                            for r in rows]}
        chosen.append(f"{g}: **{pick['threshold']:g}** (sensitivity {fmt(pick['sensitivity'])}, "
                      f"{fmt(pick['fp_per_case'])} FP/case; detector {detect_s:.1f} s/case, whole sweep "
                      f"{total_s:.1f} s/case)")
    lines = ["## Detector threshold swept over the whole pipeline", "",
             f"One preprocessing and one detector pass per case{' with left-right flip test-time augmentation' if flip else ''}, "
             "then for each threshold the seeds, the fine stage and the pasted masks of `pipeline.segment` "
             "(`evaluation/sweep.py`). Detection by ADAM's rule on the input grid; DSC and HD95 over cases with "
             f"aneurysms. Chosen: the highest sensitivity with at most {MAX_FP_PER_CASE:g} false positives per "
             "case (then fewer false positives, then the higher threshold); when no threshold is that clean, the "
             "fewest false positives."
             + (" The weights' finding classifier (false-positive reduction) is not applied in this sweep."
                if getattr(ctx.models, "finding_classifier", None) is not None else ""),
             "", markdown_table(hdr, trows), "", "Operating threshold: " + "; ".join(chosen) + ".", ""]
    return [Section("sweep", lines, raw)]
