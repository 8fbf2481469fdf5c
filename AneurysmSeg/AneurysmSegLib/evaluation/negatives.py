"""False positives on scans without known aneurysms (``aneurysmseg evaluate --negatives SCAN ...``).

Real TOF-MRA with aneurysm labels are rare; real scans in which no aneurysm is known are not. Every
finding the pipeline reports on such a scan counts as a false positive. The table lists each one with
what a reader needs to judge it (size, the detector's confidence, the site the morphology names, the
LPS position to look at), because a false positive on an infundibulum or a tight bend is a different
failure from one in the skull base.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .report import Section, fmt, markdown_table


def scan_name(path: str | Path) -> str:
    """The file's name without its image extensions (``chris_MRA.nii.gz`` -> ``chris_MRA``)."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def negative_case(path: str | Path, models: Any, threshold: float | None = None, flip: bool = False,
                  screen: bool = True) -> dict[str, Any]:
    """``pipeline.segment`` on one scan without known aneurysms: every finding is a false positive; the
    findings the false-positive reduction dropped are listed too (``dropped``), with their scores."""
    from ..io import images as io
    from .tables import segment_with_and_without_screening

    image = io.read_image(Path(path))
    t = time.time()
    res, before = segment_with_and_without_screening(image, models, screen, detection_threshold=threshold,
                                                     detector_flip=flip)
    secs = time.time() - t
    assert res is not None  # nothing cancels here
    found = []
    for a in list(res.aneurysms) + list(res.rejected):
        m = a.morphology
        found.append({"id": a.id, "centroid_lps": [round(float(v), 1) for v in a.centroid_lps],
                      "volume_mm3": float(a.volume_mm3), "max_diameter_mm": float(a.max_diameter_mm),
                      "confidence": float(a.confidence), "site": m.location if m is not None else "",
                      "finding_score": a.finding_score, "dropped": a.id == 0})
    kept = [f for f in found if not f["dropped"]]
    return {"scan": scan_name(path), "path": str(path), "false_positives": len(kept), "findings": found,
            "without_fp_reduction": len(found) if before is not None else None,
            "seeds": len(res.seeds), "input": res.input, "warnings": list(res.warnings), "seconds": secs}


def negatives_section(ctx: Any) -> list[Section]:
    """One row per scan without known aneurysms, then one per false positive."""
    rows = ctx.negative_results()
    screened = bool(rows) and all(r.get("without_fp_reduction") is not None for r in rows)
    hdr = ["scan", "field of view found", "warned", "false positives"] + \
        (["without the false-positive reduction"] if screened else []) + ["s"]
    trows = [[r["scan"], str(r["input"].get("field_of_view", "?")), "yes" if r["warnings"] else "no",
              str(r["false_positives"])] + ([str(r["without_fp_reduction"])] if screened else []) + [fmt(r["seconds"], 1)]
             for r in rows]
    total = sum(r["false_positives"] for r in rows)
    trows.append([f"**all ({len(rows)} scans)**", "", str(sum(1 for r in rows if r["warnings"])), str(total)]
                 + ([str(sum(r["without_fp_reduction"] for r in rows))] if screened else []) + [""])
    lines = ["## Scans without known aneurysms: false positives", "",
             f"Detector threshold {ctx.threshold():g}{', left-right flip test-time augmentation' if ctx.config.detector_flip else ''}. "
             "`pipeline.segment` on each scan; every finding is a false positive (no aneurysm is known in these "
             "scans)." + (" With the weights' finding classifier (false-positive reduction): the findings it "
                          "dropped are listed as \"dropped\" with their scores." if screened else ""), "",
             markdown_table(hdr, trows), ""]
    detail = [[r["scan"], "dropped" if f.get("dropped") else str(f["id"]), ", ".join(f"{v:g}" for v in f["centroid_lps"]),
               fmt(f["max_diameter_mm"], 1), fmt(f["volume_mm3"], 1), fmt(f["confidence"], 3)]
              + ([fmt(f.get("finding_score"), 3)] if screened else []) + [f["site"] or "-"]
              for r in rows for f in r["findings"]]
    if detail:
        lines += [markdown_table(["scan", "finding", "centroid LPS (mm)", "max diameter (mm)", "volume (mm³)",
                                  "detector confidence"] + (["finding score"] if screened else []) + ["site named"],
                                 detail), ""]
    notes = sorted({w for r in rows for w in r["warnings"]})
    if notes:
        lines += ["Warnings given: " + "; ".join(f"\"{w}\"" for w in notes) + ".", ""]
    return [Section("negatives", lines, {"scans": rows, "false_positives": total})]
