"""pipeline: detection -> seeds -> fine stage -> labels in the input geometry, on an oblique scan.

Until the trained weights exist the models here are small real torch modules with the networks'
input/output contracts, exported to TorchScript with ``models.export_torchscript`` and loaded through
the verified manifest like the bundled ones:

* ``BlobDetector`` (DeepMedic's contract: ``(N, 1, S+48, ...)`` -> 2-class logits ``(N, 2, S, ...)``)
  fires where the Gaussian-blurred z-score is high: on thick bright blobs, not on thin vessels;
* ``BrightFine`` (the SE U-Net's contract: ``(N, C, 64, 64, 64)`` -> one logit map) marks bright
  voxels, so the fine stage segments the blob exactly and its position can be checked in mm;
* the real ``DeepMedic`` and ``SEUNet3D``, tiny and randomly initialised (seeded), check that the
  pipeline drives the actual architectures (tiling, batching) deterministically.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch
from AneurysmSegLib.core import models as models_mod
from AneurysmSegLib.core import pipeline
from AneurysmSegLib.core.errors import InputError
from AneurysmSegLib.core.geometry import Geometry, Image
from AneurysmSegLib.core.result import Seed
from AneurysmSegLib.networks.deepmedic import DeepMedic
from AneurysmSegLib.networks.se_unet import SEUNet3D
from conftest import rotation_matrix
from torch import nn
from torch.nn import functional as F

# ---------------------------------------------------------------------------------- test models


class BlobDetector(nn.Module):
    """DeepMedic-shaped detector: class 1 where a 9^3 Gaussian blur of the z-score exceeds ``level``."""

    def __init__(self, sigma_voxels: float = 1.5, level: float = 4.5, gain: float = 4.0) -> None:
        super().__init__()
        r = torch.arange(-4, 5, dtype=torch.float32)
        g = torch.exp(-(r**2) / (2 * sigma_voxels**2))
        k = g[:, None, None] * g[None, :, None] * g[None, None, :]
        self.register_buffer("kernel", (k / k.sum())[None, None])
        self.level = level
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x[:, :1, 20:-20, 20:-20, 20:-20]  # context 48 = 2 x (20 + 4 of the 9^3 kernel)
        blurred = F.conv3d(c, self.kernel)
        return torch.cat([torch.zeros_like(blurred), self.gain * (blurred - self.level)], dim=1)


class BrightFine(nn.Module):
    """SE U-Net-shaped fine model: logit ``gain * (z-score - level)`` from channel 0."""

    def __init__(self, level: float = 5.0, gain: float = 4.0) -> None:
        super().__init__()
        self.level = level
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * (x[:, :1] - self.level)


def export_models(folder: Path, coarse: nn.Module, fine: nn.Module, segment_out: int = 27,
                  fine_channels: int = 2) -> Path:
    """Export both models to TorchScript with a manifest, as ``aneurysmseg export`` does."""
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    models_mod.export_torchscript(coarse, torch.randn(1, 1, 48 + 9, 48 + 9, 48 + 9), folder / "coarse.pt")
    models_mod.export_torchscript(fine, torch.randn(1, fine_channels, 64, 64, 64), folder / "fine.pt")
    models_mod.write_manifest(
        folder,
        coarse={"file": "coarse.pt", "spacing_mm": 0.7, "in_channels": 1, "segment_out": segment_out},
        fine={"file": "fine.pt", "spacing_mm": 0.4, "in_channels": fine_channels, "voi_size": 64},
        training={"description": "test models (not trained)"}, metrics={})
    return folder


def model_levels() -> tuple[float, float]:
    """(detector, fine) levels in the z units of the current preprocessing of :func:`synthetic_scan`.

    Taken from the preprocessing itself so that a change of its normalisation does not silently
    break these tests: the blurred small blob (about 0.6 of its z) must clear the detector level,
    the blurred 0.9 mm vessel (about 0.3) must not; the fine level is half way from tissue to blob.
    """
    from AneurysmSegLib.preprocess import preprocess

    pre = preprocess(synthetic_scan())
    tissue, blob = (100.0 - pre.mean) / pre.std, (320.0 - pre.mean) / pre.std
    assert blob - tissue > 4.0, "the synthetic scan no longer separates blobs from tissue"
    return tissue + 0.45 * (blob - tissue), tissue + 0.5 * (blob - tissue)


@pytest.fixture(scope="session")
def blob_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    detector_level, fine_level = model_levels()
    return export_models(tmp_path_factory.mktemp("blob_models"), BlobDetector(level=detector_level),
                         BrightFine(level=fine_level))


@pytest.fixture(scope="session")
def blob_models(blob_model_dir: Path) -> models_mod.LoadedModels:
    return models_mod.load_models(blob_model_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_real_models(tmp_path_factory: pytest.TempPathFactory) -> models_mod.LoadedModels:
    torch.manual_seed(1234)
    coarse = DeepMedic(widths=(4,) * 8, fc_widths=(8,)).eval()
    fine = SEUNet3D(in_channels=2, base_filters=4, depth=3).eval()
    folder = export_models(tmp_path_factory.mktemp("tiny_models"), coarse, fine, segment_out=27)
    return models_mod.load_models(folder, device="cpu")


# ------------------------------------------------------------------------------- synthetic scan

GEOMETRY = Geometry(spacing=(0.5, 0.45, 0.6), origin=(-20.0, 15.0, -10.0),
                    direction=rotation_matrix((1.0, 2.0, 3.0), 23.0).ravel())
SHAPE = (48, 96, 90)  # z, y, x: 40 x 43 x 29 mm


def centre_lps(geometry: Geometry = GEOMETRY, shape: Sequence[int] = SHAPE) -> np.ndarray:
    return geometry.index_to_lps((np.asarray(shape[::-1]) - 1) / 2.0)


def offset(mm_along_axes: Sequence[float], geometry: Geometry = GEOMETRY) -> np.ndarray:
    """A physical point at ``mm`` along the image's own axes from the scan's centre."""
    return centre_lps(geometry) + geometry.direction_matrix @ np.asarray(mm_along_axes, dtype=float)


#: Two aneurysm-like blobs (LPS centre, radius mm) off a vessel running along the image z axis.
BLOBS = [(offset((-6.0, 6.5, 1.0)), 2.6), (offset((7.0, -5.0, -2.0)), 2.0)]


def synthetic_scan(geometry: Geometry = GEOMETRY, shape: Sequence[int] = SHAPE,
                   blobs: Sequence[tuple[np.ndarray, float]] = BLOBS, seed: int = 0) -> Image:
    """A slab of a head (tissue 100, a cylinder cut by the slab's faces) in air (5), a 0.9 mm vessel
    deep inside it along the slab axis, bright blobs (320), noise."""
    rng = np.random.default_rng(seed)
    idx = np.indices(shape).reshape(3, -1)[::-1].T.astype(float)
    lps = geometry.index_to_lps(idx)
    rel = lps - centre_lps(geometry, shape)
    extent = np.asarray(shape[::-1]) * np.asarray(geometry.spacing)
    axis = geometry.direction_matrix[:, 2]
    across = np.linalg.norm(rel - np.outer(rel @ axis, axis), axis=1)
    img = np.where(across <= 0.46 * extent[:2].min(), 100.0, 5.0)
    img[across <= 0.9] = 300.0
    for centre, radius in blobs:
        img[np.linalg.norm(lps - np.asarray(centre), axis=1) <= radius] = 320.0
    img = img.reshape(shape) + rng.normal(0.0, 6.0, shape)
    return Image(img.astype(np.float32), geometry, "synthetic")


@pytest.fixture(scope="module")
def scan() -> Image:
    return synthetic_scan()


def blob_truth(index: int, geometry: Geometry = GEOMETRY, shape: Sequence[int] = SHAPE) -> np.ndarray:
    idx = np.indices(shape).reshape(3, -1)[::-1].T.astype(float)
    centre, radius = BLOBS[index]
    return (np.linalg.norm(geometry.index_to_lps(idx) - centre, axis=1) <= radius).reshape(shape)


# ------------------------------------------------------------------------------------------ tests


def test_detects_and_segments_blobs_in_oblique_geometry(scan: Image, blob_models) -> None:
    calls: list[tuple[float, str]] = []
    result = pipeline.segment(scan, blob_models, progress=lambda f, m: calls.append((f, m)))
    assert result is not None
    assert result.labels.shape == scan.array.shape and result.geometry == scan.geometry
    assert len(result.seeds) == 2 and all(s.source == "detector" for s in result.seeds)
    assert [a.id for a in result.aneurysms] == [1, 2]
    assert set(np.unique(result.labels)) == {0, 1, 2}
    # label 1 is the larger blob; each label overlaps its blob (Dice) and sits at its centre (mm)
    for label, (centre, radius) in zip((1, 2), BLOBS):
        a = result.aneurysms[label - 1]
        truth = blob_truth(label - 1)
        mask = result.labels == label
        assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.85
        assert np.linalg.norm(np.subtract(a.centroid_lps, centre)) < 0.3
        assert np.linalg.norm(np.subtract(a.seed.position_lps, centre)) < 1.0
        assert a.volume_mm3 == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.2)
        assert a.max_diameter_mm == pytest.approx(2 * radius, rel=0.15)
        assert 0.5 < a.confidence <= 1.0
    # progress: monotonic, reaches 1.0, names the stages
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert {"preprocessing", "detection", "fine segmentation"} <= {m for _, m in calls}
    assert {"preprocess", "detect", "fine", "paste", "measure", "total"} <= set(result.timings)


def test_given_seeds_replace_or_join_detection(scan: Image, blob_models) -> None:
    user = Seed(tuple(BLOBS[1][0] + 0.8), 1.0, "user", "U1")
    only = pipeline.segment(scan, blob_models, seeds=[user], detect=False)
    assert only is not None and only.seeds == [user]  # exactly the given VOI, no detector
    assert "detect" not in only.timings
    assert len(only.aneurysms) == 1 and only.aneurysms[0].seed == user
    assert np.linalg.norm(np.subtract(only.aneurysms[0].centroid_lps, BLOBS[1][0])) < 0.3
    assert not (only.labels[blob_truth(0)] > 0).any()

    empty_spot = Seed(tuple(offset((0.0, -8.0, 6.0))), 1.0, "user", "U2")  # tissue, no blob
    both = pipeline.segment(scan, blob_models, seeds=[user, empty_spot], detect=True)
    assert both is not None
    assert both.seeds[:2] == [user, empty_spot] and len(both.seeds) == 4  # union: 2 given + 2 detected
    assert [s.source for s in both.seeds[2:]] == ["detector", "detector"]
    assert len(both.aneurysms) == 2  # the user seed and a detector seed found the same blob: one aneurysm
    assert both.aneurysms[1].seed == user  # confidence 1.0 beats the detector's on that blob

    nothing = pipeline.segment(scan, blob_models, seeds=[], detect=False)
    assert nothing is not None and nothing.aneurysms == [] and not nothing.labels.any()


def test_refine_reuses_preprocessing(scan: Image, blob_models) -> None:
    pre = pipeline.prepare(scan, blob_models)
    seed = Seed(tuple(BLOBS[0][0]), 0.9, "user")
    again = pipeline.segment(scan, blob_models, seeds=[seed], detect=False, preprocessed=pre)
    fresh = pipeline.segment(scan, blob_models, seeds=[seed], detect=False)
    assert again is not None and fresh is not None
    assert "preprocess" not in again.timings and "preprocess" in fresh.timings
    np.testing.assert_array_equal(again.labels, fresh.labels)
    assert again.labels.any()


def test_same_input_twice_gives_identical_output_with_real_architectures(scan: Image, tiny_real_models) -> None:
    seed = Seed(tuple(BLOBS[0][0]), 1.0, "user")
    calls: list[float] = []
    first = pipeline.segment(scan, tiny_real_models, seeds=[seed], progress=lambda f, m: calls.append(f))
    second = pipeline.segment(synthetic_scan(), tiny_real_models, seeds=[seed])
    assert first is not None and second is not None
    np.testing.assert_array_equal(first.labels, second.labels)
    assert [s.position_lps for s in first.seeds] == [s.position_lps for s in second.seeds]
    assert [a.volume_mm3 for a in first.aneurysms] == [a.volume_mm3 for a in second.aneurysms]
    assert calls == sorted(calls) and calls[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("stop_after", [0, 2, 6])
def test_cancel_returns_none(scan: Image, blob_models, tmp_path: Path, monkeypatch, stop_after: int) -> None:
    """Cancelling before the start, during detection or later returns None and leaves no files."""
    monkeypatch.chdir(tmp_path)
    asked = []

    def cancel() -> bool:
        asked.append(1)
        return len(asked) > stop_after

    assert pipeline.segment(scan, blob_models, cancel=cancel) is None
    assert len(asked) == stop_after + 1  # it stopped at the first "yes"
    assert list(tmp_path.iterdir()) == []


def test_sparse_head_matches_the_dense_forward(scan: Image, tiny_real_models) -> None:
    """DeepMedic's head on ROI voxels only gives the full forward's probabilities there."""
    from AneurysmSegLib.stages import detect

    pre = pipeline.prepare(scan, tiny_real_models)
    roi = detect.coarse_roi(pre, margin_mm=detect.ROI_MARGIN_MM)
    assert detect.SparseHead.create(tiny_real_models.coarse, 48, torch.device("cpu")) is not None
    kwargs = dict(segment_out=27, context=48, pad_value=-3.0, device=torch.device("cpu"), batch_size=3)
    sparse, tiles = detect.run_detector(tiny_real_models.coarse, pre.coarse.array, roi, **kwargs)
    dense, _ = detect.run_detector(tiny_real_models.coarse, pre.coarse.array, roi, sparse_head=False, **kwargs)
    assert tiles == len(detect.tile_origins(roi, 27)) > 1
    assert roi.any() and not sparse[~roi].any()
    np.testing.assert_allclose(sparse, dense, atol=1e-5)
    assert detect.SparseHead.create(torch.jit.script(BlobDetector()), 48, torch.device("cpu")) is None


@pytest.mark.parametrize("segment_out, pad_value", [(None, -3.0), (None, None), (12, -3.0)])
def test_layered_sparse_detector_matches_the_whole_network(segment_out, pad_value) -> None:
    """The pathways layer by layer on oneDNN (channels-last), the subsampled pathway once over the
    region's box, the head on region voxels: the whole TorchScript DeepMedic's probabilities, on
    boxes and on a lattice, at a scan's faces too (a region touching them), with the paper's uneven
    widths (residuals that pad channels)."""
    from AneurysmSegLib.stages import detect

    torch.manual_seed(7)
    model = torch.jit.script(DeepMedic(widths=(3, 3, 4, 4, 4, 4, 5, 5), fc_widths=(6, 6)).eval())
    head = detect.SparseHead.create(model, 48, torch.device("cpu"))
    assert head is not None and head.layered
    assert not detect.SparseHead.create(model, 48, torch.device("cpu"), precision="bfloat16").layered
    rng = np.random.default_rng(0)
    volume = rng.normal(0.0, 1.0, (20, 31, 26)).astype(np.float32)
    roi = np.zeros(volume.shape, dtype=bool)
    roi[2:5, 3:28, 10:12] = True  # a vessel-like run across the volume
    roi[15:20, 20:24, 22:26] = True  # a block at the far faces
    roi[0, 0, 0] = True
    run = dict(segment_out=segment_out, context=48, pad_value=pad_value, device=torch.device("cpu"))
    sparse, tiles = detect.run_detector(model, volume, roi, **run)
    whole, tiles_whole = detect.run_detector(model, volume, roi, sparse_head=False, **run)
    assert tiles == tiles_whole > 1
    assert not sparse[~roi].any() and (sparse[roi] > 0).all()
    np.testing.assert_allclose(sparse, whole, atol=1e-5)


def test_bfloat16_precision_gives_nearly_the_same_masks(scan: Image, blob_models) -> None:
    exact = pipeline.segment(scan, blob_models)
    fast = pipeline.segment(scan, blob_models, precision="bfloat16")
    assert exact is not None and fast is not None
    assert len(fast.aneurysms) == len(exact.aneurysms) == 2
    a, b = exact.labels > 0, fast.labels > 0
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.95
    with pytest.raises(ValueError, match="precision"):
        pipeline.segment(scan, blob_models, precision="float16")


def test_detection_threshold_defaults_to_the_manifests(scan: Image, tmp_path: Path) -> None:
    """Front ends pass no threshold: the one chosen at export (manifest) applies; an explicit one wins."""
    detector_level, fine_level = model_levels()
    # a soft detector whatever the z-scale: about 0.5 per z unit at the blob contrast of a full head
    soft = 2.5 / ((fine_level - detector_level) / 0.05)
    soft_dir = export_models(tmp_path / "soft", BlobDetector(level=detector_level, gain=soft),
                             BrightFine(level=fine_level))
    default = models_mod.load_models(soft_dir, device="cpu")
    assert default.detection_threshold == 0.5  # no threshold in the manifest
    loose = pipeline.segment(scan, default)
    assert loose is not None and len(loose.aneurysms) == 2
    peak = max(s.confidence for s in loose.seeds)
    assert peak < 0.99

    manifest = json.loads((soft_dir / "manifest.json").read_text())
    manifest["coarse"]["probability_threshold"] = round((peak + 1.0) / 2, 4)
    (soft_dir / "manifest.json").write_text(json.dumps(manifest))
    strict = models_mod.load_models(soft_dir, device="cpu")
    assert strict.detection_threshold == pytest.approx((peak + 1.0) / 2, abs=1e-4)
    by_manifest = pipeline.segment(scan, strict)
    assert by_manifest is not None and by_manifest.seeds == [] and not by_manifest.labels.any()
    explicit = pipeline.segment(scan, strict, detection_threshold=0.5)
    assert explicit is not None and np.array_equal(explicit.labels, loose.labels)
    with pytest.raises(InputError):
        pipeline.segment(scan, strict, detection_threshold=float("nan"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_freed_memory_goes_back_to_the_system_between_stages() -> None:
    from AneurysmSegLib.core.memory import release_freed_memory

    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    blocks = [np.ones(8192) for _ in range(3000)]  # 64 kB each, from the heap, 190 MB
    keep = blocks.pop()  # pins the heap's top, so free() alone cannot shrink it
    del blocks
    before = rss_mb()
    assert release_freed_memory()
    assert before - rss_mb() > 100 and keep.sum() == 8192


def test_box_cover_covers_the_region_with_disjoint_boxes_on_the_block_grid() -> None:
    from AneurysmSegLib.stages import detect

    rng = np.random.default_rng(3)
    roi = np.zeros((40, 70, 60), dtype=bool)
    for _ in range(6):  # vessel-like random walks
        p = rng.integers(0, roi.shape)
        for _ in range(60):
            p = np.clip(p + rng.integers(-1, 2, 3), 0, np.asarray(roi.shape) - 1)
            roi[tuple(p)] = True
    boxes = detect.cover_boxes(roi, block=6, max_size=24)
    covered = np.zeros((42, 72, 60), dtype=np.int32)
    for origin, size in boxes:
        assert all(o % 6 == 0 and 0 < d <= 24 and d % 6 == 0 for o, d in zip(origin, size))
        covered[tuple(slice(o, o + d) for o, d in zip(origin, size))] += 1
    assert covered.max() == 1 and covered[:40, :70, :60][roi].all()
    assert detect.box_cost((6, 12, 18)) == sum(float((6 + 16 - 2 * k) * (12 + 16 - 2 * k) * (18 + 16 - 2 * k))
                                              + float((2 + 16 - 2 * k) * (4 + 16 - 2 * k) * (6 + 16 - 2 * k))
                                              for k in range(1, 9)) + detect.TILE_OVERHEAD


def test_seed_candidates_have_ndimages_statistics_to_the_last_bit() -> None:
    """Sizes, peaks and weighted centres from the components' voxels alone are those of ndimage's
    per-label functions over the whole grid."""
    from scipy import ndimage
    from AneurysmSegLib.stages import detect

    rng = np.random.default_rng(5)
    prob = ndimage.gaussian_filter(rng.random((30, 40, 50)), 1.5).astype(np.float32)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    geometry = Geometry(spacing=(0.7, 0.7, 0.7), origin=(0.0, 0.0, 0.0), direction=np.eye(3).ravel())
    labels, candidates = detect.seed_candidates(prob, geometry, threshold=0.6, min_component_mm3=0.0,
                                                merge_distance_mm=0.0, max_seeds=1000)
    index = np.arange(1, labels.max() + 1)
    assert len(index) > 3 and len(candidates) == len(index)
    sizes = ndimage.sum_labels(prob >= 0.6, labels, index) * 0.7 ** 3
    peaks = ndimage.maximum(prob, labels, index)
    centres = ndimage.center_of_mass(prob, labels, index)
    for c in candidates:
        i = c.component - 1
        assert c.size_mm3 == float(sizes[i]) and c.peak == float(peaks[i])
        assert c.position_lps == tuple(float(v) for v in geometry.index_to_lps(np.asarray(centres[i])[::-1]))
