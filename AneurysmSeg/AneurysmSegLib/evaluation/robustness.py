"""The robustness table: the whole pipeline on each input kind real scans come in (issue 10).

Each ``--data`` folder is one input kind (``aneurysmseg phantom OUT/<kind> --kind <kind>``, held-out
seeds): per kind, what the input check recognised, how many cases it warned about, and detection
sensitivity, false positives per case and DSC of ``pipeline.segment`` (:func:`tables.whole_case`).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from .report import Section, fmt, markdown_table
from .tables import whole_case, whole_summary


def _kind_of(ref: Any) -> str:
    """The input kind the phantom generator wrote into params.json, else the folder's name."""
    params = ref.folder / "params.json"
    if params.is_file():
        kind = json.loads(params.read_text(encoding="utf-8")).get("input_kind")
        if kind:
            return str(kind)
    return ref.folder.parent.name


def robustness_section(ctx: Any) -> list[Section]:
    """One row per ``--data`` folder (an input kind), then all kinds together."""
    m = ctx.models
    thr = ctx.config.detection_threshold if ctx.config.detection_threshold is not None else m.detection_threshold
    res: dict[str, list[dict[str, Any]]] = {}
    for g, refs in ctx.groups.items():
        rows = []
        for i, r in enumerate(refs):
            rows.append(whole_case(r, m, thr, flip=ctx.config.detector_flip, screen=ctx.config.fp_reduction))
            rows[-1]["kind"] = _kind_of(r)
            ctx.log(f"robustness {g} {i + 1}/{len(refs)}: {rows[-1]['input'].get('field_of_view')} "
                    f"{rows[-1]['detection']} warnings {rows[-1]['warnings']}")
        res[g] = rows
    hdr = ["input kind", "cases", "field of view found", "cases warned", "sensitivity", "FP/case", "DSC", "s/case"]
    raw: dict[str, Any] = {}
    trows = []
    for g, rows in list(res.items()) + [("all kinds", [r for rows in res.values() for r in rows])]:
        a = whole_summary(rows)
        kinds = sorted({r["kind"] for r in rows})
        views = Counter(r["input"].get("field_of_view", "?") for r in rows)
        warned = sum(1 for r in rows if r["warnings"])
        raw[g] = {**a, "kinds": kinds, "fields_of_view": dict(views), "warned": warned,
                  "warnings": sorted({w for r in rows for w in r["warnings"]})}
        name = kinds[0] if len(kinds) == 1 else g
        trows.append([name, str(len(rows)), ", ".join(f"{v} ({n})" for v, n in views.most_common()), str(warned),
                      fmt(a["sensitivity"]), fmt(a["fp_per_case"]), fmt(a.get("dsc", float("nan"))),
                      fmt(a["seconds_per_case"], 1)])
    negatives = ctx.negative_results() if ctx.config.negatives else []
    for r in negatives:  # real scans without known aneurysms: false positives only
        trows.append([f"real scan {r['scan']} (no known aneurysm)", "1", str(r["input"].get("field_of_view", "?")),
                      "1" if r["warnings"] else "0", "n/a", str(r["false_positives"]), "n/a", fmt(r["seconds"], 1)])
        raw[f"real scan {r['scan']}"] = {"false_positives": r["false_positives"], "warnings": r["warnings"],
                                         "fields_of_view": {r["input"].get("field_of_view", "?"): 1},
                                         "seconds_per_case": r["seconds"]}
    lines = ["## Robustness: every input kind (`pipeline.segment`)", "",
             f"Detector threshold {thr:g}{', left-right flip test-time augmentation' if ctx.config.detector_flip else ''}. "
             "Held-out phantoms turned into each input kind real scans come in "
             "(`phantom.kinds`); detection by ADAM's rule on the input grid, DSC over cases with aneurysms; "
             "\"field of view found\" is what the input check (`preprocess.survey`) recognised, \"cases warned\" "
             "how many reports carried a warning."
             + (" Real scans without a known aneurysm: every finding is a false positive (details in the "
                "negatives table)." if negatives else ""), "", markdown_table(hdr, trows), ""]
    notes = sorted({w for v in raw.values() for w in v["warnings"]})
    if notes:
        lines += ["Warnings given: " + "; ".join(f"\"{w}\"" for w in notes) + ".", ""]
    return [Section("robustness", lines, raw)]
