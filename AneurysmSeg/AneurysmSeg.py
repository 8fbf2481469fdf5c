"""3D Slicer module: segment cerebral aneurysms in a TOF-MRA (coarse-to-fine, DeepMedic + SE 3D U-Net).

Thin by design: the pipeline lives in AneurysmSegLib (pure Python), the MRML work in
AneurysmSegLib.slicer.scene (which also runs under slicer-core, where the pytest suite covers it). This file
holds Slicer's scripted-module classes: module description, typed parameter node, widget, logic, test.
"""

import importlib.util
import logging
import os
from pathlib import Path
from typing import Annotated, Callable, Optional

import ctk  # noqa: F401 (the .ui's ctk widgets need it loaded)
import qt
import vtk

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)

#: Python packages the pipeline needs (import name: pip name); Slicer's own numpy/SimpleITK/vtk are used as is.
REQUIRED_PACKAGES = {"torch": "torch", "scipy": "scipy"}


def bundledDetectionThreshold(default: float = 0.5, modelFolder: Optional[Path] = None) -> float:
    """The detector threshold chosen on validation data when the weights in ``modelFolder`` (default:
    the bundled ones) were exported, read through the library's torch-free manifest reader; ``default``
    when the manifest is missing, broken or has none, so that the panel always opens."""
    try:
        from AneurysmSegLib.core.manifest import ModelManifest

        folder = modelFolder or Path(__file__).resolve().parent / "Resources" / "Models"
        value = ModelManifest.read(folder).detection_threshold
    except Exception:  # the panel must open whatever the manifest holds; modelProblem() explains it
        return default
    return value if 0.0 < value < 1.0 else default


#
# AneurysmSeg
#


class AneurysmSeg(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Aneurysm Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["AneurysmSeg developers"]
        self.parent.helpText = _("""
Segments unruptured cerebral aneurysms in a 3D time-of-flight MR angiography with a coarse-to-fine
method: a DeepMedic network proposes aneurysm regions (VOI seeds) along the arteries, then a
dual-channel squeeze-and-excitation 3D U-Net segments a 64&sup3; volume of interest around each seed.
<br><br>
Each aneurysm becomes its own segment (SNOMED CT "Aneurysm"), with its volume, maximum diameter and
centroid in a table. Move, delete or add seeds in the views and click "Refine from seeds" to re-run
only the fine stage. "Export to STL" writes one surface per aneurysm.
<br><br>
<b>The bundled weights were trained on synthetic phantoms: for demonstration and testing, not for
clinical use.</b>
<br><br>
See the <a href="https://github.com/AneurysmSeg/SlicerAneurysmSeg">project page</a> for details.
""")
        self.parent.acknowledgementText = _("""
The method follows Chen et al., coarse-to-fine segmentation of cerebral aneurysms in 3D TOF-MRA,
building on DeepMedic (Kamnitsas et al.), the 3D U-Net variant of Isensee et al. and
squeeze-and-excitation blocks (Hu et al.). The data layout follows the ADAM 2020 challenge.
The module structure follows 3D Slicer's scripted module template.
""")


#
# AneurysmSegParameterNode
#


@parameterNodeWrapper
class AneurysmSegParameterNode:
    """
    The parameters needed by module.

    inputVolume - The TOF-MRA to segment.
    device - Where the networks run: auto (GPU when available), CPU or GPU.
    detectionThreshold - Probability above which the coarse stage proposes a region (default: the
        threshold stored with the bundled weights).
    stlFolder, stlCoordinateSystem - Where and in which coordinates STL files are written.
    segmentation, seeds, table - The result nodes of the last run on the input volume.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    device: Annotated[str, Choice(["auto", "CPU", "GPU"])] = "auto"
    detectionThreshold: Annotated[float, WithinRange(0.05, 0.99)] = bundledDetectionThreshold()
    stlFolder: Path = Path.home()
    stlCoordinateSystem: Annotated[str, Choice(["LPS", "RAS"])] = "LPS"
    segmentation: vtkMRMLSegmentationNode
    seeds: vtkMRMLMarkupsFiducialNode
    table: vtkMRMLTableNode


#
# AneurysmSegWidget
#


class AneurysmSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel. Long work runs in a child process polled by a timer, so Slicer stays responsive."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._task = None  # AneurysmSegLib.slicer.runners.BackgroundSegmentation while running
        self._taskIsRefine = False
        self._pollTimer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/AneurysmSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = AneurysmSegLogic()

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(200)
        self._pollTimer.timeout.connect(self.onPollTask)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.refineButton.connect("clicked(bool)", self.onRefineButton)
        self.ui.exportStlButton.connect("clicked(bool)", self.onExportStlButton)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputVolumeChanged)

        self.ui.voiSizeLabel.text = self.logic.voiDescription()
        self.updateDependenciesMessage()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        self.cancelTask()
        if self._pollTimer:
            self._pollTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.cancelTask()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[AneurysmSegParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.showResultNodes()
            self.updateButtons()

    # -- state shown in the panel

    def onInputVolumeChanged(self, node) -> None:
        """Results belong to a volume: show the ones an earlier run made for this one (or none)."""
        if not self._parameterNode or self._task:
            return
        self.setResultNodes(*self.logic.resultNodes(node))

    def setResultNodes(self, segmentation, seeds, table) -> None:
        self._parameterNode.segmentation = segmentation
        self._parameterNode.seeds = seeds
        self._parameterNode.table = table
        self.showResultNodes()

    def showResultNodes(self) -> None:
        p = self._parameterNode
        self.ui.seedsMarkupsWidget.setCurrentNode(p.seeds if p else None)
        self.ui.segmentsTableView.setSegmentationNode(p.segmentation if p else None)
        self.ui.resultsTableView.setMRMLTableNode(p.table if p else None)

    def updateButtons(self, caller=None, event=None) -> None:
        p = self._parameterNode
        running = self._task is not None
        hasInput = bool(p and p.inputVolume)
        self.ui.segmentButton.enabled = running or hasInput
        self.ui.segmentButton.text = _("Cancel") if running else _("Segment aneurysms")
        self.ui.refineButton.enabled = (not running and hasInput and p.seeds is not None)
        self.ui.refineButton.text = (_("Cancel") if running and self._taskIsRefine else _("Refine from seeds"))
        if running and self._taskIsRefine:
            self.ui.refineButton.enabled = True
            self.ui.segmentButton.enabled = False
        hasSegments = bool(p and p.segmentation and p.segmentation.GetSegmentation().GetNumberOfSegments() > 0)
        self.ui.exportStlButton.enabled = hasSegments and not running
        for widget in (self.ui.inputVolumeSelector, self.ui.deviceComboBox, self.ui.detectionThresholdSliderWidget,
                       self.ui.loadSampleButton):
            widget.enabled = not running

    def updateDependenciesMessage(self) -> bool:
        """Show what is missing (packages, weights); True when everything is there."""
        missing = self.logic.missingPackages()
        modelProblem = self.logic.modelProblem()
        messages = []
        if missing:
            messages.append(_("Missing Python packages: {packages}.").format(packages=", ".join(missing)))
        if modelProblem:
            messages.append(modelProblem)
        self.ui.dependenciesLabel.text = " ".join(messages)
        self.ui.installDependenciesButton.visible = bool(missing)
        self.ui.dependenciesFrame.visible = bool(messages)
        return not messages

    # -- actions

    def onInstallDependencies(self) -> None:
        missing = self.logic.missingPackages()
        if not missing:
            self.updateDependenciesMessage()
            return
        if not slicer.util.confirmOkCancelDisplay(
                _("AneurysmSeg needs these Python packages: {packages}.\nInstall them now? This may take several "
                  "minutes and needs an internet connection.").format(packages=", ".join(missing))):
            return
        with slicer.util.tryWithErrorDisplay(_("Installing the Python packages failed."), waitCursor=True):
            self.logic.installPackages(missing)
        self.updateDependenciesMessage()

    def onLoadSample(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Loading the sample failed."), waitCursor=True):
            volumeNode = self.logic.loadSample()
            self._parameterNode.inputVolume = volumeNode

    def onSegmentButton(self) -> None:
        if self._task is not None:
            self.cancelTask()
            return
        self.startTask(refine=False)

    def onRefineButton(self) -> None:
        if self._task is not None:
            self.cancelTask()
            return
        self.startTask(refine=True)

    def startTask(self, refine: bool) -> None:
        if not self.updateDependenciesMessage():
            slicer.util.errorDisplay(self.ui.dependenciesLabel.text)
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not start the segmentation."), waitCursor=True):
            if refine:
                task = self.logic.startRefinement(p.inputVolume, p.seeds, device=p.device)
            else:
                task = self.logic.startSegmentation(p.inputVolume, detectionThreshold=p.detectionThreshold,
                                                    device=p.device)
            if task.process is not None:
                logging.info("AneurysmSeg: running %s", " ".join(task.command()))
            self._task, self._taskIsRefine = task, refine
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Refining from seeds...") if refine else _("Segmenting...")
            self._pollTimer.start()
        self.updateButtons()

    def onPollTask(self) -> None:
        task = self._task
        if task is None:
            self._pollTimer.stop()
            return
        finished = task.poll()
        self.ui.progressBar.value = int(round(100 * task.progress))
        if task.status:
            self.ui.statusLabel.text = task.status
        if not finished:
            return
        self._pollTimer.stop()
        self._task = None
        try:
            with slicer.util.tryWithErrorDisplay(_("Segmentation failed."), waitCursor=True):
                try:
                    segmentation, seeds, table = self.logic.finishTask(task)
                except Exception:
                    self.ui.statusLabel.text = _("Failed: {reason}").format(reason=task.errorMessage())
                    raise
                self.setResultNodes(segmentation, seeds, table)
                count = segmentation.GetSegmentation().GetNumberOfSegments()
                self.ui.progressBar.value = 100
                self.ui.statusLabel.text = _("Done: {count} aneurysm(s) found.").format(count=count)
        finally:
            task.cleanup()
            self.updateButtons()

    def cancelTask(self) -> None:
        """Kill the running process; the scene is left exactly as it was."""
        if self._task is None:
            return
        if self._pollTimer:
            self._pollTimer.stop()
        self._task.cancel()
        self._task = None
        if hasattr(self, "ui"):
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Cancelled; the scene is unchanged.")
            self.updateButtons()

    def onExportStlButton(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("STL export failed."), waitCursor=True):
            paths = self.logic.exportStl(p.segmentation, p.stlFolder, p.stlCoordinateSystem)
            self.ui.statusLabel.text = _("Wrote {count} STL file(s) ({cs}) to {folder}.").format(
                count=len(paths), cs=p.stlCoordinateSystem, folder=p.stlFolder)


#
# AneurysmSegLogic
#


class AneurysmSegLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, usable without the GUI (scripts, the self-test, the widget).

    ``segment``/``refine`` run the pipeline in this process and block; ``startSegmentation``/
    ``startRefinement`` run it in a child process for the widget. Both end in
    ``AneurysmSegLib.scene.updateResultNodes``, the only place the scene changes.
    """

    #: Model folder (manifest + TorchScript); None means the weights bundled in Resources/Models.
    #: Scripts may point it at retrained weights.
    modelDir: Optional[Path] = None

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._models = {}
        self._preprocessed = {}  # the last volume's preprocessed scan, so refining runs the fine stage only

    def getParameterNode(self):
        return AneurysmSegParameterNode(super().getParameterNode())

    # -- environment

    @staticmethod
    def moduleDirectory() -> Path:
        return Path(__file__).resolve().parent

    def samplePath(self) -> Path:
        return self.moduleDirectory() / "Resources" / "Sample" / "orig" / "TOF.nii.gz"

    def sampleLocationsPath(self) -> Path:
        """The sample's reference aneurysms, ADAM's location.txt (voxel x, y, z, radius in mm)."""
        return self.moduleDirectory() / "Resources" / "Sample" / "location.txt"

    @staticmethod
    def missingPackages() -> list:
        """Required packages that cannot be imported (checked without importing them)."""
        return [pip for module, pip in REQUIRED_PACKAGES.items() if importlib.util.find_spec(module) is None]

    @staticmethod
    def installPackages(packages: list) -> None:
        """Install missing packages; torch through the PyTorch Utils extension when it is installed
        (it picks the build matching the GPU driver), everything else with pip. Never at import time."""
        if "torch" in packages:
            if hasattr(slicer.modules, "pytorchutils"):
                import PyTorchUtils

                torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True)
                if torch is None:
                    raise RuntimeError(_("PyTorch was not installed."))
            else:
                slicer.util.pip_install("torch")
        others = [p for p in packages if p != "torch"]
        if others:
            slicer.util.pip_install(" ".join(others))

    def modelFolder(self) -> Path:
        return Path(self.modelDir) if self.modelDir else self.moduleDirectory() / "Resources" / "Models"

    def modelManifest(self):
        """The manifest of the weights in use (``modelDir`` or the bundled ones); ModelError if unusable."""
        from AneurysmSegLib.core.manifest import ModelManifest

        return ModelManifest.read(self.modelFolder())

    def modelProblem(self) -> str:
        """Why the weights cannot be used, or '' (the sha256 check runs when loading)."""
        try:
            self.modelManifest()
        except Exception as exc:  # ModelError: missing folder/manifest, wrong format; the message says how to fix
            return _("The model weights cannot be used: {reason}").format(reason=str(exc))
        return ""

    def voiDescription(self) -> str:
        """The fine-stage VOI as the manifest of the weights in use states it (the trained network fixes it)."""
        try:
            manifest = self.modelManifest()
            size, spacing = manifest.voi_size, manifest.fine_spacing[0]
        except Exception:  # modelProblem() reports it; the label still needs a text
            size, spacing = 64, 0.4
        return _("{n} x {n} x {n} voxels at {s:g} mm (fixed by the model)").format(n=size, s=float(spacing))

    def loadSample(self):
        path = self.samplePath()
        if not path.is_file():
            raise FileNotFoundError(_("The bundled sample is missing: {path}").format(path=path))
        return slicer.util.loadVolume(str(path), properties={"name": "AneurysmSeg sample TOF"})

    @staticmethod
    def _deviceArgument(device: str) -> str:
        return {"gpu": "cuda", "cpu": "cpu"}.get(str(device).lower(), "auto")

    def _loadedModels(self, device: str):
        from AneurysmSegLib.core.models import load_models

        key = (self._deviceArgument(device), self.modelDir)
        if key not in self._models:
            self._models[key] = load_models(self.modelDir, device=key[0])
        return self._models[key]

    # -- synchronous API (scripts, tests)

    @staticmethod
    def resultNodes(volumeNode) -> tuple:
        """(segmentation, seeds, table) made by an earlier run on ``volumeNode``; None where absent."""
        from AneurysmSegLib.slicer import scene

        return scene.resultNodesOf(volumeNode) if volumeNode else (None, None, None)

    def segment(self, volumeNode, detectionThreshold: Optional[float] = None, device: str = "auto",
                progress: Optional[Callable[[float, str], None]] = None,
                cancel: Optional[Callable[[], bool]] = None):
        """Detect and segment; returns (segmentationNode, seedsNode, tableNode), or None if cancelled
        (the scene is then unchanged). Re-running updates the same nodes. ``detectionThreshold=None``
        uses the threshold stored in the models' manifest."""
        from AneurysmSegLib.slicer import runners, scene

        result = runners.runPipeline(volumeNode, detect=True, detectionThreshold=detectionThreshold,
                                   models=self._loadedModels(device), progress=progress, cancel=cancel,
                                   preprocessedCache=self._preprocessed)
        if result is None:
            return None
        return scene.updateResultNodes(volumeNode, result, *self.resultNodes(volumeNode))

    def refine(self, volumeNode, seedsNode, device: str = "auto",
               progress: Optional[Callable[[float, str], None]] = None,
               cancel: Optional[Callable[[], bool]] = None):
        """Fine stage only, one VOI per current seed: moved seeds move their segments, deleted seeds
        remove theirs, new seeds add segments. Returns the result nodes, or None if cancelled."""
        from AneurysmSegLib.slicer import runners, scene

        result = runners.refineFromSeeds(volumeNode, seedsNode, models=self._loadedModels(device),
                                       progress=progress, cancel=cancel, preprocessedCache=self._preprocessed)
        if result is None:
            return None
        segmentation, previousSeeds, table = self.resultNodes(volumeNode)
        return scene.updateResultNodes(volumeNode, result, segmentation, seedsNode or previousSeeds, table)

    def exportStl(self, segmentationNode, folder, coordinateSystem: str = "LPS") -> list:
        """One STL per aneurysm segment into ``folder`` (LPS or RAS); returns the file paths."""
        from AneurysmSegLib.slicer import scene

        return scene.exportStl(segmentationNode, folder, coordinateSystem)

    # -- background API (the widget)

    def startSegmentation(self, volumeNode, detectionThreshold: Optional[float] = None, device: str = "auto"):
        """Start ``aneurysmseg segment`` in a child process; poll the returned task, then call finishTask."""
        from AneurysmSegLib.slicer import runners

        task = runners.BackgroundSegmentation(volumeNode, detect=True, detectionThreshold=detectionThreshold,
                                            device=self._deviceArgument(device), modelDir=self.modelDir)
        task.start()
        return task

    def startRefinement(self, volumeNode, seedsNode, device: str = "auto"):
        """Start the fine stage only (``--no-detect --seeds``) from the current seeds in a child process."""
        from AneurysmSegLib.slicer import runners, scene

        task = runners.BackgroundSegmentation(volumeNode, seeds=scene.seedsFromMarkupsNode(seedsNode), detect=False,
                                            device=self._deviceArgument(device), modelDir=self.modelDir)
        task.resultSeedsNode = seedsNode
        task.start()
        return task

    def finishTask(self, task):
        """Put a finished task's result into the scene (raises the process's error if it failed)."""
        from AneurysmSegLib.slicer import scene

        result = task.result()
        segmentation, seeds, table = self.resultNodes(task.volumeNode)
        seeds = getattr(task, "resultSeedsNode", None) or seeds
        return scene.updateResultNodes(task.volumeNode, result, segmentation, seeds, table)


#
# AneurysmSegTest
#


class AneurysmSegTest(ScriptedLoadableModuleTest):
    """Self-test run by Slicer's test runner: the bundled sample end to end."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentSample()

    def test_SegmentSample(self):
        import tempfile

        self.delayDisplay("Loading the bundled sample")
        logic = AneurysmSegLogic()
        volumeNode = logic.loadSample()
        self.assertIsNotNone(volumeNode)

        self.delayDisplay("Segmenting")
        segmentation, seeds, table = logic.segment(volumeNode, device="CPU")
        self.assertGreaterEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 1)
        self.assertEqual(table.GetNumberOfRows(), segmentation.GetSegmentation().GetNumberOfSegments())
        self.assertGreaterEqual(seeds.GetNumberOfControlPoints(), 1)

        # every reference aneurysm (location.txt: voxel x, y, z, radius mm) is found by ADAM's rule:
        # a segment's centroid (table, RAS) lies within the aneurysm's radius
        truth = self.referenceAneurysms(logic, volumeNode)
        self.assertGreaterEqual(len(truth), 1)
        self.assertAllFound(table, truth)

        self.delayDisplay("Re-running updates the same nodes")
        nodeCount = slicer.mrmlScene.GetNumberOfNodes()
        again = logic.segment(volumeNode, device="CPU")
        self.assertEqual(again[0].GetID(), segmentation.GetID())
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodeCount)

        self.delayDisplay("Exporting STL")
        with tempfile.TemporaryDirectory() as folder:
            paths = logic.exportStl(segmentation, folder, "LPS")
            self.assertEqual(len(paths), segmentation.GetSegmentation().GetNumberOfSegments())
            self.assertTrue(all(os.path.getsize(p) > 84 for p in paths))

        self.delayDisplay("Deleting every seed and refining removes every segment")
        seeds.RemoveAllControlPoints()
        logic.refine(volumeNode, seeds, device="CPU")
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 0)
        self.assertEqual(table.GetNumberOfRows(), 0)

        self.delayDisplay("A seed placed on each aneurysm and refining finds them again")
        for centre, _radius in truth:
            seeds.AddControlPoint(vtk.vtkVector3d(*centre), "")
        logic.refine(volumeNode, seeds, device="CPU")
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), len(truth))
        self.assertAllFound(table, truth)
        self.delayDisplay("Test passed")

    @staticmethod
    def referenceAneurysms(logic, volumeNode) -> list:
        """(RAS centre, radius mm) of each aneurysm listed in the sample's location.txt."""
        import numpy as np

        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        truth = []
        for line in logic.sampleLocationsPath().read_text().splitlines():
            if line.strip():
                x, y, z, radius = (float(v) for v in line.split(","))
                truth.append((np.array(ijkToRas.MultiplyPoint([x, y, z, 1.0])[:3]), radius))
        return truth

    def assertAllFound(self, table, truth) -> None:
        import numpy as np

        centroids = np.array([[float(table.GetCellText(r, c)) for c in (4, 5, 6)] for r in range(table.GetNumberOfRows())])
        self.assertGreater(len(centroids), 0)
        for centre, radius in truth:
            self.assertLessEqual(np.linalg.norm(centroids - centre, axis=1).min(), radius)
