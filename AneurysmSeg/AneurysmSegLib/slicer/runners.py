"""Running the pipeline for the Slicer module: what a "Segment" or "Refine" sends through the
networks, where it runs, and how its answer reaches the scene.

A :class:`Run` is planned from the scene (which seeds are new or moved, which findings the user
accepted or edited), executed in this process (:func:`runInProcess`: scripts, tests) or by the
kept-alive worker process (:func:`submit`, :mod:`.worker`: the panel, which must stay responsive),
and applied by :func:`applyRun` through :mod:`.findings`. Nothing changes the scene before
:func:`applyRun`, so a cancelled or failed run leaves it as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..core.result import Seed, SegmentationResult
from . import findings, scene
from .scene import imageFromVolumeNode

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
        key = (image.content_key(), id(models))  # content, not node or time: an edited volume misses
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


# ------------------------------------------------------------------ runs: plan, execute, apply


@dataclass
class Run:
    """One "Segment" or "Refine" on a volume: which seeds go through the pipeline and how the answer
    is put into the scene. Made by :func:`prepareSegment` / :func:`prepareRefine`; executed in this
    process (:func:`runInProcess`) or by the kept-alive worker (:func:`submit`); applied by
    :func:`applyRun`. Nothing changes the scene before :func:`applyRun`."""

    volumeNode: Any
    kind: str  # "segment" or "refine"
    seeds: list[Seed]
    detect: bool
    keep: list[str] = field(default_factory=list)  # seed IDs of findings left as they are
    plan: Any = None  # findings.RefinePlan for a refine
    editedConflicts: list = field(default_factory=list)  # hand-edited findings this run would replace

    @property
    def needsPipeline(self) -> bool:
        return self.detect or bool(self.seeds)


def volumeKey(volumeNode) -> str:
    """Identifies a volume's voxels: a worker holding preprocessing for this key can skip it."""
    image = volumeNode.GetImageData()
    return f"{volumeNode.GetID()}:{image.GetMTime() if image is not None else 0}"


def prepareSegment(volumeNode, replaceEdited: bool = False) -> Run:
    """Detection + fine stage. Accepted findings and hand-edited ones (unless ``replaceEdited``) stay
    as they are; seeds the user placed are segmented too; earlier detector proposals are replaced."""
    segmentationNode, seedsNode, _ = scene.resultNodesOf(volumeNode)
    points = findings.seedPoints(seedsNode)
    edited = [f for f in findings.findings(segmentationNode) if f.edited]
    keep = {p.id for p in points if p.status == "accepted"}
    if not replaceEdited:
        keep |= {f.seedId for f in edited}
    seeds = [p.seed() for p in points if p.source == "user" and p.id not in keep]
    conflicts = [f for f in edited if f.seedId not in keep]
    return Run(volumeNode, "segment", seeds, True, keep=sorted(keep), editedConflicts=conflicts)


def prepareRefine(volumeNode, replaceEdited: bool = False) -> Run:
    """Fine stage only, on the seeds that are new or moved since their segment was computed."""
    segmentationNode, seedsNode, _ = scene.resultNodesOf(volumeNode)
    plan = findings.planRefine(seedsNode, segmentationNode, replaceEdited=replaceEdited)
    return Run(volumeNode, "refine", [p.seed() for p in plan.run], False, plan=plan,
               editedConflicts=list(plan.editedConflicts))


def runInProcess(run: Run, models: Any, preprocessedCache: dict | None = None, detectionThreshold: float | None = None,
                 progress: Callable[[float, str], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> SegmentationResult | None:
    """Execute ``run`` in this process (scripts, tests); None when cancelled or nothing to run."""
    if not run.needsPipeline:
        return None
    return runPipeline(run.volumeNode, seeds=run.seeds, detect=run.detect, detectionThreshold=detectionThreshold,
                       models=models, progress=progress, cancel=cancel, preprocessedCache=preprocessedCache)


def submit(run: Run, client, detectionThreshold: float | None = None):
    """Send ``run`` to the worker (:class:`worker.WorkerClient`); returns its Job, None if nothing to run."""
    if not run.needsPipeline:
        return None
    return client.submit(imageFromVolumeNode(run.volumeNode), volumeKey(run.volumeNode), seeds=run.seeds,
                         detect=run.detect, threshold=detectionThreshold)


def applyRun(run: Run, result: SegmentationResult | None):
    """Put the answer of ``run`` into the scene; returns (segmentationNode, seedsNode, tableNode)."""
    if run.kind == "segment":
        if result is None:
            raise ValueError("a segmentation run needs a result")
        return findings.applySegmentation(run.volumeNode, result, keepSeedIds=run.keep)
    return findings.applyRefinement(run.volumeNode, run.plan, result)
