"""How long each output format takes to write for a clinical-size DICOM series (512 x 512 x 160).

    .venv/bin/python benchmarks/output_formats.py [--work DIR]

Writes a 512 x 512 x 160 MR series (0.4 x 0.4 x 0.5 mm) with the tests' pydicom writer
(Testing/dicom_series.py), puts two ellipsoidal aneurysms into a label image, measures them as the
pipeline does, and times each writer (best of 3): the label image, .seg.nrrd (slicerio), DICOM SEG + SR
(highdicom, reading the source headers included), CSV + ADAM result.txt. No networks run: this is the
cost a front end adds after segmentation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Testing"))  # the tests' DICOM series writer
sys.path.insert(0, str(ROOT / "AneurysmSeg"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="folder for the series and outputs (default: a temporary one)")
    args = ap.parse_args()

    from dicom_series import write_mr_series

    from AneurysmSegLib.core.geometry import Geometry
    from AneurysmSegLib.core.result import SegmentationResult, Seed
    from AneurysmSegLib.io.dicom_seg import Algorithm
    from AneurysmSegLib.io.exports import Exports, write_exports
    from AneurysmSegLib.io.images import dicom_series, write_label
    from AneurysmSegLib.stages.measure import measure_labels

    work = args.work or Path(tempfile.mkdtemp(prefix="aneurysmseg-formats-"))
    shape = (160, 512, 512)
    geometry = Geometry((0.4, 0.4, 0.5), (-100.0, -100.0, -40.0))
    if not (work / "series").is_dir():
        scan = np.random.default_rng(0).integers(0, 500, shape).astype(np.int16)
        write_mr_series(scan, geometry, work / "series")
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    labels = np.zeros(shape, np.uint8)
    labels[(z - 80) ** 2 * 0.25 + ((y - 200) ** 2 + (x - 300) ** 2) * 0.16 <= 9] = 1
    labels[(z - 60) ** 2 * 0.25 + ((y - 300) ** 2 + (x - 200) ** 2) * 0.16 <= 4] = 2
    seeds = {1: Seed((0.0, 0.0, 0.0), 0.9, "detector", "S1"), 2: Seed((0.0, 0.0, 0.0), 0.8, "detector", "S2")}
    result = SegmentationResult(labels, geometry, measure_labels(labels, geometry, seeds), list(seeds.values()))
    series = dicom_series(work / "series")
    assert series is not None
    algorithm = Algorithm("AneurysmSeg", "benchmark", {"coarse": "0" * 64, "fine": "1" * 64})
    runs = [("label image (.nii.gz)", None), (".seg.nrrd", Exports(seg_nrrd=work / "a.seg.nrrd")),
            ("DICOM SEG + SR", Exports(dicom_seg=work / "seg.dcm", dicom_sr=work / "sr.dcm")),
            ("CSV + ADAM result.txt", Exports(csv=work / "a.csv", adam_result=work / "result.txt"))]
    print(f"512 x 512 x 160 series, {len(result.aneurysms)} aneurysms, {labels.astype(bool).sum()} voxels; in {work}")
    for what, exports in runs:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            if exports is None:
                write_label(labels, geometry, work / "labels.nii.gz")
            else:
                write_exports(result, exports, case="benchmark", algorithm=algorithm, dicom_files=series.files)
            best = min(best, time.perf_counter() - t)
        print(f"  {what}: {best:.2f} s (best of 3)")


if __name__ == "__main__":
    main()
