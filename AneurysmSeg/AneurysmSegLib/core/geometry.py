"""Image geometry in ITK's LPS convention, and the conversions every stage needs.

Arrays everywhere in AneurysmSegLib are numpy arrays indexed ``[z, y, x]`` (SimpleITK's
``GetArrayFromImage`` order). Geometry is stored as ITK stores it: ``spacing`` and ``origin`` in
``(x, y, z)`` order, ``direction`` a row-major 3x3 matrix whose columns are the image axes, all in
LPS physical space (millimetres). RAS (Slicer's world) differs by flipping the signs of x and y.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """Voxel-to-physical mapping of a 3D image (LPS, millimetres, ITK axis order)."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = field(default=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", tuple(float(d) for d in np.asarray(self.direction).ravel()))
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise ValueError("Geometry needs 3 spacings, 3 origin coordinates and a 3x3 direction")
        if min(self.spacing) <= 0 or not np.all(np.isfinite(self.spacing)):
            raise ValueError(f"spacing must be positive and finite, got {self.spacing}")

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in array order, for scipy/numpy operations on ``[z, y, x]`` arrays."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_lps(self, ijk_xyz: Sequence[float] | np.ndarray) -> np.ndarray:
        """Continuous index (x, y, z order; one row per point) -> LPS physical point(s)."""
        ijk = np.asarray(ijk_xyz, dtype=float)
        m = self.direction_matrix * np.asarray(self.spacing)[None, :]
        return ijk @ m.T + np.asarray(self.origin)

    def lps_to_index(self, lps: Sequence[float] | np.ndarray) -> np.ndarray:
        """LPS physical point(s) -> continuous index in (x, y, z) order."""
        p = np.asarray(lps, dtype=float)
        m = self.direction_matrix * np.asarray(self.spacing)[None, :]
        return (p - np.asarray(self.origin)) @ np.linalg.inv(m).T

    def index_to_ras(self, ijk_xyz: Sequence[float] | np.ndarray) -> np.ndarray:
        return lps_to_ras(self.index_to_lps(ijk_xyz))

    def ras_to_index(self, ras: Sequence[float] | np.ndarray) -> np.ndarray:
        return self.lps_to_index(ras_to_lps(ras))


def lps_to_ras(points: Sequence[float] | np.ndarray) -> np.ndarray:
    """Flip x and y: LPS <-> RAS (the conversion is its own inverse)."""
    p = np.asarray(points, dtype=float)
    return p * np.array([-1.0, -1.0, 1.0])


ras_to_lps = lps_to_ras

COORDINATE_SYSTEMS = ("LPS", "RAS")  #: of files (STL, seeds) this package reads or writes


def check_coordinate_system(value: object, what: str = "coordinate system") -> str:
    """"LPS" or "RAS" (any case); InputError naming ``what`` otherwise: a wrong convention must never
    silently mirror a patient's left and right."""
    from .errors import InputError

    cs = str(value).strip().upper()
    if cs not in COORDINATE_SYSTEMS:
        raise InputError(f"{what} must be LPS or RAS, got {value!r}")
    return cs


@dataclass
class Image:
    """A scalar 3D image: float32 ``array[z, y, x]`` plus its geometry. ``source`` is for messages."""

    array: np.ndarray
    geometry: Geometry
    source: str = ""
    pixel_type: str = ""  #: the stored pixel type before conversion to float32 (for the input check)

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        z, y, x = self.array.shape
        return (x, y, z)

    def content_key(self) -> str:
        """sha256 of the voxels (type, shape, bytes) and the geometry: a cache key that another scan
        of the same size, or this one edited in place, cannot hit."""
        h = hashlib.sha256(f"{self.array.dtype.str}{self.array.shape}{self.geometry}".encode())
        h.update(memoryview(np.ascontiguousarray(self.array)).cast("B"))
        return h.hexdigest()

    def same_scan(self, other: "Image") -> bool:
        """The same voxels in the same geometry (the same object, or equal content)."""
        return other is self or (self.geometry == other.geometry and self.array.shape == other.array.shape
                                 and bool(np.array_equal(self.array, other.array)))
