"""False-positive reduction: the regression, its operating point, the manifest entry, and the pipeline.

The pipeline tests reuse test_pipeline's synthetic slab (two bright blobs of 2.6 and 2.0 mm radius)
and its small real TorchScript models; the classifier is a real file in a real model folder, put
there by the export and loaded through the verified manifest.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from AneurysmSegLib.cli import main
from AneurysmSegLib.core import models as models_mod
from AneurysmSegLib.core import pipeline
from AneurysmSegLib.core.errors import InputError, ModelError
from AneurysmSegLib.core.result import SegmentationResult, Seed
from AneurysmSegLib.io.images import to_sitk
from AneurysmSegLib.stages import fp_reduction as fpr
from AneurysmSegLib.training import fp_reduction as fit_fpr
from test_pipeline import BLOBS, blob_model_dir, synthetic_scan  # noqa: F401 (blob_model_dir: a shared fixture)

#: log1p of the two blobs' volumes (73.6 and 33.5 mm^3) lie either side of this
VOLUME_SPLIT = math.log1p(50.0)


def volume_classifier(threshold: float = 0.5) -> fpr.FindingClassifier:
    """Scores by volume alone: the 2.6 mm blob about 0.98, the 2.0 mm one about 0.03."""
    k = len(fpr.FEATURES)
    w = [0.0] * k
    w[fpr.FEATURES.index("volume_mm3")] = 10.0
    mean = [0.0] * k
    mean[fpr.FEATURES.index("volume_mm3")] = VOLUME_SPLIT
    return fpr.FindingClassifier(tuple(mean), (1.0,) * k, tuple(w), 0.0, threshold, {"chosen_threshold": threshold})


def evidence(**values: float) -> dict[str, float]:
    base = {name: 0.0 for name in fpr.FEATURES}
    base.update(values)
    return base


# ------------------------------------------------------------------------------------ the classifier


def test_logistic_fit_is_deterministic_and_separates_a_feature() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    y = (x[:, 1] + 0.3 * rng.normal(size=80) > 0).astype(float)
    w1, b1 = fpr.fit_logistic(x, y)
    w2, b2 = fpr.fit_logistic(x, y)
    assert np.array_equal(w1, w2) and b1 == b2
    assert w1[1] > 2.0 and abs(w1[0]) < 1.0 and abs(w1[2]) < 1.0
    # a stronger penalty shrinks the weights
    w3, _ = fpr.fit_logistic(x, y, l2=50.0)
    assert abs(w3[1]) < abs(w1[1])


def test_classifier_file_round_trip_and_refusals() -> None:
    c = volume_classifier()
    data = c.to_dict()
    back = fpr.FindingClassifier.from_dict(json.loads(json.dumps(data)), 0.5)
    assert back.score(evidence(volume_mm3=73.6)) == pytest.approx(c.score(evidence(volume_mm3=73.6)))
    assert c.score(evidence(volume_mm3=73.6)) > 0.9 > 0.1 > c.score(evidence(volume_mm3=33.5))
    for broken in ({**data, "feature_version": 99}, {**data, "features": list(fpr.FEATURES)[:-1]},
                   {**data, "format": "something else"}, {**data, "scale": [0.0] * len(fpr.FEATURES)},
                   {k: v for k, v in data.items() if k != "coefficients"}):
        with pytest.raises(ModelError):
            fpr.FindingClassifier.from_dict(broken, 0.5)
    with pytest.raises(ModelError):
        fpr.FindingClassifier.from_dict(data, 1.5)


def test_threshold_keeps_every_true_finding_with_a_margin() -> None:
    # true findings score 0.9 and 0.6; false ones 0.7, 0.4, 0.1 -> halfway between 0.6 and 0.4
    scores, labels = [0.9, 0.7, 0.6, 0.4, 0.1], [1, 0, 1, 0, 0]
    t = fit_fpr.choose_threshold(scores, labels)
    assert t == pytest.approx(0.5)
    assert fit_fpr.operating_figures(scores, labels, t) == {"true": 2, "true_kept": 2, "false": 3, "false_kept": 1}
    assert fit_fpr.choose_threshold([0.3, 0.8], [1, 1]) == pytest.approx(0.15)  # nothing below: half the lowest
    assert fit_fpr.choose_threshold([0.3, 0.8], [0, 0]) == 0.0  # no true finding: keep everything
    # keeping half of them may drop the lowest true finding: halfway between 0.9 and 0.7
    assert fit_fpr.choose_threshold(scores, labels, keep=0.5) == pytest.approx(0.8)
    assert fit_fpr.choose_threshold(scores, labels, keep=0.95) == pytest.approx(0.5)  # 5 % of 2: none dropped


def test_out_of_fold_scores_leave_each_case_out() -> None:
    rng = np.random.default_rng(1)
    rows = [{**evidence(volume_mm3=float(v), contrast=float(c)), "label": int(v > 30), "case": f"c{i % 4}"}
            for i, (v, c) in enumerate(zip(rng.uniform(5, 60, 40), rng.normal(1, 0.2, 40)))]
    oof = fit_fpr.out_of_fold_scores(rows)
    mean, scale, w, b = fit_fpr.fit(rows)
    full = fpr.FindingClassifier(mean, scale, tuple(w), b, 0.0, {})
    assert len(oof) == len(rows) and oof != [full.score(r) for r in rows]
    rest = [r for r in rows if r["case"] != "c0"]
    alone = fpr.FindingClassifier(*fit_fpr.fit(rest)[:2], tuple(fit_fpr.fit(rest)[2]), fit_fpr.fit(rest)[3], 0.0, {})
    assert oof[0] == pytest.approx(alone.score(rows[0]))
    # volume separates the labels: out-of-fold scores still rank the true findings higher
    y = np.array([r["label"] for r in rows])
    assert np.mean(np.array(oof)[y == 1]) > np.mean(np.array(oof)[y == 0]) + 0.3


def test_contrast_and_face_distance_of_a_mask() -> None:
    shape = (20, 20, 20)
    z = np.zeros(shape)  # tissue 0
    arteries = np.zeros(shape, bool)
    arteries[10, 10, :] = True  # a vessel at 6 z units
    z[arteries] = 6.0
    sac = np.zeros(shape, bool)
    sac[8:11, 4:7, 4:7] = True
    full = (slice(0, 20),) * 3
    z[sac] = 6.0
    bright = fpr.mask_evidence(sac, z, arteries, (0.5, 0.5, 0.5), full, shape)
    z[sac] = 2.0
    grey = fpr.mask_evidence(sac, z, arteries, (0.5, 0.5, 0.5), full, shape)
    assert bright["contrast"] == pytest.approx(1.0) and grey["contrast"] == pytest.approx(2.0 / 6.0)
    assert bright["face_distance_mm"] == pytest.approx(2.0)  # 4 voxels of 0.5 mm from the faces at index 0
    # the same crop placed near the far faces of a 50^3 image: the sac ends at z index 40, 9 voxels from 49
    far = fpr.mask_evidence(sac, z, arteries, (0.5, 0.5, 0.5), (slice(30, 50),) * 3, (50, 50, 50))
    assert far["face_distance_mm"] == pytest.approx(4.5)
    touching = fpr.mask_evidence(sac, z, arteries, (0.5, 0.5, 0.5), (slice(39, 59),) * 3, (50, 50, 50))
    assert touching["face_distance_mm"] == 0.0
    # no artery around: nothing to compare with
    assert fpr.mask_evidence(sac, z, np.zeros(shape, bool), (0.5,) * 3, full, shape)["contrast"] == 0.0


# ------------------------------------------------------------------------------ manifest and pipeline


@pytest.fixture(scope="module")
def blob_dir(blob_model_dir: Path) -> Path:
    """test_pipeline's blob detector and bright-voxel fine model, exported with a manifest (no classifier)."""
    return blob_model_dir


@pytest.fixture(scope="module")
def screened_dir(blob_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The blob models plus the volume classifier, added by the export like a fitted one."""
    run = tmp_path_factory.mktemp("fpr_run")
    (run / fit_fpr.CLASSIFIER_FILE).write_text(json.dumps(volume_classifier().to_dict()))
    folder = tmp_path_factory.mktemp("fpr_screened") / "models"
    shutil.copytree(blob_dir, folder)
    record = folder.parent / "record.py"
    fit_fpr.export_classifier(run, folder, record=record)
    assert fit_fpr.CLASSIFIER_FILE in record.read_text()
    return folder


def test_manifest_entry_is_checked_and_old_manifests_keep_every_finding(blob_dir: Path, screened_dir: Path,
                                                                        tmp_path: Path) -> None:
    assert models_mod.load_models(blob_dir, "cpu").finding_classifier is None
    loaded = models_mod.load_models(screened_dir, "cpu")
    assert loaded.finding_classifier is not None and loaded.finding_classifier.threshold == 0.5
    entry = loaded.manifest.finding_classifier
    assert entry["file"] == fit_fpr.CLASSIFIER_FILE and entry["score_threshold"] == 0.5
    assert loaded.manifest.summary()["finding_classifier"]["sha256"] == entry["sha256"]
    tampered = tmp_path / "tampered"
    shutil.copytree(screened_dir, tampered)
    path = tampered / fit_fpr.CLASSIFIER_FILE
    path.write_text(path.read_text().replace('"intercept": 0.0', '"intercept": 5.0'))
    with pytest.raises(ModelError, match="sha256"):
        models_mod.load_models(tampered, "cpu")


def test_pipeline_drops_low_scoring_detector_findings_only(blob_dir: Path, screened_dir: Path) -> None:
    scan = synthetic_scan()
    plain = pipeline.segment(scan, models_mod.load_models(blob_dir, "cpu"))
    screened = pipeline.segment(scan, models_mod.load_models(screened_dir, "cpu"))
    off = pipeline.segment(scan, models_mod.load_models(screened_dir, "cpu"), fp_reduction=False)
    assert plain is not None and screened is not None and off is not None
    assert len(plain.aneurysms) == 2 and [a.finding_score for a in plain.aneurysms] == [None, None]
    assert all(set(a.evidence) == set(fpr.FEATURES) for a in plain.aneurysms)
    assert plain.aneurysms[0].evidence["detector_blob_mm3"] > 0 and plain.aneurysms[0].evidence["neck"] in (0.0, 1.0)
    # the 2.0 mm blob (label 2) scores low and is dropped; label 1 stays as it was
    assert [a.id for a in screened.aneurysms] == [1] and screened.aneurysms[0].finding_score > 0.9
    assert np.array_equal(screened.labels, np.where(plain.labels == 1, 1, 0).astype(plain.labels.dtype))
    assert len(screened.rejected) == 1 and screened.rejected[0].id == 0
    assert screened.rejected[0].finding_score < 0.5
    assert np.linalg.norm(np.subtract(screened.rejected[0].centroid_lps, BLOBS[1][0])) < 0.5
    assert np.array_equal(off.labels, plain.labels) and off.rejected == []
    # the report carries scores, evidence and the dropped finding, and reads back
    report = json.loads(json.dumps(screened.to_report()))
    assert report["aneurysms"][0]["finding_score"] == screened.aneurysms[0].finding_score
    back = SegmentationResult.from_report(report, screened.labels, screened.geometry)
    assert back.rejected[0].finding_score == screened.rejected[0].finding_score
    assert back.aneurysms[0].evidence == screened.aneurysms[0].evidence
    # a seed the user placed is kept whatever its score
    user = pipeline.segment(scan, models_mod.load_models(screened_dir, "cpu"),
                            seeds=[Seed(tuple(BLOBS[1][0]), 1.0, "user", "U1")], detect=False)
    assert user is not None and len(user.aneurysms) == 1 and user.aneurysms[0].finding_score is None


def test_train_fpr_fits_chooses_and_exports(blob_dir: Path, tmp_path: Path) -> None:
    """`aneurysmseg train fpr` on ADAM-layout cases whose truth holds only the larger blob: the smaller
    one is a false positive, the fit separates them and the export makes the pipeline drop it."""
    def write_case(folder: Path, seed: int) -> None:
        image = synthetic_scan(seed=seed)
        idx = np.indices(image.array.shape).reshape(3, -1)[::-1].T.astype(float)
        centre, radius = BLOBS[0]
        truth = (np.linalg.norm(image.geometry.index_to_lps(idx) - centre, axis=1) <= radius)
        (folder / "orig").mkdir(parents=True)
        sitk.WriteImage(to_sitk(image.array, image.geometry), str(folder / "orig" / "TOF.nii.gz"))
        sitk.WriteImage(to_sitk(truth.reshape(image.array.shape).astype(np.uint8), image.geometry),
                        str(folder / "aneurysms.nii.gz"))

    write_case(tmp_path / "train" / "A0", 1)
    write_case(tmp_path / "val" / "B0", 2)
    run = tmp_path / "run"
    assert main(["train", "fpr", "--data", str(tmp_path / "train"), "--val", str(tmp_path / "val"),
                 "--out", str(run), "--models", str(blob_dir), "--threads", "1", "--device", "cpu"]) == 0
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["train"] == {"true": 1, "true_kept": 1, "false": 1, "false_kept": 0}
    assert summary["validation"] == {"true": 1, "true_kept": 1, "false": 1, "false_kept": 0}
    assert 0.0 < summary["threshold"] < 1.0 and len(list((run / "candidates").rglob("*.json"))) == 2
    # the same cases and folders twice: refused before anything runs
    with pytest.raises(InputError, match="both"):
        fit_fpr.train_fpr(fit_fpr.FprConfig(data=[str(tmp_path / "train")], val=[str(tmp_path / "train")],
                                            out=str(tmp_path / "again"), models=str(blob_dir)))
    models = tmp_path / "models"
    shutil.copytree(blob_dir, models)
    assert main(["export", "--finding-classifier", str(run), "--out", str(models)]) == 0
    result = pipeline.segment(synthetic_scan(seed=3), models_mod.load_models(models, "cpu"))
    assert result is not None and len(result.aneurysms) == 1 and len(result.rejected) == 1
    assert np.linalg.norm(np.subtract(result.aneurysms[0].centroid_lps, BLOBS[0][0])) < 0.5
    # evaluate: the whole table with and without it from one run; the negatives list what it dropped
    scan = tmp_path / "negative.nii.gz"
    image = synthetic_scan(seed=3)
    sitk.WriteImage(to_sitk(image.array, image.geometry), str(scan))
    assert main(["evaluate", "--data", str(tmp_path / "val"), "--negatives", str(scan), "--tables",
                 "whole,misses,negatives", "--models", str(models), "--threads", "1", "--device", "cpu",
                 "--out", str(tmp_path / "eval.md"), "--json", str(tmp_path / "eval.json")]) == 0
    raw = json.loads((tmp_path / "eval.json").read_text(encoding="utf-8"))
    assert raw["whole"]["all"]["fp"] == 0 and raw["whole"]["all, without the false-positive reduction"]["fp"] == 1
    assert raw["whole"]["all"]["tp"] == raw["whole"]["all, without the false-positive reduction"]["tp"] == 1
    negative = raw["negatives"]["scans"][0]
    assert negative["false_positives"] == 1 and negative["without_fp_reduction"] == 2
    assert [f["dropped"] for f in negative["findings"]] == [False, True]
    assert "without the false-positive reduction" in (tmp_path / "eval.md").read_text(encoding="utf-8")
