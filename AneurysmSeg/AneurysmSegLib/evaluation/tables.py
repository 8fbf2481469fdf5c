"""The numbers behind each evaluation table, computed per case and summarised per group.

* coarse: the detector's seeds (``detect``'s tiling and region on the cached coarse grid) against the
  reference aneurysms with ADAM's rule, and with the criterion the fine stage needs (the aneurysm's
  centre inside the seed's VOI);
* fine: inside VOIs centred on each reference aneurysm (the paper's Table 2-4 setting): DSC, HD, HD95, VS;
* whole: ``pipeline.segment`` on the full scan: sensitivity, FP/case, PPV, DSC and HD95;
* short runs: fine-stage trainings of a fixed budget (beta sweep, ablation), scored inside VOIs.

The coarse and fine numbers reuse the training cache (same preprocessing, same VOIs).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..training.data import CaseRef
from . import metrics
from .matching import match_detections, treated_locations

THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)  #: detector thresholds reported in the coarse table


def coarse_case(model: Any, case_dir: Path, device: Any, voi_half_mm: float, segment_out: int = 45,
                context: int = 48, threshold: float = 0.5) -> dict[str, Any]:
    """Detector seeds of one cached case and their detection counts (ADAM rule and VOI criterion)."""
    from ..core.geometry import Geometry
    from ..preprocess import roi_around_arteries
    from ..stages import detect as det
    from ..training.cache import load_coarse, load_masks, load_meta

    meta = load_meta(case_dir)
    vol = load_coarse(case_dir)
    arteries, head = load_masks(case_dir)
    geom = Geometry(**meta["coarse_geometry"])
    roi = roi_around_arteries(arteries, head, geom.spacing_zyx)  # the region detect.detect uses
    t = time.time()
    prob, tiles = det.run_detector(model, vol.image.astype(np.float32), roi, segment_out=segment_out,
                                   context=context, pad_value=float(vol.fill), device=device)
    secs = time.time() - t
    refs = [(np.asarray(a["centre_lps"]), float(a["radius_mm"])) for a in meta["aneurysms"]]
    treated = treated_locations(Path(meta["folder"]) / "aneurysms.nii.gz")
    out: dict[str, Any] = {"case": meta["name"], "seconds": secs, "tiles": tiles, "by_threshold": {}}
    for thr in sorted({float(threshold), *THRESHOLDS}):
        seeds = det.seeds_from_probability(prob, geom, thr)
        pts = [np.asarray(s.position_lps) for s in seeds]
        out["by_threshold"][thr] = {"adam": match_detections(pts, refs, treated),
                                    "voi": match_detections(pts, refs, treated, voi_half_mm=voi_half_mm),
                                    "seeds": len(seeds)}
    out.update(out["by_threshold"][float(threshold)])
    return out


def coarse_table(rows: Sequence[dict[str, Any]], threshold: float | None = None) -> dict[str, float]:
    pick = (lambda r: r) if threshold is None else (lambda r: r["by_threshold"][threshold])
    adam = metrics.aggregate([pick(r)["adam"] for r in rows])
    voi = metrics.aggregate([pick(r)["voi"] for r in rows])
    return {"cases": len(rows), "aneurysms": adam["tp"] + adam["fn"], "sensitivity": adam["sensitivity"],
            "fp_per_case": adam["fp_per_case"], "ppv": adam["ppv"], "voi_sensitivity": voi["sensitivity"],
            "voi_fp_per_case": voi["fp_per_case"], "seconds_per_case": float(np.mean([r["seconds"] for r in rows]))}


def fine_scores(predict: Callable[[np.ndarray], np.ndarray], case_dirs: Sequence[Path], channels: int,
                voi_size: int, spacing_mm: float, threshold: float = 0.5) -> list[dict[str, float]]:
    """DSC/HD/HD95/VS inside the VOI (``voi_size``^3 at ``spacing_mm``) centred on every reference
    aneurysm of the cached cases.

    ``predict`` maps (N, C, 64, 64, 64) float32 to probabilities (N, 64, 64, 64).
    """
    from ..training.cache import load_fine

    out = []
    for d in case_dirs:
        fv = load_fine(d)
        for k, kind in enumerate(fv.kinds):
            if int(kind) != 0:
                continue
            off = (fv.big - voi_size) // 2
            sl = slice(off, off + voi_size)
            x = np.asarray(fv.images[k, :channels, sl, sl, sl], dtype=np.float32)
            ref = np.asarray(fv.labels[k, sl, sl, sl])
            pred = predict(x[None])[0] > threshold
            s = metrics.segmentation_scores(pred.astype(np.uint8), ref, (spacing_mm,) * 3)
            s["case"] = fv.name  # type: ignore[assignment]
            s["diameter_mm"] = equivalent_diameter(int((ref == 1).sum()) * spacing_mm**3)
            out.append(s)
    return out


#: size classes of the fine-stage table (equivalent sphere diameter, mm)
SIZE_CLASSES = (("< 3 mm", 0.0, 3.0), ("3-6 mm", 3.0, 6.0), (">= 6 mm", 6.0, float("inf")))


def equivalent_diameter(volume_mm3: float) -> float:
    """Diameter of the sphere with this volume: a size that does not depend on the aneurysm's shape."""
    return float((6.0 * volume_mm3 / np.pi) ** (1.0 / 3.0))


def fine_summary(scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"vois": len(scores), **{k: [float(s[k]) for s in scores] for k in metrics.SCORE_KEYS}}


def torchscript_predictor(model: Any, device: Any) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = model(torch.from_numpy(np.ascontiguousarray(x)).to(device))
            return torch.sigmoid(logits.float())[:, 0].cpu().numpy()

    return predict


def segment_with_and_without_screening(image: Any, models: Any, screen: bool = True, **options: Any) -> tuple[Any, Any]:
    """``pipeline.segment`` with the false-positive reduction and, from the same run, the label image
    without it: the pipeline runs with it off and the weights' classifier is then applied by the same
    function the pipeline applies it with (``stages.fp_reduction.apply``). Returns (the result with it
    as ``segment`` gives it, the labels without it; None when there is no classifier or ``screen`` is off)."""
    from ..core import pipeline
    from ..stages import fp_reduction

    res = pipeline.segment(image, models, fp_reduction=False, **options)
    classifier = models.finding_classifier if screen else None
    if res is None or classifier is None or not options.get("detect", True):
        return res, None
    unscreened = res.labels
    res.aneurysms, res.labels, res.rejected = fp_reduction.apply(
        res.aneurysms, res.labels, {a.id: a.evidence for a in res.aneurysms}, classifier)
    return res, unscreened


def whole_case(ref: CaseRef, models: Any, threshold: float | None = None, flip: bool = False,
               screen: bool = True) -> dict[str, Any]:
    """pipeline.segment on one full scan (threshold None: the manifest's); detection (ADAM rule) and scores,
    and with a finding classifier the same without it (``unscreened``)."""
    import SimpleITK as sitk

    from ..io import images as io

    image = io.read_image(ref.image_path)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(ref.label_path)))
    t = time.time()
    res, before = segment_with_and_without_screening(image, models, screen, detection_threshold=threshold,
                                                     detector_flip=flip)
    secs = time.time() - t
    pred = res.labels if res is not None else np.zeros(labels.shape, np.uint16)
    sp = image.geometry.spacing_zyx
    det = metrics.detection(pred, labels, sp)
    out: dict[str, Any] = {"case": ref.name, "detection": det, "seconds": secs,
                           "input": res.input if res is not None else {}, "warnings": res.warnings if res is not None else []}
    if ((labels > 0) & (labels != 2)).any():
        out["scores"] = metrics.segmentation_scores((pred > 0).astype(np.uint8), labels, sp)
    if before is not None:
        out["unscreened"] = unscreened_row(before, labels, sp)
    return out


def unscreened_row(before: np.ndarray, labels: np.ndarray, spacing_zyx: Sequence[float]) -> dict[str, Any]:
    """Detection and scores of the label image without the false-positive reduction."""
    row: dict[str, Any] = {"detection": metrics.detection(before, labels, spacing_zyx)}
    if ((labels > 0) & (labels != 2)).any():
        row["scores"] = metrics.segmentation_scores((before > 0).astype(np.uint8), labels, spacing_zyx)
    return row


def unscreened_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as they were without the false-positive reduction ([] when it did not run on them)."""
    if not rows or not all("unscreened" in r for r in rows):
        return []
    return [{**r, **r["unscreened"]} for r in rows]


def whole_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    agg = metrics.aggregate([r["detection"] for r in rows], [r["scores"] for r in rows if "scores" in r])
    agg["seconds_per_case"] = float(np.mean([r["seconds"] for r in rows])) if rows else float("nan")
    return agg


def short_fine_run(out: Path, train_data: Sequence[str], val_data: Sequence[str], cache: str | None,
                   beta: float, channels: int, minutes: float, seed: int = 0, threads: int = 0,
                   steps: int = 25, any_preprocess: bool = False) -> Path:
    """Train the fine net for ``minutes`` (resumable; a run already trained this long is reused)."""
    from ..training.run import TrainConfig, run_training

    summary = out / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("training_minutes", 0.0) >= minutes * 0.98:
        return out  # already trained with this budget (e.g. started separately, in parallel)
    run_training(TrainConfig(stage="fine", data=list(train_data), val=list(val_data), out=out, beta=beta,
                             channels=channels, max_minutes=minutes, seed=seed, progress=False, steps_per_epoch=steps,
                             resume=True, threads=threads, cache=cache, any_preprocess_version=any_preprocess,
                             command=f"evaluate: short fine run, beta {beta:g}, {channels} channel(s), {minutes:g} min"))
    return out


def eager_predictor(run_dir: Path, device: Any) -> tuple[Callable[[np.ndarray], np.ndarray], int, int, float]:
    """Predictor of a run's best checkpoint, its input channels and the VOI size and spacing of its data."""
    import torch

    from ..training.checkpoints import build_model, load_checkpoint, resolve_checkpoint

    ck = load_checkpoint(resolve_checkpoint(run_dir))
    model = build_model(ck).to(device)

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(x)).to(device)).float())[:, 0].cpu().numpy()

    from ..preprocess import FINE_SPACING_MM, VOI_SIZE  # what the training cache was made with

    return predict, int(ck["hyperparameters"]["in_channels"]), VOI_SIZE, FINE_SPACING_MM
