"""DICOM SEG and SR from a DICOM series input: references, terminology, algorithm, voxel-exact overlay.

The source is a real MR series written with pydicom (oblique, files in shuffled order); the SEG and
SR are read back with highdicom and pydicom and compared with the label image the same run wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from AneurysmSegLib import __version__
from AneurysmSegLib.cli import main
from AneurysmSegLib.core.geometry import Geometry
from AneurysmSegLib.core.result import Aneurysm, SegmentationResult, Seed
from AneurysmSegLib.io.dicom_seg import Algorithm, build_dicom_seg
from AneurysmSegLib.io.dicom_sr import build_dicom_sr

from dicom_series import headers, write_mr_series
from test_pipeline import blob_model_dir, synthetic_scan  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory: pytest.TempPathFactory, blob_model_dir: Path) -> dict:
    tmp = tmp_path_factory.mktemp("dicom_run")
    scan = synthetic_scan()
    files = write_mr_series(scan.array, scan.geometry, tmp / "series")
    out = {"labels": tmp / "labels.nii.gz", "seg": tmp / "out" / "aneurysms.seg.dcm", "sr": tmp / "out" / "report.sr.dcm",
           "report": tmp / "report.json", "csv": tmp / "aneurysms.csv", "files": files}
    rc = main(["segment", str(tmp / "series"), "-o", str(out["labels"]), "--dicom-seg", str(out["seg"]),
               "--dicom-sr", str(out["sr"]), "--report", str(out["report"]), "--csv", str(out["csv"]),
               "--models", str(blob_model_dir)])
    assert rc == 0
    return out


def test_seg_references_the_source_series_and_names_the_algorithm(dicom_run: dict, blob_model_dir: Path) -> None:
    source = headers(dicom_run["files"])[0]
    seg = pydicom.dcmread(str(dicom_run["seg"]))
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.Modality == "SEG"
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == source.PatientID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} == \
        {ds.SOPInstanceUID for ds in headers(dicom_run["files"])}
    manifest = json.loads((blob_model_dir / "manifest.json").read_text())
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == ["Aneurysm 1", "Aneurysm 2"]
    for segment in seg.SegmentSequence:
        assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
        assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "85659009"
        assert segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert segment.AnatomicRegionSequence[0].CodeValue == "88556005"  # cerebral artery: no location yet
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "AneurysmSeg" and algorithm.AlgorithmVersion == __version__
        assert f"coarse_sha256={manifest['coarse']['sha256']}" in algorithm.AlgorithmParameters
        assert f"fine_sha256={manifest['fine']['sha256']}" in algorithm.AlgorithmParameters


def test_seg_overlays_the_source_slices_voxel_by_voxel(dicom_run: dict) -> None:
    labels_img = sitk.ReadImage(str(dicom_run["labels"]))
    labels = sitk.GetArrayFromImage(labels_img)
    assert labels.max() == 2
    seg = hd.seg.segread(str(dicom_run["seg"]))
    assert seg.get_segment_numbers() == [1, 2]
    sources = headers(dicom_run["files"])
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[ds.SOPInstanceUID for ds in sources],
                                               combine_segments=True, skip_overlap_checks=True)
    for ds, frame in zip(sources, pixels):
        # the slice of the label image at this source file's position (label image's own geometry)
        k = labels_img.TransformPhysicalPointToContinuousIndex([float(v) for v in ds.ImagePositionPatient])
        assert np.allclose(k[:2], 0.0, atol=1e-3) and abs(k[2] - round(k[2])) < 1e-3
        np.testing.assert_array_equal(frame, labels[int(round(k[2]))])
    assert (pixels > 0).sum() == (labels > 0).sum()


def test_sr_measurements_reference_the_seg_segments(dicom_run: dict) -> None:
    report = json.loads(dicom_run["report"].read_text())
    seg = pydicom.dcmread(str(dicom_run["seg"]))
    sr = hd.sr.srread(str(dicom_run["sr"]))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.StudyInstanceUID == seg.StudyInstanceUID
    evidence = {item.SeriesInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for item in study.ReferencedSeriesSequence}
    assert evidence == {seg.SeriesInstanceUID, headers(dicom_run["files"])[0].SeriesInstanceUID}
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(report["aneurysms"]) == 2
    for number, (group, expected) in enumerate(zip(groups, report["aneurysms"]), start=1):
        ref = group.referenced_segment[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == seg.SOPInstanceUID and ref.ReferencedSegmentNumber == number
        assert group.tracking_identifier == f"Aneurysm {expected['id']}"
        values = {(m.name.value, m.unit.value): m.value for m in group.get_measurements()}
        assert values[("118565006", "mm3")] == pytest.approx(expected["volume_mm3"])
        assert values[("81827009", "mm")] == pytest.approx(expected["max_diameter_mm"])
        assert group.finding_type.value == "85659009"


def test_dicom_seg_of_a_nifti_input_is_refused_before_any_work(tmp_path: Path, blob_model_dir: Path, capsys) -> None:
    from AneurysmSegLib.io.images import write_image

    scan = synthetic_scan()
    nifti = write_image(scan.array, scan.geometry, tmp_path / "tof.nii.gz")
    rc = main(["segment", str(nifti), "-o", str(tmp_path / "l.nii.gz"), "--dicom-seg", str(tmp_path / "s.dcm"),
               "--models", str(blob_model_dir)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "is not a DICOM series" in err and err.count("\n") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tof.nii.gz"]


def test_a_series_without_frame_of_reference_is_refused_before_any_work(tmp_path: Path, blob_model_dir: Path,
                                                                        capsys) -> None:
    from test_io import write_dicom_series  # GDCM writes MR images without a FrameOfReferenceUID

    scan = synthetic_scan()
    write_dicom_series(scan.array, scan.geometry, tmp_path / "series", uid="1.2.826.0.1.3680043.8.498.78")
    rc = main(["segment", str(tmp_path / "series"), "-o", str(tmp_path / "out" / "l.nii.gz"),
               "--dicom-seg", str(tmp_path / "out" / "s.dcm"), "--models", str(blob_model_dir)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "lack a FrameOfReferenceUID" in err and err.count("\n") == 0
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, message", [
    (["--dicom-sr", "sr.dcm"], "references a DICOM SEG"),
    (["--format", "dicom-seg"], "another format"),          # OUTPUT labels.nii.gz as a DICOM SEG
    (["--dicom-seg", "seg.seg.nrrd"], "another format"),
    (["--seg-nrrd", "x.nrrd"], "ends in .seg.nrrd"),
    (["--csv", "table.txt"], "ending in .csv"),
])
def test_unusable_export_requests_fail_before_any_work(dicom_run: dict, tmp_path: Path, blob_model_dir: Path,
                                                       capsys, extra: list[str], message: str) -> None:
    series = dicom_run["files"][0].parent
    argv = ["segment", str(series), "-o", str(tmp_path / "labels.nii.gz"), "--models", str(blob_model_dir)]
    rc = main(argv + [str(tmp_path / a) if a.endswith((".dcm", ".nrrd", ".txt")) else a for a in extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and err.count("\n") == 0
    assert list(tmp_path.iterdir()) == []


@dataclass
class Morphology:
    """The shape of the morphology stage's record: site and side, measurements, None when not measurable."""

    neck_width_mm: float | None = 2.5
    dome_to_neck_ratio: float | None = 1.7
    undulation_index: float | None = None
    nonsphericity_index: float | None = 0.12
    a_measurement_with_a_long_name: float | None = 4.0
    site: str = ""
    side: str = ""


@dataclass
class LocatedAneurysm(Aneurysm):
    """An aneurysm record with the morphology block the morphology stage adds."""

    morphology: Morphology | None = None


def test_location_becomes_the_anatomic_region_with_its_side(tmp_path: Path) -> None:
    geometry = Geometry((0.5, 0.5, 0.8), (-5.0, 3.0, 2.0))
    labels = np.zeros((4, 12, 10), np.uint8)
    labels[1:3, 2:5, 2:5] = 1
    labels[2, 7:10, 6:9] = 2
    files = write_mr_series(labels * 10, geometry, tmp_path / "series", seed=3)
    seed = Seed((0.0, 0.0, 0.0), 0.9, "detector", "S1")
    aneurysms = [LocatedAneurysm(1, seed, (0, 0, 0), (3, 3, 1.5), 3.6, 2.0, 0.9, 18, Morphology(site="MCA bifurcation", side="left")),
                 LocatedAneurysm(2, seed, (0, 0, 0), (7, 8, 2), 2.0, 1.4, 0.8, 9, Morphology(site="AComm"))]
    result = SegmentationResult(labels, geometry, aneurysms, [seed])
    algorithm = Algorithm("AneurysmSeg", __version__, {"coarse": "0" * 64, "fine": "1" * 64})
    seg = build_dicom_seg(result, headers(files), algorithm)
    first, second = seg.SegmentSequence
    assert first.AnatomicRegionSequence[0].CodeValue == "17232002"  # middle cerebral artery
    assert first.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0].CodeValue == "7771000"  # left
    assert second.AnatomicRegionSequence[0].CodeValue == "8012006"  # anterior communicating artery
    assert "AnatomicRegionModifierSequence" not in second.AnatomicRegionSequence[0]  # midline
    build_dicom_sr(result, seg, headers(files), algorithm).save_as(tmp_path / "sr.dcm")
    sr = hd.sr.srread(tmp_path / "sr.dcm")
    sites = [g.finding_sites[0] for g in sr.content.get_volumetric_roi_measurement_groups()]
    assert [s.value.value for s in sites] == ["17232002", "8012006"]
    assert sites[0].laterality.value == "7771000" and sites[1].laterality is None
    # measurements a later stage adds reach the SR with units from their names
    group = sr.content.get_volumetric_roi_measurement_groups()[0]
    values = {(m.name.value, m.unit.value): m.value for m in group.get_measurements()}
    assert values[("NECK_WIDTH", "mm")] == pytest.approx(2.5)
    assert values[("DOME_NECK_RATIO", "1")] == pytest.approx(1.7)
    assert values[("NSI", "1")] == pytest.approx(0.12)
    assert not any(code == "UI" for code, _ in values)  # None: not measured, not reported
    assert all(len(code) <= 16 for code, _ in values)  # DICOM short code values, read back below
    long_name = [m for m in group.get_measurements() if m.name.meaning == "A measurement with a long name"]
    assert len(long_name) == 1 and long_name[0].value == pytest.approx(4.0)
    for g, number in zip(sr.content.get_volumetric_roi_measurement_groups(), (1, 2)):
        assert g.referenced_segment[0].ReferencedSOPSequence[0].ReferencedSegmentNumber == number


def test_csv_of_the_same_run_has_one_row_per_aneurysm_with_the_reports_values(dicom_run: dict) -> None:
    import csv

    report = json.loads(dicom_run["report"].read_text())
    with open(dicom_run["csv"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["Aneurysm 1", "Aneurysm 2"] and {r["case"] for r in rows} == {"series"}
    for row, a in zip(rows, report["aneurysms"]):
        assert float(row["volume_mm3"]) == pytest.approx(a["volume_mm3"], abs=1e-4)
        assert float(row["max_diameter_mm"]) == pytest.approx(a["max_diameter_mm"], abs=1e-4)
        assert float(row["centroid_ras_s"]) == pytest.approx(a["centroid_ras"][2], abs=1e-4)


def test_format_dicom_seg_makes_output_the_seg(dicom_run: dict, tmp_path: Path, blob_model_dir: Path) -> None:
    series = dicom_run["files"][0].parent
    assert main(["segment", str(series), "-o", str(tmp_path / "result.dcm"), "--models", str(blob_model_dir)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.dcm"]  # the SEG, no label image
    again = pydicom.dcmread(str(tmp_path / "result.dcm"))
    first = pydicom.dcmread(str(dicom_run["seg"]))
    assert again.Modality == "SEG" and again.SOPInstanceUID == first.SOPInstanceUID  # same input + weights: same UID
    np.testing.assert_array_equal(again.pixel_array, first.pixel_array)
