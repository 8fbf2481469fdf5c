"""Findings in the scene: one seed, one segment and one table row per aneurysm, reviewed by the user.

A finding is keyed by its seed, a control point of the volume's seeds node (its control point ID,
which MRML keeps unique and saves with the scene). Its segment carries tags that tie it to that seed
and remember what this module wrote: the seed position used, the measurements, and a digest of
the labelmap. From these, a refine knows which seeds moved or are new (only those go through the
fine stage), which segments the user changed in the Segment Editor (kept unless the user agrees to
replace them) and which seeds were deleted. Review state (accepted) is in the seed's description;
rejected findings are removed and their positions remembered on the seeds node, so that a later
detection does not propose them again.

Everything here is MRML (no Qt): it runs in Slicer and under slicer-core, where the tests run it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..core.errors import InputError
from ..core.geometry import lps_to_ras
from ..core.result import Aneurysm, SegmentationResult
from ..core.terminology import aneurysm_name, aneurysm_terminology, location_of, segment_color
from . import scene
from .scene import SeedPoint, seedNumbering, seedPoints

#: Segment tags (segment.SetTag) written by this module.
TAG_SEED_ID = "AneurysmSeg.seedID"
TAG_SEED_POSITION = "AneurysmSeg.seedPositionRAS"
TAG_FINDING = "AneurysmSeg.finding"
TAG_DIGEST = "AneurysmSeg.labelmapDigest"
#: Attribute of the seeds node: JSON list of RAS positions of rejected findings.
REJECTED_ATTRIBUTE = "AneurysmSeg.rejectedRAS"
#: A seed counts as moved when it is farther than this from where its segment was computed.
MOVED_TOLERANCE_MM = 0.01
#: A detector proposal this close to a rejected finding is not shown again.
REJECTED_RADIUS_MM = 5.0


def rejectedPositions(seedsNode) -> list[np.ndarray]:
    if seedsNode is None:
        return []
    try:
        return [np.asarray(p, float) for p in json.loads(seedsNode.GetAttribute(REJECTED_ATTRIBUTE) or "[]")]
    except ValueError:
        return []


# ------------------------------------------------------------------------------------ segments


def labelmapDigest(segmentationNode, segmentId: str) -> str:
    """Digest of a segment's binary labelmap (voxels and their place), to notice edits."""
    labelmap = slicer.vtkOrientedImageData()
    segmentationNode.GetBinaryLabelmapRepresentation(segmentId, labelmap)
    extent = labelmap.GetExtent()
    digest = hashlib.sha1()
    if labelmap.GetPointData() is not None and labelmap.GetPointData().GetScalars() is not None \
            and extent[1] >= extent[0]:
        dims = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
        mask = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims) > 0
        if mask.any():
            nz = np.nonzero(mask)
            lo = [int(a.min()) for a in nz]
            hi = [int(a.max()) for a in nz]
            crop = np.ascontiguousarray(mask[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1])
            origin = (lo[0] + extent[4], lo[1] + extent[2], lo[2] + extent[0])
            digest.update(repr((origin, crop.shape)).encode())
            digest.update(np.packbits(crop).tobytes())
    return digest.hexdigest()


def _tag(segment, name: str) -> str:
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else ""


@dataclass
class Finding:
    """A segment this module wrote, with what it remembers about it."""

    segmentId: str
    seedId: str
    seedRas: np.ndarray
    aneurysm: Aneurysm | None
    edited: bool


def findings(segmentationNode) -> list[Finding]:
    """The module's segments in segment order (segments the user added by hand are ignored)."""
    out: list[Finding] = []
    if segmentationNode is None:
        return out
    segmentation = segmentationNode.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segmentId = segmentation.GetNthSegmentID(i)
        segment = segmentation.GetSegment(segmentId)
        seedId = _tag(segment, TAG_SEED_ID)
        if not seedId:
            continue
        try:
            seedRas = np.array([float(v) for v in _tag(segment, TAG_SEED_POSITION).split()], float)
            aneurysm = Aneurysm.from_dict(json.loads(_tag(segment, TAG_FINDING)))
        except (ValueError, KeyError, TypeError):
            seedRas, aneurysm = np.full(3, np.nan), None
        edited = labelmapDigest(segmentationNode, segmentId) != _tag(segment, TAG_DIGEST)
        out.append(Finding(segmentId, seedId, seedRas, aneurysm, edited))
    return out


# ---------------------------------------------------------------------------------- refine plan


@dataclass
class RefinePlan:
    """What a refine does with each seed and segment (see :func:`planRefine`)."""

    run: list[SeedPoint] = field(default_factory=list)          # new or moved seeds: fine stage
    unchanged: list[str] = field(default_factory=list)          # seed IDs whose segments stay
    remove: list[str] = field(default_factory=list)             # segment IDs whose seed was deleted
    editedConflicts: list[Finding] = field(default_factory=list)  # edited segments a run/removal would replace

    @property
    def nothingToRun(self) -> bool:
        return not self.run


def planRefine(seedsNode, segmentationNode, replaceEdited: bool = False) -> RefinePlan:
    """Compare the seeds with the segments written for them.

    A seed without a segment, or moved since its segment was computed, is run through the fine
    stage. A segment whose seed is gone is removed. A segment the user edited is never replaced or
    removed unless ``replaceEdited``; it is listed in ``editedConflicts`` (the panel asks first).
    """
    plan = RefinePlan()
    byseed = {f.seedId: f for f in findings(segmentationNode)}
    points = seedPoints(seedsNode)
    ids = {p.id for p in points}
    for point in points:
        finding = byseed.get(point.id)
        if finding is not None and np.all(np.abs(finding.seedRas - np.asarray(point.ras)) <= MOVED_TOLERANCE_MM):
            plan.unchanged.append(point.id)
        elif finding is not None and finding.edited and not replaceEdited:
            plan.editedConflicts.append(finding)
            plan.unchanged.append(point.id)
        else:
            if finding is not None and finding.edited:
                plan.editedConflicts.append(finding)
            plan.run.append(point)
    for seedId, finding in byseed.items():
        if seedId in ids:
            continue
        if finding.edited:
            plan.editedConflicts.append(finding)
            if not replaceEdited:
                continue
        plan.remove.append(finding.segmentId)
    return plan


# ------------------------------------------------------------------------------------- applying


def seedsNodeFor(volumeNode, create: bool = True):
    """The volume's seeds node, created (empty, numbered S1, S2, ...) when missing and ``create``.

    Exists before any run, so that the user can place seeds and run the fine stage on them only."""
    node = volumeNode.GetNodeReference(scene.SEEDS_REFERENCE_ROLE) if volumeNode is not None else None
    if node is None and create and volumeNode is not None:
        node = volumeNode.GetScene().AddNewNodeByClass("vtkMRMLMarkupsFiducialNode",
                                                       f"{volumeNode.GetName()} aneurysm seeds")
        volumeNode.SetNodeReferenceID(scene.SEEDS_REFERENCE_ROLE, node.GetID())
        node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        scene.showSeeds(node)
    if node is not None:
        seedNumbering(node)
    return node


def _resultNodes(volumeNode):
    sceneNode = volumeNode.GetScene()
    if sceneNode is None:
        raise InputError("the input volume is not in a scene")
    baseName = volumeNode.GetName()
    segmentationNode = scene.referencedOrNew(volumeNode, scene.SEGMENTATION_REFERENCE_ROLE,
                                             "vtkMRMLSegmentationNode", f"{baseName} aneurysms")
    tableNode = scene.referencedOrNew(volumeNode, scene.TABLE_REFERENCE_ROLE, "vtkMRMLTableNode",
                                      f"{baseName} aneurysm findings")
    seedsNode = seedsNodeFor(volumeNode)
    transformId = volumeNode.GetTransformNodeID()
    for node in (segmentationNode, seedsNode):
        node.SetAndObserveTransformNodeID(transformId)
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    return segmentationNode, seedsNode, tableNode


def _checkShape(volumeNode, result: SegmentationResult) -> None:
    dims = volumeNode.GetImageData().GetDimensions()
    if tuple(result.labels.shape) != (dims[2], dims[1], dims[0]):
        raise InputError(f"result size {result.labels.shape[::-1]} does not match {volumeNode.GetName()} {dims}")


def _segmentId(seedId: str) -> str:
    return f"AneurysmSeg_{seedId}"


def _writeFinding(segmentationNode, volumeNode, point: SeedPoint, aneurysm: Aneurysm, mask: np.ndarray) -> None:
    """One segment for one aneurysm, tagged with its seed, terminology and measurements."""
    segmentation = segmentationNode.GetSegmentation()
    segmentId = _segmentId(point.id)
    if segmentation.GetSegment(segmentId) is not None:
        segmentation.RemoveSegment(segmentId)
    match = scene.SEED_NUMBER.match(point.label)
    number = int(match.group(1)) if match else 0
    # "Aneurysm N" belongs to seed SN; names, colours and codes as in every exported file (core.terminology)
    name = aneurysm_name(number or point.label, aneurysm.morphology.location if aneurysm.morphology is not None else None)
    segmentation.AddEmptySegment(segmentId, name, segment_color(max(number - 1, 0)))
    segment = segmentation.GetSegment(segmentId)
    # vtkSegment.SetTerminology exists only from Slicer 5.10: set the tag it sets
    segment.SetTag(segment.GetTerminologyEntryTagName(), aneurysm_terminology(*location_of(aneurysm)).slicer_entry())
    if mask.any():
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        labelmap = scene.orientedLabelmap(mask, ijkToRas)
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            labelmap, segmentationNode, segmentId, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE,
            labelmap.GetExtent())
    segment.SetTag(TAG_SEED_ID, point.id)
    segment.SetTag(TAG_SEED_POSITION, " ".join(f"{v:.4f}" for v in point.ras))
    segment.SetTag(TAG_FINDING, json.dumps(aneurysm.to_dict()))
    segment.SetTag(TAG_DIGEST, labelmapDigest(segmentationNode, segmentId))


def _showSegmentation(segmentationNode) -> None:
    segmentationNode.CreateDefaultDisplayNodes()
    display = segmentationNode.GetDisplayNode()
    display.SetVisibility(True)
    display.SetVisibility2D(True)
    display.SetVisibility3D(True)
    display.SetPreferredDisplayRepresentationName3D("Closed surface")
    segmentationNode.CreateClosedSurfaceRepresentation()


def applySegmentation(volumeNode, result: SegmentationResult, keepSeedIds: Sequence[str] = ()):
    """Put a full run's result in the scene (Segment): the detector's seeds replace the previous
    detector seeds that were not accepted; seeds the user placed stay and get their new segments.

    ``keepSeedIds`` are findings left exactly as they are (accepted ones, hand-edited ones): their
    seeds were not run, and a detector proposal near them is dropped as a duplicate, as is one near
    a rejected finding. Returns ``(segmentationNode, seedsNode, tableNode)``."""
    _checkShape(volumeNode, result)
    segmentationNode, seedsNode, tableNode = _resultNodes(volumeNode)
    keep = set(keepSeedIds)
    existing = {p.id: p for p in seedPoints(seedsNode)}
    segmentation = segmentationNode.GetSegmentation()
    wasModifying = segmentationNode.StartModify()
    wasModifyingSeeds = seedsNode.StartModify()
    try:
        # previous detector proposals that nobody accepted or edited go; so do all unkept segments
        for i in reversed(range(seedsNode.GetNumberOfControlPoints())):
            pointId = seedsNode.GetNthControlPointID(i)
            point = existing.get(pointId)
            if point is not None and point.source == "detector" and pointId not in keep:
                seedsNode.RemoveNthControlPoint(i)
        for finding in findings(segmentationNode):
            if finding.seedId not in keep:
                segmentation.RemoveSegment(finding.segmentId)
        if seedsNode.GetNumberOfControlPoints() == 0:  # nothing kept: number from S1 again
            seedsNode.SetLastUsedControlPointNumber(0)
            seedsNode.SetAttribute(scene.SEED_NUMBER_ATTRIBUTE, "0")
        avoid = rejectedPositions(seedsNode) + [np.asarray(existing[k].ras) for k in keep if k in existing]
        points: dict[int, SeedPoint] = {}
        # new seeds numbered in the order of the aneurysms' label values (then seeds without one), so
        # that in a fresh run "Aneurysm N" is label N, as in the files the command line writes
        rank = {next((i for i, s in enumerate(result.seeds) if s == a.seed), -1): a.id for a in result.aneurysms}
        order = sorted(range(len(result.seeds)), key=lambda i: (rank.get(i, len(result.seeds) + 1 + i)))
        for index in order:
            seed = result.seeds[index]
            if seed.label in existing and seed.label not in keep:
                points[index] = existing[seed.label]
                continue
            ras = np.asarray(seed.position_ras)
            if any(np.linalg.norm(ras - a) <= REJECTED_RADIUS_MM for a in avoid):
                continue
            cp = seedsNode.AddControlPoint(vtk.vtkVector3d(*ras), "")
            scene.describeSeed(seedsNode, cp, seed.confidence, seed.source)
            seedNumbering(seedsNode)
            points[index] = SeedPoint(seedsNode.GetNthControlPointID(cp), seedsNode.GetNthControlPointLabel(cp),
                                      tuple(float(v) for v in ras), seed.confidence, seed.source, "")
        labels = np.asarray(result.labels)
        for aneurysm in result.aneurysms:
            index = next((i for i, s in enumerate(result.seeds) if s == aneurysm.seed), None)
            if index in points:
                _writeFinding(segmentationNode, volumeNode, points[index], aneurysm, labels == aneurysm.id)
    finally:
        seedsNode.EndModify(wasModifyingSeeds)
        segmentationNode.EndModify(wasModifying)
    _showSegmentation(segmentationNode)
    updateFindingsTable(tableNode, segmentationNode, seedsNode)
    return segmentationNode, seedsNode, tableNode


def applyRefinement(volumeNode, plan: RefinePlan, result: SegmentationResult | None):
    """Put a refine's result in the scene: segments of ``plan.run`` seeds replaced by the new ones,
    segments of deleted seeds removed, every other segment untouched (also its labelmap)."""
    if result is not None:
        _checkShape(volumeNode, result)
    segmentationNode, seedsNode, tableNode = _resultNodes(volumeNode)
    segmentation = segmentationNode.GetSegmentation()
    wasModifying = segmentationNode.StartModify()
    try:
        for segmentId in plan.remove:
            if segmentation.GetSegment(segmentId) is not None:
                segmentation.RemoveSegment(segmentId)
        for point in plan.run:
            if segmentation.GetSegment(_segmentId(point.id)) is not None:
                segmentation.RemoveSegment(_segmentId(point.id))
        if result is not None:
            byId = {p.id: p for p in plan.run}
            labels = np.asarray(result.labels)
            for aneurysm in result.aneurysms:
                point = byId.get(aneurysm.seed.label)
                if point is not None:
                    _writeFinding(segmentationNode, volumeNode, point, aneurysm, labels == aneurysm.id)
    finally:
        segmentationNode.EndModify(wasModifying)
    _showSegmentation(segmentationNode)
    updateFindingsTable(tableNode, segmentationNode, seedsNode)
    return segmentationNode, seedsNode, tableNode


# ---------------------------------------------------------------------------------------- review


def _nodesOfFinding(volumeNode, seedId: str) -> tuple:
    """(segmentationNode, seedsNode, tableNode, index of the seed) of the finding of ``seedId``."""
    segmentationNode, seedsNode, tableNode = scene.resultNodesOf(volumeNode)
    index = seedsNode.GetNthControlPointIndexByID(seedId) if seedsNode is not None else -1
    if index < 0:
        raise InputError(f"no seed with ID {seedId!r}")
    return segmentationNode, seedsNode, tableNode, index


def setAccepted(volumeNode, seedId: str, accepted: bool = True) -> None:
    """Mark a finding accepted (kept as it is by later runs) or back to be reviewed."""
    segmentationNode, seedsNode, tableNode, index = _nodesOfFinding(volumeNode, seedId)
    point = next(p for p in seedPoints(seedsNode) if p.id == seedId)
    scene.describeSeed(seedsNode, index, point.confidence, point.source, "accepted" if accepted else "")
    updateFindingsTable(tableNode, segmentationNode, seedsNode)


def reject(volumeNode, seedId: str) -> None:
    """Remove a finding (segment and seed) and remember its place so detection does not bring it back."""
    segmentationNode, seedsNode, tableNode, index = _nodesOfFinding(volumeNode, seedId)
    ras = [0.0, 0.0, 0.0]
    seedsNode.GetNthControlPointPosition(index, ras)
    rejected = [list(map(float, p)) for p in rejectedPositions(seedsNode)] + [[float(v) for v in ras]]
    seedsNode.SetAttribute(REJECTED_ATTRIBUTE, json.dumps(rejected))
    seedsNode.RemoveNthControlPoint(index)
    seedNumbering(seedsNode)
    if segmentationNode is not None:
        segmentation = segmentationNode.GetSegmentation()
        if segmentation.GetSegment(_segmentId(seedId)) is not None:
            segmentation.RemoveSegment(_segmentId(seedId))
    updateFindingsTable(tableNode, segmentationNode, seedsNode)


def jumpTo(volumeNode, seedId: str) -> np.ndarray:
    """Centre every slice view and 3D view on a finding (its centroid, else its seed); returns the
    world (RAS) position."""
    segmentationNode, seedsNode, _, index = _nodesOfFinding(volumeNode, seedId)
    position = [0.0, 0.0, 0.0]
    seedsNode.GetNthControlPointPositionWorld(index, position)
    finding = next((f for f in findings(segmentationNode) if f.seedId == seedId), None)
    if finding is not None and finding.aneurysm is not None:
        toWorld = vtk.vtkGeneralTransform()  # the centroid is in the volume's frame, the views in world
        slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(seedsNode.GetParentTransformNode(), None, toWorld)
        position = list(toWorld.TransformPoint(finding.aneurysm.centroid_ras))
    sceneNode = volumeNode.GetScene()
    slicer.vtkMRMLSliceNode.JumpAllSlices(sceneNode, *position, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    cameras = sceneNode.GetNodesByClass("vtkMRMLCameraNode")
    for i in range(cameras.GetNumberOfItems()):
        camera = cameras.GetItemAsObject(i)
        shift = np.asarray(position) - np.asarray(camera.GetFocalPoint())
        camera.SetPosition(*(np.asarray(camera.GetPosition()) + shift))
        camera.SetFocalPoint(*position)
        camera.ResetClippingRange()
    return np.asarray(position)


# ----------------------------------------------------------------------------------------- table


@dataclass(frozen=True)
class Column:
    """One column of the findings table: how to compute its value from a :class:`TableRow`."""

    name: str
    arrayClass: str  # vtkStringArray, vtkDoubleArray, vtkIntArray
    unit: str
    description: str
    value: Callable[["TableRow"], Any]


@dataclass
class TableRow:
    seed: SeedPoint
    finding: Finding


def _status(row: TableRow) -> str:
    if row.seed.status == "accepted":
        return "accepted"
    return "edited" if row.finding.edited else "to review"


def _measure(name: str) -> Callable[[TableRow], float]:
    return lambda row: float(getattr(row.finding.aneurysm, name)) if row.finding.aneurysm is not None else float("nan")


def _score(row: TableRow) -> float:
    """The false-positive reduction's score; NaN without a classifier or for a seed placed by hand."""
    a = row.finding.aneurysm
    return float(a.finding_score) if a is not None and a.finding_score is not None else float("nan")


def _centroid(axis: int) -> Callable[[TableRow], float]:
    return lambda row: float(row.finding.aneurysm.centroid_ras[axis]) if row.finding.aneurysm is not None else float("nan")


def _morphology(name: str) -> Callable[[TableRow], Any]:
    """A :class:`core.result.Morphology` field: numbers (NaN when not measured) or text ("" if unknown)."""
    text = name in ("location", "site_group", "phases_size_bin")

    def value(row: TableRow) -> Any:
        m = row.finding.aneurysm.morphology if row.finding.aneurysm is not None else None
        v = getattr(m, name, None) if m is not None else None
        return (v or "") if text else (float("nan") if v is None else float(v))

    return value


#: The findings table, one row per finding. Extend it by appending a Column (e.g. morphology).
FINDING_COLUMNS: list[Column] = [
    Column("Finding", "vtkStringArray", "", "the finding's seed (S1, S2, ... in the seeds list)", lambda r: r.seed.label),
    Column("Status", "vtkStringArray", "", "to review, accepted, or edited (changed in the Segment Editor; "
           "measurements are those of the computed segment)", _status),
    Column("Volume", "vtkDoubleArray", "mm3", "aneurysm volume", _measure("volume_mm3")),
    Column("Max diameter", "vtkDoubleArray", "mm", "largest distance between two points of the aneurysm",
           _measure("max_diameter_mm")),
    Column("Confidence", "vtkDoubleArray", "", "detector confidence of the seed (1 for a seed placed by hand)",
           _measure("confidence")),
    Column("Finding score", "vtkDoubleArray", "", "false-positive reduction: how much the finding looks like the "
           "true aneurysms it was fitted on (0-1; kept at or above the threshold in the weights' manifest; its "
           "evidence is in the JSON report and the CSV)", _score),
    Column("Centroid R", "vtkDoubleArray", "mm", "centre of mass, RAS", _centroid(0)),
    Column("Centroid A", "vtkDoubleArray", "mm", "centre of mass, RAS", _centroid(1)),
    Column("Centroid S", "vtkDoubleArray", "mm", "centre of mass, RAS", _centroid(2)),
    # what a neuroradiologist reports (stages/morphology.py); NaN where no neck was found
    Column("Location", "vtkStringArray", "", "parent artery site and side", _morphology("location")),
    Column("Site group", "vtkStringArray", "", "PHASES site group: ICA, MCA, ACA/AComm/PComm, posterior",
           _morphology("site_group")),
    Column("Size group", "vtkStringArray", "mm", "PHASES size group of the maximum diameter",
           _morphology("phases_size_bin")),
    Column("Neck width", "vtkDoubleArray", "mm", "largest diameter of the neck (ostium)", _morphology("neck_width_mm")),
    Column("Dome height", "vtkDoubleArray", "mm", "largest distance of the dome from the neck plane",
           _morphology("dome_height_mm")),
    Column("Dome width", "vtkDoubleArray", "mm", "largest diameter parallel to the neck plane",
           _morphology("dome_width_mm")),
    Column("Aspect ratio", "vtkDoubleArray", "", "dome height / neck width (> 1.6: a UIATS risk factor)",
           _morphology("aspect_ratio")),
    Column("Dome-to-neck", "vtkDoubleArray", "", "maximum diameter / neck width", _morphology("dome_to_neck_ratio")),
    Column("Bottleneck", "vtkDoubleArray", "", "dome width / neck width", _morphology("bottleneck_factor")),
    Column("Parent diameter", "vtkDoubleArray", "mm", "parent artery diameter near the neck",
           _morphology("parent_diameter_mm")),
    Column("Size ratio", "vtkDoubleArray", "", "maximum diameter / parent artery diameter (> 3: rupture risk)",
           _morphology("size_ratio")),
    Column("NSI", "vtkDoubleArray", "", "non-sphericity index (0: hemisphere)", _morphology("nonsphericity_index")),
    Column("UI", "vtkDoubleArray", "", "undulation index: 1 - volume / convex hull volume",
           _morphology("undulation_index")),
]

#: Table node attribute: JSON list of the seed (control point) ID of each row, for click-to-jump.
ROW_SEED_IDS_ATTRIBUTE = "AneurysmSeg.rowSeedIDs"


def tableRows(segmentationNode, seedsNode) -> list[TableRow]:
    """Findings that still have their seed, in seed order."""
    byseed = {f.seedId: f for f in findings(segmentationNode)}
    return [TableRow(p, byseed[p.id]) for p in seedPoints(seedsNode) if p.id in byseed]


def updateFindingsTable(tableNode, segmentationNode, seedsNode, columns: Sequence[Column] | None = None) -> None:
    """Rewrite the table from the segments (the single source of truth for measurements)."""
    if tableNode is None:
        return
    columns = list(columns or FINDING_COLUMNS)
    rows = tableRows(segmentationNode, seedsNode)
    table = tableNode.GetTable()
    wasModifying = tableNode.StartModify()
    try:
        tableNode.RemoveAllColumns()
        for spec in columns:
            array = getattr(vtk, spec.arrayClass)()
            array.SetName(spec.name)
            array.SetNumberOfValues(len(rows))
            for r, row in enumerate(rows):
                array.SetValue(r, spec.value(row))
            table.AddColumn(array)
            tableNode.SetColumnUnitLabel(spec.name, spec.unit)
            tableNode.SetColumnDescription(spec.name, spec.description)
        tableNode.SetAttribute(ROW_SEED_IDS_ATTRIBUTE, json.dumps([row.seed.id for row in rows]))
        tableNode.SetUseColumnTitleAsColumnHeader(True)
        tableNode.SetLocked(True)
    finally:
        tableNode.EndModify(wasModifying)
    table.Modified()
    updateNeckCurves(segmentationNode, seedsNode)


# ----------------------------------------------------------------------------------------- necks

#: Segmentation node reference role of the neck curves (one per finding with a neck).
NECK_REFERENCE_ROLE = "AneurysmSeg.neck"


def neckCurves(segmentationNode) -> list:
    """The neck curves (vtkMRMLMarkupsClosedCurveNode) shown for ``segmentationNode``'s findings."""
    if segmentationNode is None:
        return []
    return [segmentationNode.GetNthNodeReference(NECK_REFERENCE_ROLE, i)
            for i in range(segmentationNode.GetNumberOfNodeReferences(NECK_REFERENCE_ROLE))]


def updateNeckCurves(segmentationNode, seedsNode) -> list:
    """Redraw the necks from the findings: one locked closed curve per finding whose neck was found
    (RAS, in the segmentation's frame), coloured like its segment; shown in the slice views and in 3D."""
    if segmentationNode is None:
        return []
    sceneNode = segmentationNode.GetScene()
    for node in neckCurves(segmentationNode):
        if node is not None:  # its display node too (not every scene removes it with the curve)
            displays = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
            sceneNode.RemoveNode(node)
            for display in displays:
                if display is not None and display.GetScene() is sceneNode:
                    sceneNode.RemoveNode(display)
    segmentationNode.RemoveNodeReferenceIDs(NECK_REFERENCE_ROLE)
    curves = []
    for row in tableRows(segmentationNode, seedsNode):
        a = row.finding.aneurysm
        m = a.morphology if a is not None else None
        if m is None or len(m.neck_curve_lps) < 3:
            continue
        segment = segmentationNode.GetSegmentation().GetSegment(row.finding.segmentId)
        node = sceneNode.AddNewNodeByClass("vtkMRMLMarkupsClosedCurveNode", f"{segment.GetName()} neck")
        wasModifying = node.StartModify()
        try:
            for point in lps_to_ras(m.neck_curve_lps):
                node.AddControlPoint(vtk.vtkVector3d(*point), "")
            node.SetDescription(f"neck width {m.neck_width_mm:.2f} mm" if m.neck_width_mm is not None else "neck")
            node.SetLocked(True)
        finally:
            node.EndModify(wasModifying)
        node.SetAndObserveTransformNodeID(segmentationNode.GetTransformNodeID())
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetSelectedColor(*segment.GetColor())
        display.SetPointLabelsVisibility(False)
        display.SetPropertiesLabelVisibility(False)
        display.SetFillVisibility(False)
        segmentationNode.AddNodeReferenceID(NECK_REFERENCE_ROLE, node.GetID())
        curves.append(node)
    return curves


def seedIdOfRow(tableNode, row: int) -> str:
    """The seed ID of a table row ('' outside the table)."""
    try:
        ids = json.loads(tableNode.GetAttribute(ROW_SEED_IDS_ATTRIBUTE) or "[]")
    except ValueError:
        return ""
    return ids[row] if 0 <= row < len(ids) else ""
