"""Running the pipeline for the Slicer module: in this process (with a cache of the preprocessed scan,
so refining from seeds runs the fine stage only) or in a child process (the UI stays responsive).

Like :mod:`.scene`, nothing here changes the scene: the caller applies a result with
``scene.updateResultNodes``, so cancelling leaves the scene as it was.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..core.errors import AneurysmSegError, OutputError
from ..core.geometry import Geometry
from ..core.result import Seed, SegmentationResult
from .scene import geometryFromVolumeNode, imageFromVolumeNode, seedsFromMarkupsNode

# ------------------------------------------------------------------------- running the pipeline


def runPipeline(volumeNode, *, seeds: Sequence[Seed] | None = None, detect: bool = True,
                detectionThreshold: float | None = None, device: str = "auto", models: Any = None,
                progress: Callable[[float, str], None] | None = None,
                cancel: Callable[[], bool] | None = None,
                preprocessedCache: dict | None = None) -> SegmentationResult | None:
    """Run the pipeline in this process on a volume node; the scene is not touched.

    ``models`` (from ``models.load_models``) may be passed to reuse loaded weights. With a
    ``preprocessedCache`` dict the preprocessed scan of the last volume is kept there, so that
    refining from seeds runs the fine stage only. Returns None when ``cancel`` asked to stop.
    """
    from ..core import pipeline
    from ..core.models import load_models

    image = imageFromVolumeNode(volumeNode)
    if models is None:
        models = load_models(device=device)
    preprocessed = None
    if preprocessedCache is not None:
        key = (volumeNode.GetID(), volumeNode.GetImageData().GetMTime(), image.geometry, id(models))
        preprocessed = preprocessedCache.get(key)
        if preprocessed is None:
            if progress is not None:
                progress(0.0, "preprocessing")
            preprocessed = pipeline.prepare(image, models)
            preprocessedCache.clear()  # one scan at a time: it is as large as the volume
            preprocessedCache[key] = preprocessed
    return pipeline.segment(image, models, seeds=list(seeds) if seeds is not None else None, detect=detect,
                            detection_threshold=detectionThreshold, progress=progress, cancel=cancel,
                            preprocessed=preprocessed)


def refineFromSeeds(volumeNode, seedsNode, *, device: str = "auto", models: Any = None,
                    progress: Callable[[float, str], None] | None = None,
                    cancel: Callable[[], bool] | None = None,
                    preprocessedCache: dict | None = None) -> SegmentationResult | None:
    """Fine stage only, one VOI per control point of ``seedsNode``; no seeds gives no aneurysms."""
    seeds = seedsFromMarkupsNode(seedsNode)
    if not seeds:
        return emptyResult(volumeNode)
    return runPipeline(volumeNode, seeds=seeds, detect=False, device=device, models=models,
                       progress=progress, cancel=cancel, preprocessedCache=preprocessedCache)


def emptyResult(volumeNode) -> SegmentationResult:
    """A result without aneurysms in the volume's geometry (what refining from zero seeds gives)."""
    dims = volumeNode.GetImageData().GetDimensions()
    return SegmentationResult(labels=np.zeros((dims[2], dims[1], dims[0]), np.uint8),
                              geometry=geometryFromVolumeNode(volumeNode), aneurysms=[], seeds=[])


_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")
_FRACTION = re.compile(r"progress\W+([01](?:\.\d+)?)\b", re.IGNORECASE)


def parseProgressLine(line: str) -> float | None:
    """Fraction done (0..1) announced by a line of the command's output, or None.

    Understands "progress: 0.42 ...", "progress 0.42" and percentages such as tqdm's "42%|###".
    """
    match = _FRACTION.search(line)
    if match:
        return min(1.0, max(0.0, float(match.group(1))))
    match = _PERCENT.search(line)
    if match:
        return min(1.0, max(0.0, float(match.group(1)) / 100.0))
    return None


def defaultPythonExecutable() -> str:
    """Slicer's own Python launcher inside Slicer (PythonSlicer), else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


class BackgroundSegmentation:
    """The ``aneurysmseg segment`` command in a child process, for a UI that must stay responsive.

    :meth:`start` writes the volume (NRRD, exact geometry) and the seeds (.mrk.json, LPS) to a
    private folder and starts the command; the caller polls :meth:`poll` (e.g. from a timer), which
    returns True once the process has ended; :meth:`result` then reads the label image and report
    back. :meth:`cancel` kills the process and deletes the folder. Nothing here touches the scene:
    the caller applies the result with :func:`updateResultNodes`, so cancelling leaves it unchanged.
    """

    def __init__(self, volumeNode, *, seeds: Sequence[Seed] | None = None, detect: bool = True,
                 detectionThreshold: float | None = None, device: str = "auto", threads: int | None = None,
                 modelDir: str | Path | None = None, pythonExecutable: str | None = None) -> None:
        self.volumeNode = volumeNode
        self.seeds = list(seeds) if seeds is not None else None
        self.detect = detect
        self.detectionThreshold = detectionThreshold
        self.device = {"gpu": "cuda"}.get(str(device).lower(), str(device).lower())
        self.threads = threads
        self.modelDir = Path(modelDir) if modelDir is not None else None
        self.pythonExecutable = pythonExecutable or defaultPythonExecutable()
        self.progress = 0.0
        self.status = ""
        self.output: list[str] = []
        self.process: subprocess.Popen | None = None
        self.workDir: Path | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._geometry: Geometry | None = None
        self._empty: SegmentationResult | None = None

    # -- lifecycle

    def command(self) -> list[str]:
        assert self.workDir is not None
        cmd = [self.pythonExecutable, "-u", "-m", "AneurysmSegLib.cli", "segment", str(self.workDir / "input.nrrd"),
               "-o", str(self.workDir / "labels.nrrd"), "--report", str(self.workDir / "report.json"),
               "--device", self.device]
        if self.seeds is not None:
            cmd += ["--seeds", str(self.workDir / "seeds.mrk.json")]
        if not self.detect:
            cmd.append("--no-detect")
        if self.detectionThreshold is not None:
            cmd += ["--detection-threshold", f"{self.detectionThreshold:g}"]
        if self.threads:
            cmd += ["--threads", str(int(self.threads))]
        if self.modelDir is not None:
            cmd += ["--models", str(self.modelDir)]
        return cmd

    def start(self) -> None:
        """Write the inputs and start the process (returns at once)."""
        import SimpleITK as sitk

        from ..io.images import to_sitk
        from ..io.seeds import write_seeds

        if self.process is not None or self._empty is not None:
            raise RuntimeError("this segmentation has already been started")
        if not self.detect and not self.seeds:
            # refining from zero seeds: nothing to run, the result is "no aneurysms"
            self._empty = emptyResult(self.volumeNode)
            self.progress, self.status = 1.0, "No seeds: no aneurysms"
            return
        image = imageFromVolumeNode(self.volumeNode)
        self._geometry = image.geometry
        self.workDir = Path(tempfile.mkdtemp(prefix="aneurysmseg-"))
        try:
            sitk.WriteImage(to_sitk(image.array, image.geometry), str(self.workDir / "input.nrrd"), True)
            if self.seeds is not None:
                write_seeds(self.seeds, self.workDir / "seeds.mrk.json", "LPS")
            env = dict(os.environ)
            libParent = str(Path(__file__).resolve().parents[2])
            env["PYTHONPATH"] = os.pathsep.join(p for p in (libParent, env.get("PYTHONPATH", "")) if p)
            env["PYTHONUNBUFFERED"] = "1"
            self.process = subprocess.Popen(
                self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=str(self.workDir), start_new_session=(os.name == "posix"),
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        except BaseException:
            self.cleanup()
            raise
        self.status = "Starting..."
        self._reader = threading.Thread(target=self._readOutput, args=(self.process.stdout,), daemon=True)
        self._reader.start()

    def _readOutput(self, stream) -> None:
        """Split the output on newlines and carriage returns (progress bars rewrite one line)."""
        pending = b""
        try:
            for chunk in iter(lambda: stream.read1(4096), b""):
                pending += chunk
                parts = re.split(rb"[\r\n]", pending)
                pending = parts.pop()
                for part in parts:
                    if part.strip():
                        self._lines.put(part.decode("utf-8", "replace").strip())
        except (OSError, ValueError):  # the stream was closed by cancel/cleanup
            return
        if pending.strip():
            self._lines.put(pending.decode("utf-8", "replace").strip())

    def poll(self) -> bool:
        """Take in new output (progress, status); True once the process has ended."""
        if self._empty is not None:
            return True
        if self.process is None:
            return False
        finished = self.process.poll() is not None
        if finished and self._reader is not None:
            self._reader.join(timeout=5)
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            self.output.append(line)
            fraction = parseProgressLine(line)
            if fraction is not None:
                self.progress = max(self.progress, fraction)
            self.status = line
        return finished

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the process ends (scripts and tests); True when it ended."""
        if self._empty is not None:
            return True
        if self.process is None:
            return False
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return self.poll()

    def cancel(self) -> None:
        """Stop the process (and its children) and delete its files."""
        if self.process is not None and self.process.poll() is None:
            try:
                if os.name == "posix":
                    os.killpg(self.process.pid, signal.SIGKILL)
                else:
                    self.process.kill()
            except (ProcessLookupError, PermissionError):
                self.process.kill()
            self.process.wait(timeout=10)
        self.status = "Cancelled"
        self.cleanup()

    def cleanup(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        if self.workDir is not None:
            shutil.rmtree(self.workDir, ignore_errors=True)
            self.workDir = None

    # -- results

    def errorMessage(self) -> str:
        """The command's own one-line reason when it failed (its last error line)."""
        for line in reversed(self.output):
            if "error" in line.lower():
                return line
        if self.output:
            return self.output[-1]
        code = self.process.returncode if self.process is not None else None
        return f"the segmentation process exited with code {code}"

    def result(self) -> SegmentationResult:
        """The finished run's result (labels in the volume's geometry); raises the command's error."""
        if self._empty is not None:
            return self._empty
        if self.process is None or self.process.poll() is None:
            raise RuntimeError("the segmentation process has not finished")
        self.poll()
        if self.process.returncode != 0:
            raise AneurysmSegError(self.errorMessage())
        assert self.workDir is not None and self._geometry is not None
        return readResultFiles(self.workDir / "labels.nrrd", self.workDir / "report.json", self._geometry)


def readResultFiles(labelPath: str | Path, reportPath: str | Path, geometry: Geometry) -> SegmentationResult:
    """Label image + JSON report written by ``aneurysmseg segment`` -> :class:`SegmentationResult`.

    ``geometry`` is the input's: the label image must match it (the command guarantees that).
    """
    import SimpleITK as sitk

    labelImage = sitk.ReadImage(str(labelPath))
    labels = sitk.GetArrayFromImage(labelImage).astype(np.int32)
    if not np.allclose(labelImage.GetSpacing(), geometry.spacing, atol=1e-4) or \
            not np.allclose(labelImage.GetOrigin(), geometry.origin, atol=1e-3):
        raise OutputError(f"{labelPath} does not have the input's geometry")
    report = json.loads(Path(reportPath).read_text(encoding="utf-8"))
    return SegmentationResult.from_report(report, labels, geometry)
