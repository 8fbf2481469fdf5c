"""Cohorts on a cluster: a deterministic split into parts, resume after a crash, the cohort table.

``part_of`` gives part I of N the cases ``I, I+N, I+2N, ...`` of the name-sorted cohort (as nnU-Net's
predictor splits with ``part_id``/``num_parts``), so that N independent jobs, a SLURM array for
instance, cover every case exactly once without talking to each other. A case is finished when its
record ``OUTPUT/.aneurysmseg/done/<case>.json`` exists, was written for the same requested outputs,
and every file it lists is still there; the record is written last, after every output of the case,
so a crash mid-case leaves the case unfinished and the next run redoes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence, TypeVar

from ..core.errors import InputError

T = TypeVar("T")
STATE_DIR = ".aneurysmseg"
COHORT_TABLE = "aneurysms.csv"


def part_of(cases: Sequence[T], part: int, num_parts: int) -> list[T]:
    """Part ``part`` (0-based) of ``num_parts`` of the cases, in their given (sorted) order."""
    if num_parts < 1:
        raise InputError(f"--num-parts must be at least 1, got {num_parts}")
    if not 0 <= part < num_parts:
        raise InputError(f"--part must lie in 0..{num_parts - 1} (0-based, like SLURM_ARRAY_TASK_ID with "
                         f"--array=0-{num_parts - 1}), got {part}")
    return list(cases[part::num_parts])


def done_record(root: Path, case: str) -> Path:
    return root / STATE_DIR / "done" / f"{case}.json"


def case_table(root: Path, case: str) -> Path:
    """Where a batch writes the CSV rows of one case (the cohort table is built from these)."""
    return root / "tables" / f"{case}.csv"


def is_done(root: Path, case: str, requested: Sequence[Path]) -> bool:
    """True when ``case`` was finished by an earlier run asking for the same outputs, all still present."""
    try:
        record = json.loads(done_record(root, case).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if sorted(record.get("requested", [])) != sorted(str(p) for p in requested):
        return False
    return all(Path(p).exists() for p in record.get("written", []))


def mark_done(root: Path, case: str, requested: Sequence[Path], written: Sequence[Path], summary: dict[str, Any]) -> Path:
    """Record ``case`` as finished (atomically; call after every output of the case is in place)."""
    from .atomic import write_text_atomic

    record = {**summary, "requested": sorted(str(p) for p in requested), "written": [str(p) for p in written]}
    return write_text_atomic(done_record(root, case), json.dumps(record, indent=2) + "\n")


def finished_summaries(root: Path) -> list[dict[str, Any]]:
    """The records of every finished case under ``root`` (any part, any run), sorted by case."""
    out = []
    for f in sorted((root / STATE_DIR / "done").glob("*.json")):
        try:
            out.append(json.loads(f.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return out


def write_cohort_table(root: Path) -> Path:
    """Rebuild ``OUTPUT/aneurysms.csv`` from the per-case tables of every finished case."""
    from .tables import write_cohort_csv

    cases = [s["case"] for s in finished_summaries(root) if "case" in s]
    tables = [case_table(root, c) for c in cases if case_table(root, c).is_file()]
    return write_cohort_csv(tables, root / COHORT_TABLE, lock=root / STATE_DIR / "cohort-table.lock")
