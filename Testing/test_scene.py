"""AneurysmSegLib.slicer.scene in a real MRML scene (slicer-core): geometry, result nodes, seeds, STL, .mrb.

Volumes are real files loaded through Slicer's volumes logic; results are put in the scene, read back
through MRML (segment labelmaps, markups, tables, STL files, a saved and reloaded scene bundle) and
compared with the ground truth in RAS.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk
from AneurysmSegLib.core.errors import InputError, OutputError
from AneurysmSegLib.core.geometry import Geometry, Image, lps_to_ras
from AneurysmSegLib.core.result import Seed, SegmentationResult
from AneurysmSegLib.core.terminology import aneurysm_terminology
from AneurysmSegLib.io.images import to_sitk
from AneurysmSegLib.slicer import findings, runners, scene
from AneurysmSegLib.stages.measure import measure_labels
from slicer_scene import createSlicerScene
from vtk.util import numpy_support

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "AneurysmSeg" / "Resources" / "Sample"


@pytest.fixture
def app():
    handles = createSlicerScene()
    yield handles
    handles.close()


def rotation(axis, angleDeg) -> np.ndarray:
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = np.deg2rad(angleDeg)
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx


OBLIQUE = Geometry(spacing=(0.4, 0.45, 0.5), origin=(-31.5, 12.25, -20.0),
                   direction=tuple(rotation((1, 2, 3), 25).ravel()))


def makeCase(geometry: Geometry = OBLIQUE, shape=(40, 48, 56)):
    """A small TOF-like volume: a bright tube with two spherical aneurysms (labels 1 and 2)."""
    z, y, x = np.indices(shape, dtype=float)
    points = geometry.index_to_lps(np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)).reshape(*shape, 3)
    centre = geometry.index_to_lps(np.array(shape[::-1], float) / 2 - 0.5)
    centres = [centre + np.array([3.0, -2.0, 1.0]), centre + np.array([-5.0, 3.0, -2.0])]
    labels = np.zeros(shape, np.uint8)
    for value, c in enumerate(centres, start=1):
        labels[np.linalg.norm(points - c, axis=-1) <= 2.2] = value
    tube = np.linalg.norm((points - centre)[..., :2], axis=-1) <= 1.0
    rng = np.random.default_rng(5)
    image = (60 + 10 * rng.standard_normal(shape) + 300 * ((labels > 0) | tube)).astype(np.float32)
    return image, labels, [np.asarray(c) for c in centres]


def writeImage(path: Path, array: np.ndarray, geometry: Geometry) -> Path:
    sitk.WriteImage(to_sitk(array, geometry), str(path), True)
    return path


def resultFromLabels(labels: np.ndarray, geometry: Geometry, seedsLps) -> SegmentationResult:
    seeds = {i: Seed(position_lps=tuple(float(v) for v in p), confidence=0.9 - 0.1 * i, source="detector", label=f"S{i}")
             for i, p in enumerate(seedsLps, start=1)}
    return SegmentationResult(labels=labels, geometry=geometry, aneurysms=measure_labels(labels, geometry, seeds),
                              seeds=list(seeds.values()))


def segmentCentroidRas(segmentationNode, segmentId) -> np.ndarray:
    """Centroid of a segment's binary labelmap, read back from MRML, in RAS."""
    labelmap = slicer.vtkOrientedImageData()
    segmentationNode.GetBinaryLabelmapRepresentation(segmentId, labelmap)
    dims = labelmap.GetDimensions()
    extent = labelmap.GetExtent()
    arr = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    kji = np.argwhere(arr > 0).mean(axis=0)  # MRML extracts this segment alone, as 0/1
    ijk = kji[::-1] + np.array([extent[0], extent[2], extent[4]])
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    return np.array(matrix.MultiplyPoint([*ijk, 1.0])[:3])


def segmentIds(segmentationNode) -> list[str]:
    seg = segmentationNode.GetSegmentation()
    return [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]


# ------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_imageFromVolumeNode_keeps_oblique_geometry(app, tmp_path, suffix):
    image, _, _ = makeCase()
    path = writeImage(tmp_path / f"oblique{suffix}", image, OBLIQUE)
    node = app.loadVolume(path)
    got = scene.imageFromVolumeNode(node)
    ref = sitk.ReadImage(str(path))
    np.testing.assert_allclose(got.geometry.spacing, ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(got.geometry.origin, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(got.geometry.direction, ref.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(got.array, sitk.GetArrayFromImage(ref).astype(np.float32))
    # a voxel lands on the same RAS point through MRML and through our LPS geometry
    ijkToRas = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijkToRas)
    index = [7.0, 11.0, 5.0]
    np.testing.assert_allclose(ijkToRas.MultiplyPoint([*index, 1.0])[:3], got.geometry.index_to_ras(index), atol=1e-4)


def test_imageFromVolumeNode_rejects_empty_node(app):
    node = app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError):
        scene.imageFromVolumeNode(node)


# --------------------------------------------------------------------------------- result nodes


@pytest.fixture
def case(app, tmp_path):
    image, labels, centres = makeCase()
    node = app.loadVolume(writeImage(tmp_path / "tof.nrrd", image, OBLIQUE), "tof")
    geometry = scene.geometryFromVolumeNode(node)
    return node, labels, centres, geometry


def test_updateResultNodes_segments_match_truth_in_ras(app, case):
    node, labels, centres, geometry = case
    result = resultFromLabels(labels, geometry, centres)
    segmentation, seeds, table = scene.updateResultNodes(node, result)

    ids = segmentIds(segmentation)
    assert [segmentation.GetSegmentation().GetSegment(i).GetName() for i in ids] == ["Aneurysm 1", "Aneurysm 2"]
    for segmentId, centreLps in zip(ids, centres):
        segment = segmentation.GetSegmentation().GetSegment(segmentId)
        tag = vtk.reference("")
        assert segment.GetTag(segment.GetTerminologyEntryTagName(), tag) and str(tag) == aneurysm_terminology().slicer_entry()
        np.testing.assert_allclose(segmentCentroidRas(segmentation, segmentId), lps_to_ras(centreLps), atol=0.5)
    colors = [segmentation.GetSegmentation().GetSegment(i).GetColor() for i in ids]
    assert colors[0] != colors[1]
    display = segmentation.GetDisplayNode()
    assert display.GetVisibility2D() and display.GetVisibility3D()
    assert segmentation.GetSegmentation().ContainsRepresentation("Closed surface")
    assert segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole()) is node

    # seeds: RAS in the node, LPS again when read back
    assert seeds.GetNumberOfControlPoints() == 2
    back = scene.seedsFromMarkupsNode(seeds)
    np.testing.assert_allclose(back[0].position_lps, centres[0], atol=1e-6)
    assert back[0].source == "detector" and back[0].confidence == pytest.approx(0.8)

    # table: one row per aneurysm, RAS centroid and measurements
    assert table.GetNumberOfRows() == 2
    column = {name: table.GetColumnIndex(name) for name in ("Finding", "Volume", "Centroid R", "Centroid A", "Centroid S")}
    assert table.GetCellText(1, column["Finding"]) == "S2"
    volume = float(table.GetCellText(0, column["Volume"]))
    assert volume == pytest.approx(result.aneurysms[0].volume_mm3, rel=1e-6)
    assert volume == pytest.approx(4 / 3 * np.pi * 2.2**3, rel=0.2)
    np.testing.assert_allclose([float(table.GetCellText(0, column[c])) for c in ("Centroid R", "Centroid A", "Centroid S")], lps_to_ras(centres[0]), atol=0.3)
    assert table.GetColumnUnitLabel("Volume") == "mm3"


def test_rerunning_updates_the_same_nodes(app, case):
    node, labels, centres, geometry = case
    first = scene.updateResultNodes(node, resultFromLabels(labels, geometry, centres))
    nodeCount = app.scene.GetNumberOfNodes()
    onlySecond = np.where(labels == 2, 1, 0).astype(np.uint8)
    second = scene.updateResultNodes(node, resultFromLabels(onlySecond, geometry, centres[1:]))
    assert [n.GetID() for n in second] == [n.GetID() for n in first]
    assert app.scene.GetNumberOfNodes() == nodeCount
    assert len(segmentIds(second[0])) == 1
    np.testing.assert_allclose(segmentCentroidRas(second[0], segmentIds(second[0])[0]), lps_to_ras(centres[1]), atol=0.5)
    assert second[1].GetNumberOfControlPoints() == 1 and second[2].GetNumberOfRows() == 1
    assert scene.resultNodesOf(node)[0] is first[0]


def test_result_shape_must_match_volume(app, case):
    node, labels, centres, geometry = case
    with pytest.raises(InputError):
        scene.updateResultNodes(node, resultFromLabels(labels[:-1], geometry, centres))
    assert scene.resultNodesOf(node) == (None, None, None)


def test_seedsFromMarkupsNode_reads_user_points(app):
    markups = app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seeds")
    markups.AddControlPoint(vtk.vtkVector3d(10.0, -20.0, 30.0), "mine")
    unplaced = markups.AddControlPoint(vtk.vtkVector3d(0.0, 0.0, 0.0), "later")
    markups.UnsetNthControlPointPosition(unplaced)
    seeds = scene.seedsFromMarkupsNode(markups)
    assert len(seeds) == 1
    assert seeds[0].position_lps == pytest.approx((-10.0, 20.0, 30.0))
    assert (seeds[0].source, seeds[0].confidence, seeds[0].label) == ("user", 1.0, "mine")


# ------------------------------------------------------------------------------------------- STL


def readStl(path: Path):
    reader = vtk.vtkSTLReader()
    reader.SetFileName(str(path))
    reader.Update()
    return reader.GetOutput()


def test_exportStl_lps_and_ras(app, case, tmp_path):
    node, labels, centres, geometry = case
    result = resultFromLabels(labels, geometry, centres)
    segmentation, _, _ = scene.updateResultNodes(node, result)
    lpsFiles = scene.exportStl(segmentation, tmp_path / "lps", "LPS")
    rasFiles = scene.exportStl(segmentation, tmp_path / "ras", "RAS")
    assert [p.name for p in lpsFiles] == ["tof aneurysms_Aneurysm 1.stl", "tof aneurysms_Aneurysm 2.stl"]
    assert sorted(os.listdir(tmp_path / "lps")) == sorted(p.name for p in lpsFiles)  # no staging leftovers
    for lpsPath, rasPath, aneurysm in zip(lpsFiles, rasFiles, result.aneurysms):
        lps, ras = readStl(lpsPath), readStl(rasPath)
        b, r = lps.GetBounds(), ras.GetBounds()
        # x and y flip sign between LPS and RAS, z stays
        np.testing.assert_allclose([b[0], b[1], b[2], b[3], b[4], b[5]], [-r[1], -r[0], -r[3], -r[2], r[4], r[5]], atol=1e-3)
        centre = np.array([(b[0] + b[1]) / 2, (b[2] + b[3]) / 2, (b[4] + b[5]) / 2])
        np.testing.assert_allclose(centre, aneurysm.centroid_lps, atol=0.6)
        mass = vtk.vtkMassProperties()
        mass.SetInputData(lps)
        mass.Update()
        assert mass.GetVolume() == pytest.approx(aneurysm.volume_mm3, rel=0.2)


def test_exportStl_refuses_a_file_as_folder(app, case, tmp_path):
    node, labels, centres, geometry = case
    segmentation, _, _ = scene.updateResultNodes(node, resultFromLabels(labels, geometry, centres))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        scene.exportStl(segmentation, blocker)
    with pytest.raises(InputError):
        scene.exportStl(segmentation, tmp_path, "XYZ")


# ------------------------------------------------------------------------------------------ .mrb


def test_scene_bundle_round_trip(app, case, tmp_path):
    node, labels, centres, geometry = case
    result = resultFromLabels(labels, geometry, centres)
    scene.updateResultNodes(node, result)
    bundle = tmp_path / "aneurysms.mrb"
    app.scene.SetRootDirectory(str(tmp_path))
    assert app.scene.WriteToMRB(str(bundle))

    app.close()
    other = createSlicerScene()
    try:
        assert other.scene.ReadFromMRB(str(bundle))
        volume = other.scene.GetFirstNodeByName("tof")
        segmentation, seeds, table = scene.resultNodesOf(volume)
        assert segmentation is not None and seeds is not None and table is not None
        ids = segmentIds(segmentation)
        assert len(ids) == 2
        segment = segmentation.GetSegmentation().GetSegment(ids[0])
        tag = vtk.reference("")
        assert segment.GetTag(segment.GetTerminologyEntryTagName(), tag) and "SCT^85659009^Aneurysm" in str(tag)
        np.testing.assert_allclose(segmentCentroidRas(segmentation, ids[1]), lps_to_ras(centres[1]), atol=0.5)
        np.testing.assert_allclose(scene.seedsFromMarkupsNode(seeds)[1].position_lps, centres[1], atol=1e-4)
        assert table.GetNumberOfRows() == 2
        assert float(table.GetCellText(1, table.GetColumnIndex("Max diameter"))) == pytest.approx(result.aneurysms[1].max_diameter_mm, rel=1e-4)
    finally:
        other.close()


# ------------------------------------------------------------------ the pipeline on a volume node
#
# Real pipeline, small real TorchScript models with the networks' contracts (the trained weights are
# not needed to check the wiring): the detector fires on thick bright blobs, the fine model marks
# bright voxels, so every segment's position can be checked in millimetres.

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402


def blurKernel() -> torch.Tensor:
    r = torch.arange(-4, 5, dtype=torch.float32)
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    k = g[:, None, None] * g[None, :, None] * g[None, None, :]
    return k / k.sum()


class BlobDetector(nn.Module):
    """DeepMedic's contract ((N, 1, S+48, ...) -> (N, 2, S, ...)): fires where a 9^3 blur of the
    z-scored input exceeds ``level`` (thick bright blobs, not thin vessels)."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.register_buffer("kernel", blurKernel()[None, None])
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred = F.conv3d(x[:, :1, 20:-20, 20:-20, 20:-20], self.kernel)
        return torch.cat([torch.zeros_like(blurred), 4.0 * (blurred - self.level)], dim=1)


class BrightFine(nn.Module):
    """The SE U-Net's contract ((N, C, 64, 64, 64) -> one logit map): voxels brighter than ``level``."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4.0 * (x[:, :1] - self.level)


@pytest.fixture(scope="module")
def blobModels(tmp_path_factory):
    """The two test models, their levels set from the current preprocessing's z-scale on the test
    scan (so a change of normalisation does not silently turn these tests into no-ops)."""
    from AneurysmSegLib.core import models
    from AneurysmSegLib.preprocess import preprocess
    from scipy import ndimage

    pre = preprocess(Image(blobScan(), PIPE_GEOMETRY), coarse_spacing=0.7)
    z = pre.coarse.array
    blurred = ndimage.convolve(z, blurKernel().numpy(), mode="nearest")

    def at(image, lps) -> float:
        i = np.round(pre.coarse.geometry.lps_to_index(lps)).astype(int)
        return float(image[i[2], i[1], i[0]])

    big = min(at(blurred, BLOB_A[0]), at(blurred, BLOB_B[0]))
    small = max(at(blurred, BLOB_C[0]), at(blurred, along((0.0, 0.0, 6.0))))  # the small blob, the vessel
    assert big > small + 0.5, f"the test scan no longer separates big blobs ({big:.2f}) from small ones ({small:.2f})"
    fineLevel = 0.5 * min(at(z, c) for c, _ in (BLOB_A, BLOB_B, BLOB_C))
    assert fineLevel > 1.0, "blobs are not brighter than tissue after preprocessing"

    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    models.export_torchscript(BlobDetector((big + small) / 2), torch.randn(1, 1, 57, 57, 57), folder / "coarse.pt")
    models.export_torchscript(BrightFine(fineLevel), torch.randn(1, 2, 64, 64, 64), folder / "fine.pt")
    models.write_manifest(folder, coarse={"file": "coarse.pt", "spacing_mm": 0.7, "in_channels": 1, "segment_out": 27},
                          fine={"file": "fine.pt", "spacing_mm": 0.4, "in_channels": 2, "voi_size": 64},
                          training={"description": "test models (not trained)"}, metrics={})
    return models.load_models(folder, device="cpu")


PIPE_GEOMETRY = Geometry(spacing=(0.5, 0.45, 0.6), origin=(-20.0, 15.0, -10.0),
                         direction=tuple(rotation((1, 2, 3), 23).ravel()))
PIPE_SHAPE = (48, 96, 90)  # z, y, x: 29 x 43 x 45 mm


def along(mm) -> np.ndarray:
    """The scan centre moved by ``mm`` along the image's own axes (LPS)."""
    centre = PIPE_GEOMETRY.index_to_lps((np.asarray(PIPE_SHAPE[::-1]) - 1) / 2.0)
    return centre + PIPE_GEOMETRY.direction_matrix @ np.asarray(mm, float)


#: (LPS centre, radius): A and B are big enough for the detector; C is small: the detector misses it.
BLOB_A, BLOB_B, BLOB_C = (along((-6.0, 6.5, 1.0)), 2.6), (along((7.0, -5.0, -2.0)), 2.0), (along((0.0, -7.0, 2.0)), 1.3)


@functools.lru_cache(maxsize=1)
def blobScan() -> np.ndarray:
    """A slab of a head (a cylinder of tissue along the image z axis) in air, a thin vessel along its
    axis, three bright blobs, noise."""
    rng = np.random.default_rng(0)
    idx = np.indices(PIPE_SHAPE).reshape(3, -1)[::-1].T.astype(float)
    lps = PIPE_GEOMETRY.index_to_lps(idx)
    rel = lps - along((0, 0, 0))
    extent = np.asarray(PIPE_SHAPE[::-1]) * np.asarray(PIPE_GEOMETRY.spacing)
    axis = PIPE_GEOMETRY.direction_matrix[:, 2]
    across = np.linalg.norm(rel - np.outer(rel @ axis, axis), axis=1)
    img = np.where(across <= 0.46 * extent[:2].min(), 100.0, 5.0)
    img[across <= 0.9] = 300.0
    for centre, radius in (BLOB_A, BLOB_B, BLOB_C):
        img[np.linalg.norm(lps - centre, axis=1) <= radius] = 320.0
    return (img.reshape(PIPE_SHAPE) + rng.normal(0.0, 6.0, PIPE_SHAPE)).astype(np.float32)


@pytest.fixture
def blobVolume(app, tmp_path):
    """The blob scan loaded from a NIfTI file through Slicer's volumes logic."""
    return app.loadVolume(writeImage(tmp_path / "blobs.nii.gz", blobScan(), PIPE_GEOMETRY), "blobs")


def segmentsNear(segmentationNode) -> list[str]:
    """Which blob each segment sits on (by centroid, within 1 mm), in segment order."""
    names = []
    for segmentId in segmentIds(segmentationNode):
        centroid = segmentCentroidRas(segmentationNode, segmentId)
        near = [n for n, (c, _) in zip("ABC", (BLOB_A, BLOB_B, BLOB_C)) if np.linalg.norm(centroid - lps_to_ras(c)) < 1.0]
        names.append(near[0] if near else "?")
    return names


def controlPointNear(seedsNode, blob) -> int:
    points = [np.array(seedsNode.GetNthControlPointPositionVector(i)) for i in range(seedsNode.GetNumberOfControlPoints())]
    return int(np.argmin([np.linalg.norm(p - lps_to_ras(blob[0])) for p in points]))


def test_segment_then_move_delete_add_seeds_and_refine(app, blobVolume, blobModels):
    """The panel's workflow in this process: each refine runs the fine stage on the new or moved
    seeds only, and leaves the other segments exactly as they were."""
    cache: dict = {}
    run = runners.prepareSegment(blobVolume)
    result = runners.runInProcess(run, blobModels, cache)
    assert len(cache) == 1
    segmentation, seeds, table = runners.applyRun(run, result)
    assert sorted(segmentsNear(segmentation)) == ["A", "B"]  # C is too small for the detector
    assert seeds.GetNumberOfControlPoints() == 2 and table.GetNumberOfRows() == 2
    def nodesBesideNecks() -> int:  # each finding with a neck has a closed curve and its display node
        return app.scene.GetNumberOfNodes() - 2 * len(findings.neckCurves(segmentation))

    nodeCount = nodesBesideNecks()

    def refine(expectRun: int):
        before = {i: findings.labelmapDigest(segmentation, i) for i in segmentIds(segmentation)}
        run = runners.prepareRefine(blobVolume)
        assert len(run.seeds) == expectRun
        refined = runners.runInProcess(run, blobModels, cache)
        if expectRun:
            assert "detect" not in refined.timings and "preprocess" not in refined.timings  # fine stage only
        nodes = runners.applyRun(run, refined)
        assert [n.GetID() for n in nodes] == [segmentation.GetID(), seeds.GetID(), table.GetID()]
        assert nodesBesideNecks() == nodeCount  # updated in place, nothing piles up
        assert len(findings.neckCurves(segmentation)) <= len(segmentIds(segmentation))
        assert table.GetNumberOfRows() == len(segmentIds(segmentation))
        for segmentId in set(before) & set(segmentIds(segmentation)):
            if segmentId not in {f"AneurysmSeg_{s.label}" for s in run.seeds}:
                assert findings.labelmapDigest(segmentation, segmentId) == before[segmentId]  # untouched
        return sorted(segmentsNear(segmentation))

    # move the seed on A onto the missed blob C: only that seed runs, its segment follows it
    seeds.SetNthControlPointPosition(controlPointNear(seeds, BLOB_A), *lps_to_ras(BLOB_C[0]))
    assert refine(expectRun=1) == ["B", "C"]
    # nothing changed: nothing runs
    assert refine(expectRun=0) == ["B", "C"]
    # delete the seed on B: its segment goes, without running the networks
    seeds.RemoveNthControlPoint(controlPointNear(seeds, BLOB_B))
    assert refine(expectRun=0) == ["C"]
    # add a seed on A (as a user would, by clicking): it appears, as a user seed of confidence 1
    seeds.AddControlPoint(vtk.vtkVector3d(*lps_to_ras(BLOB_A[0] + 0.7)), "")
    assert refine(expectRun=1) == ["A", "C"]
    assert {s.source for s in scene.seedsFromMarkupsNode(seeds)} == {"detector", "user"}
    # no seeds at all: no segments
    seeds.RemoveAllControlPoints()
    assert refine(expectRun=0) == []


def test_cancelled_pipeline_leaves_the_scene_unchanged(app, blobVolume, blobModels):
    before = app.scene.GetNumberOfNodes()
    assert runners.runPipeline(blobVolume, models=blobModels, cancel=lambda: True) is None
    assert app.scene.GetNumberOfNodes() == before
    assert scene.resultNodesOf(blobVolume) == (None, None, None)


# --------------------------------------------------------------- the background process (widget)


# ------------------------------------------------------------------------------ the bundled sample


def sampleTruth(volumeNode) -> list[tuple[np.ndarray, float]]:
    """(RAS centre, radius mm) of each aneurysm in the sample's location.txt (ADAM: voxel x, y, z, r)."""
    ijkToRas = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRas)
    truth = []
    for line in (SAMPLE_DIR / "location.txt").read_text().splitlines():
        if line.strip():
            x, y, z, r = (float(v) for v in line.split(","))
            truth.append((np.array(ijkToRas.MultiplyPoint([x, y, z, 1.0])[:3]), r))
    return truth


@pytest.fixture
def sample(app):
    return app.loadVolume(SAMPLE_DIR / "orig" / "TOF.nii.gz", "TOF")


def test_sample_loads_with_the_geometry_simpleitk_reads(sample):
    image = scene.imageFromVolumeNode(sample)
    ref = sitk.ReadImage(str(SAMPLE_DIR / "orig" / "TOF.nii.gz"))
    np.testing.assert_allclose(image.geometry.spacing, ref.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.geometry.origin, ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.geometry.direction, ref.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(ref).astype(np.float32))


def test_sample_ground_truth_becomes_segments_at_the_right_place_in_ras(app, sample):
    """The sample's reference labels, put in the scene, sit where location.txt says, in RAS."""
    from AneurysmSegLib.io.images import read_image
    from scipy import ndimage

    geometry = scene.geometryFromVolumeNode(sample)
    labels, count = ndimage.label(read_image(SAMPLE_DIR / "aneurysms.nii.gz").array == 1)
    truth = sampleTruth(sample)
    assert count == len(truth) >= 1
    seeds = [lps_to_ras(c) for c, _ in truth]  # RAS -> LPS: the flip is its own inverse
    result = resultFromLabels(labels.astype(np.uint8), geometry, seeds)
    segmentation, _, table = scene.updateResultNodes(sample, result)
    for segmentId in segmentIds(segmentation):
        centroid = segmentCentroidRas(segmentation, segmentId)
        assert min(np.linalg.norm(centroid - c) for c, r in truth) < 1.5
    assert table.GetNumberOfRows() == len(truth)


BUNDLED_MANIFEST = Path(__file__).resolve().parents[1] / "AneurysmSeg" / "Resources" / "Models" / "manifest.json"


@pytest.mark.skipif(not BUNDLED_MANIFEST.is_file(), reason="the bundled weights are not in Resources/Models yet")
def test_sample_segmented_with_the_bundled_weights(app, sample, tmp_path):
    """The module's path end to end on the sample: every reference aneurysm has a segment within its
    radius (ADAM's detection rule), then STL export and a .mrb round trip keep them."""
    from AneurysmSegLib.core.models import load_models

    result = runners.runPipeline(sample, models=load_models(device="cpu"))
    segmentation, seeds, table = scene.updateResultNodes(sample, result)
    centroids = [segmentCentroidRas(segmentation, s) for s in segmentIds(segmentation)]
    for centre, radius in sampleTruth(sample):
        assert min((np.linalg.norm(c - centre) for c in centroids), default=np.inf) <= radius
    files = scene.exportStl(segmentation, tmp_path / "stl")
    assert len(files) == len(centroids) and all(readStl(f).GetNumberOfPoints() > 0 for f in files)


def test_results_follow_the_volume_parent_transform(app, case):
    """A volume under a linear transform: results are computed in its own frame and put under the
    same transform, so they overlay it in the views."""
    node, labels, centres, geometry = case
    transform = app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 25.0)
    transform.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(transform.GetID())
    assert scene.geometryFromVolumeNode(node) == geometry  # the voxel grid itself is unchanged
    segmentation, seeds, _ = scene.updateResultNodes(node, resultFromLabels(labels, geometry, centres))
    assert segmentation.GetTransformNodeID() == transform.GetID() == seeds.GetTransformNodeID()
    world = [0.0, 0.0, 0.0]
    seeds.GetNthControlPointPositionWorld(0, world)
    np.testing.assert_allclose(world, lps_to_ras(centres[0]) + [25.0, 0.0, 0.0], atol=1e-6)
