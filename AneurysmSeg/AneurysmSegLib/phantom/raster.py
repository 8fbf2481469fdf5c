"""Rasterising the phantom's geometry: signed distances (mm) of tubes and ellipsoids on the voxel grid.

Work happens in "grid millimetres" ``q = index * spacing`` (x, y, z): the image axes scaled by the
spacing. The direction matrix is orthonormal, so distances there equal physical distances. Each
primitive is evaluated only inside its own small bounding box, vectorised with numpy, so the cost
scales with the vessel volume, not the image volume.
"""

from __future__ import annotations

import numpy as np


def _box(lo_mm: np.ndarray, hi_mm: np.ndarray, spacing: np.ndarray, shape_xyz: np.ndarray):
    """Index slices (z, y, x) covering [lo_mm, hi_mm] and the grid-mm coordinates inside them."""
    lo = np.maximum(np.floor(lo_mm / spacing).astype(int), 0)
    hi = np.minimum(np.ceil(hi_mm / spacing).astype(int) + 1, shape_xyz)
    if np.any(hi <= lo):
        return None
    sl = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    qx = (np.arange(lo[0], hi[0]) * spacing[0])[None, None, :]
    qy = (np.arange(lo[1], hi[1]) * spacing[1])[None, :, None]
    qz = (np.arange(lo[2], hi[2]) * spacing[2])[:, None, None]
    return sl, qx, qy, qz


class TubeRaster:
    """Union of capsules with linearly varying radius; keeps, per voxel, the smallest signed distance,
    the value carried by the nearest segment, a second signed distance grown by a per-segment margin
    (used for the CSF cisterns around the proximal vessels), and the label mask: voxels whose centre
    lies inside the tube, or within ``min_label_radius`` of the axis so that vessels thinner than a
    voxel stay connected lines in the ground truth, as an annotator would draw them."""

    def __init__(self, shape_zyx: tuple[int, int, int], spacing_xyz, far_mm: float, min_label_radius: float = 0.0) -> None:
        self.shape_xyz = np.array(shape_zyx[::-1])
        self.spacing = np.asarray(spacing_xyz, dtype=float)
        self.far = float(far_mm)
        self.min_label_radius = float(min_label_radius)
        self.label = np.zeros(shape_zyx, dtype=bool)  # ground truth: thin vessels kept 1 voxel wide
        self.sd = np.full(shape_zyx, self.far, dtype=np.float32)
        self.value = np.zeros(shape_zyx, dtype=np.float32)
        self.cistern = np.full(shape_zyx, self.far, dtype=np.float32)

    def add_polyline(self, q: np.ndarray, radii: np.ndarray, values: np.ndarray, margin_mm: float,
                     cistern_mm: float = 0.0, labelled: bool = True, chunk: int = 6) -> None:
        """Capsules between consecutive points ``q`` (grid mm, x y z); ``values`` per point.

        Segments are handled ``chunk`` at a time in one shared bounding box (broadcast over a leading
        segment axis), which keeps Python overhead low for long thin vessels.
        ``labelled=False`` draws without adding to the label mask (veins are not arteries)."""
        q = np.asarray(q, dtype=np.float64)
        radii = np.asarray(radii, dtype=np.float64)
        values = np.asarray(values, dtype=np.float64)
        reach = max(margin_mm, cistern_mm)
        for i in range(0, len(q) - 1, chunk):
            j = min(i + chunk, len(q) - 1)
            self._chunk(q[i:j + 1], radii[i:j + 1], 0.5 * (values[i:j] + values[i + 1:j + 1]), reach, cistern_mm,
                        labelled)

    def _chunk(self, pts: np.ndarray, radii: np.ndarray, seg_values: np.ndarray, reach: float, cistern_mm: float,
               labelled: bool) -> None:
        r = float(radii.max()) + reach
        box = _box(pts.min(axis=0) - r, pts.max(axis=0) + r, self.spacing, self.shape_xyz)
        if box is None:
            return
        sl, qx, qy, qz = box
        a, ab = pts[:-1], np.diff(pts, axis=0)  # (K, 3)
        l2 = np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-12)
        e = (slice(None), None, None, None)  # broadcast the segment axis in front of the box
        px, py, pz = qx[None] - a[:, 0][e], qy[None] - a[:, 1][e], qz[None] - a[:, 2][e]
        t = np.clip((px * ab[:, 0][e] + py * ab[:, 1][e] + pz * ab[:, 2][e]) / l2[e], 0.0, 1.0)
        dx, dy, dz = px - t * ab[:, 0][e], py - t * ab[:, 1][e], pz - t * ab[:, 2][e]
        dist = np.sqrt(dx * dx + dy * dy + dz * dz)
        r_t = radii[:-1][e] + t * (radii[1:] - radii[:-1])[e]
        sd_k = dist - r_t
        k = np.argmin(sd_k, axis=0)
        sd = np.take_along_axis(sd_k, k[None], axis=0)[0].astype(np.float32)
        if labelled:
            self.label[sl] |= np.any(dist <= np.maximum(r_t, self.min_label_radius), axis=0)
        cur = self.sd[sl]
        closer = sd < cur
        cur[closer] = sd[closer]
        self.value[sl][closer] = seg_values[k[closer]]
        if cistern_mm > 0:
            np.minimum(self.cistern[sl], sd - np.float32(cistern_mm), out=self.cistern[sl])


def ellipsoid_sd(lobes, spacing_xyz, shape_zyx: tuple[int, int, int], far_mm: float,
                 out: np.ndarray | None = None, ids: np.ndarray | None = None, id_value: int = 1) -> np.ndarray:
    """Signed distance (mm, first-order approximation) to a union of ellipsoids given in grid mm.

    ``lobes``: iterable of (centre_q, rotation (columns = axes in grid-mm frame), semi_axes). With
    ``out`` the union is taken with what it holds; ``ids`` then records ``id_value`` where these lobes
    are the nearest surface (so several objects share one distance map).
    """
    spacing = np.asarray(spacing_xyz, dtype=float)
    shape_xyz = np.array(shape_zyx[::-1])
    if out is None:
        out = np.full(shape_zyx, far_mm, dtype=np.float32)
    for centre, rot, axes in lobes:
        r = float(np.max(axes)) + far_mm
        box = _box(centre - r, centre + r, spacing, shape_xyz)
        if box is None:
            continue
        sl, qx, qy, qz = box
        px, py, pz = qx - centre[0], qy - centre[1], qz - centre[2]
        # local coordinates along the ellipsoid's axes, scaled by the semi-axes
        u = [(px * rot[0, k] + py * rot[1, k] + pz * rot[2, k]) for k in range(3)]
        n1 = sum((u[k] / axes[k]) ** 2 for k in range(3))
        rho = np.sqrt(n1)
        grad = np.sqrt(sum((u[k] / axes[k] ** 2) ** 2 for k in range(3)))
        sd = np.where(rho > 1e-6, (rho - 1.0) * rho / np.maximum(grad, 1e-9), -float(np.min(axes)))
        sd = sd.astype(np.float32)
        if ids is not None:
            ids[sl][sd < out[sl]] = id_value
        np.minimum(out[sl], sd, out=out[sl])
    return out
