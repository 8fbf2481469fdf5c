"""Cohorts: tables per case and per cohort, ADAM's result.txt, parts run by independent processes, resume."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from AneurysmSegLib.cli import main
from AneurysmSegLib.core.errors import InputError
from AneurysmSegLib.core.result import Aneurysm, SegmentationResult, Seed
from AneurysmSegLib.io.cohort import part_of
from AneurysmSegLib.io.images import write_image
from AneurysmSegLib.io.tables import adam_result_text, case_rows, csv_text

from test_pipeline import BLOBS, GEOMETRY, blob_model_dir, synthetic_scan  # noqa: F401 (fixture)

CASES = ["c0", "c1", "c2", "c3", "c4"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five cases: ADAM layout and plain files; c2 without aneurysms."""
    root = tmp_path_factory.mktemp("cohort")
    for i, name in enumerate(CASES):
        scan = synthetic_scan(blobs=[] if name == "c2" else BLOBS, seed=i)
        path = root / name / "orig" / "TOF.nii.gz" if i % 2 == 0 else root / f"{name}.nii.gz"
        write_image(scan.array.astype(np.int16), scan.geometry, path)
    return root


def test_parts_split_deterministically_and_cover_every_case_once() -> None:
    cases = [f"case{i:03d}" for i in range(23)]
    parts = [part_of(cases, i, 4) for i in range(4)]
    assert sorted(sum(parts, [])) == cases and sum(len(p) for p in parts) == len(cases)
    assert parts == [part_of(cases, i, 4) for i in range(4)]
    assert parts[1][:2] == ["case001", "case005"]
    with pytest.raises(InputError, match="0..3"):
        part_of(cases, 4, 4)


def _run_part(cohort: Path, out: Path, models: Path, part: int, parts: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONIOENCODING": "utf-8"}
    return subprocess.Popen([sys.executable, "-m", "AneurysmSegLib.cli", "segment", str(cohort), "-o", str(out),
                             "--models", str(models), "--threads", "1", "--part", str(part), "--num-parts", str(parts),
                             "--adam-result", str(out / "adam")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8", errors="replace")


def test_two_parts_in_parallel_do_every_case_once_then_resume_skips_them(cohort: Path, tmp_path: Path,
                                                                          blob_model_dir: Path) -> None:
    out = tmp_path / "out"
    procs = [_run_part(cohort, out, blob_model_dir, part, 2) for part in (0, 1)]  # two real processes at once
    results = [p.communicate(timeout=600) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr
    records = [json.loads(f.read_text()) for f in sorted((out / ".aneurysmseg" / "done").glob("*.json"))]
    assert sorted(r["case"] for r in records) == CASES
    by_part = {0: sorted(r["case"] for r in records if r["part"] == 0), 1: sorted(r["case"] for r in records if r["part"] == 1)}
    assert by_part == {0: ["c0", "c2", "c4"], 1: ["c1", "c3"]}
    assert "3 segmented" in results[0][0] and "2 segmented" in results[1][0]
    for name in CASES:
        assert (out / f"{name}.nii.gz").is_file() and (out / "tables" / f"{name}.csv").is_file()

    # the cohort table: every case, one row per aneurysm (a row with count 0 for the negative case)
    with open(out / "aneurysms.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted({r["case"] for r in rows}) == CASES
    assert [r["aneurysm_count"] for r in rows if r["case"] == "c2"] == ["0"]
    assert sum(1 for r in rows if r["case"] == "c0") == 2
    assert {"volume_mm3", "max_diameter_mm", "confidence", "centroid_voxel_x", "warnings"} <= set(rows[0])

    # ADAM result.txt: the centres as the challenge's evaluation reads them, on the aneurysms
    centres = np.atleast_2d(np.genfromtxt(out / "adam" / "c0" / "result.txt", delimiter=",", encoding="utf-8-sig"))
    labels = sitk.ReadImage(str(out / "c0.nii.gz"))
    for centre in centres:
        point = labels.TransformContinuousIndexToPhysicalPoint(centre.tolist())
        assert min(np.linalg.norm(np.subtract(point, c)) for c, _ in BLOBS) < 0.5
    assert (out / "adam" / "c2" / "result.txt").read_text() == ""

    # resume: a re-run skips every finished case; a case whose outputs vanished is redone
    (out / "c3.nii.gz").unlink()
    again = _run_part(cohort, out, blob_model_dir, 1, 2)
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    assert "1 segmented, 0 failed, 1 skipped" in stdout and "c1: done by an earlier run, skipped" in stderr
    assert (out / "c3.nii.gz").is_file()


def test_batch_over_dicom_series_writes_a_seg_per_case(tmp_path: Path, blob_model_dir: Path) -> None:
    from dicom_series import write_mr_series

    scan = synthetic_scan()
    write_mr_series(scan.array, scan.geometry, tmp_path / "cohort" / "patient1", seed=1)
    write_image(scan.array.astype(np.int16), scan.geometry, tmp_path / "cohort" / "patient2.nii.gz")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "cohort"), "-o", str(out), "--models", str(blob_model_dir),
                 "--dicom-seg", str(tmp_path / "seg"), "--dicom-sr", str(tmp_path / "sr"), "--format", "seg-nrrd"]) == 0
    assert sorted(p.name for p in (tmp_path / "seg").iterdir()) == ["patient1.dcm"]  # only the DICOM case
    assert sorted(p.name for p in (tmp_path / "sr").iterdir()) == ["patient1.dcm"]
    assert sorted(p.name for p in out.glob("*.seg.nrrd")) == ["patient1.seg.nrrd", "patient2.seg.nrrd"]


@dataclass
class Morphology:
    """A nested record that gives its own table columns (as the morphology stage's does)."""

    neck_width_mm: float | None = 3.1
    site: str = "MCA"

    def as_row(self) -> dict:
        return {"neck_width_mm": self.neck_width_mm, "location": self.site}


@dataclass
class MorphologyAneurysm(Aneurysm):
    """A record with fields a later stage adds: they must reach the table without changes there."""

    parent_diameter_mm: float = 2.25
    morphology: Morphology | None = None


def test_table_takes_every_field_of_the_aneurysm_record() -> None:
    seed = Seed((1.0, 2.0, 3.0), 0.8, "detector", "S1")
    a = MorphologyAneurysm(1, seed, (-1.0, -2.0, 3.0), (4.0, 5.0, 6.0), 12.5, 3.2, 0.8, 40, morphology=Morphology())
    b = MorphologyAneurysm(2, seed, (-1.0, -2.0, 3.0), (4.0, 5.0, 6.0), 2.5, 1.2, 0.6, 9)  # no morphology
    labels = np.zeros((4, 4, 4), np.uint8)
    rows = case_rows("p1", SegmentationResult(labels, GEOMETRY, [a, b], [seed]), ["field of view: slab"])
    text = csv_text(rows)
    row, other = csv.DictReader(text.splitlines())
    assert row["neck_width_mm"] == "3.1" and row["location"] == "MCA" and row["warnings"] == "field of view: slab"
    assert row["parent_diameter_mm"] == "2.25" and other["neck_width_mm"] == "" and "morphology" not in row
    assert row["centroid_ras_r"] == "1.0" and row["centroid_lps_l"] == "-1.0" and row["seed_source"] == "detector"
    assert row["case"] == "p1" and row["name"] == "Aneurysm 1" and row["confidence"] == "0.8"
    assert adam_result_text(SegmentationResult(labels, GEOMETRY, [a], [seed])) == "4.00, 5.00, 6.00\n"


def test_the_input_checks_warnings_reach_the_case_and_cohort_tables(tmp_path: Path, blob_model_dir: Path,
                                                                    capsys) -> None:
    from AneurysmSegLib import preprocess as pp

    from test_input_kinds import no_artery_scan

    scan = no_artery_scan()
    write_image(scan.array, scan.geometry, tmp_path / "cohort" / "odd.nii.gz")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "cohort"), "-o", str(out), "--models", str(blob_model_dir),
                 "--threads", "1"]) == 0
    assert f"warning: {pp.NO_ARTERIES_WARNING}" in capsys.readouterr().err
    for table in (out / "tables" / "odd.csv", out / "aneurysms.csv"):
        with open(table, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert [r["case"] for r in rows] == ["odd"] and rows[0]["warnings"] == pp.NO_ARTERIES_WARNING
