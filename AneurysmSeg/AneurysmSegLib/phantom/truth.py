"""Ground truth of each phantom aneurysm's morphology, from the generator's exact geometry.

The sac is a union of ellipsoids (lobes) minus the arterial lumen; its neck is where the lobes'
surface enters the lumen. Each lobe's surface is sampled finely (a UV sphere mapped onto the
ellipsoid), the arteries' signed distance is interpolated at its vertices, and the zero line of that
field (on the part of the surface not hidden inside another lobe) traces the sac's contacts with
vessels; the contact nearest to the site's point on the parent artery is the neck (a big sac may also
touch branches passing by, or the unlabelled veins, whose distance the same field holds). The neck plane,
width, ostium area and dome height then follow the definitions of ``stages/morphology.py``, applied to
this exact curve instead of one found in voxels.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from ..stages import morphology as M

UV_RESOLUTION = (160, 80)  #: vertices around x from pole to pole of each lobe's surface mesh


def _lobe_mesh(centre: np.ndarray, rotation: np.ndarray, axes: np.ndarray) -> M.Surface:
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkFiltersSources import vtkSphereSource

    src = vtkSphereSource()
    src.SetRadius(1.0)
    src.SetThetaResolution(UV_RESOLUTION[0])
    src.SetPhiResolution(UV_RESOLUTION[1])
    src.Update()
    poly = src.GetOutput()
    unit = vtk_to_numpy(poly.GetPoints().GetData()).astype(float)
    tri = vtk_to_numpy(poly.GetPolys().GetConnectivityArray()).astype(np.int64).reshape(-1, 3)
    return M.Surface(centre + (unit * axes) @ rotation.T, tri)


def _inside(points: np.ndarray, centre: np.ndarray, rotation: np.ndarray, axes: np.ndarray) -> np.ndarray:
    u = (points - centre) @ rotation / axes
    return np.einsum("ij,ij->i", u, u) < 1.0


def aneurysm_truth(lobes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], vessel_sd: np.ndarray,
                   spacing_xyz: Sequence[float], to_lps: Callable[[np.ndarray], np.ndarray],
                   direction: np.ndarray, anchor: np.ndarray) -> dict:
    """Neck (centre, normal into the sac, width, ostium area), dome height and maximum diameter.

    ``lobes``: (centre, rotation with the axes as columns, semi-axes) in grid mm, the main lobe first;
    ``vessel_sd``: the arteries' signed distance (mm) on the voxel grid; ``to_lps`` maps grid mm to LPS
    and ``direction`` is the image's direction matrix (for the normal). ``anchor``: the site's point on
    the parent vessel (grid mm); of the sac's contacts with vessels, the one nearest to it is the neck.
    """
    sp = np.asarray(spacing_xyz, dtype=float)
    rim, sac_points = [], []
    for k, lobe in enumerate(lobes):
        mesh = _lobe_mesh(*lobe)
        hidden = np.zeros(len(mesh.points), bool)
        for j, other in enumerate(lobes):
            if j != k:
                hidden |= _inside(mesh.points, *other)
        sd = ndimage.map_coordinates(vessel_sd, (mesh.points / sp)[:, ::-1].T, order=1, mode="nearest")
        keep = ~hidden[mesh.triangles].any(axis=1)
        visible = M.Surface(mesh.points, mesh.triangles[keep])
        rim.append(M.zero_crossings(visible, sd))
        sac_points.append(mesh.points[~hidden & (sd > 0)])
    pieces = M.rim_pieces(np.concatenate(rim), link_mm=1.0)
    rim = min(pieces, key=lambda p: float(np.linalg.norm(p - anchor, axis=1).min())) if pieces else np.zeros((0, 3))
    sac = np.concatenate(sac_points)
    out = {"max_diameter_mm": round(M.largest_diameter(sac), 3)}
    if len(rim) < 4:
        return out
    centre, normal = M.fit_plane(rim)
    if np.dot(lobes[0][0] - centre, normal) < 0:
        normal = -normal
    _, area = M.outline_2d((rim - centre) @ M.plane_frame(normal).T)
    out.update({
        "neck_centre_lps": [round(float(v), 3) for v in to_lps(centre[None])[0]],
        "neck_normal_lps": [round(float(v), 4) for v in direction @ normal],
        "neck_width_mm": round(M.largest_diameter(rim), 3),
        "ostium_area_mm2": round(area, 3),
        "dome_height_mm": round(float(((sac - centre) @ normal).max()), 3),
    })
    return out
