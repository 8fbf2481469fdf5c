"""The Slicer API the module calls, listed per declaring class, checked at Slicer's release tags.

The module supports Slicer 5.8 and later. A call that exists only in a newer release (such as
``vtkSegment.SetTerminology``, added in 5.10) fails on older ones at run time, far from any test that
runs here, which uses slicer-core 5.11. So: every method the module (AneurysmSeg.py and
AneurysmSegLib/slicer/) calls on a Slicer object is listed below under the class whose header declares
it; test_slicer_api.py checks that the module calls nothing else, and, given a Slicer source checkout
(``SLICER_SOURCE_DIR``, a git repository with the release tags), that each listed method is declared in
that class's header at every tag in :data:`RELEASE_TAGS` (v5.8.1: the oldest supported release;
v5.10.0: the release that moved the markups MRML classes into Libs/MRML/Core).

Methods of plain VTK, Python, Qt and other libraries' objects are listed apart (:data:`NOT_SLICER`):
VTK 9.2, which Slicer 5.8 ships, has the VTK ones.
"""

from __future__ import annotations

RELEASE_TAGS = ("v5.8.1", "v5.10.0")

#: class (its header is <class>.h somewhere in Slicer's tree) -> methods the module calls on it.
SLICER_API: dict[str, frozenset[str]] = {
    "vtkMRMLNode": frozenset({
        "GetID", "GetName", "SetName", "GetScene", "GetAttribute", "SetAttribute", "StartModify", "EndModify",
        "GetNodeReference", "SetNodeReferenceID", "SetDescription", "AddNodeReferenceID", "GetNthNodeReference",
        "GetNumberOfNodeReferences", "RemoveNodeReferenceIDs"}),
    "vtkMRMLScene": frozenset({"AddNewNodeByClass", "GetFirstNodeByClass", "GetNodesByClass", "Clear", "RemoveNode"}),
    "vtkMRMLDisplayableNode": frozenset({"CreateDefaultDisplayNodes", "GetDisplayNode", "GetNumberOfDisplayNodes",
                                         "GetNthDisplayNode"}),
    "vtkMRMLTransformableNode": frozenset({"GetTransformNodeID", "SetAndObserveTransformNodeID",
                                           "GetParentTransformNode"}),
    "vtkMRMLVolumeNode": frozenset({"GetIJKToRASMatrix", "GetImageData"}),
    "vtkMRMLDisplayNode": frozenset({"SetVisibility", "SetVisibility2D", "SetVisibility3D", "SetSelectedColor"}),
    "vtkMRMLSegmentationNode": frozenset({
        "GetSegmentation", "GetBinaryLabelmapRepresentation", "CreateClosedSurfaceRepresentation",
        "SetReferenceImageGeometryParameterFromVolumeNode"}),
    "vtkMRMLSegmentationDisplayNode": frozenset({"SetPreferredDisplayRepresentationName3D"}),
    "vtkSegmentation": frozenset({"AddEmptySegment", "GetSegment", "GetNthSegment", "GetNthSegmentID",
                                  "GetNumberOfSegments", "RemoveSegment"}),
    "vtkSegment": frozenset({"SetTag", "GetTag", "GetTerminologyEntryTagName", "GetName", "GetColor"}),
    "vtkOrientedImageData": frozenset({"SetImageToWorldMatrix"}),
    "vtkSlicerSegmentationsModuleLogic": frozenset({
        "SetBinaryLabelmapToSegment", "ExportSegmentsClosedSurfaceRepresentationToFiles"}),
    "vtkMRMLMarkupsNode": frozenset({
        "AddControlPoint", "GetNumberOfControlPoints", "GetNthControlPointID", "GetNthControlPointIndexByID",
        "GetNthControlPointLabel", "SetNthControlPointLabel", "GetNthControlPointDescription",
        "SetNthControlPointDescription", "GetNthControlPointPosition", "GetNthControlPointPositionWorld",
        "GetNthControlPointPositionStatus", "RemoveNthControlPoint", "SetControlPointLabelFormat",
        "GetLastUsedControlPointNumber", "SetLastUsedControlPointNumber", "SetLocked"}),
    "vtkMRMLMarkupsDisplayNode": frozenset({"SetGlyphScale", "SetPointLabelsVisibility", "SetPropertiesLabelVisibility",
                                            "SetFillVisibility"}),
    "vtkMRMLTableNode": frozenset({
        "GetTable", "RemoveAllColumns", "SetColumnUnitLabel", "SetColumnDescription",
        "SetUseColumnTitleAsColumnHeader", "SetLocked", "GetNumberOfRows", "GetCellText", "GetColumnIndex"}),
    "vtkMRMLSliceNode": frozenset({"JumpAllSlices", "GetSliceToRAS"}),
    "vtkMRMLCameraNode": frozenset({"GetFocalPoint", "SetFocalPoint", "GetPosition", "SetPosition",
                                    "ResetClippingRange"}),
    "vtkMRMLTransformNode": frozenset({"GetTransformBetweenNodes"}),
    "vtkSlicerTerminologiesModuleLogic": frozenset({"LoadTerminologyFromFile"}),
}

#: Constants and events read from Slicer classes (``node.PositionDefined``, ...), same check.
SLICER_CONSTANTS: dict[str, frozenset[str]] = {
    "vtkMRMLMarkupsNode": frozenset({"PositionDefined", "PointPositionDefinedEvent", "PointRemovedEvent"}),
    "vtkMRMLSliceNode": frozenset({"CenteredJumpSlice"}),
    "vtkSlicerSegmentationsModuleLogic": frozenset({"MODE_REPLACE"}),
    "vtkMRMLScene": frozenset({"StartCloseEvent", "EndCloseEvent"}),
}

#: Qt widget methods of Slicer's own widgets the panel calls (``self.ui.<widget>.<method>``).
SLICER_WIDGET_API: dict[str, frozenset[str]] = {
    "qMRMLTableView": frozenset({"setMRMLTableNode", "mrmlTableNode", "sortFilterProxyModel"}),
    "qMRMLSegmentsTableView": frozenset({"setSegmentationNode"}),
    "qSlicerSimpleMarkupsWidget": frozenset({"setCurrentNode"}),
}

#: Functions and classes of Slicer's Python package ``slicer.util`` (Base/Python/slicer/util.py).
SLICER_UTIL: frozenset[str] = frozenset({
    "loadUI", "childWidgetVariables", "loadVolume", "confirmOkCancelDisplay", "confirmYesNoDisplay",
    "errorDisplay", "warningDisplay", "tryWithErrorDisplay", "pip_install", "showStatusMessage", "WaitCursor", "VTKObservationMixin"})

#: Capitalised methods called on objects that are not Slicer's (VTK, Python, SimpleITK, psutil, Qt).
NOT_SLICER: frozenset[str] = frozenset({
    # VTK 9.2+
    "AllocateScalars", "GetDimensions", "GetExtent", "SetExtent", "GetPointData", "GetScalars",
    "GetNumberOfScalarComponents", "GetNumberOfValues", "GetValue", "SetValue", "SetNumberOfValues",
    "InsertNextValue", "AddColumn", "GetElement", "MultiplyPoint", "GetMTime", "Modified", "TransformPoint",
    "GetNumberOfItems", "GetItemAsObject",
    # Python standard library, SimpleITK, Qt, the PyTorch extension
    "ArgumentParser", "Lock", "Popen", "Process", "Queue", "Thread", "TemporaryDirectory", "ReadImage",
    "GetArrayFromImage", "QTimer", "PyTorchUtilsLogic",
})


def allowedCalls() -> frozenset[str]:
    return frozenset().union(*SLICER_API.values(), NOT_SLICER)
