"""The MRML glue: Slicer volume nodes in, segmentation / seeds / table nodes out.

This is the only module of AneurysmSegLib that imports ``slicer``. It uses MRML classes and module
logics only (no Qt, no ``slicer.app``), so it behaves the same inside the Slicer application and under
PyPI's slicer-core, where the tests run it. The pipeline works in LPS (ITK, files); MRML works in RAS:
every conversion between the two happens here, from the volume's IJK-to-RAS matrix.

Scene changes happen only in :func:`updateResultNodes`, after the pipeline has returned a result, so
a cancelled or failed run leaves the scene exactly as it was. The pipeline runs either in this
process (:func:`runPipeline`, scripts and tests) or as the ``aneurysmseg segment`` command in a child
process (:class:`BackgroundSegmentation`, the module's widget, which must stay responsive).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..core.errors import InputError, OutputError
from ..core.geometry import LPS_TO_RAS, Geometry, Image, check_coordinate_system, ras_to_lps
from ..core.result import Aneurysm, Seed, SegmentationResult
from ..core.terminology import aneurysm_terminology, location_of, segment_color, segment_name

#: Node reference roles kept on the input volume, so that re-running finds and updates its results.
SEGMENTATION_REFERENCE_ROLE = "AneurysmSeg.segmentation"
SEEDS_REFERENCE_ROLE = "AneurysmSeg.seeds"
TABLE_REFERENCE_ROLE = "AneurysmSeg.table"

#: Columns of the results table: (name, vtk array class, unit label, description).
TABLE_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("ID", "vtkIntArray", "", "aneurysm number; the label value in the output label image"),
    ("Name", "vtkStringArray", "", "segment name"),
    ("Volume", "vtkDoubleArray", "mm3", "aneurysm volume"),
    ("Max diameter", "vtkDoubleArray", "mm", "largest distance between two points of the aneurysm"),
    ("Centroid R", "vtkDoubleArray", "mm", "centre of mass, RAS"),
    ("Centroid A", "vtkDoubleArray", "mm", "centre of mass, RAS"),
    ("Centroid S", "vtkDoubleArray", "mm", "centre of mass, RAS"),
    ("Confidence", "vtkDoubleArray", "", "detector confidence of the seed (1 for a seed placed by hand)"),
)

_DESCRIPTION_FIELDS = re.compile(r"(confidence|source)\s*=\s*([^;,\s]+)")


# ------------------------------------------------------------------------------ volume <-> Image


def _ijkToRasArray(volumeNode) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def geometryFromVolumeNode(volumeNode) -> Geometry:
    """The volume's own voxel-to-physical mapping (IJK-to-RAS, oblique included) as LPS Geometry.

    Parent transforms are not applied: results are put under the same transform as the volume.
    """
    ijkToRas = _ijkToRasArray(volumeNode)
    axesLps = LPS_TO_RAS @ ijkToRas[:3, :3]  # RAS <-> LPS flip is its own inverse
    spacing = np.linalg.norm(axesLps, axis=0)
    direction = axesLps / spacing[None, :]
    origin = LPS_TO_RAS @ ijkToRas[:3, 3]
    return Geometry(spacing=tuple(spacing), origin=tuple(origin), direction=tuple(direction.ravel()))


def imageFromVolumeNode(volumeNode) -> Image:
    """A scalar volume node as the pipeline's :class:`Image` (float32 ``[z, y, x]``, LPS geometry)."""
    if volumeNode is None or volumeNode.GetImageData() is None:
        raise InputError("select a loaded scalar volume (the TOF-MRA) as input")
    imageData = volumeNode.GetImageData()
    if imageData.GetNumberOfScalarComponents() != 1:
        raise InputError(f"{volumeNode.GetName()} has {imageData.GetNumberOfScalarComponents()} "
                         "components per voxel; a TOF-MRA is a single-component (grey-scale) volume")
    dims = imageData.GetDimensions()
    if min(dims) < 2:
        raise InputError(f"{volumeNode.GetName()} is not a 3D volume (size {dims[0]} x {dims[1]} x {dims[2]})")
    scalars = numpy_support.vtk_to_numpy(imageData.GetPointData().GetScalars())
    array = scalars.reshape(dims[2], dims[1], dims[0]).astype(np.float32, copy=True)
    return Image(array=array, geometry=geometryFromVolumeNode(volumeNode), source=volumeNode.GetName())


# ----------------------------------------------------------------------------------------- seeds


def seedsFromMarkupsNode(markupsNode) -> list[Seed]:
    """Control points of a markups node (RAS, node coordinates) as LPS seeds, in point order.

    Points not placed yet are skipped. Confidence and source come from the description that
    :func:`updateSeedsNode` writes (``confidence=0.93; source=detector``); a point the user added has
    none and counts as a user seed of confidence 1.
    """
    seeds: list[Seed] = []
    if markupsNode is None:
        return seeds
    for i in range(markupsNode.GetNumberOfControlPoints()):
        if markupsNode.GetNthControlPointPositionStatus(i) != markupsNode.PositionDefined:
            continue
        ras = [0.0, 0.0, 0.0]
        markupsNode.GetNthControlPointPosition(i, ras)
        fields = dict(_DESCRIPTION_FIELDS.findall(markupsNode.GetNthControlPointDescription(i) or ""))
        try:
            confidence = float(fields.get("confidence", 1.0))
        except ValueError:
            confidence = 1.0
        seeds.append(Seed(position_lps=tuple(float(v) for v in ras_to_lps(ras)), confidence=confidence,
                          source=fields.get("source", "user"), label=markupsNode.GetNthControlPointLabel(i)))
    return seeds


def updateSeedsNode(seedsNode, seeds: Sequence[Seed]) -> None:
    """Replace the control points of ``seedsNode`` with ``seeds`` (labels S1..N, RAS positions)."""
    wasModifying = seedsNode.StartModify()
    try:
        seedsNode.RemoveAllControlPoints()
        for i, seed in enumerate(seeds, start=1):
            index = seedsNode.AddControlPoint(vtk.vtkVector3d(*seed.position_ras), seed.label or f"S{i}")
            seedsNode.SetNthControlPointDescription(index, f"confidence={seed.confidence:.4f}; source={seed.source}")
    finally:
        seedsNode.EndModify(wasModifying)


# ---------------------------------------------------------------------------------- result nodes


def _referencedOrNew(scene, volumeNode, node, role: str, className: str, name: str):
    if node is None:
        node = volumeNode.GetNodeReference(role)
    if node is None or node.GetScene() is not scene:
        node = scene.AddNewNodeByClass(className, name)
    volumeNode.SetNodeReferenceID(role, node.GetID())
    return node


def resultNodesOf(volumeNode) -> tuple:
    """(segmentation, seeds, table) nodes earlier runs made for ``volumeNode`` (None where absent)."""
    return tuple(volumeNode.GetNodeReference(role) if volumeNode else None
                 for role in (SEGMENTATION_REFERENCE_ROLE, SEEDS_REFERENCE_ROLE, TABLE_REFERENCE_ROLE))


def updateResultNodes(volumeNode, result: SegmentationResult, segmentationNode=None, seedsNode=None, tableNode=None):
    """Show ``result`` in the scene: one segment per aneurysm, the seeds, a measurements table.

    Nodes given (or referenced from the volume by an earlier run) are updated in place; missing ones
    are created. Returns ``(segmentationNode, seedsNode, tableNode)``.
    """
    scene = volumeNode.GetScene()
    if scene is None:
        raise InputError("the input volume is not in a scene")
    dims = volumeNode.GetImageData().GetDimensions()
    if tuple(result.labels.shape) != (dims[2], dims[1], dims[0]):
        raise InputError(f"result size {result.labels.shape[::-1]} does not match {volumeNode.GetName()} {dims}")
    baseName = volumeNode.GetName()
    segmentationNode = _referencedOrNew(scene, volumeNode, segmentationNode, SEGMENTATION_REFERENCE_ROLE,
                                        "vtkMRMLSegmentationNode", f"{baseName} aneurysms")
    seedsNode = _referencedOrNew(scene, volumeNode, seedsNode, SEEDS_REFERENCE_ROLE,
                                 "vtkMRMLMarkupsFiducialNode", f"{baseName} aneurysm seeds")
    tableNode = _referencedOrNew(scene, volumeNode, tableNode, TABLE_REFERENCE_ROLE,
                                 "vtkMRMLTableNode", f"{baseName} aneurysm measurements")
    # results live in the volume's coordinate frame: follow its parent transform, if any
    transformId = volumeNode.GetTransformNodeID()
    for node in (segmentationNode, seedsNode):
        node.SetAndObserveTransformNodeID(transformId)

    updateSegmentationNode(segmentationNode, volumeNode, result)
    updateSeedsNode(seedsNode, result.seeds)
    _showSeeds(seedsNode)
    updateTableNode(tableNode, result.aneurysms)
    return segmentationNode, seedsNode, tableNode


def segmentName(aneurysm: Aneurysm) -> str:
    return segment_name(aneurysm)


def updateSegmentationNode(segmentationNode, volumeNode, result: SegmentationResult) -> None:
    """Replace the segments with one per aneurysm (binary labelmap in the volume's geometry)."""
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    segmentation = segmentationNode.GetSegmentation()
    ijkToRas = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRas)
    wasModifying = segmentationNode.StartModify()
    try:
        segmentation.RemoveAllSegments()
        labels = np.asarray(result.labels)
        for index, aneurysm in enumerate(result.aneurysms):
            segmentId = f"Aneurysm_{aneurysm.id}"
            segmentation.AddEmptySegment(segmentId, segmentName(aneurysm), segment_color(index))
            segment = segmentation.GetSegment(segmentId)
            segment.SetTerminology(aneurysm_terminology(*location_of(aneurysm)).slicer_entry())
            segment.SetTag("AneurysmSeg.confidence", f"{aneurysm.confidence:.4f}")
            segment.SetTag("AneurysmSeg.seed", aneurysm.seed.label)
            mask = labels == aneurysm.id
            if not mask.any():
                continue
            labelmap = _orientedLabelmap(mask, ijkToRas)
            slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                labelmap, segmentationNode, segmentId,
                slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE, labelmap.GetExtent())
    finally:
        segmentationNode.EndModify(wasModifying)
    segmentationNode.CreateDefaultDisplayNodes()
    display = segmentationNode.GetDisplayNode()
    display.SetVisibility(True)
    display.SetVisibility2D(True)
    display.SetVisibility3D(True)
    display.SetPreferredDisplayRepresentationName3D("Closed surface")
    segmentationNode.CreateClosedSurfaceRepresentation()


def _orientedLabelmap(mask: np.ndarray, ijkToRas) -> "slicer.vtkOrientedImageData":
    """A binary ``[z, y, x]`` mask cropped to its bounding box as vtkOrientedImageData (extent keeps
    the voxel offset, the matrix keeps spacing, origin and the oblique direction)."""
    nonzero = np.nonzero(mask)
    lo = [int(a.min()) for a in nonzero]
    hi = [int(a.max()) for a in nonzero]
    crop = np.ascontiguousarray(mask[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1].astype(np.uint8))
    image = slicer.vtkOrientedImageData()
    image.SetExtent(lo[2], hi[2], lo[1], hi[1], lo[0], hi[0])
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = crop.ravel()
    image.SetImageToWorldMatrix(ijkToRas)
    return image


def _showSeeds(seedsNode) -> None:
    seedsNode.CreateDefaultDisplayNodes()
    display = seedsNode.GetDisplayNode()
    if display is not None:
        display.SetSelectedColor(1.0, 0.85, 0.1)
        display.SetGlyphScale(2.5)
    seedsNode.SetMarkupLabelFormat("S%d")


def updateTableNode(tableNode, aneurysms: Sequence[Aneurysm]) -> None:
    """Rewrite the measurements table: one row per aneurysm, units and descriptions on the columns."""
    table = tableNode.GetTable()
    wasModifying = tableNode.StartModify()
    try:
        tableNode.RemoveAllColumns()
        columns = []
        for name, arrayClass, unit, description in TABLE_COLUMNS:
            column = getattr(vtk, arrayClass)()
            column.SetName(name)
            column.SetNumberOfValues(len(aneurysms))
            table.AddColumn(column)
            columns.append(column)
            tableNode.SetColumnUnitLabel(name, unit)
            tableNode.SetColumnDescription(name, description)
        for row, aneurysm in enumerate(aneurysms):
            centroid = aneurysm.centroid_ras
            values = (int(aneurysm.id), segmentName(aneurysm), float(aneurysm.volume_mm3), float(aneurysm.max_diameter_mm),
                      centroid[0], centroid[1], centroid[2], float(aneurysm.confidence))
            for column, value in zip(columns, values):
                column.SetValue(row, value)
        tableNode.SetUseColumnTitleAsColumnHeader(True)
        tableNode.SetLocked(True)
    finally:
        tableNode.EndModify(wasModifying)
    table.Modified()


# ------------------------------------------------------------------------------------------- STL


def exportStl(segmentationNode, folder: str | Path, coordinateSystem: str = "LPS") -> list[Path]:
    """Write one closed-surface STL per segment into ``folder`` (created when missing).

    LPS (Slicer's and ITK's file convention) or RAS. Returns the written paths, in segment order.
    """
    from ..io.surfaces import check_folder_writable

    cs = check_coordinate_system(coordinateSystem, "STL coordinate system")
    if segmentationNode is None or segmentationNode.GetSegmentation().GetNumberOfSegments() == 0:
        raise InputError("nothing to export: the segmentation has no aneurysm segments")
    folder = check_folder_writable(folder)
    folder.mkdir(parents=True, exist_ok=True)
    segmentation = segmentationNode.GetSegmentation()
    ids = vtk.vtkStringArray()
    for i in range(segmentation.GetNumberOfSegments()):
        ids.InsertNextValue(segmentation.GetNthSegmentID(i))
    segmentationNode.CreateClosedSurfaceRepresentation()
    # Slicer names the files "<node>_<segment>.stl"; write them into a private staging folder first
    # so that exactly these files are known, and a failure leaves nothing half-written in `folder`.
    written: list[Path] = []
    with tempfile.TemporaryDirectory(dir=folder, prefix=".aneurysmseg-stl-") as staging:
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsClosedSurfaceRepresentationToFiles(
            staging, segmentationNode, ids, "STL", cs == "LPS", 1.0, False)
        staged = {p.name: p for p in Path(staging).glob("*.stl")}
        if not ok or len(staged) != ids.GetNumberOfValues():
            raise OutputError(f"writing STL files into {folder} failed ({len(staged)} of {ids.GetNumberOfValues()} written)")
        for i in range(ids.GetNumberOfValues()):
            suffix = f"_{segmentation.GetSegment(ids.GetValue(i)).GetName()}.stl"
            name = next((n for n in sorted(staged) if n.endswith(suffix)), None) or sorted(staged)[0]
            os.replace(staged.pop(name), folder / name)
            written.append(folder / name)
    return written
