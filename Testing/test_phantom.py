"""Synthetic TOF-MRA generator: determinism, label consistency, appearance, ADAM files, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from AneurysmSegLib.cli import phantom as phantom_cmd
from AneurysmSegLib.core.errors import InputError
from AneurysmSegLib.phantom import render as phantom
from scipy import ndimage

SHAPE = (128, 128, 48)
SPACING = (1.5, 1.5, 1.4)  # 19 x 19 x 6.7 cm: the whole head at a coarse grid keeps the tests fast


@pytest.fixture(scope="module")
def case() -> phantom.PhantomCase:
    return phantom.generate_case(11, SHAPE, SPACING, n_aneurysms=2, treated=True)


def test_deterministic_per_seed(case: phantom.PhantomCase) -> None:
    again = phantom.generate_case(11, SHAPE, SPACING, n_aneurysms=2, treated=True)
    other = phantom.generate_case(12, SHAPE, SPACING, n_aneurysms=2, treated=True)
    assert np.array_equal(case.image.array, again.image.array)
    assert np.array_equal(case.aneurysms, again.aneurysms)
    assert np.array_equal(case.vessels, again.vessels)
    assert case.locations == again.locations
    assert not np.array_equal(case.image.array, other.image.array)
    assert not np.array_equal(case.vessels, other.vessels)


def test_shapes_types_and_labels(case: phantom.PhantomCase) -> None:
    assert case.image.array.shape == SHAPE[::-1] and case.image.array.dtype == np.float32
    assert case.vessels.shape == case.aneurysms.shape == SHAPE[::-1]
    assert set(np.unique(case.aneurysms)) <= {0, 1, 2}
    assert set(np.unique(case.vessels)) <= {0, 1}
    assert case.geometry.spacing == pytest.approx(SPACING)
    assert np.isfinite(case.image.array).all() and case.image.array.min() >= 0
    # the sac label never includes the parent vessel
    assert not np.any((case.aneurysms > 0) & (case.vessels > 0))


def test_aneurysms_touch_vessels(case: phantom.PhantomCase) -> None:
    assert (case.aneurysms == 1).any() and (case.aneurysms == 2).any()
    near_vessel = ndimage.binary_dilation(case.vessels > 0, iterations=2)
    comps, n = ndimage.label(case.aneurysms > 0)
    for c in range(1, n + 1):
        assert np.any(near_vessel[comps == c]), "every aneurysm sits on a vessel"


def test_locations_match_labels(case: phantom.PhantomCase) -> None:
    """One location per aneurysm: centre = centroid of its label voxels, radius (mm) = their extent."""
    sp = np.asarray(case.geometry.spacing_zyx)
    for value, locs in ((1, case.locations), (2, case.treated_locations)):
        voxels = np.argwhere(case.aneurysms == value)
        assert len(locs) >= 1
        owner = np.argmin([np.linalg.norm((voxels - np.array([z, y, x])) * sp, axis=1) for x, y, z, _ in locs], axis=0)
        for k, (x, y, z, r) in enumerate(locs):
            mine = voxels[owner == k]
            centre = mine.mean(axis=0)
            assert np.allclose(centre, (z, y, x), atol=0.51), "centre = centroid of the aneurysm's voxels"
            extent = np.max(np.linalg.norm((mine - centre) * sp, axis=1))
            assert extent <= r <= extent + np.max(sp), "radius = maximum extent in mm"
            near = ndimage.binary_dilation(case.aneurysms == value, iterations=2)
            assert near[z, y, x], "the centre lies in or next to the sac"


def test_appearance_vessels_and_fat_bright(case: phantom.PhantomCase) -> None:
    img = case.image.array
    sp = np.asarray(case.geometry.spacing_zyx)
    vessels_near = ndimage.binary_dilation(case.vessels > 0, iterations=2)
    thr = 0.5 * np.median(img[img > np.percentile(img, 50)])
    head = np.stack([ndimage.binary_fill_holes(sl) for sl in ndimage.binary_opening(img > thr, iterations=2)])
    # interior: deeper than 25 mm inside the head outline; rim: the outer 12 mm
    depth = ndimage.distance_transform_edt(head, sampling=sp)
    interior = (depth > 25) & ~vessels_near
    rim = head & (depth < 12) & ~vessels_near
    brain = np.median(img[interior])
    assert np.mean(img[ndimage.binary_erosion(case.vessels > 0)]) > 1.5 * brain, "vessels brighter than brain"
    assert np.percentile(img[rim], 95) > 1.4 * brain, "a bright subcutaneous fat rim"
    assert np.median(img[~head]) < 0.3 * brain, "dark air"


def test_zero_aneurysms_and_written_layout(tmp_path: Path) -> None:
    case = phantom.generate_case(5, SHAPE, SPACING, n_aneurysms=0, treated=False, oblique_deg=12.0)
    assert not case.aneurysms.any() and case.locations == []
    assert abs(case.geometry.direction_matrix[1, 2]) > 0.1, "an oblique slab"
    assert np.allclose(case.geometry.direction_matrix @ case.geometry.direction_matrix.T, np.eye(3), atol=1e-9)
    folder = phantom.write_case(case, tmp_path / "P0000")
    assert (folder / "location.txt").read_text() == ""
    tof = sitk.ReadImage(str(folder / "orig" / "TOF.nii.gz"))
    lab = sitk.ReadImage(str(folder / "aneurysms.nii.gz"))
    for img in (tof, lab, sitk.ReadImage(str(folder / "vessels.nii.gz"))):
        assert img.GetSize() == SHAPE
        assert np.allclose(img.GetSpacing(), case.geometry.spacing)
        assert np.allclose(img.GetOrigin(), case.geometry.origin, atol=1e-4)
        assert np.allclose(img.GetDirection(), case.geometry.direction, atol=1e-6)
    assert np.allclose(sitk.GetArrayFromImage(tof), case.image.array, atol=0.5)
    assert not sitk.GetArrayFromImage(lab).any()


def test_location_file_format(case: phantom.PhantomCase, tmp_path: Path) -> None:
    folder = phantom.write_case(case, tmp_path / "case")
    rows = np.atleast_2d(np.genfromtxt(folder / "location.txt", delimiter=","))
    assert rows.shape == (len(case.locations), 4)
    assert np.allclose(rows, np.array(case.locations, dtype=float), atol=0.01)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "aneurysms.nii.gz")))
    assert np.array_equal(lab, case.aneurysms)


def test_shifted_scanner_differs() -> None:
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    train = [phantom.sample_params(rng_a, "train") for _ in range(40)]
    shifted = [phantom.sample_params(rng_b, "shifted") for _ in range(40)]
    assert max(p["noise"] for p in shifted) > max(p["noise"] for p in train)
    assert min(p["gamma"] for p in shifted) < min(p["gamma"] for p in train)
    with pytest.raises(ValueError):
        phantom.generate_case(1, SHAPE, SPACING, not_a_parameter=3)


def test_default_geometry_fits_circle_of_willis() -> None:
    params = phantom.sample_params(np.random.default_rng(3))
    assert params["shape_xyz"] == list(phantom.DEFAULT_SHAPE_XYZ)
    fov = np.asarray(params["shape_xyz"]) * np.asarray(params["spacing"])
    assert fov[0] >= 150 and fov[2] >= 50


def _cli(argv: list[str]) -> int:
    """The subcommand exactly as ``aneurysmseg phantom`` runs it (parser + run)."""
    parser = argparse.ArgumentParser()
    phantom_cmd.configure_parser(parser)
    return phantom_cmd.run(parser.parse_args(argv))


def test_cli_writes_cases(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    rc = _cli([str(out), "--cases", "2", "--seed", "4", "--shape", *map(str, SHAPE),
               "--spacing", *map(str, SPACING), "--scanner", "shifted"])
    assert rc == 0
    folders = sorted(p.name for p in out.iterdir())
    assert folders == ["P0000", "P0001"]
    for f in folders:
        for name in ("orig/TOF.nii.gz", "aneurysms.nii.gz", "location.txt", "vessels.nii.gz", "params.json"):
            assert (out / f / name).is_file()
    first = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "P0000" / "orig" / "TOF.nii.gz")))
    second = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "P0001" / "orig" / "TOF.nii.gz")))
    assert not np.array_equal(first, second)
    with pytest.raises(InputError):
        _cli([str(out), "--cases", "0"])


def test_grid_from_spacing_or_shape_and_dataset_seeds(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    p = phantom.sample_params(rng, "train", spacing=(0.4, 0.4, 0.5))
    assert p["spacing"] == [0.4, 0.4, 0.5] and p["shape_xyz"][0] * 0.4 >= 150  # the head still fits
    p = phantom.sample_params(rng, "train", shape_xyz=(512, 512, 140))
    assert p["shape_xyz"] == [512, 512, 140] and 0.3 < p["spacing"][0] < 0.5
    assert phantom.case_seed(7, 3) == phantom.case_seed(7, 3)
    assert len({phantom.case_seed(7, i) for i in range(20)} | {phantom.case_seed(8, 0)}) == 21
    folders = phantom.generate_dataset(tmp_path, 2, seed=7, shape_xyz=(64, 64, 32), spacing=(3.0, 3.0, 2.2), start=3)
    assert [f.name for f in folders] == ["P0003", "P0004"]
    params = json.loads((folders[0] / "params.json").read_text())
    assert params["seed"] == phantom.case_seed(7, 3) and params["shape_xyz"] == [64, 64, 32]
