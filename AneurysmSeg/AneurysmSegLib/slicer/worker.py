"""A kept-alive pipeline process for the Slicer module: models loaded once, preprocessing kept.

The module's panel must stay responsive, so the networks run in a child process. Starting one per
click would re-import torch, reload the weights and redo preprocessing each time; instead one
worker serves every request of a session. After "Segment" it keeps the preprocessed scan, so a
refine (the fine stage on a few seeds) takes seconds.

Protocol: one JSON object per line. The client writes requests to the worker's stdin::

    {"id": 3, "command": "run", "volume": {"key": "...", "path": "in.nrrd" or null},
     "seeds": [Seed.to_dict(), ...] or null, "detect": true, "threshold": 0.95 or null, "output": "dir"}
    {"id": 3, "command": "cancel"}

and reads events from its stdout: ``ready`` (models loaded), ``progress`` (fraction, message),
``done`` (labels + report files written, the key of the kept preprocessing), ``cancelled``,
``error`` (a one-line message and the traceback). Anything else the process prints goes to stderr.

Nothing here imports ``slicer``: the worker runs in PythonSlicer without MRML, and the client
(:class:`WorkerClient`) takes plain images and seeds; ``scene`` converts nodes.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Sequence

from ..core.errors import AneurysmSegError, InputWarning
from ..core.geometry import Image
from ..core.result import Seed, SegmentationResult

#: Seconds a cancelled request may take to stop by itself before the process tree is killed.
CANCEL_GRACE_S = 5.0


# ------------------------------------------------------------------------------- process trees


def killProcessTree(pid: int, timeout: float = 5.0) -> list[int]:
    """Kill ``pid`` and every process below it; returns the pids that were killed.

    Killing the child alone is not enough: in Slicer the child is the PythonSlicer launcher and the
    Python that computes is its child (on Windows it survives its launcher).
    """
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    try:
        processes = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        processes = [parent]
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=timeout)
    return [p.pid for p in processes]


# --------------------------------------------------------------------------------- worker side


@dataclass
class _State:
    """What the worker keeps between requests."""

    models: Any
    preparedKey: str = ""
    prepared: Any = None
    image: Image | None = None
    cancelled: set = field(default_factory=set)


def _emit(stream: IO[str], lock: threading.Lock, **event: Any) -> None:
    with lock:
        stream.write(json.dumps(event) + "\n")
        stream.flush()


def serve(requests: IO[str], events: IO[str], modelDir: str | None, device: str, threads: int | None) -> int:
    """Answer requests until stdin closes; returns the exit code."""
    lock = threading.Lock()
    inbox: queue.Queue = queue.Queue()
    cancelled: set = set()

    def read() -> None:
        for line in requests:
            line = line.strip()
            if not line:
                continue
            try:
                request = json.loads(line)
            except ValueError:
                _emit(events, lock, event="error", id=None, message=f"not a JSON request: {line[:80]}", details="")
                continue
            if request.get("command") == "cancel":
                cancelled.add(request.get("id"))
            else:
                inbox.put(request)
        inbox.put(None)

    try:
        import torch

        from ..core.models import load_models

        if threads:
            torch.set_num_threads(int(threads))
        state = _State(models=load_models(modelDir, device=device), cancelled=cancelled)
    except Exception as exc:  # the client shows the message; the traceback goes to its log
        _emit(events, lock, event="error", id=None, message=str(exc) or type(exc).__name__,
              details=traceback.format_exc())
        return 1
    _emit(events, lock, event="ready", device=str(state.models.device), torch=torch.__version__)
    threading.Thread(target=read, daemon=True).start()
    while True:
        request = inbox.get()
        if request is None:
            return 0
        _handle(request, state, events, lock)


def _handle(request: dict, state: _State, events: IO[str], lock: threading.Lock) -> None:
    from ..core import pipeline
    from ..io.images import read_image, write_label

    rid = request.get("id")
    last = [0.0]

    def progress(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.2 or fraction >= 1.0:  # a few lines a second are enough for a progress bar
            last[0] = now
            _emit(events, lock, event="progress", id=rid, fraction=round(float(fraction), 4), message=message)

    def cancel() -> bool:
        return rid in state.cancelled

    try:
        volume = request["volume"]
        if volume.get("path"):
            state.image = read_image(volume["path"])
            state.preparedKey, state.prepared = "", None
        elif volume.get("key") != state.preparedKey or state.image is None:
            raise AneurysmSegError("the worker does not hold this volume any more; send it again")
        if state.prepared is None:
            progress(0.0, "preprocessing")
            state.prepared = pipeline.prepare(state.image, state.models)
            state.preparedKey = str(volume.get("key", ""))
        if cancel():
            _emit(events, lock, event="cancelled", id=rid)
            return
        seeds = request.get("seeds")
        with warnings.catch_warnings(record=True) as caught:  # InputWarnings go to the panel, not stderr
            warnings.simplefilter("always", InputWarning)
            result = pipeline.segment(state.image, state.models,
                                      seeds=[Seed.from_dict(s) for s in seeds] if seeds is not None else None,
                                      detect=bool(request.get("detect", True)),
                                      detection_threshold=request.get("threshold"), progress=progress,
                                      cancel=cancel, preprocessed=state.prepared)
        shown = [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
        for w in caught:
            if not issubclass(w.category, InputWarning):
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        if result is None:
            _emit(events, lock, event="cancelled", id=rid)
            return
        output = Path(request["output"])
        output.mkdir(parents=True, exist_ok=True)
        write_label(result.labels, result.geometry, output / "labels.nrrd")
        (output / "report.json").write_text(json.dumps(result.to_report()), encoding="utf-8")
        _emit(events, lock, event="done", id=rid, labels=str(output / "labels.nrrd"),
              report=str(output / "report.json"), preparedKey=state.preparedKey, warnings=shown)
    except Exception as exc:
        _emit(events, lock, event="error", id=rid, message=str(exc) or type(exc).__name__,
              details=traceback.format_exc())
    finally:
        state.cancelled.discard(rid)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="model folder (default: the bundled weights)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    events = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not corrupt the event stream
    return serve(sys.stdin, events, args.models, args.device, args.threads)


if __name__ == "__main__":
    sys.exit(main())


# --------------------------------------------------------------------------------- client side


def defaultPythonExecutable() -> str:
    """Slicer's own Python launcher inside Slicer (PythonSlicer), else this interpreter."""
    import shutil

    return shutil.which("PythonSlicer") or sys.executable


@dataclass
class Job:
    """One request to the worker, as the panel polls it."""

    id: int
    geometry: Any
    output: Path
    progress: float = 0.0
    status: str = "Waiting for the worker..."
    state: str = "running"  # running, done, cancelled, failed
    message: str = ""
    details: str = ""
    labels: Path | None = None
    report: Path | None = None
    warnings: list = field(default_factory=list)  # InputWarning messages of the run, for the user

    @property
    def finished(self) -> bool:
        return self.state != "running"

    def result(self) -> SegmentationResult:
        """The finished job's result; raises AneurysmSegError with the worker's message if it failed."""
        import SimpleITK as sitk

        import numpy as np

        if self.state == "failed":
            raise AneurysmSegError(self.message)
        if self.state != "done" or self.labels is None or self.report is None:
            raise RuntimeError(f"the job is {self.state}, there is no result")
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(self.labels))).astype(np.int32)
        report = json.loads(self.report.read_text(encoding="utf-8"))
        return SegmentationResult.from_report(report, labels, self.geometry)


class WorkerClient:
    """Starts the worker on first use, sends requests, turns its events into :class:`Job` updates.

    Poll :meth:`poll` from a timer (Slicer) or call :meth:`wait` (scripts, tests). :meth:`cancel`
    asks the worker to stop (it keeps its models and preprocessing); if it has not stopped after
    :data:`CANCEL_GRACE_S`, :meth:`poll` kills the whole process tree and the next request starts a
    fresh worker. Nothing here touches the scene.
    """

    def __init__(self, modelDir: str | Path | None = None, device: str = "auto", threads: int | None = None,
                 pythonExecutable: str | None = None, log=None) -> None:
        self.modelDir = Path(modelDir) if modelDir is not None else None
        self.device = {"gpu": "cuda"}.get(str(device).lower(), str(device).lower())
        self.threads = threads
        self.pythonExecutable = pythonExecutable or defaultPythonExecutable()
        self.log = log or (lambda line: None)
        self.process: subprocess.Popen | None = None
        self.preparedKey = ""  # the volume whose preprocessing the worker holds
        self.workerInfo: dict = {}
        self.job: Job | None = None
        self._events: queue.Queue = queue.Queue()
        self._nextId = 0
        self._cancelAt: float | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.startupError: tuple[str, str] | None = None

    # -- process

    def command(self) -> list[str]:
        cmd = [self.pythonExecutable, "-u", "-m", "AneurysmSegLib.slicer.worker", "--device", self.device]
        if self.modelDir is not None:
            cmd += ["--models", str(self.modelDir)]
        if self.threads:
            cmd += ["--threads", str(int(self.threads))]
        return cmd

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _start(self) -> None:
        env = dict(os.environ)
        libParent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (libParent, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self._tmp = tempfile.TemporaryDirectory(prefix="aneurysmseg-worker-")
        self.log("AneurysmSeg: starting " + " ".join(self.command()))
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            cwd=self._tmp.name, text=True, encoding="utf-8", errors="replace", bufsize=1,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        self.preparedKey, self.workerInfo, self.startupError = "", {}, None
        self._events = events = queue.Queue()  # per process: a killed one's last words are dropped with it

        def readEvents(stream) -> None:
            for line in stream:
                line = line.strip()
                if not line:
                    continue
                try:
                    events.put(json.loads(line))
                except ValueError:
                    events.put({"event": "log", "line": line})
            events.put({"event": "exit"})

        def readLog(stream) -> None:
            for line in stream:
                if line.strip():
                    events.put({"event": "log", "line": line.rstrip()})

        threading.Thread(target=readEvents, args=(self.process.stdout,), daemon=True).start()
        threading.Thread(target=readLog, args=(self.process.stderr,), daemon=True).start()

    def stop(self) -> None:
        """Kill the worker and everything it started; its preprocessing is lost."""
        if self.process is not None:
            if self.process.poll() is None:
                killProcessTree(self.process.pid)
            for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
                try:
                    stream.close()
                except (OSError, ValueError):
                    pass
            self.process.wait(timeout=10)
        self.process = None
        self.preparedKey = ""
        self._events = queue.Queue()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- requests

    def submit(self, image: Image, volumeKey: str, *, seeds: Sequence[Seed] | None = None, detect: bool = True,
               threshold: float | None = None) -> Job:
        """Send one run; the volume is written for the worker only when it does not hold it yet."""
        from ..io.images import write_image

        if self.job is not None and not self.job.finished:
            raise RuntimeError("the worker is busy with another request")
        if not self.alive:
            self.stop()
            self._start()
        assert self._tmp is not None and self.process is not None and self.process.stdin is not None
        self._nextId += 1
        work = Path(self._tmp.name) / f"run{self._nextId}"
        work.mkdir()
        volume: dict[str, Any] = {"key": volumeKey, "path": None}
        if volumeKey != self.preparedKey:
            volume["path"] = str(write_image(image.array, image.geometry, work / "input.nrrd", compress=False))
        self.job = Job(id=self._nextId, geometry=image.geometry, output=work)
        if volume["path"] is None:
            self.job.status = "Fine stage on the kept preprocessing..."
        request = {"id": self._nextId, "command": "run", "volume": volume,
                   "seeds": [s.to_dict() for s in seeds] if seeds is not None else None,
                   "detect": bool(detect), "threshold": threshold, "output": str(work)}
        self._send(request)
        return self.job

    def _send(self, request: dict) -> None:
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError):  # the worker died; poll() reports it
            pass

    def cancel(self) -> None:
        """Ask the running job to stop; the scene is untouched either way."""
        job = self.job
        if job is None or job.finished:
            return
        self._send({"id": job.id, "command": "cancel"})
        self._cancelAt = time.monotonic()
        job.status = "Cancelling..."

    def poll(self) -> Job | None:
        """Take in the worker's events; returns the current job (check ``job.finished``)."""
        job = self.job
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            kind = event.get("event")
            if kind == "log":
                self.log(event.get("line", ""))
            elif kind == "ready":
                self.workerInfo = event
            elif kind == "exit":
                self.preparedKey = ""
                if job is not None and not job.finished:
                    job.state = "failed"
                    if not job.message:
                        job.message = "the segmentation process ended unexpectedly (see the log)"
            elif job is not None and event.get("id") in (job.id, None):
                self._apply(job, event)
        if (job is not None and not job.finished and self._cancelAt is not None
                and time.monotonic() - self._cancelAt > CANCEL_GRACE_S):
            self.stop()  # did not stop by itself: kill the tree
            job.state, job.status = "cancelled", "Cancelled"
        if job is not None and job.finished:
            self._cancelAt = None
        return job

    def _apply(self, job: Job, event: dict) -> None:
        kind = event.get("event")
        if kind == "progress":
            job.progress = max(job.progress, float(event.get("fraction", 0.0)))
            job.status = describeStage(str(event.get("message", "")))
        elif kind == "done":
            job.labels, job.report = Path(event["labels"]), Path(event["report"])
            job.warnings = [str(w) for w in event.get("warnings", [])]
            self.preparedKey = str(event.get("preparedKey", ""))
            job.state, job.progress, job.status = "done", 1.0, "Done"
        elif kind == "cancelled":
            job.state, job.status = "cancelled", "Cancelled"
        elif kind == "error":
            job.state, job.message, job.details = "failed", str(event.get("message", "")), str(event.get("details", ""))
            job.status = "Failed"
            if event.get("id") is None:
                self.startupError = (job.message, job.details)

    def wait(self, timeout: float | None = None) -> Job | None:
        """Block until the current job finishes (scripts and tests)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.poll()
            if job is None or job.finished:
                return job
            if end is not None and time.monotonic() > end:
                return job
            time.sleep(0.05)


#: What the pipeline's stage names mean to a person watching the progress bar.
STAGE_TEXT = {
    "preprocessing": "Preprocessing (arteries, intensity)",
    "detection": "Looking for aneurysm candidates (coarse network)",
    "fine segmentation": "Segmenting each candidate (fine network)",
    "measurements": "Measuring",
}


def describeStage(message: str) -> str:
    """A status line for a pipeline progress message ("detection 3/12" -> readable text)."""
    head = message.strip()
    for stage, text in STAGE_TEXT.items():
        if head.lower().startswith(stage):
            rest = head[len(stage):].strip(" :")
            return f"{text} {rest}".rstrip() + "..."
    return head[:1].upper() + head[1:] if head else "Working..."
