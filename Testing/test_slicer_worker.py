"""The kept-alive worker process the module's panel uses: real child processes, real models (the
test models of test_scene), results put into a real MRML scene."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest
import vtk

from AneurysmSegLib.core.geometry import lps_to_ras
from AneurysmSegLib.slicer import runners, worker
from test_scene import (BLOB_A, BLOB_C, app, blobModels, blobVolume, controlPointNear,  # noqa: F401 (fixtures)
                        segmentsNear)

GRANDPARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def spawnWithGrandchild() -> tuple[subprocess.Popen, int]:
    """A child process that starts a grandchild, as the PythonSlicer launcher starts Python."""
    parent = subprocess.Popen([sys.executable, "-c", GRANDPARENT], stdout=subprocess.PIPE, text=True)
    return parent, int(parent.stdout.readline())


def test_killing_the_child_alone_leaves_the_grandchild_computing():
    parent, grandchild = spawnWithGrandchild()
    try:
        parent.kill()
        parent.wait(timeout=10)
        time.sleep(0.2)
        assert psutil.pid_exists(grandchild) and psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE
    finally:
        worker.killProcessTree(grandchild)
        parent.stdout.close()


def test_killProcessTree_ends_child_and_grandchild():
    parent, grandchild = spawnWithGrandchild()
    try:
        killed = worker.killProcessTree(parent.pid)
        assert set(killed) == {parent.pid, grandchild}
        parent.wait(timeout=10)
        gone = not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
        assert gone
        assert worker.killProcessTree(parent.pid) == []  # already gone: nothing to do, no error
    finally:
        parent.stdout.close()


def test_describeStage_reads_like_a_sentence():
    assert worker.describeStage("detection") == "Looking for aneurysm candidates (coarse network)..."
    assert worker.describeStage("fine segmentation") == "Segmenting each candidate (fine network)..."
    assert worker.describeStage("") == "Working..."
    assert not any("progress:" in worker.describeStage(s) for s in worker.STAGE_TEXT)


def wait(client, job, timeout=180):
    deadline = time.monotonic() + timeout
    fractions = []
    while not client.poll().finished:
        fractions.append(job.progress)
        assert time.monotonic() < deadline, f"the worker did not answer: {job.status}"
        time.sleep(0.05)
    return fractions


@pytest.fixture
def client(blobModels):
    c = worker.WorkerClient(modelDir=blobModels.model_dir, device="cpu", threads=1)
    yield c
    c.stop()


def test_worker_segments_then_refines_only_the_fine_stage_in_the_same_process(app, blobVolume, client):
    run = runners.prepareSegment(blobVolume)
    job = runners.submit(run, client)
    fractions = wait(client, job)
    assert job.state == "done", job.message
    assert fractions == sorted(fractions) and job.progress == pytest.approx(1.0)
    assert (job.output / "input.nrrd").is_file()
    pid = client.process.pid
    segmentation, seeds, table = runners.applyRun(run, job.result())
    assert sorted(segmentsNear(segmentation)) == ["A", "B"]

    # move the seed on A onto the missed blob C and refine: same worker, volume not sent again,
    # only the fine stage, only that seed
    seeds.SetNthControlPointPosition(controlPointNear(seeds, BLOB_A), *lps_to_ras(BLOB_C[0]))
    run = runners.prepareRefine(blobVolume)
    assert len(run.seeds) == 1
    job = runners.submit(run, client)
    assert "kept preprocessing" in job.status
    wait(client, job)
    assert job.state == "done", job.message
    result = job.result()
    assert "preprocess" not in result.timings and "detect" not in result.timings
    assert client.process.pid == pid and not (job.output / "input.nrrd").exists()
    runners.applyRun(run, result)
    assert sorted(segmentsNear(segmentation)) == ["B", "C"]


def test_worker_cancel_leaves_the_scene_unchanged(app, blobVolume, client):
    run = runners.prepareSegment(blobVolume)
    before = app.scene.GetNumberOfNodes()
    job = runners.submit(run, client)
    client.cancel()
    wait(client, job, timeout=60)
    assert job.state == "cancelled"
    assert app.scene.GetNumberOfNodes() == before
    # the next request is answered (by the same worker, or a fresh one if it had to be killed)
    job = runners.submit(runners.prepareSegment(blobVolume), client)
    wait(client, job)
    assert job.state == "done", job.message


def test_worker_that_does_not_stop_is_killed_with_its_children(app, blobVolume, client, monkeypatch):
    monkeypatch.setattr(worker, "CANCEL_GRACE_S", 0.0)
    job = runners.submit(runners.prepareSegment(blobVolume), client)
    process = psutil.Process(client.process.pid)
    client.cancel()
    client.poll()
    assert job.state == "cancelled" and client.process is None
    assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE


def test_worker_errors_come_back_with_a_message_and_the_traceback(app, blobVolume, tmp_path):
    client = worker.WorkerClient(modelDir=tmp_path / "no-models", device="cpu")
    try:
        job = runners.submit(runners.prepareSegment(blobVolume), client)
        wait(client, job, timeout=120)
        assert job.state == "failed"
        assert "no-models" in job.message or "manifest" in job.message
        assert "Traceback" in job.details
        with pytest.raises(Exception, match="no-models|manifest"):
            job.result()
    finally:
        client.stop()


def test_refine_with_only_deleted_seeds_needs_no_process(app, blobVolume, blobModels):
    cache: dict = {}
    run = runners.prepareSegment(blobVolume)
    segmentation, seeds, table = runners.applyRun(run, runners.runInProcess(run, blobModels, cache))
    seeds.RemoveNthControlPoint(0)
    client = worker.WorkerClient(modelDir=blobModels.model_dir, device="cpu")
    run = runners.prepareRefine(blobVolume)
    assert runners.submit(run, client) is None and client.process is None
    runners.applyRun(run, None)
    assert table.GetNumberOfRows() == 1


def test_input_warnings_come_back_with_the_job_for_the_panel(app, blobVolume, client):
    """An input the pipeline half-understands (here a seed outside the image) is a warning the panel
    shows in its status line and a message box; the run still gives its result."""
    from AneurysmSegLib.slicer import findings

    seeds = findings.seedsNodeFor(blobVolume)
    seeds.AddControlPoint(vtk.vtkVector3d(*lps_to_ras(BLOB_A[0])))
    seeds.AddControlPoint(vtk.vtkVector3d(500.0, 500.0, 500.0))
    run = runners.prepareRefine(blobVolume)
    job = runners.submit(run, client)
    wait(client, job)
    assert job.state == "done", job.message
    assert len(job.warnings) == 1 and "outside the image" in job.warnings[0]
    segmentation, _, table = runners.applyRun(run, job.result())
    assert segmentsNear(segmentation) == ["A"] and table.GetNumberOfRows() == 1
