"""Preprocessing: grids and resampling, head statistics, intracranial region, arteries, contour, VOIs.

The synthetic head here is deliberately simple and analytic (layers by depth under an ellipsoidal
surface, tubes with known radii) so every expectation is known exactly; the phantom generator's cases
are evaluated by ``benchmarks/artery_extraction.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from AneurysmSegLib import preprocess as pp
from AneurysmSegLib.core.errors import InputError
from AneurysmSegLib.core.geometry import Geometry, Image
from AneurysmSegLib.preprocess.masks import _ball
from conftest import rotation_matrix
from scipy import ndimage

SPACING = (0.8, 0.8, 0.9)  # x, y, z: anisotropic like a TOF slab
SHAPE = (48, 108, 108)  # z, y, x: an adult head's width in a small volume


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((points - a) @ ab) / float(ab @ ab), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def synthetic_head(seed: int = 0, shape: tuple[int, int, int] = SHAPE,
                   extras: bool = False) -> dict[str, np.ndarray | Geometry]:
    """A slab through an ellipsoidal head: skin, bright fat, dark skull, CSF, brain, bright tubes.

    Returns the 12-bit image, the vessel and fat masks, and the geometry. Physical coordinates are
    millimetres from the volume centre; the slab cuts the head at top and bottom like a real TOF.
    ``extras`` adds the bright non-arteries real scans have: a thick venous sinus just inside the
    skull, an orbit-like fat pad deep in the head, and a bright bridge joining the scalp fat to the
    carotid (partial volume through a thin skull), returned as ``non_artery``.
    """
    rng = np.random.default_rng(seed)
    geom = Geometry(spacing=SPACING, origin=(0.0, 0.0, 0.0))
    sz, sy, sx = geom.spacing_zyx
    zz, yy, xx = np.meshgrid(*(np.arange(n) * s - (n - 1) * s / 2 for n, s in zip(shape, (sz, sy, sx))),
                             indexing="ij")
    head = (xx / 40.0) ** 2 + (yy / 42.0) ** 2 + (zz / 80.0) ** 2 <= 1.0
    depth = ndimage.distance_transform_edt(head, sampling=(sz, sy, sx))
    img = np.full(shape, 0.02, dtype=np.float32)
    img[head] = 0.30  # skin / muscle
    fat = head & (depth > 1.0) & (depth <= 3.5)
    img[fat] = 1.0
    img[head & (depth > 3.5) & (depth <= 7.5)] = 0.04  # skull
    img[head & (depth > 7.5) & (depth <= 8.5)] = 0.10  # CSF
    brain = head & (depth > 8.5)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), 2.0)
    img[brain] = 0.30 + 0.04 * texture[brain] / texture.std()
    pts = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1)
    vessels = np.zeros(shape, dtype=bool)
    twig = np.zeros(shape, dtype=bool)
    z0, z1 = -(shape[0] - 1) * sz / 2, (shape[0] - 1) * sz / 2
    tubes = [  # (start, end, radius mm): a carotid from the slab's bottom face, branches, a thin twig
        ((-6.0, 4.0, z0 - 1), (-6.0, 2.0, 0.0), 2.0),
        ((-6.0, 2.0, 0.0), (8.0, -6.0, 6.0), 1.2),
        ((-6.0, 2.0, 0.0), (-12.0, 12.0, 10.0), 1.2),
        ((8.0, -6.0, 6.0), (12.0, -12.0, z1 - 2), 0.6),
    ]
    for a, b, r in tubes:
        tube = (_segment_distance(pts, np.array(a), np.array(b)) <= r).reshape(shape)
        vessels |= tube
        if r < 1.0:
            twig |= tube
    vessels &= brain
    twig &= brain
    img[vessels] = 1.0
    non_artery = np.zeros(shape, dtype=bool)
    if extras:
        sinus = (_segment_distance(pts, np.array([-22.0, 26.0, -8.0]), np.array([22.0, 26.0, -8.0])) <= 3.0)
        pad = ((xx - 12.0) / 12.0) ** 2 + ((yy + 20.0) / 10.0) ** 2 + ((zz - 6.0) / 9.0) ** 2 <= 1.0
        bridge = (_segment_distance(pts, np.array([-6.0, 3.0, -8.0]), np.array([-40.0, 3.0, -8.0])) <= 1.0)
        bright = (sinus.reshape(shape) | pad | bridge.reshape(shape)) & head & ~vessels
        img[bright] = np.maximum(img[bright], 0.9)
        # inside the brain the bridge is indistinguishable from a branch of the tree: not scored
        non_artery = bright & ~(bridge.reshape(shape) & brain)
    img = ndimage.gaussian_filter(img, sigma=(0.4 / sz, 0.4 / sy, 0.4 / sx))  # partial volume
    noise = 0.02
    img = np.hypot(img + rng.normal(0, noise, shape), rng.normal(0, noise, shape))  # Rician
    return {"image": (img * 3000).astype(np.float32), "vessels": vessels, "fat": fat, "twig": twig,
            "head": head, "brain": brain, "geometry": geom, "non_artery": non_artery}


@pytest.fixture(scope="module")
def head_case() -> dict:
    return synthetic_head(0)


@pytest.fixture(scope="module")
def head_pre(head_case: dict) -> pp.Preprocessed:
    return pp.preprocess(Image(head_case["image"], head_case["geometry"]))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum()) + int(b.sum()))


def synthetic_to_lps(geom: Geometry, shape: tuple[int, int, int], point_mm: tuple[float, float, float]) -> np.ndarray:
    """synthetic_head's millimetres-from-the-volume-centre (x, y, z) -> LPS."""
    centre = geom.index_to_lps([(n - 1) / 2.0 for n in shape[::-1]])
    return centre + np.asarray(point_mm)


def full_arteries(pre: pp.Preprocessed) -> np.ndarray:
    """The artery mask on the input grid (what the benchmark scores)."""
    return pp.arteries_on(pre, pre.image.geometry, pre.image.array.shape)


# ---------------------------------------------------------------------------------------- grids


@pytest.mark.parametrize("oblique", [False, True])
def test_grid_around_centres_and_keeps_axes(oblique: bool, oblique_geometry: Geometry) -> None:
    geom = oblique_geometry if oblique else Geometry(spacing=(0.35, 0.35, 0.5), origin=(10.0, -20.0, 5.0))
    center = np.array([12.3, -4.5, 40.25])
    voi = pp.grid_around(geom, center, 64, 0.4)
    np.testing.assert_allclose(voi.index_to_lps([31.5, 31.5, 31.5]), center, atol=1e-9)
    assert voi.spacing == (0.4, 0.4, 0.4)
    np.testing.assert_allclose(voi.direction, geom.direction)
    # the grid's first axis runs along the input's first axis
    step = voi.index_to_lps([1, 0, 0]) - voi.index_to_lps([0, 0, 0])
    np.testing.assert_allclose(step, 0.4 * geom.direction_matrix[:, 0], atol=1e-12)


def test_resample_matches_analytic_values(oblique_geometry: Geometry) -> None:
    """Linear interpolation reproduces a linear field exactly; a smooth blob closely; round trip."""
    src = oblique_geometry
    shape = (40, 48, 56)
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    lps = src.index_to_lps(np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1))
    centre = src.index_to_lps([28, 24, 20])

    def field(p: np.ndarray) -> np.ndarray:
        return 3.0 + p @ np.array([0.5, -0.25, 0.125])

    def blob(p: np.ndarray) -> np.ndarray:
        return np.exp(-np.sum((p - centre) ** 2, axis=1) / (2 * 4.0 ** 2))

    voi = pp.grid_around(src, centre, 16, 0.4)
    k2, j2, i2 = np.meshgrid(*(np.arange(16),) * 3, indexing="ij")
    voi_lps = voi.index_to_lps(np.stack([i2.ravel(), j2.ravel(), k2.ravel()], axis=1))
    voi_index = voi.lps_to_index(lps)
    for f, tol in ((field, 1e-3), (blob, 0.01)):
        values = f(lps).reshape(shape).astype(np.float32)
        out = pp.resample(values, src, voi, (16, 16, 16))
        assert out.dtype == np.float32 and out.shape == (16, 16, 16)
        np.testing.assert_allclose(out.ravel(), f(voi_lps), atol=tol)
        back = pp.resample(out, voi, src, shape, default=np.nan)
        assert np.isnan(back).sum() > 0.9 * back.size  # outside the VOI: the default
        inside = np.all((voi_index >= 0) & (voi_index <= 15), axis=1).reshape(shape)
        assert inside.sum() > 100 and np.isfinite(back[inside]).all()
        np.testing.assert_allclose(back[inside], values[inside], atol=3 * tol)
    labels = (blob(lps).reshape(shape) > 0.5)
    nearest = pp.resample(labels, src, voi, (16, 16, 16), linear=False)
    assert nearest.dtype == bool and nearest[8, 8, 8] and not nearest[0, 0, 0]


def test_coarse_grid_covers_the_input_box() -> None:
    geom = Geometry(spacing=(0.35, 0.35, 0.5), origin=(1.0, 2.0, 3.0))
    grid, shape = pp.coarse_grid(geom, (140, 512, 512), 0.7)
    assert shape == (100, 256, 256)
    corner_in = geom.index_to_lps([-0.5, -0.5, -0.5])
    corner_out = grid.index_to_lps([-0.5, -0.5, -0.5])
    np.testing.assert_allclose(corner_in, corner_out, atol=1e-9)


# ---------------------------------------------------------------------------- head and statistics


def test_zscore_uses_head_statistics_not_air(head_case: dict, head_pre: pp.Preprocessed) -> None:
    img = head_case["image"]
    rng = np.random.default_rng(5)
    extra = (40, img.shape[1], img.shape[2])  # more air above the slab, as a bigger field of view gives
    air = np.hypot(rng.normal(0, 60, extra), rng.normal(0, 60, extra)).astype(np.float32)
    bigger = pp.preprocess(Image(np.concatenate([img, air], axis=0), head_case["geometry"]))
    assert abs(bigger.mean - head_pre.mean) < 0.02 * head_pre.std
    assert abs(bigger.std / head_pre.std - 1) < 0.02
    true_head = img[head_case["head"]]
    assert abs(head_pre.mean - true_head.mean()) < 0.1 * true_head.std()
    z = pp.zscore(img, head_pre.mean, head_pre.std)
    assert abs(float(z[head_case["head"]].mean())) < 0.1


def test_head_mask_matches_the_head(head_case: dict, head_pre: pp.Preprocessed) -> None:
    geom = head_case["geometry"]
    head = pp.resample(head_pre.coarse_head, head_pre.coarse.geometry, geom, head_case["image"].shape,
                       linear=False)
    assert dice(head, head_case["head"]) > 0.95


def test_constant_image_is_an_input_error() -> None:
    with pytest.raises(InputError):
        pp.preprocess(Image(np.full((32, 32, 32), 7.0, dtype=np.float32), Geometry(spacing=(1, 1, 1))))


# ------------------------------------------------------------------------------------- arteries


def test_arteries_match_vessels_and_exclude_the_fat_rim(head_case: dict, head_pre: pp.Preprocessed) -> None:
    arteries = full_arteries(head_pre)
    assert dice(arteries, head_case["vessels"]) > 0.85
    assert not (arteries & head_case["fat"]).any()
    fat_coarse = pp.resample(head_case["fat"], head_case["geometry"], head_pre.coarse.geometry,
                             head_pre.coarse.array.shape, linear=False)
    assert fat_coarse.sum() > 1000 and not (head_pre.coarse_arteries & fat_coarse).any()
    assert not (head_pre.coarse_brain & fat_coarse).any()


def test_a_lower_wall_fraction_widens_the_arteries(head_case: dict, head_pre: pp.Preprocessed) -> None:
    """``fraction`` moves the walls of the half-maximum rule (the morphology's parent calibre uses 0.35):
    the mask only grows, along the arteries, and 0.5 is the rule itself."""
    g, shape = head_pre.image.geometry, head_pre.image.array.shape
    half = full_arteries(head_pre)
    wider = pp.arteries_on(head_pre, g, shape, fraction=0.4)
    narrower = pp.arteries_on(head_pre, g, shape, fraction=0.8)
    assert np.array_equal(pp.arteries_on(head_pre, g, shape, fraction=0.5), half)
    assert not (half & ~wider).any() and not (narrower & ~half).any()
    assert wider.sum() > half.sum() > narrower.sum() > 0


def test_sinus_fat_pad_and_bridged_scalp_fat_are_excluded() -> None:
    """A sinus under the skull, an orbit-like fat pad, and scalp fat bridged to the carotid: the tree
    keeps all its voxels (a bridge must not drag it out with the fat), the rest is dropped."""
    case = synthetic_head(1, extras=True)
    pre = pp.preprocess(Image(case["image"], case["geometry"]))
    arteries = full_arteries(pre)
    vessels, other = case["vessels"], case["non_artery"]
    assert other.sum() > 3000
    assert (arteries & vessels).sum() > 0.95 * vessels.sum()
    assert (arteries & other).sum() < 0.02 * other.sum()
    assert not (arteries & case["fat"]).any()


def test_skull_base_and_thin_vessels_are_kept(head_case: dict, head_pre: pp.Preprocessed) -> None:
    arteries = full_arteries(head_pre)
    twig = head_case["twig"]
    assert twig.sum() > 20 and (arteries & twig).sum() / twig.sum() > 0.7
    # the carotid enters through the slab's bottom face: the bottom slices keep it
    bottom = slice(0, 3)
    assert (arteries[bottom] & head_case["vessels"][bottom]).sum() > 0.8 * head_case["vessels"][bottom].sum()


@pytest.mark.parametrize("variant", ["uint8", "zeroed", "float01", "bias"])
def test_other_intensity_ranges_give_the_same_arteries(variant: str, head_case: dict,
                                                       head_pre: pp.Preprocessed) -> None:
    img = head_case["image"]
    if variant == "uint8":
        other = np.round(np.clip(img / np.percentile(img, 99.9), 0, 1) * 255).astype(np.uint8)
    elif variant == "zeroed":
        other = np.where(head_case["head"], img, 0).astype(np.float32)
    elif variant == "float01":
        other = (img / img.max()).astype(np.float64)
    else:  # smooth multiplicative bias field, +-20 % across the field of view
        zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, n) for n in img.shape), indexing="ij")
        other = img * (1 + 0.2 * xx * 0.7 + 0.2 * zz * 0.7)
    pre = pp.preprocess(Image(other.astype(np.float32), head_case["geometry"]))
    arteries = full_arteries(pre)
    assert dice(arteries, full_arteries(head_pre)) > 0.9
    assert dice(arteries, head_case["vessels"]) > 0.85
    assert not (arteries & head_case["fat"]).any()


def test_specks_removed_connected_twigs_kept() -> None:
    spacing = (0.5, 0.5, 0.5)
    z = np.zeros((30, 30, 30), dtype=np.float32)
    z[15, 15, 2:28] = 10  # a vessel one voxel wide
    z[15, 16:19, 20] = 10  # a 3-voxel side branch (0.375 mm^3) touching it
    z[5, 5, 5:7] = 10  # an isolated 2-voxel speck
    mask = pp.extract_arteries(z, spacing, None, threshold=3.0, min_mm3=1.0)
    assert mask[15, 15, 2:28].all() and mask[15, 16:19, 20].all()
    assert not mask[5, 5, 5:7].any()
    brain = np.zeros_like(mask)
    brain[:, :, 10:] = True
    assert not pp.extract_arteries(z, spacing, brain, 3.0, min_mm3=0.1)[:, :, :10].any()


def test_coarse_roi_surrounds_the_arteries(head_pre: pp.Preprocessed) -> None:
    roi = pp.coarse_roi(head_pre, margin_mm=3.0)
    assert roi[head_pre.coarse_arteries].all()
    dist = ndimage.distance_transform_edt(~head_pre.coarse_arteries, sampling=head_pre.coarse.geometry.spacing_zyx)
    assert dist[roi].max() <= 3.0 + 1e-6
    assert roi.sum() > 3 * head_pre.coarse_arteries.sum()
    # the bounding-box distance transform gives exactly the whole grid's dilation (within the head)
    assert np.array_equal(roi, (dist <= 3.0) & head_pre.coarse_head)


def test_preprocess_is_deterministic(head_case: dict, head_pre: pp.Preprocessed) -> None:
    again = pp.preprocess(Image(head_case["image"].copy(), head_case["geometry"]))
    assert again.mean == head_pre.mean and again.artery_threshold == head_pre.artery_threshold
    assert np.array_equal(again.coarse_arteries, head_pre.coarse_arteries)


# ------------------------------------------------------------------------------- contour and VOIs


def test_contour_is_zero_far_away_and_peaks_at_the_dilated_border() -> None:
    spacing = (0.4, 0.4, 0.4)
    zz, yy, xx = np.meshgrid(*(np.arange(40) * 0.4 - 8.0,) * 3, indexing="ij")
    r = np.sqrt(zz ** 2 + yy ** 2 + xx ** 2)
    mask = r <= 3.0
    contour = pp.contour_channel(mask, spacing, dilation_mm=0.8)
    assert contour.dtype == np.float32 and contour.min() >= 0 and contour.max() <= 1
    assert contour.max() > 0.9
    assert np.all(contour[(r < 2.0) | (r > 5.0)] == 0)
    dilated = ndimage.binary_dilation(mask, structure=_ball(0.8, spacing))
    cube = np.ones((3, 3, 3), dtype=bool)
    border = dilated & ~ndimage.binary_erosion(dilated, structure=cube)
    near_border = ndimage.binary_dilation(border, structure=cube)
    assert np.all(near_border[contour > 0.5])
    ring = contour[border]
    assert ring.mean() > 0.5  # the contour is where the dilated mask's border is


def test_voi_channels_shape_and_content(head_case: dict, head_pre: pp.Preprocessed) -> None:
    geom = head_case["geometry"]
    centre = synthetic_to_lps(geom, SHAPE, (-6.0, 2.0, 0.0))  # on the carotid
    channels, voi = pp.voi_channels(head_pre, centre)
    assert channels.shape == (2, 64, 64, 64) and channels.dtype == np.float32
    np.testing.assert_allclose(voi.index_to_lps([31.5] * 3), centre, atol=1e-9)
    assert channels[0, 32, 32, 32] > head_pre.artery_threshold
    assert channels[1].max() > 0.9 and channels[1].min() >= 0
    one, _ = pp.voi_channels(head_pre, centre, channels=1)
    assert one.shape == (1, 64, 64, 64) and np.array_equal(one[0], channels[0])


def test_off_image_voi_is_padded(head_case: dict, head_pre: pp.Preprocessed) -> None:
    geom = head_case["geometry"]
    corner = geom.index_to_lps([0, 0, 0])
    channels, _ = pp.voi_channels(head_pre, corner, size=32)
    assert channels.shape == (2, 32, 32, 32) and np.isfinite(channels).all()
    pad = (head_pre.background - head_pre.mean) / head_pre.std
    assert np.allclose(channels[0, :8, :8, :8], pad, atol=1e-5)
    assert not channels[1].any()
    far, _ = pp.voi_channels(head_pre, corner - 1000.0, size=16)
    assert np.allclose(far[0], pad, atol=1e-5) and not far[1].any()


def test_voi_follows_the_image_axes(head_case: dict, head_pre: pp.Preprocessed) -> None:
    """The same array with an oblique direction gives the same VOI (axes follow the input)."""
    geom = head_case["geometry"]
    oblique = Geometry(spacing=geom.spacing, origin=(5.0, -7.0, 11.0),
                       direction=rotation_matrix((1.0, 2.0, 3.0), 30.0).ravel())
    pre = pp.preprocess(Image(head_case["image"], oblique))
    index = [40.0, 55.0, 27.5]
    a, _ = pp.voi_channels(head_pre, geom.index_to_lps(index), size=32)
    b, _ = pp.voi_channels(pre, oblique.index_to_lps(index), size=32)
    np.testing.assert_allclose(a, b, atol=1e-4)
