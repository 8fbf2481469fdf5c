""".seg.nrrd from the command line: Slicer (slicer-core) opens it as a segmentation with the names,
colours and terminology the module gives its own segments, voxel for voxel on the label image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

import slicer
from AneurysmSegLib.cli import main
from AneurysmSegLib.io.images import geometry_of, write_image
from AneurysmSegLib.slicer import scene
from AneurysmSegLib.core.result import SegmentationResult

from slicer_scene import createSlicerScene
from test_pipeline import blob_model_dir, synthetic_scan  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, blob_model_dir: Path) -> dict:
    tmp = tmp_path_factory.mktemp("seg_nrrd")
    scan = synthetic_scan()
    tof = write_image(scan.array.astype(np.int16), scan.geometry, tmp / "tof.nii.gz")
    paths = {"tof": tof, "seg": tmp / "aneurysms.seg.nrrd", "labels": tmp / "labels.nii.gz", "report": tmp / "r.json"}
    assert main(["segment", str(tof), "-o", str(paths["seg"]), "--models", str(blob_model_dir),
                 "--report", str(paths["report"])]) == 0  # --format from the name: .seg.nrrd
    assert main(["segment", str(tof), "-o", str(paths["labels"]), "--models", str(blob_model_dir)]) == 0
    return paths


def test_slicerio_reads_names_colours_terminology_and_voxels(run: dict) -> None:
    seg = slicerio.read_segmentation(str(run["seg"]))
    assert [s["name"] for s in seg["segments"]] == ["Aneurysm 1", "Aneurysm 2"]
    assert all(s["terminology"]["type"] == ["SCT", "85659009", "Aneurysm"] for s in seg["segments"])
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(run["labels"])))
    np.testing.assert_array_equal(np.asarray(seg["voxels"]).transpose(2, 1, 0), labels)
    assert [s["labelValue"] for s in seg["segments"]] == [1, 2]


def test_slicer_loads_the_module_segments(run: dict) -> None:
    app = createSlicerScene()
    try:
        volume = app.loadVolume(run["tof"], "tof")
        loaded = app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
        storage = app.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
        storage.SetFileName(str(run["seg"]))
        assert storage.ReadData(loaded)

        # the segments the module itself creates for the same result
        labels_img = sitk.ReadImage(str(run["labels"]))
        result = SegmentationResult.from_report(json.loads(run["report"].read_text()),
                                                sitk.GetArrayFromImage(labels_img), geometry_of(labels_img))
        module_node = scene.updateResultNodes(volume, result)[0]

        def describe(node):
            s = node.GetSegmentation()
            return [(s.GetNthSegment(i).GetName(), tuple(round(c, 4) for c in s.GetNthSegment(i).GetColor()),
                     s.GetNthSegment(i).GetTerminology()) for i in range(s.GetNumberOfSegments())]

        assert describe(loaded) == describe(module_node)
        assert len(describe(loaded)) == 2

        # voxel for voxel on the input grid
        labelmap = app.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        ids = [loaded.GetSegmentation().GetNthSegmentID(i) for i in range(2)]
        import vtk

        id_array = vtk.vtkStringArray()
        for i in ids:
            id_array.InsertNextValue(i)
        assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(loaded, id_array, labelmap, volume)
        exported = slicer.util.arrayFromVolume(labelmap)
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(run["labels"])))
        np.testing.assert_array_equal(exported, labels)
    finally:
        app.close()
