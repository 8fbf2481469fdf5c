"""Shared pytest fixtures (kept minimal: each test module builds its own data)."""

from __future__ import annotations

import numpy as np
import pytest
from AneurysmSegLib.core.geometry import Geometry

try:  # tests share 2 cores with other jobs: keep torch single-threaded when it is installed
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a project dependency, but conftest must not need it
    pass


def rotation_matrix(axis: tuple[float, float, float], angle_deg: float) -> np.ndarray:
    """Rodrigues rotation: a proper orthonormal direction matrix that is not axis-aligned."""
    k = np.asarray(axis, dtype=float)
    k /= np.linalg.norm(k)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    a = np.deg2rad(angle_deg)
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * kx @ kx


@pytest.fixture
def oblique_geometry() -> Geometry:
    """Anisotropic spacing, non-zero origin and an oblique (non axis-aligned) direction."""
    return Geometry(spacing=(0.35, 0.4, 0.6), origin=(-91.25, 12.5, -33.75),
                    direction=rotation_matrix((1.0, 2.0, 3.0), 23.0).ravel())
