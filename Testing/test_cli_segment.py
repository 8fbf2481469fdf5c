"""``aneurysmseg segment``: outputs in exactly the input geometry, seeds in and out, bad inputs, batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from AneurysmSegLib.cli import main
from AneurysmSegLib.cli.segment import batch_cases
from AneurysmSegLib.core.geometry import Geometry, lps_to_ras
from AneurysmSegLib.io import images as io
from AneurysmSegLib.io.seeds import read_seeds
from test_io import write_dicom_series
from test_pipeline import BLOBS, GEOMETRY, blob_model_dir, synthetic_scan  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scan = synthetic_scan()
    return io.write_image(scan.array.astype(np.int16), scan.geometry, tmp_path_factory.mktemp("in") / "tof.nii.gz")


def run_cli(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("aneurysmseg segment: error: "), err
    return err


def test_outputs_keep_the_oblique_input_geometry(tmp_path: Path, scan_file: Path, blob_model_dir: Path, capsys) -> None:
    out = tmp_path / "out" / "labels.nii.gz"
    rc = run_cli("segment", scan_file, "-o", out, "--models", blob_model_dir, "--report", tmp_path / "r.json",
                 "--seeds-out", tmp_path / "seeds.mrk.json", "--stl-dir", tmp_path / "stl", "--stl-coords", "RAS",
                 "--device", "cpu", "--threads", "1")
    assert rc == 0
    printed = capsys.readouterr()
    assert "2 aneurysm(s)" in printed.out and str(out) in printed.out and "progress: 1.00" in printed.err
    src, dst = sitk.ReadImage(str(scan_file)), sitk.ReadImage(str(out))
    assert dst.GetSize() == src.GetSize()
    assert dst.GetSpacing() == src.GetSpacing() and dst.GetOrigin() == src.GetOrigin()
    # NIfTI stores the direction as float32: equal to float32 precision (NRRD keeps doubles, next test)
    np.testing.assert_allclose(dst.GetDirection(), src.GetDirection(), atol=1e-7)
    labels = sitk.GetArrayFromImage(dst)
    assert set(np.unique(labels)) == {0, 1, 2}
    # label 1 sits on the larger blob, in physical space
    centre_xyz = np.argwhere(labels == 1).mean(axis=0)[::-1]
    assert np.linalg.norm(io.geometry_of(src).index_to_lps(centre_xyz) - BLOBS[0][0]) < 0.5

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["input"]["path"] == str(scan_file) and report["aneurysm_count"] == 2
    assert report["models"]["coarse"]["segment_out"] == 27 and "aneurysmseg_version" in report
    a1 = report["aneurysms"][0]
    np.testing.assert_allclose(a1["centroid_ras"], lps_to_ras(a1["centroid_lps"]))
    seeds = read_seeds(tmp_path / "seeds.mrk.json")
    assert len(seeds) == 2 and {s.source for s in seeds} == {"detector"}
    stls = sorted(p.name for p in (tmp_path / "stl").iterdir())
    assert stls == ["aneurysm_1.stl", "aneurysm_2.stl"]


def test_seeds_in_ras_and_lps_land_on_the_same_voxels(tmp_path: Path, scan_file: Path, blob_model_dir: Path) -> None:
    centre = BLOBS[1][0] + 0.7
    ras = tmp_path / "ras.json"
    ras.write_text(json.dumps({"coordinate_system": "RAS", "seeds": [{"position": list(lps_to_ras(centre))}]}))
    lps = tmp_path / "lps.mrk.json"
    lps.write_text(json.dumps({"markups": [{"type": "Fiducial", "coordinateSystem": "LPS",
                                            "controlPoints": [{"label": "A", "position": list(centre)}]}]}))
    results = []
    for name, seeds in (("a", ras), ("b", lps)):
        out = tmp_path / f"{name}.nrrd"
        assert run_cli("segment", scan_file, "-o", out, "--seeds", seeds, "--no-detect", "--binary",
                       "--models", blob_model_dir) == 0
        written = sitk.ReadImage(str(out))
        src = io.read_image(scan_file).geometry
        assert written.GetSize() == (90, 96, 48)
        for got, expected in ((written.GetSpacing(), src.spacing), (written.GetOrigin(), src.origin),
                              (written.GetDirection(), src.direction)):
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)  # NRRD keeps doubles
        results.append(sitk.GetArrayFromImage(written))
    np.testing.assert_array_equal(results[0], results[1])
    assert set(np.unique(results[0])) == {0, 1}
    blob_voxel = np.rint(GEOMETRY.lps_to_index(BLOBS[1][0])).astype(int)[::-1]
    assert results[0][tuple(blob_voxel)] == 1
    first_blob = np.rint(GEOMETRY.lps_to_index(BLOBS[0][0])).astype(int)[::-1]
    assert results[0][tuple(first_blob)] == 0  # --no-detect: only the given VOI


def test_dicom_series_folder_is_one_scan_not_a_batch(tmp_path: Path, blob_model_dir: Path) -> None:
    scan = synthetic_scan()
    write_dicom_series(scan.array, scan.geometry, tmp_path / "dicom", uid="1.2.826.0.1.3680043.8.498.7")
    assert batch_cases(tmp_path / "dicom") == []
    out = tmp_path / "labels.mha"
    assert run_cli("segment", tmp_path / "dicom", "-o", out, "--models", blob_model_dir) == 0
    labels = sitk.ReadImage(str(out))
    assert labels.GetSize() == (90, 96, 48)
    np.testing.assert_allclose(labels.GetDirection(), GEOMETRY.direction, atol=1e-6)
    assert sitk.GetArrayFromImage(labels).max() == 2


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    g = Geometry((0.5, 0.5, 0.5))
    flat = io.write_image(np.random.default_rng(0).random((1, 20, 20)).astype(np.float32), g, tmp / "flat.nii.gz")
    nan = np.random.default_rng(0).random((8, 20, 20)).astype(np.float32)
    nan[3, 4, 5] = np.nan
    nan_path = io.write_image(nan, g, tmp / "nan.nrrd")
    odd = tmp / "scan.png"
    odd.write_bytes(b"\x89PNG\r\n")
    return {"2D image": (flat, "2D"), "NaN": (nan_path, "NaN"), "unknown extension": (odd, "unknown image format"),
            "missing file": (tmp / "missing.nii.gz", "does not exist")}


@pytest.mark.parametrize("case", ["2D image", "NaN", "unknown extension", "missing file"])
def test_bad_input_fails_with_one_line_and_writes_nothing(tmp_path: Path, blob_model_dir: Path, capsys, case: str) -> None:
    path, message = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    rc = run_cli("segment", path, "-o", out / "labels.nii.gz", "--report", out / "r.json", "--stl-dir", out / "stl",
                 "--models", blob_model_dir)
    assert rc != 0
    assert message in one_line_error(capsys)
    assert not out.exists()


def test_unusable_outputs_and_arguments_fail_before_any_work(tmp_path: Path, scan_file: Path, blob_model_dir: Path,
                                                             capsys) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    bad_seeds = tmp_path / "bad.json"
    bad_seeds.write_text('{"seeds": [{"position": [1, 2, 3]}]}')
    attempts = [
        (["-o", blocker / "labels.nii.gz"], "not a folder"),
        (["-o", tmp_path / "labels.png"], "cannot write"),
        (["-o", tmp_path / "l.nii.gz", "--stl-dir", blocker], "not a folder"),
        (["-o", tmp_path / "l.nii.gz", "--no-detect"], "--no-detect needs --seeds"),
        (["-o", tmp_path / "l.nii.gz", "--seeds", bad_seeds], "coordinate system"),
        (["-o", tmp_path / "l.nii.gz", "--models", tmp_path / "nomodels"], "does not exist"),
        (["-o", tmp_path / "l.nii.gz", "--threads", "0"], "--threads"),
    ]
    if Path("/proc").is_dir():  # a read-only folder even for root
        attempts.append((["-o", "/proc/aneurysmseg-test/labels.nii.gz"], "not writable"))
    for extra, message in attempts:
        argv = ["segment", scan_file, *extra]
        if "--models" not in extra:
            argv += ["--models", blob_model_dir]
        assert run_cli(*argv) == 2
        assert message in one_line_error(capsys), extra
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "blocker"]


def test_batch_runs_every_case_and_reports_failures(tmp_path: Path, scan_file: Path, blob_model_dir: Path,
                                                    capsys) -> None:
    cases = tmp_path / "cases"
    (cases / "A01" / "orig").mkdir(parents=True)
    (cases / "A01" / "orig" / "TOF.nii.gz").write_bytes(scan_file.read_bytes())
    (cases / "plain.nrrd").write_bytes(b"NRRD0004\nbroken")  # fails, the others still run
    scan = synthetic_scan()
    io.write_image(scan.array.astype(np.int16).astype(np.float32), scan.geometry, cases / "B02.mha")
    assert [n for n, _ in batch_cases(cases)] == ["A01", "B02", "plain"]
    out = tmp_path / "out"
    rc = run_cli("segment", cases, "-o", out, "--report", tmp_path / "summary.json", "--stl-dir", tmp_path / "stl",
                 "--models", blob_model_dir)
    assert rc == 1
    printed = capsys.readouterr()
    assert "3 case(s): 2 segmented, 1 failed" in printed.out and "failed plain" in printed.out
    assert sorted(p.name for p in out.iterdir()) == [".aneurysmseg", "A01.nii.gz", "B02.nii.gz", "aneurysms.csv",
                                                     "reports", "tables"]
    assert sorted(p.name for p in (out / "reports").iterdir()) == ["A01.json", "B02.json"]
    assert sorted(p.name for p in (tmp_path / "stl" / "A01").iterdir()) == ["aneurysm_1.stl", "aneurysm_2.stl"]
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "A01.nii.gz")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "B02.nii.gz")))
    np.testing.assert_array_equal(a, b)  # the same values stored as int16 NIfTI and float MHA: same labels
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [c["status"] for c in summary["cases"]] == ["ok", "ok", "failed"]


def test_installed_command_exit_code_and_message(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "AneurysmSegLib.cli", "segment", str(tmp_path / "none.nii.gz"),
                           "-o", str(tmp_path / "l.nii.gz")], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"aneurysmseg segment: error: {tmp_path / 'none.nii.gz'} does not exist"]
    assert list(tmp_path.iterdir()) == []


def test_demo_writes_every_output_and_compares_with_ground_truth(tmp_path: Path, blob_model_dir: Path, capsys) -> None:
    from PIL import Image as PILImage
    from test_pipeline import blob_truth

    case = tmp_path / "Sample"
    scan = synthetic_scan()
    io.write_image(scan.array.astype(np.int16), scan.geometry, case / "orig" / "TOF.nii.gz")
    truth = (blob_truth(0) | blob_truth(1)).astype(np.uint8)
    io.write_image(truth, scan.geometry, case / "aneurysms.nii.gz")
    out = tmp_path / "demo-output"
    assert main(["demo", "--output", str(out), "--sample", str(case / "orig" / "TOF.nii.gz"),
                 "--models", str(blob_model_dir)]) == 0
    printed = capsys.readouterr().out
    assert "ground truth: 2 aneurysm(s); found 2, missed 0, false positives 0" in printed
    dsc = float(printed.split("DSC ")[1].split(",")[0])
    assert dsc > 0.8
    expected = ["aneurysms-labels.nii.gz", "mip.png", "necks.png", "report.json", "seeds.mrk.json", "stl"]
    assert sorted(p.name for p in out.iterdir()) == expected
    for name in expected[:-1] + ["stl/aneurysm_1.stl", "stl/aneurysm_2.stl"]:
        assert str(out / name) in printed
    picture = np.asarray(PILImage.open(out / "mip.png").convert("RGB")).astype(int)
    assert picture.shape[0] > 300 and picture.shape[1] > 600
    red = (picture[..., 0] > 200) & (picture[..., 1] < 120) & (picture[..., 2] < 120)
    assert red.sum() > 20  # the first aneurysm's outline is drawn in red
