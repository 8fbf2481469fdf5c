"""Render the 3D view picture for the extension page: the sample's arteries and its aneurysm segments.

The aneurysms come from the module's own path: the volume is loaded through Slicer's volumes logic
(slicer-core), segmented with the pipeline (bundled weights, or ``--models DIR``), and put in a
segmentation node by AneurysmSegLib.slicer.scene; the surfaces drawn are that node's closed-surface
representation, as Slicer's 3D view shows them. ``--ground-truth`` draws the reference label instead
(when no weights exist yet); the caption says which. Arteries: the pipeline's own artery
extraction (preprocess), in translucent grey. Offscreen (EGL), no display needed:

    VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow .venv/bin/python Resources/Screenshots/render_3d.py \
        [--case AneurysmSeg/Resources/Sample] [--models DIR | --ground-truth] [-o Resources/Screenshots/3d.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import vtk
from vtk.util import numpy_support

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Testing"))  # slicer_scene: the application-like MRML scene
sys.path.insert(0, str(ROOT / "AneurysmSeg"))


def arterySurface(volumeNode) -> vtk.vtkPolyData:
    """The arteries as the pipeline extracts them (preprocess: intracranial, adaptive threshold, on
    the 0.7 mm coarse grid), as a smoothed surface in RAS."""
    from AneurysmSegLib.preprocess import preprocess
    from AneurysmSegLib.slicer import scene

    pre = preprocess(scene.imageFromVolumeNode(volumeNode), coarse_spacing=0.7)
    mask = np.pad(pre.coarse_arteries.astype(np.float32), 1)
    image = vtk.vtkImageData()
    image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
    image.SetOrigin(-1, -1, -1)  # the padding voxel
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(mask.ravel(), deep=True))
    contour = vtk.vtkDiscreteFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, 1)
    g = pre.coarse.geometry
    indexToLps = g.direction_matrix * np.asarray(g.spacing)[None, :]
    indexToRas = np.eye(4)
    indexToRas[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ indexToLps
    indexToRas[:3, 3] = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(g.origin)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, indexToRas[r, c])
    transform = vtk.vtkTransform()
    transform.SetMatrix(matrix)
    toRas = vtk.vtkTransformPolyDataFilter()
    toRas.SetTransform(transform)
    toRas.SetInputConnection(contour.GetOutputPort())
    smooth = vtk.vtkWindowedSincPolyDataFilter()
    smooth.SetInputConnection(toRas.GetOutputPort())
    smooth.SetNumberOfIterations(20)
    smooth.SetPassBand(0.05)
    smooth.NormalizeCoordinatesOn()
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(smooth.GetOutputPort())
    normals.Update()
    return normals.GetOutput()


def actorOf(poly: vtk.vtkPolyData, color, opacity: float = 1.0) -> vtk.vtkActor:
    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputData(poly)
    mapper.ScalarVisibilityOff()
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*color)
    actor.GetProperty().SetOpacity(opacity)
    actor.GetProperty().SetSpecular(0.3)
    actor.GetProperty().SetSpecularPower(20)
    return actor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", type=Path, default=ROOT / "AneurysmSeg" / "Resources" / "Sample")
    parser.add_argument("--models", type=Path, help="model folder (default: bundled weights)")
    parser.add_argument("--ground-truth", action="store_true", help="draw the reference label, not a segmentation")
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).resolve().parent / "3d.png")
    parser.add_argument("--size", type=int, nargs=2, default=(900, 700))
    args = parser.parse_args(argv)

    from AneurysmSegLib.core.result import Seed, SegmentationResult
    from AneurysmSegLib.io.images import read_image
    from AneurysmSegLib.slicer import runners, scene
    from AneurysmSegLib.stages.measure import measure_labels
    from slicer_scene import createSlicerScene

    app = createSlicerScene()
    volume = app.loadVolume(args.case / "orig" / "TOF.nii.gz", "TOF")
    if args.ground_truth:
        geometry = scene.geometryFromVolumeNode(volume)
        labels = (read_image(args.case / "aneurysms.nii.gz").array == 1).astype(np.uint8)
        from scipy import ndimage

        components, count = ndimage.label(labels)
        sizes = ndimage.sum(components > 0, components, range(1, count + 1))
        order = np.argsort(-np.asarray(sizes)) + 1  # number by descending volume, as the pipeline does
        labels = np.zeros_like(components)
        for newLabel, oldLabel in enumerate(order, start=1):
            labels[components == oldLabel] = newLabel
        seeds = {i: Seed(position_lps=(0.0, 0.0, 0.0), label=f"GT{i}") for i in range(1, count + 1)}
        aneurysms = measure_labels(labels, geometry, seeds)
        for a in aneurysms:
            a.seed.position_lps = a.centroid_lps
        result = SegmentationResult(labels=labels, geometry=geometry, aneurysms=aneurysms,
                                    seeds=[a.seed for a in aneurysms])
        caption = f"{len(aneurysms)} reference aneurysm(s) (ground truth), one segment each, on the sample's arteries"
    else:
        from AneurysmSegLib.core.models import load_models

        result = runners.runPipeline(volume, models=load_models(args.models, device="cpu"))
        caption = f"{len(result.aneurysms)} aneurysm(s) segmented by AneurysmSeg on the bundled sample"
    segmentation, _, _ = scene.updateResultNodes(volume, result)

    renderer = vtk.vtkRenderer()
    renderer.SetBackground(0.04, 0.05, 0.09)
    renderer.SetBackground2(0.22, 0.26, 0.36)
    renderer.GradientBackgroundOn()
    renderer.SetUseDepthPeeling(True)  # correct order for the translucent arteries
    renderer.AddActor(actorOf(arterySurface(volume), (0.86, 0.84, 0.80), 0.4))
    seg = segmentation.GetSegmentation()
    for i in range(seg.GetNumberOfSegments()):
        poly = vtk.vtkPolyData()
        segmentation.GetClosedSurfaceRepresentation(seg.GetNthSegmentID(i), poly)
        renderer.AddActor(actorOf(poly, seg.GetNthSegment(i).GetColor()))
    text = vtk.vtkTextActor()
    text.SetInput(caption + "\nsynthetic phantom; demonstration only, not for clinical use")
    text.GetTextProperty().SetFontSize(18)
    text.GetTextProperty().SetColor(0.95, 0.95, 0.95)
    text.GetTextProperty().SetBackgroundColor(0.0, 0.0, 0.0)
    text.GetTextProperty().SetBackgroundOpacity(0.55)
    text.SetPosition(12, 12)
    renderer.AddViewProp(text)

    # look from anterior-superior, superior up, like Slicer's default 3D view turned a little
    camera = renderer.GetActiveCamera()
    renderer.ResetCamera()
    focal = np.array(camera.GetFocalPoint())
    distance = camera.GetDistance()
    direction = np.array([0.25, 1.0, 0.75])
    camera.SetPosition(*(focal + distance * direction / np.linalg.norm(direction)))
    camera.SetViewUp(0, 0, 1)
    renderer.ResetCamera()
    camera.Zoom(1.6)

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(True)
    window.SetSize(*args.size)
    window.SetMultiSamples(0)  # depth peeling needs it off
    window.SetAlphaBitPlanes(True)
    window.AddRenderer(renderer)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(args.output))
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()
    app.close()
    print(f"wrote {args.output}: {caption}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
