"""measure: spheres of known radius (anisotropic, oblique) give volume and maximum diameter."""

from __future__ import annotations

import numpy as np
import pytest
from AneurysmSegLib.core.geometry import Geometry
from AneurysmSegLib.core.result import Seed
from AneurysmSegLib.stages import measure
from conftest import rotation_matrix


def sphere(shape, centre_zyx, radius_mm, spacing_zyx) -> np.ndarray:
    idx = np.indices(shape).astype(float)
    return sum(((idx[i] - centre_zyx[i]) * spacing_zyx[i]) ** 2 for i in range(3)) <= radius_mm**2


@pytest.mark.parametrize("radius", [1.5, 4.0])
def test_sphere_volume_diameter_and_centroid(oblique_geometry: Geometry, radius: float) -> None:
    g = oblique_geometry
    centre = (20.3, 24.0, 27.6)
    mask = sphere((40, 48, 56), centre, radius, g.spacing_zyx)
    m = measure.measure_mask(mask, g)
    assert m.volume_mm3 == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.05)
    assert m.max_diameter_mm == pytest.approx(2 * radius, rel=0.04)
    np.testing.assert_allclose(m.centroid_voxel, centre[::-1], atol=0.1)
    np.testing.assert_allclose(m.centroid_lps, g.index_to_lps(centre[::-1]), atol=0.05)


def test_elongated_object_diameter_is_its_length() -> None:
    g = Geometry(spacing=(0.5, 0.5, 0.5), direction=rotation_matrix((0, 0, 1), 30).ravel())
    mask = np.zeros((10, 10, 60), bool)
    mask[4:6, 4:6, 5:45] = True  # 40 voxels = 20 mm long, 1 mm thick
    d = measure.max_diameter(mask, g)
    assert d == pytest.approx(np.sqrt(19.5**2 + 0.5**2 + 0.5**2))  # farthest voxel centres
    assert measure.max_diameter(np.zeros((3, 3, 3), bool), g) == 0.0
    single = np.zeros((3, 3, 3), bool)
    single[1, 1, 1] = True
    assert measure.max_diameter(single, g) == 0.5


def test_measure_labels_in_label_order_with_seeds() -> None:
    g = Geometry(spacing=(0.4, 0.4, 0.4), origin=(10, -5, 3))
    labels = np.zeros((30, 30, 60), np.uint8)
    labels[sphere(labels.shape, (15, 15, 15), 3.0, g.spacing_zyx)] = 1
    labels[sphere(labels.shape, (15, 15, 45), 2.0, g.spacing_zyx)] = 2
    seeds = {1: Seed((1.0, 2.0, 3.0), 0.9, "detector"), 2: Seed((4.0, 5.0, 6.0), 1.0, "user")}
    out = measure.measure_labels(labels, g, seeds, confidences={1: 0.7})
    assert [a.id for a in out] == [1, 2]
    assert out[0].confidence == 0.7 and out[1].confidence == 1.0 and out[1].seed is seeds[2]
    assert out[0].volume_mm3 > out[1].volume_mm3
    assert out[0].voxel_count == int((labels == 1).sum())
    np.testing.assert_allclose(out[1].centroid_voxel, (45, 15, 15), atol=1e-6)
    np.testing.assert_allclose(out[1].centroid_ras, (-(10 + 45 * 0.4), -(-5 + 15 * 0.4), 3 + 15 * 0.4), atol=1e-6)
