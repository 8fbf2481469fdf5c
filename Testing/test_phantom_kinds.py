"""Input kinds of real TOF-MRA made from phantoms: each a valid image whose truth still lines up."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from AneurysmSegLib.cli import phantom as phantom_cmd
from AneurysmSegLib.phantom import kinds
from AneurysmSegLib.phantom.render import PhantomCase, generate_case, write_case
from AneurysmSegLib.training.data import VISIBLE_VESSELS_NAME, CaseRef, read_vessels

SHAPE = (80, 80, 36)
SPACING = (2.4, 2.4, 1.9)  # 19 x 19 x 6.8 cm: the whole head on a coarse grid keeps the tests fast
SMALL = (64, 64, 28)  # rendered kinds with their own voxel size: a small field of view
SEED = 11
ARGS = dict(n_aneurysms=2, treated=True)
RESAMPLED = {"matrix_zerofilled", "fine_0p2mm", "anisotropic", "coarse_1mm", "oblique", "cow_crop_challenge"}


@functools.lru_cache(maxsize=None)
def _plain() -> PhantomCase:
    return generate_case(SEED, SHAPE, SPACING, **ARGS)


@functools.lru_cache(maxsize=None)
def _case(kind: str) -> PhantomCase:
    """Each kind once per test session: transforms of one rendered case, rendered kinds on their own."""
    if not kinds.renders(kind):
        return kinds.apply_kind(_plain(), kind, SEED)
    if kind in ("fine_0p2mm", "anisotropic", "coarse_1mm"):
        return kinds.make_kind(kind, SEED, SMALL, **ARGS)
    return kinds.make_kind(kind, SEED, SHAPE, SPACING, **ARGS)


@pytest.fixture(scope="module")
def reference() -> PhantomCase:
    return _plain()


def _instance_centres(case: PhantomCase) -> dict[int, tuple[np.ndarray, int]]:
    """World (LPS) centroid and voxel count of each aneurysm instance in view."""
    out = {}
    for k in range(1, int(case.instances.max(initial=0)) + 1):
        zyx = np.argwhere(case.instances == k)
        if len(zyx):
            out[k] = (case.geometry.index_to_lps(zyx.mean(axis=0)[::-1]), len(zyx))
    return out


def test_visible_vessels_are_the_bright_part_of_the_tree(reference: PhantomCase) -> None:
    vessels, visible = reference.vessels > 0, reference.visible > 0
    assert visible.any() and not np.any(visible & ~vessels), "visible vessels are vessel label voxels"
    img = reference.image.array
    hidden = vessels & ~visible
    assert hidden.any(), "on a 2.4 mm grid the thinnest arteries vanish in the noise"
    assert np.median(img[visible]) > 1.15 * np.median(img[hidden])
    noisy = generate_case(SEED, SHAPE, SPACING, noise=0.2, **ARGS)
    assert np.array_equal(noisy.vessels, reference.vessels)
    assert noisy.visible.sum() < 0.8 * reference.visible.sum(), "more noise, fewer visible vessels"


@pytest.mark.parametrize("kind", kinds.KINDS)
def test_kind_is_valid_and_its_truth_lines_up(kind: str, reference: PhantomCase, tmp_path: Path) -> None:
    case = _case(kind)
    img = case.image.array
    assert case.params.input_kind == kind
    assert img.ndim == 3 and np.isfinite(img).all() and img.std() > 0
    for name in ("vessels", "aneurysms", "visible", "instances", "brain", "head", "fat"):
        assert getattr(case, name).shape == img.shape, name
    assert not np.any((case.visible > 0) & (case.vessels == 0))
    assert np.array_equal(case.instances > 0, case.aneurysms > 0)
    # every location is the centroid of one instance's voxels (rounded) and lies on the sac
    sp = np.asarray(case.geometry.spacing_zyx)
    centres = [loc for loc in case.locations + case.treated_locations]
    assert len(centres) == len(_instance_centres(case))
    near = ndimage.binary_dilation(case.aneurysms > 0, iterations=2)
    for x, y, z, r in centres:
        assert near[z, y, x], f"{kind}: location ({x}, {y}, {z}) is not on an aneurysm"
        assert r >= 0.5 * sp.max()
    # the same aneurysms sit at the same physical places as in the plain case
    if kind not in RESAMPLED:
        ref = _instance_centres(reference)
        for k, (world, count) in _instance_centres(case).items():
            if count == ref[k][1]:  # not cut by a crop
                assert np.allclose(world, ref[k][0], atol=1e-3), f"{kind}: aneurysm {k} moved"
    # written and read back: voxel type, values and geometry survive
    folder = write_case(case, tmp_path / kind)
    tof = sitk.ReadImage(str(folder / "orig" / "TOF.nii.gz"))
    vis = sitk.ReadImage(str(folder / VISIBLE_VESSELS_NAME))
    for im in (tof, vis):
        assert im.GetSize() == img.shape[::-1]
        assert np.allclose(im.GetSpacing(), case.geometry.spacing) and np.allclose(im.GetOrigin(), case.geometry.origin, atol=1e-3)
        assert np.allclose(im.GetDirection(), case.geometry.direction, atol=1e-6)
    stored = sitk.GetArrayFromImage(tof)
    assert np.allclose(stored, img, rtol=1e-6, atol=0.5)
    rows = np.atleast_2d(np.genfromtxt(folder / "location.txt", delimiter=",")) if case.locations else np.zeros((0, 4))
    assert len(rows) == len(case.locations)
    ref = CaseRef(kind, folder)
    assert np.array_equal(read_vessels(ref), case.visible > 0)
    assert np.array_equal(read_vessels(ref, visible=False), case.vessels > 0)


def test_fields_of_view(reference: PhantomCase) -> None:
    full = reference.image.array
    brain = _case("brain_extracted")
    assert np.all(brain.image.array[~brain.brain & ~ndimage.binary_dilation(brain.aneurysms > 0, iterations=2)] == 0)
    assert (brain.image.array == 0).mean() > (full == 0).mean() + 0.2
    assert not np.any(brain.fat & (brain.image.array > 0)), "no scalp fat is left in a skull-stripped volume"
    fat = reference.fat
    assert fat.any() and np.median(full[fat]) > 1.5 * np.median(full[reference.brain & (reference.vessels == 0)])
    masked = _case("background_masked")
    assert np.all(masked.image.array[~masked.head] == 0) and np.any(full[~masked.head] > 0)
    challenge = _case("cow_crop_challenge")
    assert challenge.image.array.shape == (35, 121, 146) and challenge.geometry.spacing == pytest.approx((0.3, 0.3, 0.6))
    assert challenge.visible.any() and challenge.locations + challenge.treated_locations, "arteries and aneurysms in view"
    crop = _case("cow_crop")
    extent = np.asarray(crop.image.array.shape[::-1]) * np.asarray(crop.geometry.spacing)
    assert np.all(extent <= np.asarray(kinds.COW_CROP_MM) + np.asarray(SPACING))
    assert crop.vessels.any() and crop.visible.any(), "the circle of Willis is inside the crop"
    slab = _case("partial_slab")
    assert slab.image.array.shape[1:] == full.shape[1:]
    assert abs(slab.image.array.shape[0] * SPACING[2] - kinds.SLAB_MM) <= SPACING[2]
    only = _case("vessels_only")
    assert only.storage_dtype == "uint8" and only.image.array.max() <= 255
    assert (only.image.array == 0).mean() > 0.95, "background 0 except the vessels"
    assert np.mean(only.image.array[only.visible > 0] > 0) == 1.0


def test_matrices() -> None:
    base = _plain()
    zf = _case("matrix_zerofilled")
    nz, ny, nx = base.image.array.shape
    assert zf.image.array.shape == (nz, 2 * ny, 2 * nx)
    assert np.allclose(zf.geometry.spacing, (SPACING[0] / 2, SPACING[1] / 2, SPACING[2]))
    # each new voxel is a quarter of an old one: its centre lies inside the old voxel of its label
    old_centre = base.geometry.index_to_lps([10, 20, 5])
    new_centres = zf.geometry.index_to_lps([[20, 40, 5], [21, 41, 5]])
    assert np.allclose(new_centres.mean(axis=0), old_centre)
    # band-limited interpolation keeps the intensities: 2 x 2 means equal the original (up to rounding)
    down = zf.image.array.reshape(nz, ny, 2, nx, 2).mean(axis=(2, 4))
    assert np.corrcoef(down.ravel(), base.image.array.ravel())[0, 1] > 0.97
    pad = _case("matrix_padded")
    assert pad.image.array.shape == (nz, 2 * ny, 2 * nx) and (pad.image.array == 0).mean() >= 0.75


def test_intensity_conventions_and_scanners() -> None:
    u8 = _case("uint8")
    assert u8.storage_dtype == "uint8" and 200 <= u8.image.array.max() <= 255
    i16 = _case("int16_offset")
    assert i16.storage_dtype == "int16" and i16.image.array.min() < -900
    u16 = _case("uint16_4095")
    assert u16.storage_dtype == "uint16" and 3000 < u16.image.array.max() <= 4095
    fl = _case("float_scaled")
    assert fl.storage_dtype == "float32"
    assert not np.allclose(fl.image.array, np.round(fl.image.array)), "float values, not integers"
    low = _case("low_cnr_1p5t")
    high = _case("high_cnr_3t")
    assert low.visible.sum() < high.visible.sum()
    obl = _case("oblique")
    assert abs(obl.geometry.direction_matrix[1, 2]) > 0.3
    for kind, spacing in (("fine_0p2mm", (0.2, 0.2, 0.3)), ("anisotropic", (0.3, 0.3, 1.0)), ("coarse_1mm", (1, 1, 1))):
        assert _case(kind).geometry.spacing == pytest.approx(spacing)
    with pytest.raises(ValueError, match="unknown input kind"):
        kinds.make_kind("not_a_kind", SEED, SHAPE, SPACING)
    with pytest.raises(ValueError, match="rendered"):
        kinds.apply_kind(_plain(), "low_cnr_1p5t", SEED)


def test_kinds_are_deterministic() -> None:
    again = kinds.apply_kind(generate_case(SEED, SHAPE, SPACING, **ARGS), "float_scaled", SEED)
    assert np.array_equal(again.image.array, _case("float_scaled").image.array)
    other = kinds.apply_kind(_plain(), "float_scaled", SEED + 1)
    assert not np.allclose(other.image.array, again.image.array)
    assert _plain().params.input_kind is None and _plain().storage_dtype is None, "the rendered case is left as it was"


def test_cli_writes_a_kind(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    phantom_cmd.configure_parser(parser)
    args = parser.parse_args([str(tmp_path), "--kind", "cow_crop", "--shape", *map(str, SHAPE),
                              "--spacing", *map(str, SPACING), "--seed", "3"])
    assert phantom_cmd.run(args) == 0
    tof = sitk.ReadImage(str(tmp_path / "P0000" / "orig" / "TOF.nii.gz"))
    assert max(np.asarray(tof.GetSize()) * np.asarray(tof.GetSpacing())) <= 50 + 2.4
    assert (tmp_path / "P0000" / VISIBLE_VESSELS_NAME).is_file()
