"""Closed surfaces (STL, one file per aneurysm) from a label image, through vtk.

Each label is cropped to its bounding box padded by one background voxel (so the surface closes),
contoured in index space with discrete flying edges, mapped to physical space with the FULL
index-to-LPS matrix (direction x spacing + origin, so oblique scans come out right), optionally
flipped to RAS, smoothed with a windowed-sinc filter (which keeps a closed surface closed) and given
outward normals. STL files are written binary and atomically. LPS is the default, like Slicer's exports.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.errors import InputError, OutputError
from ..core.geometry import Geometry, check_coordinate_system
from .atomic import OutputSet, ensure_can_create, write_atomic


def check_folder_writable(folder: str | Path) -> Path:
    """Raise :class:`OutputError` unless files can be created in ``folder`` (created if missing)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"cannot write into {folder}: it is a file, not a folder")
    ensure_can_create(folder / "aneurysm_1.stl")
    return folder


def label_surface(mask: np.ndarray, geometry: Geometry, coordinate_system: str = "LPS",
                  smoothing_iterations: int = 15, pass_band: float = 0.05):
    """Closed triangle surface (``vtkPolyData``) of a boolean ``[z, y, x]`` mask in LPS or RAS mm."""
    import vtk
    from vtk.util import numpy_support

    cs = check_coordinate_system(coordinate_system, "STL coordinate system")
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise InputError("cannot make a surface of an empty mask")
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    start = np.array([s.start for s in box])  # z, y, x
    crop = np.pad(mask[box], 1).astype(np.uint8)
    start = start - 1

    image = vtk.vtkImageData()
    nz, ny, nx = crop.shape
    image.SetDimensions(nx, ny, nz)
    image.SetOrigin(float(start[2]), float(start[1]), float(start[0]))  # index space, x y z
    image.SetSpacing(1.0, 1.0, 1.0)
    scalars = numpy_support.numpy_to_vtk(crop.ravel(order="C"), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)

    contour = vtk.vtkDiscreteFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, 1)
    contour.ComputeNormalsOff()
    contour.ComputeGradientsOff()
    contour.ComputeScalarsOff()

    matrix = np.eye(4)
    matrix[:3, :3] = geometry.direction_matrix * np.asarray(geometry.spacing)[None, :]
    matrix[:3, 3] = geometry.origin
    if cs == "RAS":
        matrix = np.diag([-1.0, -1.0, 1.0, 1.0]) @ matrix
    transform = vtk.vtkTransform()
    transform.SetMatrix(matrix.ravel().tolist())
    to_physical = vtk.vtkTransformPolyDataFilter()
    to_physical.SetTransform(transform)
    to_physical.SetInputConnection(contour.GetOutputPort())

    last = to_physical
    if smoothing_iterations > 0:
        smooth = vtk.vtkWindowedSincPolyDataFilter()
        smooth.SetInputConnection(to_physical.GetOutputPort())
        smooth.SetNumberOfIterations(smoothing_iterations)
        smooth.SetPassBand(pass_band)
        smooth.BoundarySmoothingOff()
        smooth.FeatureEdgeSmoothingOff()
        smooth.NonManifoldSmoothingOn()
        smooth.NormalizeCoordinatesOn()
        last = smooth

    # A direction matrix with determinant -1 reverses the triangles' winding; auto-orientation
    # makes every shell's normals point outwards again so that volumes come out positive.
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(last.GetOutputPort())
    normals.ConsistencyOn()
    normals.AutoOrientNormalsOn()
    normals.SplittingOff()
    normals.ComputeCellNormalsOff()
    normals.ComputePointNormalsOn()
    normals.Update()
    return normals.GetOutput()


def write_stl(labels: np.ndarray, geometry: Geometry, folder: str | Path, coordinate_system: str = "LPS",
              prefix: str = "aneurysm", smoothing_iterations: int = 15, outputs: OutputSet | None = None) -> list[Path]:
    """Write ``<folder>/<prefix>_<label>.stl`` for every label > 0; returns the paths in label order.

    The folder is checked before any surface is computed. The files appear together, and
    ``<prefix>_<N>.stl`` files of an earlier run that this one does not write are removed with them
    (an aneurysm that no longer exists must not keep its surface); with ``outputs``, at its commit.
    """
    if outputs is None:
        with OutputSet() as own:
            return write_stl(labels, geometry, folder, coordinate_system, prefix, smoothing_iterations, own)

    check_coordinate_system(coordinate_system, "STL coordinate system")
    folder = check_folder_writable(folder)
    labels = np.asarray(labels)
    outputs.own(folder, re.escape(prefix) + r"_\d+\.stl")
    paths: list[Path] = []
    if labels.dtype.kind not in "iu":
        labels = labels.astype(np.int32)
    boxes = ndimage.find_objects(labels)  # one pass, no copy of a clinical-size array
    for value, box in enumerate(boxes, start=1):
        if box is None:
            continue
        sub = labels[box] == value
        # Work on the label's box only (plus its geometry shifted accordingly): fast on big scans.
        offset_xyz = [box[2].start, box[1].start, box[0].start]
        sub_geometry = Geometry(spacing=geometry.spacing, origin=tuple(geometry.index_to_lps(offset_xyz)),
                                direction=geometry.direction)
        poly = label_surface(sub, sub_geometry, coordinate_system, smoothing_iterations)
        paths.append(write_atomic(folder / f"{prefix}_{value}.stl", lambda file: _write_stl(poly, file), outputs))
    return paths


def _write_stl(poly, path: str) -> None:
    import vtk

    writer = vtk.vtkSTLWriter()
    writer.SetFileName(path)
    writer.SetFileTypeToBinary()
    writer.SetInputData(poly)
    if not writer.Write():
        raise OSError(f"vtkSTLWriter could not write {path}")
