"""The MRML glue: Slicer volume nodes in, Image and seeds out; shared helpers for the result nodes.

This is where AneurysmSegLib meets MRML. It uses MRML classes and module logics only (no Qt, no
``slicer.app``), so it behaves the same inside the Slicer application and under PyPI's slicer-core,
where the tests run it. The pipeline works in LPS (ITK, files); MRML works in RAS: every conversion
between the two happens here, from the volume's IJK-to-RAS matrix. The findings themselves (segments,
seeds, table, review) are written by :mod:`.findings`; every Slicer method called is one that exists
in Slicer 5.8 (Testing/slicer_api.py lists them, checked against Slicer's sources).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..core.errors import InputError, OutputError
from ..core.geometry import LPS_TO_RAS, Geometry, Image, check_coordinate_system, ras_to_lps
from ..core.result import Seed, SegmentationResult
from ..core.terminology import TERMINOLOGY_FILE, aneurysm_terminology

#: Node reference roles kept on the input volume, so that re-running finds and updates its results.
SEGMENTATION_REFERENCE_ROLE = "AneurysmSeg.segmentation"
SEEDS_REFERENCE_ROLE = "AneurysmSeg.seeds"
TABLE_REFERENCE_ROLE = "AneurysmSeg.table"

SEED_LABEL_FORMAT = "S%d"
#: Seeds node attribute: the highest seed number given so far.
SEED_NUMBER_ATTRIBUTE = "AneurysmSeg.lastSeedNumber"
SEED_NUMBER = re.compile(r"^S(\d+)$")
_DESCRIPTION_FIELDS = re.compile(r"(confidence|source|status)\s*=\s*([^;,\s]+)")


def loadTerminology(terminologiesLogic, path: str | Path = TERMINOLOGY_FILE) -> str:
    """Load the module's .term.json into Slicer's terminologies logic (as SlicerTotalSegmentator loads
    its own), so that the terminology selector knows the segments' type; returns its context name."""
    name = terminologiesLogic.LoadTerminologyFromFile(str(path))
    expected = aneurysm_terminology(path=Path(path)).context if name else ""
    if not name or name != expected:
        raise InputError(f"{path} is not the module's terminology file (Slicer read {name!r})")
    return name


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


@dataclass
class SeedPoint:
    """One defined control point of a seeds node, with what its description says."""

    id: str  # the control point ID: unique in the node, saved with the scene
    label: str
    ras: tuple[float, float, float]
    confidence: float
    source: str  # "detector" or "user"
    status: str  # "" (to review) or "accepted"

    def seed(self) -> Seed:
        """As a pipeline seed; the label carries the control point ID through the pipeline and back."""
        return Seed(position_lps=tuple(float(v) for v in ras_to_lps(self.ras)), confidence=self.confidence,
                    source=self.source, label=self.id)


def seedPoints(markupsNode) -> list[SeedPoint]:
    """Defined control points in order (a point still being placed is skipped).

    Confidence, source and status come from the description :func:`describeSeed` writes; a point
    the user added has none and counts as a user seed of confidence 1."""
    points: list[SeedPoint] = []
    if markupsNode is None:
        return points
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
        points.append(SeedPoint(id=markupsNode.GetNthControlPointID(i), label=markupsNode.GetNthControlPointLabel(i),
                                ras=(float(ras[0]), float(ras[1]), float(ras[2])), confidence=confidence,
                                source=fields.get("source", "user"), status=fields.get("status", "")))
    return points


def seedsFromMarkupsNode(markupsNode) -> list[Seed]:
    """Control points of a markups node (RAS, node coordinates) as LPS seeds with their labels."""
    return [Seed(position_lps=p.seed().position_lps, confidence=p.confidence, source=p.source, label=p.label)
            for p in seedPoints(markupsNode)]


def describeSeed(markupsNode, index: int, confidence: float, source: str, status: str = "") -> None:
    markupsNode.SetNthControlPointDescription(index, f"confidence={confidence:.4f}; source={source}; status={status}")


def seedNumbering(seedsNode) -> None:
    """Every point labelled S<n>, no label twice, and the next point the user places continuing
    after the highest number (Slicer labels a placed point from the node's format and counter)."""
    seedsNode.SetControlPointLabelFormat(SEED_LABEL_FORMAT)
    used: set[int] = set()
    relabel = []
    for i in range(seedsNode.GetNumberOfControlPoints()):
        match = SEED_NUMBER.match(seedsNode.GetNthControlPointLabel(i) or "")
        if match and int(match.group(1)) not in used:
            used.add(int(match.group(1)))
        else:
            relabel.append(i)
    try:  # numbers of deleted or rejected seeds are not given again (Slicer reuses the last one's)
        top = max(max(used, default=0), int(seedsNode.GetAttribute(SEED_NUMBER_ATTRIBUTE) or 0))
    except ValueError:
        top = max(used, default=0)
    for i in relabel:
        top += 1
        seedsNode.SetNthControlPointLabel(i, f"S{top}")
    seedsNode.SetAttribute(SEED_NUMBER_ATTRIBUTE, str(top))
    if seedsNode.GetLastUsedControlPointNumber() < top:
        seedsNode.SetLastUsedControlPointNumber(top)


def showSeeds(seedsNode) -> None:
    """Seeds drawn in yellow, a little larger than Slicer's default points, labelled S1, S2, ..."""
    seedsNode.CreateDefaultDisplayNodes()
    display = seedsNode.GetDisplayNode()
    if display is not None:
        display.SetSelectedColor(1.0, 0.85, 0.1)
        display.SetGlyphScale(2.5)
    seedNumbering(seedsNode)


# ---------------------------------------------------------------------------------- result nodes


def referencedOrNew(volumeNode, role: str, className: str, name: str):
    """The node ``volumeNode`` references under ``role``, created (and referenced) when missing."""
    node = volumeNode.GetNodeReference(role)
    if node is None:
        node = volumeNode.GetScene().AddNewNodeByClass(className, name)
        volumeNode.SetNodeReferenceID(role, node.GetID())
    return node


def resultNodesOf(volumeNode) -> tuple:
    """(segmentation, seeds, table) nodes of ``volumeNode``'s findings (None where absent)."""
    return tuple(volumeNode.GetNodeReference(role) if volumeNode else None
                 for role in (SEGMENTATION_REFERENCE_ROLE, SEEDS_REFERENCE_ROLE, TABLE_REFERENCE_ROLE))


def updateResultNodes(volumeNode, result: SegmentationResult):
    """Show a full run's ``result`` in the scene (see :func:`.findings.applySegmentation`); returns
    ``(segmentationNode, seedsNode, tableNode)``."""
    from . import findings

    return findings.applySegmentation(volumeNode, result)


def orientedLabelmap(mask: np.ndarray, ijkToRas) -> "slicer.vtkOrientedImageData":
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
