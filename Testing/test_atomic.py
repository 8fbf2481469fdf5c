"""io.atomic: one run's outputs as one unit (staged, committed together under a lock, stale files
removed, inputs never replaced, the umask respected)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from AneurysmSegLib.core.errors import OutputError
from AneurysmSegLib.io import atomic
from AneurysmSegLib.io.atomic import LOCK_NAME, OutputSet, refuse_inputs, write_text_atomic


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def visible(folder: Path) -> list[str]:
    return [n for n in listing(folder) if not n.startswith(".")]


def test_commit_moves_every_file_at_once_and_removes_an_earlier_runs_leftovers(tmp_path: Path) -> None:
    stl = tmp_path / "stl"
    stl.mkdir()
    for n in (1, 2, 3):
        (stl / f"aneurysm_{n}.stl").write_text("old")
    (stl / "notes.txt").write_text("the user's own file")
    (stl / "aneurysm_x.stl").write_text("not a name this tool writes")
    with OutputSet() as outputs:
        outputs.stage(tmp_path / "out" / "labels.nii.gz").write_text("labels")
        for n in (1, 2):
            outputs.stage(stl / f"aneurysm_{n}.stl").write_text("new")
        outputs.own(stl, r"aneurysm_\d+\.stl")
        # nothing has moved yet: the earlier run's files are all still there
        assert visible(stl) == ["aneurysm_1.stl", "aneurysm_2.stl", "aneurysm_3.stl", "aneurysm_x.stl", "notes.txt"]
        assert not (tmp_path / "out").exists()
    assert listing(stl) == ["aneurysm_1.stl", "aneurysm_2.stl", "aneurysm_x.stl", "notes.txt"]
    assert (stl / "aneurysm_1.stl").read_text() == "new"
    assert listing(tmp_path) == ["out", "stl"]  # no staging folder, no lock file left
    assert outputs.written == [tmp_path / "out" / "labels.nii.gz", stl / "aneurysm_1.stl", stl / "aneurysm_2.stl"]


def test_an_exception_before_the_commit_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(KeyError):
        with OutputSet() as outputs:
            outputs.stage(tmp_path / "a.txt").write_text("new")
            outputs.stage(tmp_path / "sub" / "b.txt").write_text("new")
            outputs.own(tmp_path, r".*\.txt")
            raise KeyError("the pipeline failed")
    assert listing(tmp_path) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"


def test_a_failure_during_the_commit_puts_the_earlier_files_back(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("old a")
    outputs = OutputSet()
    outputs.stage(tmp_path / "a.txt").write_text("new a")
    outputs.stage(tmp_path / "c.txt").write_text("new c")
    (tmp_path / "c.txt").mkdir()  # appears after staging: the second move must fail
    with pytest.raises(OutputError, match="earlier files were put back"):
        outputs.commit()
    assert (tmp_path / "a.txt").read_text() == "old a"
    assert listing(tmp_path) == ["a.txt", "c.txt"]


def test_an_output_that_is_or_resolves_to_an_input_is_refused(tmp_path: Path) -> None:
    scan = tmp_path / "x.nii.gz"
    scan.write_text("scan")
    (tmp_path / "link.nii.gz").symlink_to(scan)
    os.link(scan, tmp_path / "hard.nii.gz")
    for out in (scan, tmp_path / "link.nii.gz", tmp_path / "hard.nii.gz", tmp_path / "." / "x.nii.gz"):
        with pytest.raises(OutputError, match="is the input"):
            OutputSet(inputs=[scan]).stage(out)
        with pytest.raises(OutputError, match="is the input"):
            refuse_inputs([None, out], [tmp_path / "other", scan])
    assert scan.read_text() == "scan"
    assert listing(tmp_path) == ["hard.nii.gz", "link.nii.gz", "x.nii.gz"]


def test_stale_files_that_are_inputs_are_never_removed(tmp_path: Path) -> None:
    (tmp_path / "aneurysm_1.stl").write_text("read by this run")
    with OutputSet(inputs=[tmp_path / "aneurysm_1.stl"]) as outputs:
        outputs.own(tmp_path, r"aneurysm_\d+\.stl")
    assert listing(tmp_path) == ["aneurysm_1.stl"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_the_permissions_of_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "report.json", "{}")
        with OutputSet() as outputs:
            outputs.stage(tmp_path / "deep" / "labels.nii.gz").write_bytes(b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "deep" / "labels.nii.gz").stat().st_mode) == mode


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from AneurysmSegLib.io.atomic import _folder_lock
with _folder_lock(Path(sys.argv[1]), time.monotonic() + 5):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_commit_waits_for_another_processs_commit_into_the_same_folder(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tmp_path), "1.5"], env=env,
                          stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match="another AneurysmSeg run is writing into"):
            with OutputSet(lock_timeout=0.3) as outputs:
                outputs.stage(tmp_path / "x.txt").write_text("x")
        assert visible(tmp_path) == []  # refused: nothing written
        start = time.monotonic()
        with OutputSet(lock_timeout=30) as outputs:
            outputs.stage(tmp_path / "x.txt").write_text("x")
        assert holder.wait(timeout=30) == 0
        assert time.monotonic() - start > 0.5  # it waited for the other commit to finish
    assert listing(tmp_path) == ["x.txt"]  # the lock file goes with the last holder


def test_signals_are_held_back_while_files_move() -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        with atomic._held_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert received == []  # not delivered while held
        assert received == [signal.SIGINT]  # delivered once the files are in place
    finally:
        signal.signal(signal.SIGINT, previous)


def test_staging_refuses_a_folder_or_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="is a folder"):
        OutputSet().stage(tmp_path)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        OutputSet().stage(tmp_path / "afile" / "labels.nii.gz")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        OutputSet().own(tmp_path / "afile", r".*")
    assert listing(tmp_path) == ["afile"]
