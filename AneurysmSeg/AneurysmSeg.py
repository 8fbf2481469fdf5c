"""3D Slicer module: segment cerebral aneurysms in a TOF-MRA (coarse-to-fine, DeepMedic + SE 3D U-Net).

Thin by design: the pipeline lives in AneurysmSegLib (pure Python), the MRML work in
AneurysmSegLib.slicer (which also runs under slicer-core, where the pytest suite covers it). This file
holds Slicer's scripted-module classes: module description, typed parameter node, widget, logic, test.

Supported: Slicer 5.8 and later. Every Slicer API called here or in AneurysmSegLib.slicer is listed in
Testing/slicer_api.py and checked against Slicer's sources at the release tags. MRML node classes of
loadable modules (markups) are not imported at module load: before Slicer 5.10 they appear in
``slicer`` only once their module is set up, and modules are set up in alphabetical order.
"""

import importlib.util
import logging
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

#: Python packages the module needs besides Slicer's own numpy/SimpleITK/vtk (import name: pip name).
#: torch is installed through the PyTorch extension (PyTorch Utils), never with a plain pip install.
REQUIRED_PACKAGES = {"torch": None, "scipy": "scipy", "psutil": "psutil"}

#: Oldest torch checked to load the bundled TorchScript weights and give the same labels (see README).
MINIMUM_TORCH_VERSION = "2.0"


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


def loadTerminology() -> None:
    """Register the module's terminology ("Aneurysm" of "Cerebral artery") with Slicer's terminologies."""
    from AneurysmSegLib.slicer import scene

    scene.loadTerminology(slicer.modules.terminologies.logic())


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
        self.parent.contributors = ["AneurysmSeg developers (AneurysmSeg team)"]
        self.parent.helpText = _("""
Segments unruptured cerebral aneurysms in a 3D time-of-flight MR angiography with a coarse-to-fine
method: a DeepMedic network proposes aneurysm regions (VOI seeds) along the arteries, then a
dual-channel squeeze-and-excitation 3D U-Net segments a 64&sup3; volume of interest around each seed.
<br><br>
Each finding has a seed (S1, S2, ...), a segment (SNOMED CT "Aneurysm" of "Cerebral artery") and a row
in the findings table: click a row to centre the views on it, accept or reject it. Move, delete or add
seeds (also before any run) and click "Refine from seeds": only the fine stage runs, on the seeds that
changed; segments you edited in the Segment Editor are kept unless you agree to replace them.
"Export to STL" writes one surface per aneurysm. The findings table also gives each finding's score
from the false-positive reduction (findings below its threshold are dropped), its site and its
morphology (neck, dome, aspect and size ratios).
<br><br>
<b>The bundled weights were trained on synthetic phantoms: for demonstration and testing, not for
clinical use.</b> They are not validated on real scans (no labelled real TOF-MRA was available): on
held-out phantoms they find 9 of 20 aneurysms at 0.56 false positives per case, and on two real scans
without known aneurysms they report 7 false positives. A warning on the status line and in a message box
says when the scan is not what the networks were trained on (a vessels-only export, no arteries found,
voxels coarser than 1.5 mm); skull-stripped volumes, slabs and crops are recognised and handled without
one. Figures and limitations: the extension's README.
""")
        self.parent.acknowledgementText = _("""
The method follows Chen et al., coarse-to-fine segmentation of cerebral aneurysms in 3D TOF-MRA,
building on DeepMedic (Kamnitsas et al.), the 3D U-Net variant of Isensee et al. and
squeeze-and-excitation blocks (Hu et al.). The data layout follows the ADAM 2020 challenge.
The module structure follows 3D Slicer's scripted module template.
""")
        slicer.app.connect("startupCompleted()", loadTerminology)


#
# AneurysmSegParameterNode
#


@parameterNodeWrapper
class AneurysmSegParameterNode:
    """
    The parameters needed by module (the result nodes are referenced from the input volume).

    inputVolume - The TOF-MRA to segment.
    device - Where the networks run: auto (GPU when available), CPU or GPU.
    detectionThreshold - Probability above which the coarse stage proposes a region (default: the
        threshold stored with the bundled weights).
    stlFolder, stlCoordinateSystem - Where and in which coordinates STL files are written.
    """

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    device: Annotated[str, Choice(["auto", "CPU", "GPU"])] = "auto"
    detectionThreshold: Annotated[float, WithinRange(0.05, 0.99)] = bundledDetectionThreshold()
    stlFolder: Path = Path.home()
    stlCoordinateSystem: Annotated[str, Choice(["LPS", "RAS"])] = "LPS"


#
# AneurysmSegWidget
#


class AneurysmSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel. The networks run in a kept-alive worker process polled by a timer, so Slicer
    stays responsive and a refine after "Segment" runs only the fine stage."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None  # AneurysmSegLib.slicer.runners.Run while the worker computes it
        self._job = None
        self._pollTimer = None
        self._seedsNode = None

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
        self.ui.acceptButton.connect("clicked(bool)", lambda: self.onReview(accept=True))
        self.ui.rejectButton.connect("clicked(bool)", lambda: self.onReview(accept=False))
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputVolumeChanged)
        self.ui.resultsTableView.connect("selectionChanged()", self.onFindingSelected)

        self.ui.voiSizeLabel.text = self.logic.voiDescription()
        try:  # also when the module is reloaded after start-up (startupCompleted has passed)
            loadTerminology()
        except Exception as exc:
            logging.warning("AneurysmSeg: the terminology could not be loaded: %s", exc)
        self.updateDependenciesMessage()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        self.cancelTask()
        if self._pollTimer:
            self._pollTimer.stop()
        if self.logic:
            self.logic.stopWorker()
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
        """Results belong to a volume: show its seeds (created empty, so seeds can be placed before any
        run), findings and table."""
        if not self._parameterNode or self._run is not None:
            return
        self.showResultNodes()

    def showResultNodes(self) -> None:
        p = self._parameterNode
        volume = p.inputVolume if p else None
        segmentation, seeds, table = self.logic.resultNodes(volume)
        if volume is not None and seeds is None:
            seeds = self.logic.seedsNode(volume)
        self.observeSeeds(seeds)
        self.ui.seedsMarkupsWidget.setCurrentNode(seeds)
        self.ui.segmentsTableView.setSegmentationNode(segmentation)
        self.ui.resultsTableView.setMRMLTableNode(table)
        self.updateButtons()

    def observeSeeds(self, seedsNode) -> None:
        """Keep the seed labels unique (S1, S2, ...) as the user places points; update the buttons."""
        if self._seedsNode is seedsNode:
            return
        if self._seedsNode is not None:
            self.removeObserver(self._seedsNode, self._seedsNode.PointPositionDefinedEvent, self.onSeedsChanged)
            self.removeObserver(self._seedsNode, self._seedsNode.PointRemovedEvent, self.onSeedsChanged)
        self._seedsNode = seedsNode
        if seedsNode is not None:
            self.addObserver(seedsNode, seedsNode.PointPositionDefinedEvent, self.onSeedsChanged)
            self.addObserver(seedsNode, seedsNode.PointRemovedEvent, self.onSeedsChanged)

    def onSeedsChanged(self, caller, event) -> None:
        from AneurysmSegLib.slicer import scene

        scene.seedNumbering(caller)
        self.updateButtons()

    def updateButtons(self, caller=None, event=None) -> None:
        p = self._parameterNode
        running = self._run is not None
        refining = running and self._run.kind == "refine"
        hasInput = bool(p and p.inputVolume)
        segmentation, seeds, table = self.logic.resultNodes(p.inputVolume if hasInput else None)
        hasSeeds = bool(seeds and seeds.GetNumberOfControlPoints() > 0)
        hasFindings = bool(table and table.GetNumberOfRows() > 0)
        self.ui.segmentButton.enabled = (running and not refining) or (hasInput and not running)
        self.ui.segmentButton.text = _("Cancel") if running and not refining else _("Segment aneurysms")
        self.ui.refineButton.enabled = refining or (not running and hasInput and (hasSeeds or hasFindings))
        self.ui.refineButton.text = _("Cancel") if refining else _("Refine from seeds")
        self.ui.exportStlButton.enabled = hasFindings and not running
        self.ui.acceptButton.enabled = self.ui.rejectButton.enabled = hasFindings and not running
        for widget in (self.ui.inputVolumeSelector, self.ui.deviceComboBox, self.ui.detectionThresholdSliderWidget,
                       self.ui.loadSampleButton):
            widget.enabled = not running

    def setStatus(self, text: str, progress: Optional[float] = None) -> None:
        """One readable line in the panel and in Slicer's status bar."""
        self.ui.statusLabel.text = text
        if progress is not None:
            self.ui.progressBar.value = int(round(100 * progress))
        slicer.util.showStatusMessage(f"AneurysmSeg: {text}", 5000)

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
                _("AneurysmSeg needs these Python packages: {packages}.\nPyTorch is installed by the PyTorch "
                  "extension (the build that suits this computer's GPU, or the CPU build).\nInstall them now? "
                  "This may take several minutes and needs an internet connection.").format(
                      packages=", ".join(missing))):
            return
        with slicer.util.tryWithErrorDisplay(_("Installing the Python packages failed."), waitCursor=True):
            self.setStatus(_("Installing {packages}...").format(packages=", ".join(missing)))
            self.logic.installPackages(missing)
            self.setStatus(_("Python packages installed."))
        self.updateDependenciesMessage()

    def onLoadSample(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Loading the sample failed."), waitCursor=True):
            volumeNode = self.logic.loadSample()
            self._parameterNode.inputVolume = volumeNode

    def onSegmentButton(self) -> None:
        if self._run is not None:
            self.cancelTask()
            return
        self.startTask(refine=False)

    def onRefineButton(self) -> None:
        if self._run is not None:
            self.cancelTask()
            return
        self.startTask(refine=True)

    def askReplaceEdited(self, conflicts) -> bool:
        names = ", ".join(sorted({c.segmentId for c in conflicts}))
        return slicer.util.confirmYesNoDisplay(
            _("You edited these segments by hand: {names}.\nReplace your edits with a new segmentation? "
              "(No keeps them as they are.)").format(names=names))

    def startTask(self, refine: bool) -> None:
        if not self.updateDependenciesMessage():
            slicer.util.errorDisplay(self.ui.dependenciesLabel.text)
            return
        p = self._parameterNode
        try:
            run = self.logic.prepareRun(p.inputVolume, refine=refine)
            if run.editedConflicts and self.askReplaceEdited(run.editedConflicts):
                run = self.logic.prepareRun(p.inputVolume, refine=refine, replaceEdited=True)
            job = self.logic.submitRun(run, detectionThreshold=p.detectionThreshold, device=p.device)
        except Exception as exc:
            self.showError(_("Could not start the segmentation."), exc)
            return
        if job is None:  # nothing changed that needs the networks (e.g. seeds deleted only)
            self.finishRun(run, None)
            return
        self._run, self._job = run, job
        self.setStatus(job.status, 0.0)
        self._pollTimer.start()
        self.updateButtons()

    def onPollTask(self) -> None:
        run = self._run
        if run is None:
            self._pollTimer.stop()
            return
        job = self.logic.pollWorker()
        if job is None:
            return
        self.setStatus(job.status, job.progress)
        if not job.finished:
            return
        self._pollTimer.stop()
        self._run = self._job = None
        if job.state == "cancelled":
            self.setStatus(_("Cancelled; the scene is unchanged."), 0.0)
        elif job.state == "failed":
            logging.error("AneurysmSeg: %s\n%s", job.message, job.details)
            self.setStatus(_("Failed: {reason}").format(reason=job.message), 0.0)
            slicer.util.errorDisplay(_("Segmentation failed: {reason}").format(reason=job.message),
                                     detailedText=job.details)
        else:
            try:
                self.finishRun(run, job.result())
            except Exception as exc:
                self.showError(_("The result could not be put in the scene."), exc)
            else:
                self.showWarnings(job.warnings)
        self.updateButtons()

    def finishRun(self, run, result) -> None:
        with slicer.util.WaitCursor():
            segmentation, seeds, table = self.logic.applyRun(run, result)
        self.showResultNodes()
        rows = table.GetNumberOfRows()
        self.setStatus(_("Done: {count} finding(s). Click a row to see it; accept or reject it.").format(count=rows),
                       1.0)

    def showWarnings(self, messages) -> None:
        """Inputs the tool half-understood: in the status line and a message box, and in the log."""
        if not messages:
            return
        for message in messages:
            logging.warning("AneurysmSeg: %s", message)
        self.setStatus(_("Done, with warnings: {warnings}").format(warnings=" ".join(messages)))
        slicer.util.warningDisplay("\n\n".join(messages), windowTitle=_("AneurysmSeg: check the input"))

    def showError(self, message: str, exc: Exception) -> None:
        """A message box with the reason; the traceback goes to the log (and the box's details)."""
        import traceback

        details = traceback.format_exc()
        logging.error("AneurysmSeg: %s %s\n%s", message, exc, details)
        self.setStatus(f"{message} {exc}", 0.0)
        slicer.util.errorDisplay(f"{message}\n{exc}", detailedText=details)

    def cancelTask(self) -> None:
        """Stop the running job (the worker keeps its models; it is killed if it does not stop)."""
        if self._run is None or self.logic is None:
            return
        self.logic.cancelWorker()
        if hasattr(self, "ui"):
            self.setStatus(_("Cancelling..."))

    def selectedFinding(self) -> str:
        """The seed ID of the table's current row (the view may be sorted: map to the table's row)."""
        view = self.ui.resultsTableView
        table = view.mrmlTableNode()
        index = view.currentIndex()
        if table is None or not index.isValid():
            return ""
        return self.logic.findingOfRow(table, view.sortFilterProxyModel().mapToSource(index).row())

    def onFindingSelected(self) -> None:
        seedId = self.selectedFinding()
        if seedId and self._parameterNode and self._parameterNode.inputVolume:
            with slicer.util.tryWithErrorDisplay(_("Could not show the finding.")):
                self.logic.jumpToFinding(self._parameterNode.inputVolume, seedId)

    def onReview(self, accept: bool) -> None:
        seedId = self.selectedFinding()
        if not seedId:
            self.setStatus(_("Select a finding in the table first."))
            return
        with slicer.util.tryWithErrorDisplay(_("Could not change the finding.")):
            self.logic.reviewFinding(self._parameterNode.inputVolume, seedId, accept)
            self.setStatus(_("Finding accepted.") if accept else _("Finding rejected: removed, and not proposed again."))
        self.updateButtons()

    def onExportStlButton(self) -> None:
        p = self._parameterNode
        segmentation, _seeds, _table = self.logic.resultNodes(p.inputVolume)
        with slicer.util.tryWithErrorDisplay(_("STL export failed."), waitCursor=True):
            paths = self.logic.exportStl(segmentation, p.stlFolder, p.stlCoordinateSystem)
            self.setStatus(_("Wrote {count} STL file(s) ({cs}) to {folder}.").format(
                count=len(paths), cs=p.stlCoordinateSystem, folder=p.stlFolder))


#
# AneurysmSegLogic
#


class AneurysmSegLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, usable without the GUI (scripts, the self-test, the widget).

    ``segment``/``refine`` run the pipeline in this process and block; ``prepareRun``/``submitRun``/
    ``pollWorker``/``applyRun`` use the kept-alive worker process, as the widget does. Both paths plan
    and apply with AneurysmSegLib.slicer (runners, findings), the only code that changes the scene.
    """

    #: Model folder (manifest + TorchScript); None means the weights bundled in Resources/Models.
    #: Scripts may point it at retrained weights.
    modelDir: Optional[Path] = None

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._models = {}
        self._preprocessed = {}  # the last volume's preprocessed scan, so refining runs the fine stage only
        self._worker = None
        self._workerSettings = None

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
    def installedTorchVersion() -> Optional[str]:
        """torch's version without importing it (None when not installed)."""
        import importlib.metadata

        try:
            return importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            return None

    @classmethod
    def missingPackages(cls) -> list:
        """Required packages that cannot be imported (checked without importing them); torch older
        than MINIMUM_TORCH_VERSION counts as missing."""
        missing = [module for module in REQUIRED_PACKAGES if importlib.util.find_spec(module) is None]
        version = cls.installedTorchVersion()
        if "torch" not in missing and version is not None and cls.versionTuple(version) < cls.versionTuple(
                MINIMUM_TORCH_VERSION):
            missing.append("torch")
        return missing

    @staticmethod
    def versionTuple(version: str) -> tuple:
        parts = []
        for part in version.split("+")[0].split(".")[:3]:
            digits = "".join(ch for ch in part if ch.isdigit())
            parts.append(int(digits) if digits else 0)
        return tuple(parts)

    @staticmethod
    def installPackages(packages: list) -> None:
        """Install missing packages after the caller's one confirmation: torch through PyTorch Utils
        (the PyTorch extension picks the build for this computer's GPU or CPU), the rest with pip."""
        if "torch" in packages:
            try:
                import PyTorchUtils
            except ModuleNotFoundError as exc:
                raise RuntimeError(_("AneurysmSeg needs the PyTorch extension: install it from the Extensions "
                                     "Manager and restart Slicer.")) from exc
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}")
            if torch is None:
                raise RuntimeError(_("PyTorch was not installed."))
        others = [REQUIRED_PACKAGES[p] for p in packages if p != "torch" and REQUIRED_PACKAGES.get(p)]
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

    # -- result nodes and review

    @staticmethod
    def resultNodes(volumeNode) -> tuple:
        """(segmentation, seeds, table) of ``volumeNode``'s findings; None where absent."""
        from AneurysmSegLib.slicer import scene

        return scene.resultNodesOf(volumeNode) if volumeNode else (None, None, None)

    @staticmethod
    def seedsNode(volumeNode):
        """The volume's seeds (created empty when missing, so seeds can be placed before any run)."""
        from AneurysmSegLib.slicer import findings

        return findings.seedsNodeFor(volumeNode)

    @staticmethod
    def findingOfRow(tableNode, row: int) -> str:
        from AneurysmSegLib.slicer import findings

        return findings.seedIdOfRow(tableNode, row)

    @staticmethod
    def jumpToFinding(volumeNode, seedId: str):
        from AneurysmSegLib.slicer import findings

        return findings.jumpTo(volumeNode, seedId)

    @staticmethod
    def reviewFinding(volumeNode, seedId: str, accept: bool) -> None:
        from AneurysmSegLib.slicer import findings

        if accept:
            findings.setAccepted(volumeNode, seedId, True)
        else:
            findings.reject(volumeNode, seedId)

    # -- synchronous API (scripts, tests)

    def segment(self, volumeNode, detectionThreshold: Optional[float] = None, device: str = "auto",
                progress: Optional[Callable[[float, str], None]] = None,
                cancel: Optional[Callable[[], bool]] = None, replaceEdited: bool = False):
        """Detect and segment in this process; returns (segmentationNode, seedsNode, tableNode), or None
        if cancelled (the scene is then unchanged). Accepted and hand-edited findings are kept."""
        from AneurysmSegLib.slicer import runners

        run = runners.prepareSegment(volumeNode, replaceEdited=replaceEdited)
        result = runners.runInProcess(run, self._loadedModels(device), self._preprocessed, detectionThreshold,
                                      progress, cancel)
        return None if result is None else runners.applyRun(run, result)

    def refine(self, volumeNode, device: str = "auto", progress: Optional[Callable[[float, str], None]] = None,
               cancel: Optional[Callable[[], bool]] = None, replaceEdited: bool = False):
        """Fine stage only, on the seeds that are new or moved; deleted seeds remove their segments,
        unchanged and hand-edited ones stay. Returns the result nodes, or None if cancelled."""
        from AneurysmSegLib.slicer import runners

        run = runners.prepareRefine(volumeNode, replaceEdited=replaceEdited)
        result = None
        if run.needsPipeline:
            result = runners.runInProcess(run, self._loadedModels(device), self._preprocessed, None, progress, cancel)
            if result is None:
                return None
        return runners.applyRun(run, result)

    def exportStl(self, segmentationNode, folder, coordinateSystem: str = "LPS") -> list:
        """One STL per aneurysm segment into ``folder`` (LPS or RAS); returns the file paths."""
        from AneurysmSegLib.slicer import scene

        return scene.exportStl(segmentationNode, folder, coordinateSystem)

    # -- the kept-alive worker (the widget, the background self-test)

    def prepareRun(self, volumeNode, refine: bool, replaceEdited: bool = False):
        from AneurysmSegLib.slicer import runners

        if volumeNode is None:
            raise ValueError(_("Select a TOF-MRA volume first."))
        return (runners.prepareRefine if refine else runners.prepareSegment)(volumeNode, replaceEdited=replaceEdited)

    def worker(self, device: str = "auto"):
        """The worker client for these settings (restarted when the device or model folder changes)."""
        from AneurysmSegLib.slicer.worker import WorkerClient

        settings = (self._deviceArgument(device), self.modelDir)
        if self._worker is None or self._workerSettings != settings:
            self.stopWorker()
            self._worker = WorkerClient(modelDir=self.modelDir, device=settings[0], log=logging.info)
            self._workerSettings = settings
        return self._worker

    def submitRun(self, run, detectionThreshold: Optional[float] = None, device: str = "auto"):
        """Send ``run`` to the worker; returns its job (None when no network has to run)."""
        from AneurysmSegLib.slicer import runners

        return runners.submit(run, self.worker(device), detectionThreshold)

    def pollWorker(self):
        return self._worker.poll() if self._worker is not None else None

    def cancelWorker(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    def stopWorker(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    @staticmethod
    def applyRun(run, result):
        from AneurysmSegLib.slicer import runners

        return runners.applyRun(run, result)


#
# AneurysmSegTest
#


class AneurysmSegTest(ScriptedLoadableModuleTest):
    """Self-tests run by Slicer's test runner.

    test_FindingsWithoutNetworks runs everywhere, also on extension build machines without torch: the
    sample's reference labels as findings (terminology, table, jump, accept/reject, seeds before a
    run). test_BackgroundSegmentation needs torch (it is skipped, with a message, without it): the
    bundled sample through the worker process the panel uses, then a refine of a moved seed."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_FindingsWithoutNetworks()
        self.setUp()
        self.test_BackgroundSegmentation()

    def test_FindingsWithoutNetworks(self):
        import numpy as np
        import SimpleITK as sitk

        from AneurysmSegLib.core.result import Aneurysm, Seed, SegmentationResult
        from AneurysmSegLib.slicer import scene

        self.delayDisplay("Seeds before any run, the terminology, reference findings")
        logic = AneurysmSegLogic()
        loadTerminology()
        volumeNode = logic.loadSample()
        seeds = logic.seedsNode(volumeNode)
        self.assertEqual(seeds.GetNumberOfControlPoints(), 0)
        truth = self.referenceAneurysms(logic, volumeNode)
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(logic.sampleLocationsPath().parent / "aneurysms.nii.gz")))
        image = scene.imageFromVolumeNode(volumeNode)
        from scipy import ndimage

        components, count = ndimage.label(labels > 0)
        self.assertEqual(count, len(truth))
        resultSeeds, aneurysms = [], []
        for label in range(1, count + 1):
            centroid = image.geometry.index_to_lps(np.array(ndimage.center_of_mass(components == label))[::-1])
            seed = Seed(position_lps=tuple(float(v) for v in centroid), confidence=0.9, source="detector")
            resultSeeds.append(seed)
            aneurysms.append(Aneurysm(id=label, seed=seed, centroid_lps=tuple(float(v) for v in centroid),
                                      centroid_voxel=(0.0, 0.0, 0.0), volume_mm3=1.0, max_diameter_mm=1.0,
                                      confidence=0.9, voxel_count=int((components == label).sum())))
        result = SegmentationResult(components.astype(np.uint16), image.geometry, aneurysms, resultSeeds)
        segmentation, seeds, table = logic.applyRun(logic.prepareRun(volumeNode, refine=False), result)
        self.assertEqual(table.GetNumberOfRows(), count)
        segment = segmentation.GetSegmentation().GetNthSegment(0)
        tag = vtk.reference("")
        self.assertTrue(segment.GetTag(segment.GetTerminologyEntryTagName(), tag))
        self.assertIn("SCT^85659009^Aneurysm", str(tag))

        self.delayDisplay("A click on a finding centres the views on it")
        seedId = logic.findingOfRow(table, 0)
        position = logic.jumpToFinding(volumeNode, seedId)
        matrix = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode().GetSliceToRAS()
        self.assertLess(np.linalg.norm([matrix.GetElement(i, 3) - position[i] for i in range(3)]), 1.0)

        self.delayDisplay("Accept, reject; a refine keeps both decisions")
        logic.reviewFinding(volumeNode, seedId, accept=True)
        if count > 1:
            logic.reviewFinding(volumeNode, logic.findingOfRow(table, 1), accept=False)
        kept = table.GetNumberOfRows()
        run = logic.prepareRun(volumeNode, refine=True)
        self.assertFalse(run.needsPipeline)
        logic.applyRun(run, None)
        self.assertEqual(table.GetNumberOfRows(), kept)
        self.assertEqual(table.GetCellText(0, 1), "accepted")

        self.delayDisplay("New seeds continue the numbering")
        index = seeds.AddControlPoint(vtk.vtkVector3d(0, 0, 0))
        scene.seedNumbering(seeds)
        labels = [seeds.GetNthControlPointLabel(i) for i in range(seeds.GetNumberOfControlPoints())]
        self.assertEqual(len(set(labels)), len(labels))
        self.assertEqual(seeds.GetNthControlPointLabel(index), f"S{count + 1}")
        self.delayDisplay("Test passed")

    def test_BackgroundSegmentation(self):
        import time

        import numpy as np

        logic = AneurysmSegLogic()
        if logic.missingPackages():
            self.delayDisplay("Skipping the network test: missing " + ", ".join(logic.missingPackages()))
            return
        self.delayDisplay("Segmenting the bundled sample in the worker process")
        volumeNode = logic.loadSample()

        def runInWorker(refine: bool):
            run = logic.prepareRun(volumeNode, refine=refine)
            job = logic.submitRun(run, device="CPU")
            deadline = time.monotonic() + 1800
            while job is not None and not job.finished:
                self.assertLess(time.monotonic(), deadline)
                slicer.app.processEvents()
                logic.pollWorker()
                time.sleep(0.2)
            if job is not None:
                self.assertEqual(job.state, "done", job.message)
            return job, logic.applyRun(run, job.result() if job is not None else None)

        try:
            job, (segmentation, seeds, table) = runInWorker(refine=False)
            truth = self.referenceAneurysms(logic, volumeNode)
            self.assertAllFound(table, truth)

            self.delayDisplay("Move a seed onto each reference aneurysm; refine runs the fine stage only")
            for centre, _radius in truth:
                seeds.AddControlPoint(vtk.vtkVector3d(*(np.asarray(centre) + 0.5)), "")
            job, _nodes = runInWorker(refine=True)
            report = job.result()
            self.assertNotIn("detect", report.timings)
            self.assertNotIn("preprocess", report.timings)
            self.assertAllFound(table, truth)
        finally:
            logic.stopWorker()
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

        columns = [table.GetColumnIndex(name) for name in ("Centroid R", "Centroid A", "Centroid S")]
        centroids = np.array([[float(table.GetCellText(r, c)) for c in columns] for r in range(table.GetNumberOfRows())])
        self.assertGreater(len(centroids), 0)
        for centre, radius in truth:
            self.assertLessEqual(np.linalg.norm(centroids - centre, axis=1).min(), radius)
