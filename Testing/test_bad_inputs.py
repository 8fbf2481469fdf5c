"""The bad-input table: what AneurysmSeg does with careless and hostile input, every row run here.

docs/bad-inputs.md is generated from :data:`ROWS`; each row's check builds its input in a temporary
folder, runs the real command line or library call on it and asserts the behaviour the row promises.
``test_the_table_in_docs_is_current`` fails when the file differs from what the rows say; rewrite it
with::

    ANEURYSMSEG_WRITE_TABLE=1 python -m pytest -q Testing/test_bad_inputs.py -k table
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk

from AneurysmSegLib.cli import main
from AneurysmSegLib.core.geometry import Geometry
from AneurysmSegLib.io import images as io

from test_pipeline import BLOBS, blob_model_dir, blob_models, synthetic_scan  # noqa: F401 (fixtures)

TABLE = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"


@dataclass(frozen=True)
class Row:
    area: str  #: where the input goes in (section of the table)
    given: str  #: the input, as a user would describe it
    expected: str  #: the behaviour AneurysmSeg promises
    check: Callable[["Case"], None]


ROWS: list[Row] = []


def row(area: str, given: str, expected: str) -> Callable[[Callable[["Case"], None]], Callable[["Case"], None]]:
    """Register a check as a row of the table."""
    def register(check: Callable[[Case], None]) -> Callable[[Case], None]:
        ROWS.append(Row(area, given, expected, check))
        return check

    return register


class Case:
    """What a check gets: a temporary folder, the CLI, the output it printed and the test models."""

    def __init__(self, tmp: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture) -> None:
        self.tmp = tmp
        self.request = request
        self.capsys = capsys

    @property
    def models(self) -> Path:
        return self.request.getfixturevalue("blob_model_dir")

    @property
    def loaded_models(self):
        return self.request.getfixturevalue("blob_models")

    def cli(self, *argv: object) -> tuple[int, str, str]:
        """Run ``aneurysmseg`` in this process; (exit code, stdout, stderr)."""
        self.capsys.readouterr()
        rc = main([str(a) for a in argv])
        out, err = self.capsys.readouterr()
        return rc, out, err

    def error(self, *argv: object) -> str:
        """Run a command that must fail with exit 2 and one line on stderr; returns that line."""
        rc, _, err = self.cli(*argv)
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("progress:")]
        assert rc == 2 and len(lines) == 1 and ": error: " in lines[0], (rc, err)
        return lines[0]

    def scan(self, name: str = "tof.nii.gz") -> Path:
        """The synthetic two-blob scan (two aneurysms with the test models) as a file."""
        scan = synthetic_scan()
        return io.write_image(scan.array.astype(np.int16), scan.geometry, self.tmp / name)


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# ------------------------------------------------------------------------------------------ outputs


@row("Outputs", "`segment x.nii.gz -o x.nii.gz` (the output is the input)",
     "exit 2, `output ... is the input`; the scan is unchanged")
def _output_is_input(case: Case) -> None:
    scan = case.scan()
    before = scan.read_bytes()
    assert "is the input" in case.error("segment", scan, "-o", scan, "--models", case.models)
    (case.tmp / "link.nii.gz").symlink_to(scan)
    assert "is the input" in case.error("segment", scan, "-o", case.tmp / "link.nii.gz", "--models", case.models)
    assert scan.read_bytes() == before and listing(case.tmp) == ["link.nii.gz", "tof.nii.gz"]


@row("Outputs", "`--report` or `--seeds-out` naming the input scan", "exit 2, `is the input`; nothing written")
def _report_is_input(case: Case) -> None:
    scan = case.scan()
    before = scan.read_bytes()
    for option in ("--report", "--seeds-out"):
        name = case.tmp / "tof.json"
        name.write_text("{}")
        line = case.error("segment", name, "-o", case.tmp / "labels.nii.gz", option, name, "--models", case.models)
        assert "is the input" in line or "not a" in line
    assert "is the input" in case.error("segment", scan, "-o", case.tmp / "labels.nii.gz", "--report", scan,
                                        "--models", case.models)
    assert scan.read_bytes() == before and listing(case.tmp) == ["tof.json", "tof.nii.gz"]


@row("Outputs", "batch: `-o` is the input folder", "exit 2, `is the input folder`; no scan touched")
def _batch_output_is_input(case: Case) -> None:
    folder = case.tmp / "cases"
    folder.mkdir()
    scan = case.scan("cases/a.nii.gz")
    before = scan.read_bytes()
    assert "is the input folder" in case.error("segment", folder, "-o", folder, "--models", case.models)
    assert "is the input folder" in case.error("segment", folder, "-o", case.tmp / "cases" / ".", "--models", case.models)
    assert scan.read_bytes() == before and listing(folder) == ["a.nii.gz"]


@row("Outputs", "rerun into the same outputs finding fewer aneurysms (2, then 1)",
     "the STL folder holds only this run's `aneurysm_1.stl`; the earlier `aneurysm_2.stl` is removed")
def _rerun_removes_stale_stl(case: Case) -> None:
    scan = case.scan()
    common = ["-o", case.tmp / "labels.nii.gz", "--stl-dir", case.tmp / "stl", "--report", case.tmp / "r.json",
              "--models", case.models]
    assert case.cli("segment", scan, *common)[0] == 0
    assert listing(case.tmp / "stl") == ["aneurysm_1.stl", "aneurysm_2.stl"]
    seeds = case.tmp / "one.json"
    seeds.write_text(json.dumps({"coordinate_system": "LPS", "seeds": [{"position": BLOBS[1][0].tolist()}]}))
    assert case.cli("segment", scan, *common, "--seeds", seeds, "--no-detect")[0] == 0
    assert listing(case.tmp / "stl") == ["aneurysm_1.stl"]
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(case.tmp / "labels.nii.gz"))).max() == 1


@row("Outputs", "two runs writing the same outputs at the same time",
     "one waits for the other's commit (a lock per output folder): the outputs are one run's, never a mix")
def _concurrent_runs(case: Case) -> None:
    import subprocess
    import sys

    hold = ("import sys, time; from pathlib import Path; from AneurysmSegLib.io.atomic import _folder_lock\n"
            "with _folder_lock(Path(sys.argv[1]), time.monotonic() + 5):\n"
            "    print('locked', flush=True); time.sleep(2); print(time.time(), flush=True)\n")
    scan = case.scan()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    (case.tmp / "out").mkdir()
    with subprocess.Popen([sys.executable, "-c", hold, str(case.tmp / "out")], env=env, stdout=subprocess.PIPE,
                          text=True) as other:
        assert other.stdout is not None and other.stdout.readline().strip() == "locked"
        rc, _, _ = case.cli("segment", scan, "-o", case.tmp / "out" / "labels.nii.gz", "--models", case.models)
        released = float(other.stdout.readline())
    assert rc == 0
    # moved into place (which sets ctime) only after the other run let go of the folder
    assert (case.tmp / "out" / "labels.nii.gz").stat().st_ctime >= released - 0.01, "written while the folder was held"
    assert listing(case.tmp / "out") == ["labels.nii.gz"]


@row("Outputs", "SIGTERM (a cluster's time limit, `kill`) while a run works, into outputs of an earlier run",
     "exit 143 (`terminated`); the earlier outputs are untouched and nothing staged is left behind")
def _sigterm(case: Case) -> None:
    import signal
    import subprocess
    import sys

    scan = case.scan()
    args = ["segment", scan, "-o", case.tmp / "out" / "labels.nii.gz", "--stl-dir", case.tmp / "out" / "stl",
            "--report", case.tmp / "out" / "r.json", "--models", case.models]
    assert case.cli(*args)[0] == 0
    before = {p: (case.tmp / "out" / p).read_bytes() for p in listing(case.tmp / "out") if "." in p}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen([sys.executable, "-m", "AneurysmSegLib.cli", *map(str, args)], env=env,
                          stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:  # terminate once the pipeline is working
            if line.startswith("progress:"):
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 143, rest
    assert "aneurysmseg segment: terminated" in rest
    assert {p: (case.tmp / "out" / p).read_bytes() for p in listing(case.tmp / "out") if "." in p} == before
    assert not [p for p in listing(case.tmp) if "staging" in p or p.endswith(".lock")]


@row("Outputs", "a shared research drive (umask 002)",
     "outputs are created with the umask's permissions (rw-rw-r--), not a private 0600")
def _umask(case: Case) -> None:
    scan = case.scan()
    previous = os.umask(0o002)
    try:
        assert case.cli("segment", scan, "-o", case.tmp / "out" / "labels.nii.gz", "--report", case.tmp / "r.json",
                        "--stl-dir", case.tmp / "stl", "--models", case.models)[0] == 0
    finally:
        os.umask(previous)
    for path in (case.tmp / "out" / "labels.nii.gz", case.tmp / "r.json", case.tmp / "stl" / "aneurysm_1.stl"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o664, path


# -------------------------------------------------------------------------------------------- batch


@row("Batch", "`a.nii.gz` and `a.mha` in one folder", "exit 2 naming both files: they would write the same outputs")
def _batch_name_collision(case: Case) -> None:
    folder = case.tmp / "cases"
    folder.mkdir()
    case.scan("cases/a.nii.gz")
    case.scan("cases/A.mha")
    line = case.error("segment", folder, "-o", case.tmp / "out", "--models", case.models)
    assert "A.mha and a.nii.gz" in line and "would both write" in line
    assert not (case.tmp / "out").exists()


@row("Batch", "a file named `...nii.gz` (case name `..`) with `--stl-dir`",
     "exit 2 naming the file; nothing is written outside the output folders")
def _batch_traversal(case: Case) -> None:
    folder = case.tmp / "cases"
    folder.mkdir()
    case.scan("cases/...nii.gz")
    (case.tmp / "stl").mkdir()
    line = case.error("segment", folder, "-o", case.tmp / "out", "--stl-dir", case.tmp / "stl", "--models", case.models)
    assert "...nii.gz" in line and "cannot name output files" in line
    assert listing(case.tmp) == ["cases", "cases/...nii.gz", "stl"]


# ------------------------------------------------------------------------------------------ reading


def _scan_array() -> tuple[np.ndarray, Geometry]:
    scan = synthetic_scan()
    return scan.array.astype(np.float32), scan.geometry


def _cut(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


@row("Reading", "a missing file, a `.png`, a 2D image, a 4D series, a constant volume",
     "exit 2 with the reason (`does not exist`, `unknown image format '.png'`, `is 2D`, `is 4D`, `is constant`)")
def _plainly_wrong(case: Case) -> None:
    flat = io.write_image(np.ones((1, 20, 20), np.float32) + np.eye(20, dtype=np.float32), Geometry((1, 1, 1)),
                          case.tmp / "flat.nii.gz")
    four = case.tmp / "series.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5),
                                           isVector=False), str(four))
    constant = io.write_image(np.full((4, 5, 6), 7, np.int16), Geometry((1, 1, 1)), case.tmp / "flat7.nrrd")
    png = case.tmp / "scan.png"
    png.write_bytes(b"\x89PNG\r\n")
    for path, reason in ((case.tmp / "none.nii.gz", "does not exist"), (png, "unknown image format '.png'"),
                         (flat, "is 2D (20 x 20, a single slice)"), (four, "is 4D"),
                         (constant, "is constant (every voxel is 7)")):
        assert reason in case.error("segment", path, "-o", case.tmp / "out" / "l.nii.gz"), reason
    assert not (case.tmp / "out").exists()


@row("Reading", "a .nii.gz cut to half its bytes (the intact half holds an aneurysm)",
     "exit 2, `damaged or truncated gzip file`; nothing written (ITK alone reads the missing half as zeros)")
def _truncated_nii_gz(case: Case) -> None:
    array, geometry = _scan_array()
    path = _cut(io.write_image(array.astype(np.int16), geometry, case.tmp / "cut.nii.gz"))
    line = case.error("segment", path, "-o", case.tmp / "out" / "labels.nii.gz", "--models", case.models)
    assert "cut.nii.gz is a damaged or truncated gzip file" in line
    assert not (case.tmp / "out").exists()


@row("Reading", "a .nii cut to half its bytes",
     "exit 2, `is truncated: it holds N of the M bytes of voxel data its header promises`")
def _truncated_nii(case: Case) -> None:
    array, geometry = _scan_array()
    path = _cut(io.write_image(array.astype(np.int16), geometry, case.tmp / "cut.nii", compress=False))
    line = case.error("segment", path, "-o", case.tmp / "labels.nii.gz", "--models", case.models)
    assert "cut.nii is truncated: it holds" in line and "(50%)" in line


@row("Reading", "NaN and infinite voxels in a float NIfTI (ITK reads them as 0)",
     "exit 2, `contains 2 NaN or infinite voxels`; the same in NRRD and MetaImage")
def _nan_nifti(case: Case) -> None:
    array, geometry = _scan_array()
    array[10, 20, 30], array[11, 21, 31] = np.nan, np.inf
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha"):
        path = io.write_image(array, geometry, case.tmp / f"nan{ext}")
        line = case.error("segment", path, "-o", case.tmp / "labels.nii.gz", "--models", case.models)
        assert "contains 2 NaN or infinite voxels" in line, line
    # with an intensity scaling in the header ITK shows them as the intercept, not 0: still found
    import struct

    scaled = case.tmp / "scaled.nii"
    data = bytearray((case.tmp / "nan.nii").read_bytes())
    data[112:120] = struct.pack("<2f", 2.0, 5.0)  # scl_slope, scl_inter
    scaled.write_bytes(bytes(data))
    assert "contains 2 NaN or infinite voxels" in case.error("segment", scaled, "-o", case.tmp / "l.nii.gz")


@row("Reading", "a NIfTI whose every voxel is NaN", "exit 2, `holds only NaN or infinite voxels` (not \"constant\")")
def _all_nan(case: Case) -> None:
    path = io.write_image(np.full((8, 9, 10), np.nan, np.float32), Geometry((1, 1, 1)), case.tmp / "nan.nii.gz")
    assert "holds only NaN or infinite voxels (720)" in case.error("segment", path, "-o", case.tmp / "l.nii.gz")


@row("Reading", "a float64 image with a voxel of 1e300",
     "exit 2, `holds values up to 1e+300, beyond the range of float32`; no numpy overflow warning")
def _huge_float64(case: Case) -> None:
    array, geometry = _scan_array()
    array = array.astype(np.float64)
    array[5, 5, 5] = 1e300
    for ext in (".nii.gz", ".nrrd"):
        path = io.write_image(array, geometry, case.tmp / f"huge{ext}")
        assert "holds values up to 1e+300, beyond the range of float32" in case.error(
            "segment", path, "-o", case.tmp / "labels.nii.gz")  # a warning would fail this test


def _forged_header(path: Path, size: int) -> Path:
    """A real NIfTI header whose dimensions claim size^3 int16 voxels, and no voxel data at all."""
    import gzip
    import struct

    io.write_image(np.ones((2, 2, 2), np.int16), Geometry((1, 1, 1)), path)
    header = bytearray(gzip.decompress(path.read_bytes())[:352])
    header[40:56] = struct.pack("<8h", 3, size, size, size, 1, 1, 1, 1)
    path.write_bytes(gzip.compress(bytes(header)))
    return path


@row("Reading", "a 101-byte .nii.gz whose header claims 1000 x 1000 x 1000 voxels",
     "exit 2 at once, `more than the limit of 536,870,912 (--max-voxels)`; with a higher `--max-voxels`, "
     "`truncated`; nothing allocated")
def _forged_size(case: Case) -> None:
    path = _forged_header(case.tmp / "big.nii.gz", 1000)
    assert path.stat().st_size < 200
    line = case.error("segment", path, "-o", case.tmp / "labels.nii.gz")
    assert "1000 x 1000 x 1000 = 1,000,000,000 voxels, more than the limit of 536,870,912" in line
    assert "--max-voxels" in line
    line = case.error("segment", path, "-o", case.tmp / "labels.nii.gz", "--max-voxels", 2_000_000_000)
    assert "big.nii.gz is a damaged or truncated gzip file" in line or "is truncated" in line


@row("Reading", "a DICOM series with one slice file missing",
     "exit 2 naming the gap: `1 slice missing between slice003.dcm and slice005.dcm (positions ... mm apart)`")
def _dicom_missing_slice(case: Case) -> None:
    from test_io import write_dicom_series

    array, geometry = _scan_array()
    write_dicom_series(array[:12], geometry, case.tmp / "dicom", uid="1.2.826.0.1.3680043.8.498.51")
    (case.tmp / "dicom" / "slice004.dcm").unlink()
    line = case.error("segment", case.tmp / "dicom", "-o", case.tmp / "labels.nii.gz")
    assert "1 slice missing between slice003.dcm and slice005.dcm" in line
    assert not (case.tmp / "labels.nii.gz").exists()


@row("Reading", "a DICOM series with one slice file truncated",
     "exit 2 naming the gap and the unreadable file (GDCM leaves it out of the series)")
def _dicom_truncated_slice(case: Case) -> None:
    from test_io import write_dicom_series

    array, geometry = _scan_array()
    write_dicom_series(array[:12], geometry, case.tmp / "dicom", uid="1.2.826.0.1.3680043.8.498.52")
    _cut(case.tmp / "dicom" / "slice006.dcm", 0.8)
    line = case.error("segment", case.tmp / "dicom", "-o", case.tmp / "labels.nii.gz")
    assert "1 slice missing between slice005.dcm and slice007.dcm" in line
    assert "outside the series (unreadable or truncated?): slice006.dcm" in line


@row("Reading", "a DICOM series with uneven slice spacing (one slice 0.3 mm off)",
     "exit 2, `uneven slice spacing between ...`")
def _dicom_uneven(case: Case) -> None:
    import SimpleITK as sitk_
    from test_io import write_dicom_series

    array, geometry = _scan_array()
    folder = case.tmp / "dicom"
    write_dicom_series(array[:12], geometry, folder, uid="1.2.826.0.1.3680043.8.498.53")
    moved = sitk_.ReadImage(str(folder / "slice006.dcm"))
    position = [float(v) for v in moved.GetMetaData("0020|0032").split("\\")]
    normal = geometry.direction_matrix[:, 2]
    moved.SetMetaData("0020|0032", "\\".join(f"{p + 0.3 * n:.10f}" for p, n in zip(position, normal)))
    writer = sitk_.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(folder / "slice006.dcm"))
    writer.Execute(moved)
    line = case.error("segment", folder, "-o", case.tmp / "labels.nii.gz")
    assert "uneven slice spacing between slice005.dcm and slice006.dcm" in line


@row("Reading", "a 1 x 1 x 1 image", "exit 2, `is a single voxel (1 x 1 x 1)`")
def _one_voxel(case: Case) -> None:
    path = io.write_image(np.ones((1, 1, 1), np.float32), Geometry((1, 1, 1)), case.tmp / "dot.nrrd")
    assert "dot.nrrd is a single voxel (1 x 1 x 1); a 3D TOF-MRA volume is needed" in case.error(
        "segment", path, "-o", case.tmp / "l.nii.gz")


# --------------------------------------------------------------------------------------- Python API


@row("Python API", "`segment()` of a bool array", "`InputError`: `is a boolean mask, not a grey-value TOF-MRA`")
def _bool_array(case: Case) -> None:
    from AneurysmSegLib.core.errors import InputError
    from AneurysmSegLib.core.geometry import Image
    from AneurysmSegLib.core.pipeline import segment

    array, geometry = _scan_array()
    with pytest.raises(InputError, match="is a boolean mask, not a grey-value TOF-MRA"):
        segment(Image(array > 200, geometry, "mask"), case.loaded_models)


@row("Python API", "an image with a singular or a sheared direction matrix",
     "`InputError`: `singular direction matrix` / `not orthonormal` (not a raw SimpleITK error)")
def _bad_direction(case: Case) -> None:
    from AneurysmSegLib.core.errors import InputError
    from AneurysmSegLib.core.geometry import Image
    from AneurysmSegLib.core.pipeline import segment

    array, geometry = _scan_array()
    singular = Geometry(geometry.spacing, geometry.origin, (1, 0, 0, 0, 1, 0, 0, 1, 0))
    sheared = Geometry(geometry.spacing, geometry.origin, (1, 0.3, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(InputError, match="has a singular direction matrix"):
        segment(Image(array, singular, "scan"), case.loaded_models)
    with pytest.raises(InputError, match="direction matrix that is not orthonormal"):
        segment(Image(array, sheared, "scan"), case.loaded_models)


@row("Requests", "`--threads 100000` on a 2-core machine",
     "a warning (`more than the N CPU core(s) ... using N`) and the run goes on with N threads")
def _too_many_threads(case: Case) -> None:
    import torch

    from AneurysmSegLib.cli.segment import usable_cores

    threads = torch.get_num_threads()
    try:
        rc, _, err = case.cli("segment", case.scan(), "-o", case.tmp / "l.nii.gz", "--threads", 100000,
                              "--models", case.models)
        assert rc == 0 and torch.get_num_threads() == usable_cores()
    finally:
        torch.set_num_threads(threads)
    assert f"warning: --threads 100000 is more than the {usable_cores()} CPU core(s)" in err


# ------------------------------------------------------------------------------------------ seeds


def _seeds_file(path: Path, positions: list) -> Path:
    path.write_text(json.dumps({"coordinate_system": "LPS",
                                "seeds": [{"position": [float(v) for v in p], "label": f"U{i + 1}"}
                                          for i, p in enumerate(positions)]}))
    return path


@row("Seeds", "1000 seeds", "exit 2, `1000 seeds given; at most 100 are segmented in one run`; nothing runs")
def _too_many_seeds(case: Case) -> None:
    grid = [BLOBS[0][0] + np.array([i % 10, (i // 10) % 10, i // 100], float) for i in range(1000)]
    seeds = _seeds_file(case.tmp / "grid.json", grid)
    line = case.error("segment", case.scan(), "-o", case.tmp / "l.nii.gz", "--seeds", seeds, "--models", case.models)
    assert "1000 seeds given; at most 100 are segmented in one run" in line
    assert not (case.tmp / "l.nii.gz").exists()


@row("Seeds", "a seed outside the volume (with one inside)",
     "a warning naming it (`1 seed(s) outside the image ... not used: U2 at LPS (...) mm`), also in the report; "
     "the others run")
def _seed_outside(case: Case) -> None:
    seeds = _seeds_file(case.tmp / "s.json", [BLOBS[1][0], BLOBS[1][0] + np.array([0.0, 0.0, 500.0])])
    rc, out, err = case.cli("segment", case.scan(), "-o", case.tmp / "l.nii.gz", "--seeds", seeds, "--no-detect",
                            "--report", case.tmp / "r.json", "--models", case.models)
    assert rc == 0 and "1 aneurysm(s) from 1 VOI seed(s)" in out
    assert "warning: 1 seed(s) outside the image (90 x 96 x 48 voxels) not used: U2 at LPS (" in err
    assert any("U2 at LPS" in w for w in json.loads((case.tmp / "r.json").read_text())["warnings"])


@row("Seeds", "a user's seed on an aneurysm (seeds files say confidence 1.0)",
     "the aneurysm's confidence is the fine stage's own mean probability, not 1.00")
def _user_seed_confidence(case: Case) -> None:
    seeds = _seeds_file(case.tmp / "s.json", [BLOBS[1][0]])
    rc, out, _ = case.cli("segment", case.scan(), "-o", case.tmp / "l.nii.gz", "--seeds", seeds, "--no-detect",
                          "--report", case.tmp / "r.json", "--models", case.models)
    assert rc == 0
    confidence = json.loads((case.tmp / "r.json").read_text())["aneurysms"][0]["confidence"]
    assert 0.5 < confidence < 1.0 and f"confidence {confidence:.2f}" in out


@row("Python API", "a seed at NaN or infinity", "`InputError`: `a seed needs three finite coordinates`")
def _nan_seed(case: Case) -> None:
    from AneurysmSegLib.core.errors import InputError
    from AneurysmSegLib.core.pipeline import segment
    from AneurysmSegLib.core.result import Seed

    scan = synthetic_scan()
    for bad in ((float("nan"), 0.0, 0.0), (0.0, float("inf"), 0.0)):
        with pytest.raises(InputError, match="a seed needs three finite coordinates"):
            segment(scan, case.loaded_models, seeds=[Seed(bad)], detect=False)


@row("Python API", "`batch_size=-1` (or 0) with a seed on an aneurysm",
     "`InputError`: `batch_size must be a positive number of VOIs per call` (not 0 aneurysms)")
def _batch_size(case: Case) -> None:
    from AneurysmSegLib.core.errors import InputError
    from AneurysmSegLib.core.pipeline import segment
    from AneurysmSegLib.core.result import Seed

    scan = synthetic_scan()
    for bad in (-1, 0):
        with pytest.raises(InputError, match="batch_size must be a positive number of VOIs per call"):
            segment(scan, case.loaded_models, seeds=[Seed(tuple(BLOBS[0][0]))], detect=False, batch_size=bad)


@row("Python API", "`preprocessed=` of another image of the same size",
     "`InputError`: `computed from another image` (compared by content, not size)")
def _other_preprocessed(case: Case) -> None:
    from AneurysmSegLib.core.errors import InputError
    from AneurysmSegLib.core.pipeline import prepare, segment
    from AneurysmSegLib.core.result import Seed

    scan, other = synthetic_scan(), synthetic_scan(seed=1)
    assert scan.array.shape == other.array.shape and scan.content_key() != other.content_key()
    pre = prepare(other, case.loaded_models)
    with pytest.raises(InputError, match="computed from another image"):
        segment(scan, case.loaded_models, seeds=[Seed(tuple(BLOBS[0][0]))], detect=False, preprocessed=pre)
    copy = type(other)(other.array.copy(), other.geometry, "a copy")  # equal content: reused
    assert segment(copy, case.loaded_models, seeds=[Seed(tuple(BLOBS[0][0]))], detect=False,
                   preprocessed=pre) is not None


# ------------------------------------------------------------------------------------------ weights


def _training_checkpoints(folder: Path) -> tuple[Path, Path]:
    """Checkpoints as `aneurysmseg train` writes them (tiny networks, plain data), via the real saver."""
    import torch

    from AneurysmSegLib.networks import DeepMedic, SEUNet3D
    from AneurysmSegLib.training.loop import LoopConfig, save_checkpoint

    class Task:
        def __init__(self, kind: str, model: torch.nn.Module) -> None:
            self.kind, self.model = kind, model
            self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

        def describe(self) -> dict:
            return {"train_cases": ["a"], "val_cases": ["b"], "beta": np.float64(1.0)}

    torch.manual_seed(0)
    paths = []
    for kind, model in (("coarse", DeepMedic(widths=(4,) * 8, fc_widths=(8,))),
                        ("fine", SEUNet3D(in_channels=2, base_filters=4, depth=3))):
        (folder / kind).mkdir(parents=True)
        state = {"epoch": 0, "best_epoch": 0, "elapsed_s": np.float64(1.5), "best_metrics": {"val_loss": 0.5}}
        save_checkpoint(folder / kind / "best.pt", Task(kind, model), state,
                        LoopConfig(out=folder / kind, extra={"data": [folder]}))
        paths.append(folder / kind / "best.pt")
    return paths[0], paths[1]


@row("Weights", "a crafted checkpoint whose unpickling runs code, given to `export` (or `evaluate`, `train --resume`)",
     "exit 2, `refused unread (loading it could run code)`; the code never runs; no output folder is left")
def _crafted_checkpoint(case: Case) -> None:
    import torch

    marker = case.tmp / "marker"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    coarse, _ = _training_checkpoints(case.tmp / "runs")
    torch.save({"model": Payload()}, case.tmp / "evil.pt")
    line = case.error("export", "--coarse", coarse, "--fine", case.tmp / "evil.pt", "--out", case.tmp / "models")
    assert "evil.pt holds more than tensors and plain data and was refused unread" in line
    assert not marker.exists() and not (case.tmp / "models").exists()


@row("Weights", "`export` failing half-way (the fine checkpoint is not a checkpoint)",
     "exit 2; no output folder and no file left behind (weights and manifest appear together or not at all)")
def _export_fails(case: Case) -> None:
    coarse, fine = _training_checkpoints(case.tmp / "runs")
    broken = case.tmp / "broken.pt"
    broken.write_bytes(fine.read_bytes()[:1000])
    assert "cannot be read as a PyTorch checkpoint" in case.error(
        "export", "--coarse", coarse, "--fine", broken, "--out", case.tmp / "models")
    assert not (case.tmp / "models").exists()
    rc, out, _ = case.cli("export", "--coarse", coarse, "--fine", fine, "--out", case.tmp / "models")
    assert rc == 0 and listing(case.tmp / "models") == ["coarse_deepmedic.pt", "fine_se_unet.pt", "manifest.json"]


@row("Weights", "the bundled weights with a file replaced and its sha256 updated in their manifest",
     "exit 2, `is not the one exported with this AneurysmSeg`: the folder is checked against the checksums "
     "kept inside the package (docs/model-integrity.md)")
def _tampered_bundle(case: Case) -> None:
    import shutil

    from AneurysmSegLib.core import manifest as manifest_module

    bundled = case.tmp / "Models"
    shutil.copytree(manifest_module.default_model_dir(), bundled)
    record = case.tmp / "bundled_weights.py"
    record.write_text(manifest_module.release_record_text(bundled), encoding="utf-8")
    monkeypatch = case.request.getfixturevalue("monkeypatch")
    monkeypatch.setattr(manifest_module, "RELEASE_RECORD", record)
    monkeypatch.setattr(manifest_module, "default_model_dir", lambda: bundled)
    scan = case.scan()
    assert manifest_module.ModelManifest.read().release  # the intact copy is the release
    fine = bundled / "fine_se_unet.pt"
    fine.write_bytes(fine.read_bytes() + b"\0")
    data = json.loads((bundled / "manifest.json").read_text())
    data["fine"]["sha256"] = manifest_module.sha256_file(fine)
    (bundled / "manifest.json").write_text(json.dumps(data, indent=2))
    line = case.error("segment", scan, "-o", case.tmp / "l.nii.gz")
    assert "is not the one exported with this AneurysmSeg" in line
    # the same folder given with --models: intact by its own manifest, and the report says that is all
    folder = case.tmp / "mine"
    shutil.copytree(bundled, folder)
    assert not manifest_module.ModelManifest.read(folder).release
    assert "own manifest" in manifest_module.ModelManifest.read(folder).summary()["checked_against"]


# ------------------------------------------------------------------------------------------ the table


def render(rows: list[Row]) -> str:
    """docs/bad-inputs.md as the rows say it."""
    lines = ["# Bad inputs and what AneurysmSeg does with them", "",
             "Generated from `Testing/test_bad_inputs.py`, which runs every row (the real command line or",
             "library call on a real file) and fails when this file differs from the rows. Rewrite it with",
             "", "    ANEURYSMSEG_WRITE_TABLE=1 python -m pytest -q Testing/test_bad_inputs.py -k table", "",
             "Exit 2 means one line on stderr (`aneurysmseg segment: error: ...`) and nothing written;",
             "`InputError` is what the Python API raises for the same input (a `ValueError`).", ""]
    for area in dict.fromkeys(r.area for r in rows):
        lines += [f"## {area}", "", "| Input | Expected behaviour |", "|---|---|"]
        lines += [f"| {r.given} | {r.expected} |" for r in rows if r.area == area]
        lines.append("")
    return "\n".join(lines)


@pytest.mark.parametrize("entry", ROWS, ids=[r.check.__name__.strip("_") for r in ROWS])
def test_row(entry: Row, tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture) -> None:
    entry.check(Case(tmp_path, request, capsys))


def test_the_table_in_docs_is_current() -> None:
    text = render(ROWS)
    if os.environ.get("ANEURYSMSEG_WRITE_TABLE"):
        TABLE.write_text(text, encoding="utf-8")
    assert TABLE.is_file() and TABLE.read_text(encoding="utf-8") == text, (
        "docs/bad-inputs.md differs from the rows of Testing/test_bad_inputs.py; rewrite it with "
        "ANEURYSMSEG_WRITE_TABLE=1 python -m pytest -q Testing/test_bad_inputs.py -k table")
