"""surface: STL files read back with vtk enclose the mask's volume, in the right coordinate system."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import vtk
from AneurysmSegLib.core.errors import InputError, OutputError
from AneurysmSegLib.core.geometry import Geometry, lps_to_ras
from AneurysmSegLib.io import surfaces as surface
from conftest import rotation_matrix
from vtk.util import numpy_support


def read_stl(path: Path) -> vtk.vtkPolyData:
    reader = vtk.vtkSTLReader()
    reader.SetFileName(str(path))
    reader.Update()
    return reader.GetOutput()


def signed_volume(poly: vtk.vtkPolyData) -> float:
    """Divergence theorem over the triangles as stored: positive only when normals point outwards."""
    points = numpy_support.vtk_to_numpy(poly.GetPoints().GetData()).astype(float)
    cells = numpy_support.vtk_to_numpy(poly.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    a, b, c = points[cells[:, 0]], points[cells[:, 1]], points[cells[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def open_edges(poly: vtk.vtkPolyData) -> int:
    edges = vtk.vtkFeatureEdges()
    edges.SetInputData(poly)
    edges.BoundaryEdgesOn()
    edges.NonManifoldEdgesOn()
    edges.FeatureEdgesOff()
    edges.ManifoldEdgesOff()
    edges.Update()
    return edges.GetOutput().GetNumberOfCells()


def sphere_labels(shape=(28, 44, 40), centre=(14, 22, 20), radius_mm=3.5, spacing_zyx=(0.6, 0.4, 0.35)) -> np.ndarray:
    idx = np.indices(shape).astype(float)
    d2 = sum(((idx[i] - centre[i]) * spacing_zyx[i]) ** 2 for i in range(3))
    labels = (d2 <= radius_mm**2).astype(np.uint8)
    labels[2:5, 2:6, 30:36] = 2  # a small box, a second label
    return labels


@pytest.mark.parametrize("handedness", [1, -1])
def test_stl_volume_and_coordinate_systems(tmp_path: Path, handedness: int) -> None:
    """Anisotropic spacing, oblique direction (also a left-handed one): volume within 10%, LPS vs RAS."""
    direction = rotation_matrix((1.0, 2.0, 3.0), 23.0) @ np.diag([1.0, 1.0, float(handedness)])
    geometry = Geometry(spacing=(0.35, 0.4, 0.6), origin=(-91.25, 12.5, -33.75), direction=direction.ravel())
    labels = sphere_labels()
    voxel = float(np.prod(geometry.spacing))

    lps_paths = surface.write_stl(labels, geometry, tmp_path / "lps", "LPS")
    ras_paths = surface.write_stl(labels, geometry, tmp_path / "ras", coordinate_system="RAS", prefix="a")
    assert [p.name for p in lps_paths] == ["aneurysm_1.stl", "aneurysm_2.stl"]
    assert [p.name for p in ras_paths] == ["a_1.stl", "a_2.stl"]
    assert sorted(os.listdir(tmp_path / "lps")) == ["aneurysm_1.stl", "aneurysm_2.stl"]
    assert lps_paths[0].read_bytes()[:80].strip() != b"" and not lps_paths[0].read_bytes().startswith(b"solid ")

    for value, (lps_path, ras_path) in enumerate(zip(lps_paths, ras_paths), start=1):
        mask_volume = float((labels == value).sum()) * voxel
        lps, ras = read_stl(lps_path), read_stl(ras_path)
        assert open_edges(lps) == 0 and open_edges(ras) == 0  # watertight
        props = vtk.vtkMassProperties()
        props.SetInputData(lps)
        props.Update()
        tolerance = 0.10 if value == 1 else 0.35  # the 4x4x3-voxel box loses its corners to the contour
        assert props.GetVolume() == pytest.approx(mask_volume, rel=tolerance)
        assert signed_volume(lps) == pytest.approx(props.GetVolume(), rel=1e-3)  # outward normals
        assert signed_volume(ras) == pytest.approx(props.GetVolume(), rel=1e-3)

        # Vertices in physical space: the mask's centre maps to the surface's centre, and RAS is
        # LPS with x and y negated (so the bounds swap and flip in x and y, z unchanged).
        centre_xyz = np.argwhere(labels == value).mean(axis=0)[::-1]
        lps_pts = numpy_support.vtk_to_numpy(lps.GetPoints().GetData())
        ras_pts = numpy_support.vtk_to_numpy(ras.GetPoints().GetData())
        np.testing.assert_allclose(lps_pts.mean(axis=0), geometry.index_to_lps(centre_xyz), atol=0.3)
        np.testing.assert_allclose(ras_pts.mean(axis=0), lps_to_ras(geometry.index_to_lps(centre_xyz)), atol=0.3)
        lb, rb = np.array(lps.GetBounds()), np.array(ras.GetBounds())
        np.testing.assert_allclose(rb[[0, 1, 2, 3]], -lb[[1, 0, 3, 2]], atol=1e-4)
        np.testing.assert_allclose(rb[[4, 5]], lb[[4, 5]], atol=1e-4)


def test_unwritable_folder_fails_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not a folder|is a file"):
        surface.write_stl(sphere_labels(), Geometry((1, 1, 1)), blocker)
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputError, match="not writable"):
            surface.write_stl(sphere_labels(), Geometry((1, 1, 1)), locked / "stl")
    with pytest.raises(InputError, match="LPS or RAS"):
        surface.write_stl(sphere_labels(), Geometry((1, 1, 1)), tmp_path / "x", coordinate_system="IJK")
    assert not (tmp_path / "x").exists()


def test_no_labels_writes_no_files(tmp_path: Path) -> None:
    assert surface.write_stl(np.zeros((4, 4, 4), np.uint8), Geometry((1, 1, 1)), tmp_path / "out") == []
    assert list((tmp_path / "out").iterdir()) == []
