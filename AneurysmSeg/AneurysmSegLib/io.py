"""Reading and writing images with SimpleITK without losing geometry.

``to_sitk``/``from_sitk`` convert between SimpleITK images and :class:`Image`; every reader and
writer in the project goes through them so that spacing, origin and direction survive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .geometry import Geometry, Image


def geometry_of(img: sitk.Image) -> Geometry:
    return Geometry(spacing=img.GetSpacing(), origin=img.GetOrigin(), direction=img.GetDirection())


def to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """numpy ``[z, y, x]`` array + geometry -> SimpleITK image (pixel type follows the dtype)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.SetSpacing(geometry.spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(geometry.direction)
    return img


def from_sitk(img: sitk.Image, source: str = "") -> Image:
    return Image(array=sitk.GetArrayFromImage(img).astype(np.float32, copy=False), geometry=geometry_of(img), source=source)


def write_image(array: np.ndarray, geometry: Geometry, path: str | Path, compress: bool = True) -> Path:
    """Write an array in the given geometry (format from the file name, parent created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(to_sitk(array, geometry), str(path), compress)
    return path
