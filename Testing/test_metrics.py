"""metrics: ADAM definitions checked against cases computed by hand and a brute-force reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from AneurysmSegLib.core.errors import InputError
from AneurysmSegLib.evaluation import metrics
from AneurysmSegLib.evaluation.metrics import DetectionResult
from scipy import ndimage
from scipy.spatial import cKDTree

SPACING = (0.7, 0.3, 0.4)  # z, y, x: anisotropic on purpose


def box(shape: tuple[int, int, int], start: tuple[int, int, int], size: tuple[int, int, int], value: int = 1) -> np.ndarray:
    a = np.zeros(shape, np.uint8)
    a[tuple(slice(s, s + n) for s, n in zip(start, size))] = value
    return a


# ------------------------------------------------------------------------------------ overlap scores


def test_dice_of_shifted_cubes() -> None:
    a = box((20, 20, 20), (2, 2, 2), (10, 10, 10))
    assert metrics.dice(a, box((20, 20, 20), (5, 2, 2), (10, 10, 10))) == pytest.approx(0.7)  # 700 / 1000
    assert metrics.dice(a, box((20, 20, 20), (3, 4, 5), (10, 10, 10))) == pytest.approx(9 * 8 * 7 / 1000)
    assert metrics.dice(a, a * 5) == 1.0  # any non-zero label counts
    assert metrics.dice(a, box((20, 20, 20), (12, 12, 12), (5, 5, 5))) == 0.0


def test_volumetric_similarity() -> None:
    a = box((20, 20, 20), (0, 0, 0), (4, 4, 4))
    b = box((20, 20, 20), (10, 10, 10), (6, 6, 6))
    assert metrics.volumetric_similarity(a, b) == pytest.approx(1 - (216 - 64) / (216 + 64))
    # position does not matter for VS, only volume
    assert metrics.volumetric_similarity(a, box((20, 20, 20), (12, 3, 7), (4, 4, 4))) == 1.0


def test_edge_cases_are_as_documented() -> None:
    empty, cube = np.zeros((8, 8, 8), np.uint8), box((8, 8, 8), (2, 2, 2), (3, 3, 3))
    assert metrics.dice(empty, empty) == 1.0 and metrics.volumetric_similarity(empty, empty) == 1.0
    assert metrics.hausdorff(empty, empty, SPACING) == (0.0, 0.0)
    for p, r in ((empty, cube), (cube, empty)):
        assert metrics.dice(p, r) == 0.0 and metrics.volumetric_similarity(p, r) == 0.0
        assert all(math.isnan(v) for v in metrics.hausdorff(p, r, SPACING))


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="differ in shape"):
        metrics.dice(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(InputError, match="spacing_zyx"):
        metrics.hausdorff(np.ones((4, 4, 4)), np.ones((4, 4, 4)), (1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="3D"):
        metrics.dice(np.zeros((4, 4)), np.zeros((4, 4)))


# ---------------------------------------------------------------------------------------- distances


@pytest.mark.parametrize("axis, k", [(0, 3), (2, 3), (1, 5)])
def test_hausdorff_of_a_shifted_cube_is_the_shift_in_mm(axis: int, k: int) -> None:
    start = [4, 4, 4]
    a = box((24, 24, 24), tuple(start), (8, 8, 8))
    start[axis] += k
    b = box((24, 24, 24), tuple(start), (8, 8, 8))
    hd, hd95 = metrics.hausdorff(a, b, SPACING)
    assert hd == pytest.approx(k * SPACING[axis])
    assert 0 < hd95 <= hd


def test_hd95_of_shifted_plates_is_exact() -> None:
    # A one-voxel plate is its own border, and every point is exactly k slices from the other plate.
    a = box((12, 12, 12), (2, 1, 1), (1, 10, 10))
    b = box((12, 12, 12), (6, 1, 1), (1, 10, 10))
    assert metrics.hausdorff(a, b, SPACING) == pytest.approx((4 * 0.7, 4 * 0.7))
    # the same shift in x costs a different number of millimetres
    c = box((12, 12, 12), (2, 1, 1), (1, 10, 10))
    d = box((12, 12, 12), (3, 1, 1), (1, 10, 10))
    assert metrics.hausdorff(c, d, SPACING) == pytest.approx((0.7, 0.7))


def test_hd95_ignores_a_small_outlier_but_hd_does_not() -> None:
    plate = box((20, 12, 12), (2, 1, 1), (1, 10, 10))  # 100 border voxels
    pred = plate.copy()
    pred[17, 10, 10] = 1  # one stray voxel, 15 slices straight above the plate
    hd, hd95 = metrics.hausdorff(pred, plate, SPACING)
    assert hd == pytest.approx(15 * 0.7)  # nearest plate voxel is straight below
    assert hd95 == 0.0  # 95th percentile of 100 zeros and one outlier


def adam_reference_hausdorff(a: np.ndarray, b: np.ndarray, spacing_zyx: tuple[float, float, float]) -> tuple[float, float]:
    """ADAM's own recipe: sitk.BinaryErode (ball radius 1), border points in mm, KD-tree distances."""
    def points(mask: np.ndarray) -> np.ndarray:
        img = sitk.GetImageFromArray(mask.astype(np.uint8))
        shell = sitk.GetArrayFromImage(img - sitk.BinaryErode(img, (1, 1, 1)))
        return np.argwhere(shell) * np.asarray(spacing_zyx)

    pa, pb = points(a), points(b)
    d_ab, d_ba = cKDTree(pb).query(pa)[0], cKDTree(pa).query(pb)[0]
    return max(d_ab.max(), d_ba.max()), max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hausdorff_matches_adam_kd_tree_recipe_on_random_blobs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (26, 30, 28)

    def blob() -> np.ndarray:
        field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.5)
        mask = field > np.quantile(field, 0.9)
        mask[:3], mask[-3:], mask[:, :3], mask[:, -3:], mask[:, :, :3], mask[:, :, -3:] = (False,) * 6
        return mask  # kept away from the edges, where ITK and scipy erosion differ on purpose

    a, b = blob(), blob()
    expected = adam_reference_hausdorff(a, b, SPACING)
    assert metrics.hausdorff(a, b, SPACING) == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------------------- segmentation scores


def test_treated_aneurysm_is_masked_out_of_segmentation_scores() -> None:
    ref = box((20, 20, 20), (2, 2, 2), (5, 5, 5)) + box((20, 20, 20), (10, 10, 10), (6, 6, 6), value=2)
    pred = box((20, 20, 20), (2, 2, 2), (5, 5, 5)) + box((20, 20, 20), (10, 10, 10), (6, 3, 6), value=1)
    scores = metrics.segmentation_scores(pred, ref, SPACING)
    assert scores == {"dsc": 1.0, "hd": 0.0, "hd95": 0.0, "vs": 1.0}
    # without the mask the same prediction would not be perfect
    assert metrics.dice(pred, ref) < 1.0 and metrics.dice(pred, ref == 1) < 1.0


def test_segmentation_scores_of_shifted_cube() -> None:
    ref = box((24, 24, 24), (4, 4, 4), (8, 8, 8))
    pred = box((24, 24, 24), (6, 4, 4), (8, 8, 8)) * 3  # label value 3: any aneurysm label counts
    scores = metrics.segmentation_scores(pred, ref, SPACING)
    assert scores["dsc"] == pytest.approx(6 / 8) and scores["vs"] == 1.0
    assert scores["hd"] == pytest.approx(2 * 0.7)


# ----------------------------------------------------------------------------------------- detection


def detection_case() -> tuple[np.ndarray, np.ndarray]:
    """Reference: aneurysm A, aneurysm B and treated C. Prediction: hits A (twice), C, and one far FP."""
    shape = (30, 40, 40)
    ref = box(shape, (5, 5, 5), (4, 4, 4))  # A, centre (6.5, 6.5, 6.5) zyx
    ref += box(shape, (20, 25, 25), (4, 4, 4))  # B: missed
    ref += box(shape, (5, 25, 5), (4, 5, 5), value=2)  # C: treated
    pred = box(shape, (6, 6, 6), (4, 4, 4))  # P1: one voxel off A's centre in every axis -> TP
    pred[6, 4, 6] = 1  # P2: separate, 1.06 mm from A's centre, inside its 1.54 mm radius -> neither TP nor FP
    pred += box(shape, (5, 25, 5), (4, 5, 5))  # P3: on the treated aneurysm -> ignored
    pred += box(shape, (25, 5, 30), (2, 2, 2))  # P4: nowhere near -> FP
    return pred, ref


def test_detection_counts_on_a_constructed_case() -> None:
    pred, ref = detection_case()
    spacing = (0.6, 0.4, 0.4)
    result = metrics.detection(pred, ref, spacing)
    assert (result.tp, result.fn, result.fp, result.ignored) == (1, 1, 1, 1)
    assert str(result) == "tp=1 fn=1 fp=1 ignored=1"  # what progress logs print
    assert len(result.predicted_xyz) == 4
    # A's derived radius: corner voxel 1.5 voxels off the centre per axis, plus half the largest voxel
    radius_a = math.sqrt((1.5 * 0.6) ** 2 + 2 * (1.5 * 0.4) ** 2) + 0.3
    np.testing.assert_allclose(result.reference[0], [6.5, 6.5, 6.5, radius_a])
    # without the treated label the component on C becomes a false positive
    assert metrics.detection(pred, np.where(ref == 2, 0, ref), spacing).fp == 2


def test_detection_with_location_file_radius_units(tmp_path: Path) -> None:
    loc = tmp_path / "location.txt"
    loc.write_text("10, 10, 10, 3\n\n")
    locations = metrics.read_locations(loc)
    np.testing.assert_array_equal(locations, [[10, 10, 10, 3]])
    ref = np.zeros((20, 20, 20), np.uint8)
    pred = np.zeros_like(ref)
    pred[12, 10, 10] = 1  # two slices above the centre: 2 voxels, but 4 mm at 2 mm slices
    spacing = (2.0, 0.5, 0.5)
    in_voxels = metrics.detection(pred, ref, spacing, locations=locations, radius_unit="voxel")
    in_mm = metrics.detection(pred, ref, spacing, locations=locations, radius_unit="mm")
    assert (in_voxels.tp, in_voxels.fn, in_voxels.fp) == (1, 0, 0)
    assert (in_mm.tp, in_mm.fn, in_mm.fp) == (0, 1, 1)


def test_read_locations_empty_and_bad(tmp_path: Path) -> None:
    (tmp_path / "none.txt").write_text("")
    assert metrics.read_locations(tmp_path / "none.txt").shape == (0, 4)
    (tmp_path / "bad.txt").write_text("1, 2, 3\n")
    with pytest.raises(InputError, match="four numbers"):
        metrics.read_locations(tmp_path / "bad.txt")
    with pytest.raises(InputError, match="does not exist"):
        metrics.read_locations(tmp_path / "missing.txt")


def test_labelled_prediction_keeps_touching_aneurysms_apart() -> None:
    pred = box((10, 10, 20), (3, 3, 2), (3, 3, 4), value=1) + box((10, 10, 20), (3, 3, 6), (3, 3, 4), value=2)
    np.testing.assert_allclose(metrics.predicted_centres(pred), [[3.5, 4, 4], [7.5, 4, 4]])
    np.testing.assert_allclose(metrics.predicted_centres(pred > 0), [[5.5, 4, 4]])


def test_no_prediction_and_no_reference() -> None:
    empty = np.zeros((6, 6, 6), np.uint8)
    assert metrics.detection(empty, empty, SPACING) == DetectionResult(0, 0, 0, 0)
    assert metrics.detection(empty, box((6, 6, 6), (1, 1, 1), (2, 2, 2)), SPACING) == DetectionResult(0, 1, 0, 0)


# ------------------------------------------------------------------------------ aggregation, ranking


def test_aggregate_pools_counts_over_cases() -> None:
    dets = [DetectionResult(1, 1, 1), DetectionResult(2, 0, 0), DetectionResult(0, 0, 3)]
    scores = [{"dsc": 0.5, "hd95": 2.0}, {"dsc": float("nan"), "hd95": float("nan")}, {"dsc": 0.7, "hd95": 4.0}]
    out = metrics.aggregate(dets, scores)
    assert out["sensitivity"] == pytest.approx(3 / 4)
    assert out["fp_per_case"] == pytest.approx(4 / 3)
    assert out["ppv"] == pytest.approx(3 / 7)
    assert (out["cases"], out["tp"], out["fn"], out["fp"]) == (3, 3, 1, 4)
    assert out["dsc"] == pytest.approx(0.6) and out["dsc_n"] == 2
    assert out["dsc_sd"] == pytest.approx(math.sqrt(0.02))
    assert out["hd95"] == pytest.approx(3.0)
    nothing = metrics.aggregate([DetectionResult(0, 0, 0)])
    assert math.isnan(nothing["sensitivity"]) and math.isnan(nothing["ppv"]) and nothing["fp_per_case"] == 0


def test_rank_methods_by_hand() -> None:
    table = {
        "A": {"dsc": 0.8, "hd95": 2.0},  # dsc 0.0, hd95 0.25 -> 0.125
        "B": {"dsc": 0.6, "hd95": 1.0},  # dsc 1.0, hd95 0.0  -> 0.5
        "C": {"dsc": 0.7, "hd95": 5.0},  # dsc 0.5, hd95 1.0  -> 0.75
        "D": {"hd95": 4.0},  # dsc missing -> 1.0, hd95 0.75 -> 0.875
    }
    ranking = metrics.rank_methods(table, {"dsc": True, "hd95": False})
    assert list(ranking) == ["A", "B", "C", "D"]
    assert list(ranking.values()) == pytest.approx([0.125, 0.5, 0.75, 0.875])
    tie = metrics.rank_methods({"x": {"vs": 0.5}, "y": {"vs": 0.5}}, {"vs": True})
    assert tie == {"x": 0.0, "y": 0.0}
    with pytest.raises(InputError):
        metrics.rank_methods(table, {})
