"""The one segmentation pipeline every front end calls (command line, Slicer module, tests).

``segment`` takes plain data (an :class:`Image` and loaded models) and returns plain data (a
:class:`SegmentationResult`): preprocessing -> coarse detection over the vessel region -> seeds
(detected, given, or both) -> fine segmentation of one VOI per seed -> masks pasted back into the
input geometry -> measurements (size, neck, dome, ratios, irregularity, site). It writes nothing
anywhere; front ends decide what to save.

A user correction ("refine from seeds") is the same call with ``seeds`` and ``detect=False`` and,
to skip recomputing it, the ``preprocessed`` scan of the earlier run: only the fine stage runs.
Cancelling (``cancel()`` returning True, checked between stages, tiles and VOIs) returns None.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Callable, Sequence

import numpy as np

from ..preprocess import Preprocessed, preprocess
from ..stages import detect as detect_stage
from ..stages import fp_reduction as fp_stage
from ..stages import refine as refine_stage
from ..stages.measure import measure_labels
from ..stages.morphology import describe_aneurysms
from ..stages.vessels import preprocess_options as vessel_options
from .errors import Cancelled, InputError, InputWarning
from .geometry import Image
from .memory import release_freed_memory
from .models import LoadedModels
from .result import Seed, SegmentationResult

#: At most this many given seeds in one run: each is a 64^3 VOI through the fine network (about half a
#: second and tens of MB on a CPU); hundreds are a mistake (a grid of points), not a correction.
MAX_SEEDS = 100

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool]


class _Progress:
    """Maps each stage's own 0..1 onto its share of the whole run; never goes backwards."""

    def __init__(self, callback: ProgressCallback | None, shares: dict[str, float]) -> None:
        self.callback = callback
        total = sum(shares.values())
        self.ranges: dict[str, tuple[float, float]] = {}
        start = 0.0
        for name, share in shares.items():
            self.ranges[name] = (start, start + share / total)
            start += share / total
        self.last = 0.0

    def stage(self, name: str) -> Callable[[float, str], None]:
        lo, hi = self.ranges[name]

        def report(fraction: float, message: str = name) -> None:
            self.report(lo + (hi - lo) * min(max(fraction, 0.0), 1.0), message)

        return report

    def report(self, value: float, message: str) -> None:
        self.last = max(self.last, min(value, 1.0))
        if self.callback is not None:
            self.callback(self.last, message)


def _check(cancel: CancelCheck | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("cancelled")


def segment(image: Image, models: LoadedModels, *, seeds: Sequence[Seed] | None = None, detect: bool = True,
            detection_threshold: float | None = None, progress: ProgressCallback | None = None,
            cancel: CancelCheck | None = None, preprocessed: Preprocessed | None = None,
            batch_size: int | None = None, precision: str = "float32",
            detector_flip: bool = False, fp_reduction: bool = True,
            detection: detect_stage.Detection | None = None) -> SegmentationResult | None:
    """Segment the aneurysms of one TOF-MRA; None when cancelled. See the module docstring.

    ``detect=False`` without seeds gives a result without aneurysms (the user deleted every seed).
    ``batch_size`` is the number of VOIs per fine-stage call (detection batches its tiles by size); by
    default 1 on a CPU (measured faster per VOI than 2 on 2 cores: 0.45 vs 0.52 s) and 2 on a GPU;
    ``precision="bfloat16"`` runs both networks under bfloat16 autocast (faster where supported).
    ``detector_flip=True`` averages the detector over the scan and its left-right mirror (test-time
    augmentation, twice the detection time; measured in docs/evaluation.md).
    ``detection_threshold=None`` uses the threshold stored in the models' manifest (chosen on validation
    data when the weights were exported), so every front end gets the same default.
    ``fp_reduction`` applies the weights' finding classifier when their manifest has one and the
    detector runs: detector findings scoring below its threshold move to ``result.rejected`` (every
    finding gets its evidence, and with a classifier its score; stages/fp_reduction.py). Findings of
    given seeds are always kept, and ``detect=False`` (the user's seeds only) keeps every finding.
    ``detection``: the detector's output of an earlier pass over ``preprocessed`` (evaluation), used as
    if the detector ran now (its threshold and flip were that pass's).
    """
    if batch_size is None:
        batch_size = 2 if models.device.type == "cuda" else 1
    if detection_threshold is None:
        detection_threshold = models.detection_threshold
    if not (math.isfinite(detection_threshold) and detection_threshold > 0.0):
        # above 1 is allowed: the detector runs and proposes nothing (benchmarks time it that way)
        raise InputError(f"the detection threshold must be a positive probability, got {detection_threshold:g}")
    if precision not in detect_stage.PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(detect_stage.PRECISIONS)}, got {precision!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a positive number of VOIs per call, got {batch_size!r}")
    if preprocessed is not None and not preprocessed.image.same_scan(image):
        raise InputError("the preprocessed scan given was computed from another image (its voxels or geometry "
                         "differ); leave it out, or preprocess this image with pipeline.prepare")
    if detection is not None and (preprocessed is None or not detect
                                  or detection.probability.shape != preprocessed.coarse.array.shape):
        raise InputError("a given detection needs detect=True and the preprocessed scan it was computed from")
    given, notes = usable_seeds(list(seeds or []), image)
    for message in notes:
        warnings.warn(message, InputWarning, stacklevel=2)
    try:
        return _segment(image, models, given, detect, detection_threshold, progress, cancel,
                        preprocessed, batch_size, precision, notes, detector_flip, fp_reduction, detection)
    except Cancelled:
        return None


def usable_seeds(seeds: list[Seed], image: Image) -> tuple[list[Seed], list[str]]:
    """The given seeds that lie in the image, and a warning naming those outside (left out: a VOI there
    holds nothing of this scan). InputError for a position that is not three finite numbers or for more
    than :data:`MAX_SEEDS` seeds."""
    if len(seeds) > MAX_SEEDS:
        raise InputError(f"{len(seeds)} seeds given; at most {MAX_SEEDS} are segmented in one run (each is a "
                         "VOI of about half a second and tens of MB): give the seeds of the aneurysms to check")
    for i, seed in enumerate(seeds, start=1):
        position = np.asarray(seed.position_lps, dtype=float)
        if position.shape != (3,) or not np.isfinite(position).all():
            raise InputError(f"seed {seed.label or i} has position {tuple(seed.position_lps)}; "
                             "a seed needs three finite coordinates (LPS, mm)")
    if not seeds:
        return seeds, []
    index = image.geometry.lps_to_index(np.array([s.position_lps for s in seeds], dtype=float))
    size = np.asarray(image.shape_xyz, dtype=float)
    inside = np.all((index >= -0.5) & (index <= size - 0.5), axis=1)
    notes = []
    if not inside.all():
        shape = " x ".join(str(int(s)) for s in size)
        named = [f"{s.label or f'seed {i + 1}'} at LPS ({', '.join(f'{v:.1f}' for v in s.position_lps)}) mm"
                 for i, s in enumerate(seeds) if not inside[i]]
        notes.append(f"{len(named)} seed(s) outside the image ({shape} voxels) not used: "
                     f"{'; '.join(named[:5])}{' ...' if len(named) > 5 else ''}")
    return [s for s, keep in zip(seeds, inside) if keep], notes


def _segment(image: Image, models: LoadedModels, given: list[Seed], detect: bool, threshold: float,
             callback: ProgressCallback | None, cancel: CancelCheck | None, pre: Preprocessed | None,
             batch_size: int, precision: str, notes: list[str], flip: bool = False,
             screen: bool = True, found: detect_stage.Detection | None = None) -> SegmentationResult:
    shares = {"preprocessing": 0.0 if pre is not None else 2.0, "detection": 5.0 if detect else 0.0,
              "fine segmentation": 4.0, "measurements": 0.5}
    prog = _Progress(callback, {k: v for k, v in shares.items() if v > 0})
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    _check(cancel)
    if pre is None:
        prog.report(0.0, "preprocessing")
        t = time.perf_counter()
        pre = preprocess(image, coarse_spacing=models.coarse_spacing[0], **vessel_options(models))
        timings["preprocess"] = time.perf_counter() - t
        prog.stage("preprocessing")(1.0)
    release_freed_memory()  # each stage's freed arrays would otherwise sit under the next one's peak
    _check(cancel)

    if detect or "preprocess" in timings:  # the input check's findings, once per scan and detection
        for message in pre.warnings:  # on stderr from the CLI, in the Slicer panel, and in the result
            warnings.warn(message, InputWarning, stacklevel=3)
    detected: list[Seed] = []
    probability = None
    if detect:
        t = time.perf_counter()
        found = found if found is not None else detect_stage.detect(pre, models.coarse, segment_out=None,
                                    context=models.coarse_context, device=models.device, threshold=threshold,
                                    merge_distance_mm=models.voi_size * models.fine_spacing[0] / 4,
                                    progress=prog.stage("detection"), cancel=cancel, precision=precision,
                                    flip=flip)
        detected, probability = found.seeds, found.probability
        timings["detect"] = time.perf_counter() - t
        prog.stage("detection")(1.0)
        release_freed_memory()
    seeds = detect_stage.combine_seeds(detected, given, use_detected=detect)
    _check(cancel)

    t = time.perf_counter()
    fine = prog.stage("fine segmentation")
    predictions = refine_stage.predict_vois(pre, models.fine, seeds, voi_size=models.voi_size,
                                            spacing=models.fine_spacing[0], channels=models.fine_channels,
                                            device=models.device, batch_size=batch_size,
                                            progress=lambda f, m: fine(0.9 * f, m), cancel=cancel,
                                            precision=precision)
    timings["fine"] = time.perf_counter() - t
    _check(cancel)
    t = time.perf_counter()
    refined = refine_stage.paste(predictions, image.geometry, image.array.shape)
    timings["paste"] = time.perf_counter() - t
    fine(1.0)
    release_freed_memory()
    _check(cancel)

    t = time.perf_counter()
    aneurysms = measure_labels(refined.labels, image.geometry, refined.seeds, refined.confidences)
    describe_aneurysms(refined.labels, image.geometry, aneurysms, pre)
    timings["measure"] = time.perf_counter() - t
    t = time.perf_counter()
    evidence = fp_stage.evidence_for(aneurysms, refined.labels, image.geometry, pre, probability,
                                         refined.fine_means)
    aneurysms, labels, rejected = fp_stage.apply(aneurysms, refined.labels, evidence,
                                                     models.finding_classifier if screen and detect else None)
    timings["fp_reduction"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    prog.stage("measurements")(1.0)
    return SegmentationResult(labels=labels, geometry=image.geometry, aneurysms=aneurysms,
                              seeds=seeds, timings=timings,
                              input=pre.input.to_dict() if pre.input is not None else {},
                              warnings=list(pre.warnings) + notes, rejected=rejected)


def prepare(image: Image, models: LoadedModels) -> Preprocessed:
    """The preprocessing ``segment`` would run, for callers that keep it to refine later."""
    return preprocess(image, coarse_spacing=models.coarse_spacing[0], **vessel_options(models))
