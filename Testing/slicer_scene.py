"""An application-like MRML scene under slicer-core (no Slicer application, no Qt).

Slicer's application wires a scene, an application logic, the colour nodes and one logic per module
at start-up; code written for Slicer (AneurysmSegLib.slicer.scene, ``slicer.util`` helpers) expects that
wiring. :func:`createSlicerScene` does the same with the logics slicer-core ships, and sets
``slicer.mrmlScene``/``slicer.modules`` so that ``slicer.util`` works as it does inside Slicer.
"""

from __future__ import annotations

import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

import slicer
from slicer import (
    vtkDataIOManagerLogic,
    vtkMRMLCrosshairNode,
    vtkMRMLRemoteIOLogic,
    vtkMRMLScene,
    vtkMRMLSliceNode,
    vtkSlicerApplicationLogic,
    vtkSlicerColorLogic,
    vtkSlicerMarkupsLogic,
    vtkSlicerSegmentationsModuleLogic,
    vtkSlicerSubjectHierarchyModuleLogic,
    vtkSlicerTablesLogic,
    vtkSlicerVolumesLogic,
)
from vtkmodules.vtkCommonCore import vtkCollection


@dataclass
class SlicerScene:
    """The scene and the module logics an application would hold; keep it alive while in use."""

    scene: vtkMRMLScene
    appLogic: vtkSlicerApplicationLogic
    volumesLogic: vtkSlicerVolumesLogic
    segmentationsLogic: vtkSlicerSegmentationsModuleLogic
    markupsLogic: vtkSlicerMarkupsLogic
    tablesLogic: vtkSlicerTablesLogic
    subjectHierarchyLogic: vtkSlicerSubjectHierarchyModuleLogic
    colorLogic: vtkSlicerColorLogic
    remoteIOLogic: vtkMRMLRemoteIOLogic
    dataIOManagerLogic: vtkDataIOManagerLogic
    cacheDirectory: tempfile.TemporaryDirectory

    def loadVolume(self, path: str | Path, name: str | None = None):
        """Load a NIfTI/NRRD file as Slicer's "Add data" does (volumes logic, archetype reader)."""
        path = Path(path)
        node = self.volumesLogic.AddArchetypeVolume(str(path), name or path.name.split(".")[0], 0)
        if node is None:
            raise RuntimeError(f"Slicer's volumes logic could not load {path}")
        return node

    def close(self) -> None:
        """Clear the scene and release the slicer globals set by :func:`createSlicerScene`."""
        self.scene.Clear(True)
        if getattr(slicer, "mrmlScene", None) is self.scene:
            slicer.mrmlScene = None
            if isinstance(getattr(slicer, "modules", None), types.SimpleNamespace):
                del slicer.modules
        self.cacheDirectory.cleanup()


def _initLogic(logic, scene: vtkMRMLScene, appLogic: vtkSlicerApplicationLogic, name: str):
    logic.SetMRMLApplicationLogic(appLogic)
    logic.SetMRMLScene(scene)
    appLogic.SetModuleLogic(name, logic)
    return logic


def createSlicerScene() -> SlicerScene:
    """Scene + application logic + colour, volumes, segmentations, markups, tables and subject
    hierarchy logics, wired as ``qSlicerCoreApplication`` does; sets ``slicer.mrmlScene``."""
    scene = vtkMRMLScene()
    crosshair = vtkMRMLCrosshairNode()
    crosshair.SetCrosshairName("default")
    scene.AddNode(crosshair)

    cache = tempfile.TemporaryDirectory(prefix="aneurysmseg-mrml-")
    appLogic = vtkSlicerApplicationLogic()
    # Slicer's colour logic looks for colour files under <home>/<share>/ColorFiles: an empty one
    appLogic.SetHomeDirectory(cache.name)
    appLogic.SetShareDirectory("share")
    (Path(cache.name) / "share" / "ColorFiles").mkdir(parents=True)
    appLogic.SetMRMLScene(scene)
    appLogic.GetColorLogic().SetMRMLScene(scene)
    appLogic.GetColorLogic().AddDefaultColorNodes()
    appLogic.SetSliceLogics(vtkCollection())
    appLogic.SetViewLogics(vtkCollection())
    colorLogic = _initLogic(vtkSlicerColorLogic(), scene, appLogic, "Colors")
    vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)


    # a data IO manager with a cache folder, as the application has: .mrb reading needs it
    remoteIO = vtkMRMLRemoteIOLogic()
    remoteIO.SetMRMLScene(scene)
    remoteIO.SetMRMLApplicationLogic(appLogic)
    (Path(cache.name) / "RemoteIO").mkdir()
    remoteIO.GetCacheManager().SetRemoteCacheDirectory(str(Path(cache.name) / "RemoteIO"))
    dataIOManagerLogic = vtkDataIOManagerLogic()
    dataIOManagerLogic.SetMRMLScene(scene)
    dataIOManagerLogic.SetMRMLApplicationLogic(appLogic)
    dataIOManagerLogic.SetAndObserveDataIOManager(remoteIO.GetDataIOManager())
    remoteIO.AddDataIOToScene()

    handles = SlicerScene(
        scene=scene,
        appLogic=appLogic,
        volumesLogic=_initLogic(vtkSlicerVolumesLogic(), scene, appLogic, "Volumes"),
        segmentationsLogic=_initLogic(vtkSlicerSegmentationsModuleLogic(), scene, appLogic, "Segmentations"),
        markupsLogic=_initLogic(vtkSlicerMarkupsLogic(), scene, appLogic, "Markups"),
        tablesLogic=_initLogic(vtkSlicerTablesLogic(), scene, appLogic, "Tables"),
        subjectHierarchyLogic=_initLogic(vtkSlicerSubjectHierarchyModuleLogic(), scene, appLogic, "SubjectHierarchy"),
        colorLogic=colorLogic,
        remoteIOLogic=remoteIO,
        dataIOManagerLogic=dataIOManagerLogic,
        cacheDirectory=cache,
    )
    slicer.mrmlScene = scene
    # slicer.util's segment/array helpers look logics up as slicer.modules.<name>.logic()
    slicer.modules = types.SimpleNamespace(
        segmentations=types.SimpleNamespace(logic=lambda: handles.segmentationsLogic),
        markups=types.SimpleNamespace(logic=lambda: handles.markupsLogic),
        volumes=types.SimpleNamespace(logic=lambda: handles.volumesLogic),
        tables=types.SimpleNamespace(logic=lambda: handles.tablesLogic),
    )
    return handles
