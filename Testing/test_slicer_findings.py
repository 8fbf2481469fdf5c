"""The module's review workflow in a real MRML scene (slicer-core): seeds before any run and their
numbering, the module's own terminology, refine keeping hand-edited and unchanged segments, the
findings table with click-to-jump, accept and reject that stick."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import slicer
import vtk

from AneurysmSegLib.core.errors import InputError
from AneurysmSegLib.core.geometry import lps_to_ras
from AneurysmSegLib.core.result import Morphology, Seed, SegmentationResult
from AneurysmSegLib.core.terminology import aneurysm_terminology
from AneurysmSegLib.stages.measure import measure_labels
from AneurysmSegLib.slicer import findings, runners, scene
from test_scene import app, case, resultFromLabels, segmentCentroidRas, segmentIds  # noqa: F401 (fixtures)

MODULE = Path(__file__).resolve().parents[1] / "AneurysmSeg"


def test_terminology_file_loads_and_holds_the_segments_type():
    """The .term.json loads with Slicer's terminologies logic (as SlicerTotalSegmentator's does) and
    holds the category and type the segments are tagged with; the region comes from Slicer's list."""
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    term = aneurysm_terminology()
    assert scene.loadTerminology(logic) == term.context
    category = slicer.vtkSlicerTerminologyCategory()
    found = []
    for c in range(logic.GetNumberOfCategoriesInTerminology(term.context)):
        logic.GetNthCategoryInTerminology(term.context, c, category)
        for t in range(logic.GetNumberOfTypesInTerminologyCategory(term.context, category)):
            type_ = slicer.vtkSlicerTerminologyType()
            logic.GetNthTypeInTerminologyCategory(term.context, category, t, type_)
            found.append((category.GetCodeValue(), type_.GetCodeValue(), type_.GetCodeMeaning()))
    assert found == [(term.category.value, term.type.value, term.type.meaning)] == [("49755003", "85659009", "Aneurysm")]
    assert category.GetShowAnatomy()
    entry = slicer.vtkSlicerTerminologyEntry()
    assert logic.DeserializeTerminologyEntry(term.slicer_entry(), entry)
    assert entry.GetTerminologyContextName() == term.context
    assert entry.GetTypeObject().GetCodeValue() == "85659009"
    assert entry.GetRegionObject().GetCodeValue() == "88556005"
    with pytest.raises(InputError, match="not the module's terminology"):
        scene.loadTerminology(logic, MODULE / "Resources" / "Models" / "manifest.json")


def test_segments_carry_the_terminology_tag_readable_back(app, case):
    """Set as a segment tag (vtkSegment.SetTerminology, which did that, exists only from Slicer 5.10)."""
    node, labels, centres, geometry = case
    segmentation, _, _ = scene.updateResultNodes(node, resultFromLabels(labels, geometry, centres))
    for segmentId in segmentIds(segmentation):
        segment = segmentation.GetSegmentation().GetSegment(segmentId)
        value = vtk.reference("")
        assert segment.GetTag(segment.GetTerminologyEntryTagName(), value)
        assert str(value) == aneurysm_terminology().slicer_entry()


# ------------------------------------------------------------------------------------------ seeds


def test_seeds_can_be_placed_before_any_run_and_number_on(app, case):
    node, labels, centres, geometry = case
    seeds = findings.seedsNodeFor(node)
    assert seeds is not None and seeds.GetNumberOfControlPoints() == 0
    assert scene.resultNodesOf(node)[1] is seeds and findings.seedsNodeFor(node) is seeds
    # two points placed by hand (Slicer's automatic labels come from the node's format and counter)
    for c in centres:
        seeds.AddControlPoint(vtk.vtkVector3d(*lps_to_ras(c)))
    assert [seeds.GetNthControlPointLabel(i) for i in range(2)] == ["S1", "S2"]
    # a refine before any segmentation: both seeds go through the fine stage, nothing else
    run = runners.prepareRefine(node)
    assert run.kind == "refine" and not run.detect and len(run.seeds) == 2
    assert {s.source for s in run.seeds} == {"user"}
    # a full run keeps the user's seeds and numbers the detector's after them
    result = resultFromLabels(labels, geometry, centres)
    result.seeds.append(Seed(position_lps=tuple(np.asarray(centres[0]) + 9.0), confidence=0.7, source="detector"))
    segmentation, seeds, table = findings.applySegmentation(node, result)
    labelsNow = [seeds.GetNthControlPointLabel(i) for i in range(seeds.GetNumberOfControlPoints())]
    assert len(set(labelsNow)) == len(labelsNow)
    new = seeds.AddControlPoint(vtk.vtkVector3d(0.0, 0.0, 0.0))
    assert seeds.GetNthControlPointLabel(new) == f"S{len(labelsNow) + 1}"


def test_seed_numbering_repairs_duplicates_and_a_reset_counter(app):
    seeds = app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seeds")
    for label in ("S1", "S2", "S2", "other"):
        seeds.AddControlPoint(vtk.vtkVector3d(0.0, 0.0, 0.0), label)
    seeds.SetLastUsedControlPointNumber(0)  # e.g. a list made elsewhere
    scene.seedNumbering(seeds)
    assert [seeds.GetNthControlPointLabel(i) for i in range(4)] == ["S1", "S2", "S3", "S4"]
    assert seeds.GetNthControlPointLabel(seeds.AddControlPoint(vtk.vtkVector3d(1.0, 1.0, 1.0))) == "S5"
    # Slicer gives the number of a deleted last point again; the module does not (S5 may have been a
    # finding): the panel renumbers on every placed and removed point, as here
    scene.seedNumbering(seeds)
    seeds.RemoveNthControlPoint(4)
    scene.seedNumbering(seeds)
    assert seeds.GetNthControlPointLabel(seeds.AddControlPoint(vtk.vtkVector3d(2.0, 2.0, 2.0))) == "S6"


# ---------------------------------------------------------------------------- refine, edited segments


def paint(segmentation, segmentId, volumeNode, ijk) -> None:
    """Add one voxel to a segment, as the Segment Editor's paint would."""
    labelmap = slicer.vtkOrientedImageData()
    segmentation.GetBinaryLabelmapRepresentation(segmentId, labelmap)
    mask = np.zeros(volumeNode.GetImageData().GetDimensions()[::-1], np.uint8)
    extent = labelmap.GetExtent()
    from vtk.util import numpy_support

    dims = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    old = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(dims) > 0
    mask[extent[4]:extent[5] + 1, extent[2]:extent[3] + 1, extent[0]:extent[1] + 1] = old
    mask[ijk[2], ijk[1], ijk[0]] = 1
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    image = scene.orientedLabelmap(mask, matrix)
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, segmentation, segmentId, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE, image.GetExtent())


def resultForSeeds(labels, geometry, seeds) -> SegmentationResult:
    """What the pipeline gives for ``seeds`` when label value i is the aneurysm of seed i."""
    return SegmentationResult(labels=labels, geometry=geometry, seeds=list(seeds),
                              aneurysms=measure_labels(labels, geometry, dict(enumerate(seeds, start=1))))


def test_refine_keeps_hand_edited_segments_unless_told(app, case):
    node, labels, centres, geometry = case
    segmentation, seeds, table = scene.updateResultNodes(node, resultFromLabels(labels, geometry, centres))
    first, second = segmentIds(segmentation)
    assert not any(f.edited for f in findings.findings(segmentation))
    centre = np.round(geometry.lps_to_index(centres[0])).astype(int)
    paint(segmentation, first, node, centre + [9, 0, 0])
    edited = findings.labelmapDigest(segmentation, first)
    assert [f.edited for f in findings.findings(segmentation)] == [True, False]
    assert findings.tableRows(segmentation, seeds)[0].finding.edited
    # move both seeds: only the unedited one is run; the edited one is reported, not replaced
    for i in range(2):
        seeds.SetNthControlPointPosition(i, *(np.asarray(seeds.GetNthControlPointPositionVector(i)) + 0.3))
    run = runners.prepareRefine(node)
    assert [s.label for s in run.seeds] == [seeds.GetNthControlPointID(1)]
    assert [c.segmentId for c in run.editedConflicts] == [first]
    runners.applyRun(run, resultForSeeds(np.where(labels == 2, 1, 0).astype(np.uint8), geometry, run.seeds))
    assert findings.labelmapDigest(segmentation, first) == edited  # the user's edit survives
    assert set(segmentIds(segmentation)) == {first, second}
    # with consent, the edited one is run too
    run = runners.prepareRefine(node, replaceEdited=True)
    assert {s.label for s in run.seeds} == {seeds.GetNthControlPointID(0)}
    # deleting the seed of an edited segment keeps the segment unless consent is given
    seeds.RemoveNthControlPoint(0)
    assert runners.prepareRefine(node).plan.remove == []
    assert runners.prepareRefine(node, replaceEdited=True).plan.remove == [first]


def test_segment_again_keeps_accepted_and_edited_findings(app, case):
    node, labels, centres, geometry = case
    segmentation, seeds, table = scene.updateResultNodes(node, resultFromLabels(labels, geometry, centres))
    first, second = (seeds.GetNthControlPointID(i) for i in range(2))
    findings.setAccepted(node, first)
    run = runners.prepareSegment(node)
    assert run.keep == [first] and run.detect and run.seeds == []
    before = findings.labelmapDigest(segmentation, f"AneurysmSeg_{first}")
    # the detector proposes both again: the one near the accepted finding is dropped as a duplicate
    findings.applySegmentation(node, resultFromLabels(labels, geometry, centres), keepSeedIds=run.keep)
    assert seeds.GetNumberOfControlPoints() == 2 and table.GetNumberOfRows() == 2
    assert findings.labelmapDigest(segmentation, f"AneurysmSeg_{first}") == before
    assert table.GetCellText(0, table.GetColumnIndex("Status")) == "accepted"


# ------------------------------------------------------------------------------ table and review


def addViews(app):
    """The three slice views and a 3D camera, as Slicer's default layout has."""
    slices = []
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        node = slicer.vtkMRMLSliceNode()
        node.SetName(name)
        node.SetLayoutName(name)
        app.scene.AddNode(node)
        node.SetOrientation(orientation)
        slices.append(node)
    camera = app.scene.AddNewNodeByClass("vtkMRMLCameraNode")
    camera.SetPosition(0.0, 500.0, 0.0)
    camera.SetFocalPoint(0.0, 0.0, 0.0)
    return slices, camera


def test_findings_table_columns_and_click_to_jump(app, case):
    node, labels, centres, geometry = case
    slices, camera = addViews(app)
    segmentation, seeds, table = scene.updateResultNodes(node, resultFromLabels(labels, geometry, centres))
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert names == [c.name for c in findings.FINDING_COLUMNS]
    assert {"Finding", "Volume", "Max diameter", "Confidence"} <= set(names)
    assert table.GetColumnUnitLabel("Max diameter") == "mm"
    seedId = findings.seedIdOfRow(table, 1)
    assert seedId == seeds.GetNthControlPointID(1) and findings.seedIdOfRow(table, 5) == ""
    position = findings.jumpTo(node, seedId)
    centroid = segmentCentroidRas(segmentation, f"AneurysmSeg_{seedId}")
    np.testing.assert_allclose(position, centroid, atol=0.5)
    for sliceNode in slices:
        m = sliceNode.GetSliceToRAS()
        np.testing.assert_allclose([m.GetElement(i, 3) for i in range(3)], position, atol=1e-6)
    np.testing.assert_allclose(camera.GetFocalPoint(), position, atol=1e-6)
    np.testing.assert_allclose(np.asarray(camera.GetPosition()) - position, [0.0, 500.0, 0.0], atol=1e-6)


def test_extra_columns_are_one_spec_each(app, case):
    node, labels, centres, geometry = case
    segmentation, seeds, table = scene.updateResultNodes(node, resultFromLabels(labels, geometry, centres))
    extra = findings.Column("Voxels", "vtkIntArray", "", "voxel count", lambda row: row.finding.aneurysm.voxel_count)
    findings.updateFindingsTable(table, segmentation, seeds, findings.FINDING_COLUMNS + [extra])
    assert int(table.GetCellText(0, table.GetColumnIndex("Voxels"))) == int((labels == 1).sum())


def test_morphology_names_columns_and_neck_curves(app, case):
    node, labels, centres, geometry = case
    result = resultFromLabels(labels, geometry, centres)
    curve = [tuple(centres[0] + 1.5 * np.array([np.cos(a), np.sin(a), 0.0]))
             for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]
    result.aneurysms[0].morphology = Morphology(
        phases_size_bin="<7 mm", neck_width_mm=3.0, dome_height_mm=4.2, aspect_ratio=1.4, size_ratio=2.1,
        site="MCA bifurcation", site_group="MCA", side="right", neck_curve_lps=curve)
    segmentation, seeds, table = scene.updateResultNodes(node, result)
    names = [segmentation.GetSegmentation().GetSegment(i).GetName() for i in segmentIds(segmentation)]
    assert names == ["Aneurysm 1 - right MCA bifurcation", "Aneurysm 2"]
    column = table.GetColumnIndex
    assert table.GetCellText(0, column("Location")) == "right MCA bifurcation"
    assert table.GetCellText(0, column("Site group")) == "MCA" and table.GetCellText(0, column("Size group")) == "<7 mm"
    assert float(table.GetCellText(0, column("Neck width"))) == pytest.approx(3.0)
    assert float(table.GetCellText(0, column("Aspect ratio"))) == pytest.approx(1.4)
    assert np.isnan(float(table.GetCellText(1, column("Neck width"))))  # not measured: NaN, not 0
    assert table.GetColumnUnitLabel("Dome height") == "mm"
    necks = findings.neckCurves(segmentation)
    assert len(necks) == 1 and necks[0].IsA("vtkMRMLMarkupsClosedCurveNode")
    assert necks[0].GetName() == "Aneurysm 1 - right MCA bifurcation neck" and necks[0].GetNumberOfControlPoints() == 8
    ras = [0.0, 0.0, 0.0]
    necks[0].GetNthControlPointPosition(3, ras)
    np.testing.assert_allclose(ras, lps_to_ras(curve[3]), atol=1e-6)
    # rejecting the finding takes its neck away; a run without necks leaves none behind
    findings.reject(node, seeds.GetNthControlPointID(0))
    assert findings.neckCurves(segmentation) == []
    assert app.scene.GetNodesByClass("vtkMRMLMarkupsClosedCurveNode").GetNumberOfItems() == 0


def test_reject_removes_and_stays_rejected(app, case):
    node, labels, centres, geometry = case
    segmentation, seeds, table = scene.updateResultNodes(node, resultFromLabels(labels, geometry, centres))
    rejected = seeds.GetNthControlPointID(1)
    findings.reject(node, rejected)
    assert seeds.GetNumberOfControlPoints() == 1 and table.GetNumberOfRows() == 1
    assert f"AneurysmSeg_{rejected}" not in segmentIds(segmentation)
    # a refine does not bring it back; nothing needs the networks
    run = runners.prepareRefine(node)
    assert not run.needsPipeline
    runners.applyRun(run, None)
    assert table.GetNumberOfRows() == 1
    # neither does the detector proposing it again
    findings.applySegmentation(node, resultFromLabels(labels, geometry, centres))
    assert seeds.GetNumberOfControlPoints() == 1 and table.GetNumberOfRows() == 1
    remaining = segmentCentroidRas(segmentation, segmentIds(segmentation)[0])
    np.testing.assert_allclose(remaining, lps_to_ras(centres[0]), atol=0.5)
