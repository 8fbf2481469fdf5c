"""Tables for spreadsheets and challenges: one CSV row per aneurysm, cohort CSVs, ADAM's result.txt.

Rows are built from the fields of the result's Aneurysm records, whatever they are (the morphology
stage's neck, dome, ratios and location appear without changes here): scalars as they are, vectors as
one column per component (``centroid_lps_l``, ``centroid_ras_r``...), the seed as ``seed_*`` columns, a
nested record with an ``as_row()`` method as the columns it gives.
A case without aneurysms still gets one row (empty measurements, ``aneurysm_count`` 0), so a cohort
table lists every case that was processed and a negative is not mistaken for a missing case.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ..core.geometry import lps_to_ras

if TYPE_CHECKING:
    from .atomic import OutputSet
    from ..core.result import SegmentationResult

#: Columns every row starts with, in this order; the measurement columns follow in field order.
LEAD_COLUMNS = ("case", "aneurysm_count", "aneurysm", "name")
#: Column suffixes of 3-vectors, by the coordinate system the field name ends with.
_AXES = {"ras": ("r", "a", "s"), "lps": ("l", "p", "s"), "voxel": ("x", "y", "z")}


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _flatten(f"{prefix}_{f.name}", getattr(value, f.name), out)
    elif isinstance(value, (tuple, list)) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
        axes = _AXES.get(prefix.rsplit("_", 1)[-1], ("x", "y", "z"))
        for axis, v in zip(axes, value):
            out[f"{prefix}_{axis}"] = _number(v)
    elif isinstance(value, (tuple, list)):
        out[prefix] = "; ".join(str(v) for v in value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}_{k}", v, out)
    elif isinstance(value, float):
        out[prefix] = _number(value)
    else:
        out[prefix] = value


def _number(v: float) -> Any:
    """Floats with 4 decimals (sub-micrometre, sub-0.01 %); NaN as an empty cell."""
    if isinstance(v, bool) or not isinstance(v, float):
        return v
    return "" if not math.isfinite(v) else round(v, 4)


def aneurysm_row(aneurysm: Any) -> dict[str, Any]:
    """Every field of one Aneurysm record as flat CSV columns (the seed as ``seed_*``, RAS added)."""
    row: dict[str, Any] = {}
    for f in dataclasses.fields(aneurysm):
        if f.name == "id":
            continue
        value = getattr(aneurysm, f.name)
        if value is None:  # not measured for this aneurysm: empty cells wherever another row has the columns
            continue
        if callable(getattr(value, "as_row", None)):  # a nested record that knows its table columns
            row.update({k: _number(v) for k, v in value.as_row().items()})
            continue
        _flatten(f.name, value, row)
        if f.name == "centroid_lps":
            _flatten("centroid_ras", tuple(float(v) for v in lps_to_ras(value)), row)
        if f.name == "seed":
            _flatten("seed_position_ras", tuple(float(v) for v in lps_to_ras(value.position_lps)), row)
    return row


def case_rows(case: str, result: SegmentationResult, warnings: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Rows of one case: one per aneurysm, or one empty row when there is none."""
    from ..core.terminology import segment_name

    note = {"warnings": " | ".join(str(w) for w in warnings)}
    count = len(result.aneurysms)
    if not count:
        return [{"case": case, "aneurysm_count": 0, "aneurysm": "", "name": "", **note}]
    return [{"case": case, "aneurysm_count": count, "aneurysm": a.id, "name": segment_name(a), **aneurysm_row(a), **note}
            for a in result.aneurysms]


def columns_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Lead columns, the measurements and positions in order of first appearance, then the seed's
    columns, "warnings" last."""
    seen: dict[str, None] = dict.fromkeys(LEAD_COLUMNS)
    for row in rows:
        seen.update(dict.fromkeys(row))
    seen.pop("warnings", None)
    seed = [c for c in seen if c.startswith("seed_")]
    return [*(c for c in seen if not c.startswith("seed_")), *seed, "warnings"]


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns_of(rows), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path, outputs: OutputSet | None = None) -> Path:
    """Write rows as CSV (UTF-8, header from :func:`columns_of`), atomically."""
    from .atomic import write_text_atomic

    return write_text_atomic(Path(path), csv_text(rows), outputs)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_cohort_csv(case_csvs: Iterable[str | Path], path: str | Path, lock: str | Path) -> Path:
    """Concatenate per-case CSVs (any columns) into one cohort CSV, cases sorted by name, atomically.

    Done under an exclusive lock on the file ``lock`` (:func:`~AneurysmSegLib.io.atomic.locked`), so that parts
    of a cohort finishing together leave the table of the last one, which has seen every case.
    """
    from .atomic import locked

    path = Path(path)
    Path(lock).parent.mkdir(parents=True, exist_ok=True)
    with locked(Path(lock)):
        rows: list[dict[str, Any]] = []
        for f in sorted(Path(p) for p in case_csvs):
            rows.extend(read_csv(f))
        rows.sort(key=lambda r: r["case"])
        return write_csv(rows, path)


def adam_result_text(result: SegmentationResult) -> str:
    """ADAM challenge detection output: one aneurysm centre per line, ``x, y, z`` voxel coordinates
    (continuous index of the input image, as SimpleITK's TransformContinuousIndexToPhysicalPoint takes)."""
    return "".join(", ".join(f"{v:.2f}" for v in a.centroid_voxel) + "\n" for a in result.aneurysms)


def write_adam_result(result: SegmentationResult, path: str | Path, outputs: OutputSet | None = None) -> Path:
    from .atomic import write_text_atomic

    return write_text_atomic(Path(path), adam_result_text(result), outputs)
