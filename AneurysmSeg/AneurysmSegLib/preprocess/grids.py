"""Grids and resampling: the coarse isotropic grid, VOI grids around a point, SimpleITK resampling.

Axes of every grid are the input image's axes (never reoriented), so geometry is never lost."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..core.geometry import Geometry
from ..io.images import to_sitk

COARSE_SPACING_MM = 0.7  #: coarse stage grid (isotropic); the model manifest may override it


FINE_SPACING_MM = 0.4  #: fine stage VOI grid (isotropic)


VOI_SIZE = 64  #: fine stage VOI edge in voxels


def grid_around(geometry: Geometry, center_lps: Sequence[float], size: int, spacing: float) -> Geometry:
    """Geometry of a size^3 isotropic grid centred on ``center_lps``, axes = the input's axes."""
    d = geometry.direction_matrix
    half = spacing * (size - 1) / 2.0
    origin = np.asarray(center_lps, dtype=float) - d @ np.full(3, half)
    return Geometry(spacing=(spacing,) * 3, origin=tuple(origin), direction=geometry.direction)


def coarse_grid(geometry: Geometry, shape_zyx: Sequence[int], spacing: float) -> tuple[Geometry, tuple[int, int, int]]:
    """Isotropic grid covering the same physical box as the input (corner to corner), same axes."""
    extent_xyz = np.asarray(shape_zyx[::-1], dtype=float) * np.asarray(geometry.spacing)
    size_xyz = np.maximum(1, np.round(extent_xyz / spacing)).astype(int)
    corner = geometry.index_to_lps(np.full(3, -0.5))
    origin = corner + geometry.direction_matrix @ np.full(3, spacing / 2.0)
    grid = Geometry(spacing=(spacing,) * 3, origin=tuple(origin), direction=geometry.direction)
    return grid, (int(size_xyz[2]), int(size_xyz[1]), int(size_xyz[0]))


def _resample_sitk(img: sitk.Image, dst: Geometry, dst_shape_zyx: Sequence[int], linear: bool,
                   default: float) -> np.ndarray:
    f = sitk.ResampleImageFilter()
    f.SetSize([int(s) for s in dst_shape_zyx[::-1]])
    f.SetOutputSpacing(dst.spacing)
    f.SetOutputOrigin(dst.origin)
    f.SetOutputDirection(dst.direction)
    f.SetInterpolator(sitk.sitkLinear if linear else sitk.sitkNearestNeighbor)
    f.SetDefaultPixelValue(float(default))
    return sitk.GetArrayFromImage(f.Execute(img))


def resample(array: np.ndarray, src: Geometry, dst: Geometry, dst_shape_zyx: Sequence[int],
             linear: bool = True, default: float = 0.0) -> np.ndarray:
    """SimpleITK Resample of an array from one grid onto another (nearest for labels when linear=False).

    Linear returns float32; nearest keeps the input's dtype (bool in, bool out).
    """
    array = np.asarray(array)
    if linear:
        return _resample_sitk(to_sitk(array.astype(np.float32, copy=False), src), dst, dst_shape_zyx,
                              True, default).astype(np.float32, copy=False)
    work = array.astype(np.uint8) if array.dtype == bool else array
    out = _resample_sitk(to_sitk(work, src), dst, dst_shape_zyx, False, default)
    return out.astype(array.dtype, copy=False)
