"""Fitting the false-positive reduction: candidates from phantoms, a logistic regression, its operating point.

``aneurysmseg train fpr --data TRAIN... --val VAL... --out RUN`` runs the whole pipeline (without the
classifier) on every case, keeps each detector finding's evidence (stages/fp_reduction.py) with its
label (1 = its mask overlaps a true aneurysm, 0 = not; findings only on a treated aneurysm are left
out), fits the regression on the training cases and chooses the threshold on held-out scores: those of
the validation cases and those of the training cases scored by refits that left their case out (a few
dozen true findings in all; the validation cases alone hold too few to place a threshold). The
threshold is the highest that keeps :data:`KEEP` of these true findings, halfway to the next lower
score (a margin for cases not seen). Candidates are stored per case, so an interrupted run resumes
where it stopped. ``aneurysmseg export --finding-classifier RUN --out MODELS``
puts the result into a model folder's manifest.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.errors import InputError, ModelError
from ..stages.fp_reduction import FEATURES, FindingClassifier, fit_logistic, transform
from .data import CaseRef, find_cases

CLASSIFIER_FILE = "finding_classifier.json"
#: L2 penalty of the regression on standardised features (a few hundred candidates: keep weights small)
L2 = 1.0
#: Share of the held-out true findings the threshold keeps ("nearly the same sensitivity": at most one
#: in twenty of them is dropped)
KEEP = 0.95


@dataclass
class FprConfig:
    data: Sequence[str]
    val: Sequence[str]
    out: str
    models: str | None = None  #: model folder whose networks make the candidates (default: the bundled one)
    threads: int = 1
    device: str = "cpu"
    l2: float = L2
    keep: float = KEEP
    command: str = ""
    log: Any = field(default=print, repr=False)


def case_candidates(ref: CaseRef, models: Any) -> list[dict[str, Any]]:
    """Every detector finding of one ADAM-layout case (pipeline without the classifier) with its
    evidence and label; findings overlapping only a treated aneurysm (label 2) are left out."""
    import SimpleITK as sitk

    from ..core import pipeline
    from ..io.images import read_image

    image = read_image(ref.image_path)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(ref.label_path)))
    res = pipeline.segment(image, models, fp_reduction=False)
    rows = []
    for a in res.aneurysms:
        if a.seed.source != "detector" or not a.evidence:
            continue
        under = truth[res.labels == a.id]
        if not (under == 1).any() and (under == 2).any():
            continue
        rows.append({"case": ref.name, "finding": a.id, "label": int((under == 1).any()),
                     "centroid_lps": list(a.centroid_lps), **{k: a.evidence[k] for k in FEATURES}})
    return rows


def collect(refs: Sequence[CaseRef], models: Any, folder: Path, log: Any = print) -> list[dict[str, Any]]:
    """:func:`case_candidates` of every case, stored as ``folder/<set>__<case>.json`` (named by the case
    folder and its parent, whatever other folders are given) and read back when present."""
    out: list[dict[str, Any]] = []
    for i, ref in enumerate(refs, start=1):
        path = folder / f"{ref.folder.parent.name}__{ref.folder.name}.json"
        if path.is_file():
            rows = json.loads(path.read_text(encoding="utf-8"))
            for r in rows:  # one stable name per case, whichever folders were given
                r["case"] = path.stem
        else:
            t = time.time()
            rows = [{**r, "case": path.stem} for r in case_candidates(ref, models)]
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(rows), encoding="utf-8")
            tmp.replace(path)
            log(f"{folder.name} {i}/{len(refs)} {ref.name}: {sum(r['label'] for r in rows)} true, "
                f"{sum(1 - r['label'] for r in rows)} false findings ({time.time() - t:.0f} s)")
        out.extend(rows)
    return out


def fit(rows: Sequence[dict[str, Any]], l2: float = L2) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray, float]:
    """Standardisation and regression weights from labelled candidates."""
    if not rows or len({int(r["label"]) for r in rows}) < 2:
        raise InputError("the training candidates need both findings on true aneurysms and false ones: "
                         "give more (or other) training cases")
    x = np.stack([transform(r) for r in rows])
    y = np.asarray([int(r["label"]) for r in rows], dtype=float)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    w, b = fit_logistic((x - mean) / scale, y, l2=l2)
    return tuple(float(v) for v in mean), tuple(float(v) for v in scale), w, b


def choose_threshold(scores: Sequence[float], labels: Sequence[int], keep: float = 1.0) -> float:
    """The highest threshold keeping ``keep`` of the true findings (at most floor((1 - keep) * n) of them
    dropped, the lowest scoring): halfway between the lowest kept true finding's score and the highest
    score below it (half of that score when none is below); 0 without true findings."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=int)
    true = np.sort(s[y == 1])
    if not true.size:
        return 0.0
    lowest = float(true[int(np.floor((1.0 - keep) * true.size + 1e-9))])
    below = s[s < lowest]
    return round((lowest + (float(below.max()) if below.size else 0.0)) / 2.0, 4)


def out_of_fold_scores(rows: Sequence[dict[str, Any]], l2: float = L2) -> list[float]:
    """Each training candidate scored by the regression refitted without its case (leave one case out);
    a case whose removal leaves one class only keeps the full fit's score."""
    full = _classifier(*fit(rows, l2))
    out = [full.score(r) for r in rows]
    for case in sorted({r["case"] for r in rows}):
        rest = [r for r in rows if r["case"] != case]
        if len({int(r["label"]) for r in rest}) < 2:
            continue
        clf = _classifier(*fit(rest, l2))
        for i, r in enumerate(rows):
            if r["case"] == case:
                out[i] = clf.score(r)
    return out


def _classifier(mean: tuple[float, ...], scale: tuple[float, ...], w: np.ndarray, b: float) -> FindingClassifier:
    return FindingClassifier(mean, scale, tuple(float(v) for v in w), b, 0.0, {})


def operating_figures(scores: Sequence[float], labels: Sequence[int], threshold: float) -> dict[str, int]:
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=int)
    keep = s >= threshold
    return {"true": int((y == 1).sum()), "true_kept": int(((y == 1) & keep).sum()),
            "false": int((y == 0).sum()), "false_kept": int(((y == 0) & keep).sum())}


def train_fpr(config: FprConfig) -> dict[str, Any]:
    """Collect, fit, choose the threshold; writes ``out/finding_classifier.json`` and ``out/summary.json``."""
    import torch

    from ..core.models import load_models

    train_refs, val_refs = find_cases(config.data), find_cases(config.val)
    overlap = {r.folder.resolve() for r in train_refs} & {r.folder.resolve() for r in val_refs}
    if overlap:
        raise InputError(f"{len(overlap)} case(s) are in both --data and --val (e.g. {sorted(overlap)[0]}): "
                         "the threshold must be chosen on cases the regression did not see")
    if config.threads:
        torch.set_num_threads(config.threads)
    models = load_models(config.models, config.device)
    out = Path(config.out)
    t0 = time.time()
    train_rows = collect(train_refs, models, out / "candidates" / "train", config.log)
    val_rows = collect(val_refs, models, out / "candidates" / "val", config.log)
    mean, scale, w, b = fit(train_rows, config.l2)
    probe = _classifier(mean, scale, w, b)
    val_scores = [probe.score(r) for r in val_rows]
    val_labels = [int(r["label"]) for r in val_rows]
    train_labels = [int(r["label"]) for r in train_rows]
    oof = out_of_fold_scores(train_rows, config.l2)
    threshold = choose_threshold(val_scores + oof, val_labels + train_labels, config.keep)
    training = {
        "command": config.command, "models": str(models.model_dir),
        "detection_threshold": models.detection_threshold, "l2": config.l2,
        "data": [str(d) for d in config.data], "val": [str(d) for d in config.val],
        "train_cases": len(train_refs), "val_cases": len(val_refs),
        "train": operating_figures(oof, train_labels, threshold),
        "validation": operating_figures(val_scores, val_labels, threshold),
        "chosen_threshold": threshold, "keep": config.keep,
        "rule": f"the highest threshold keeping {config.keep:g} of the true findings among the validation candidates "
                "and the training candidates scored leaving their case out (halfway to the next lower score)",
        "minutes": round((time.time() - t0) / 60.0, 1),
    }
    classifier = FindingClassifier(mean, scale, tuple(float(v) for v in w), b, threshold, training)
    path = out / CLASSIFIER_FILE
    path.write_text(json.dumps(classifier.to_dict(), indent=2) + "\n", encoding="utf-8")
    summary = {"threshold": threshold, "weights": dict(zip(FEATURES, classifier.coefficients)),
               "intercept": b, **training}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    config.log(f"finding classifier: {path} (threshold {threshold:g}; validation: {training['validation']}; "
               f"training: {training['train']})")
    return summary


def export_classifier(run: str | Path, model_dir: str | Path, record: Path | None = None) -> Path:
    """Copy the run's classifier into ``model_dir`` and add its ``finding_classifier`` entry (file,
    sha256, the threshold chosen on validation) to the manifest; ``record`` (by default the package's
    release record when ``model_dir`` is the bundled folder) is rewritten with the folder's checksums."""
    from ..core.manifest import FINDING_CLASSIFIER, RELEASE_RECORD, default_model_dir, release_record_text
    from ..core.models import add_manifest_entry

    source = Path(run) / CLASSIFIER_FILE
    if not source.is_file():
        raise ModelError(f"{source} does not exist: fit it first (`aneurysmseg train fpr`)")
    data = json.loads(source.read_text(encoding="utf-8"))
    training = data.get("training", {})
    FindingClassifier.from_dict(data, float(training.get("chosen_threshold", 0.0)), str(source))  # checks it
    target = Path(model_dir) / CLASSIFIER_FILE
    target.write_bytes(source.read_bytes())
    entry = {"file": CLASSIFIER_FILE, "score_threshold": float(training["chosen_threshold"]),
             "feature_version": data["feature_version"], "features": data["features"],
             "training": {k: training[k] for k in ("command", "train_cases", "val_cases", "train", "validation")
                          if k in training}}
    add_manifest_entry(model_dir, FINDING_CLASSIFIER, entry, network=False)
    if record is None and Path(model_dir).resolve() == default_model_dir().resolve():
        record = RELEASE_RECORD
    if record is not None:
        record.write_text(release_record_text(model_dir), encoding="utf-8")
    return target
