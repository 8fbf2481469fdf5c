"""Synthetic TOF-MRA with ground truth (vessels, aneurysms, ADAM location file).

The project has no real scans to ship, so the bundled weights are trained on these phantoms: the
closer they look like real TOF-MRA, the better the weights transfer. A case is one random draw
(deterministic from its seed) of anatomy (:mod:`phantom_anatomy`: circle of Willis with carotid
siphons, vertebrobasilar system, cortical branches, anatomical variants and infundibula; saccular
aneurysms at bifurcations and outer bends, some lobulated or with blebs, some treated) and of scanner
parameters (spacing, contrast, noise, gamma, bias, inflow, intensity range), rendered on the voxel
grid by :mod:`phantom_raster` and the appearance model below: brain with texture, sulci, ventricles
and cisterns, skull and skull base, a bright subcutaneous fat rim, orbits, venous sinuses and
micro-vessels (unlabelled), inflow enhancement fading up the slab, partial volume, point-spread blur,
bias field and Rician noise. Pictures: ``docs/phantom_*.png``.

Files follow the ADAM 2020 layout: ``orig/TOF.nii.gz``, ``aneurysms.nii.gz`` (0 background,
1 aneurysm, 2 treated aneurysm), ``location.txt`` (``x, y, z, r`` per untreated aneurysm: voxel
centre and maximum radius in millimetres, as ADAM's evaluation compares it with physical distances),
plus ``vessels.nii.gz`` (arterial tube union; sacs, veins and micro-vessels excluded; arteries below
a voxel's width drawn one voxel wide), ``vessels_visible.nii.gz`` (its voxels whose rendered signal
stands VISIBLE_SIGMAS noise sigmas above the tissue: what an artery extraction can be asked to find)
and ``params.json`` (:class:`params.PhantomParams`; per aneurysm also its morphology truth: neck plane,
width and ostium area, dome height, maximum diameter, parent artery radius, from :mod:`.truth`). :mod:`kinds` turns cases into the input kinds of
real scans, :mod:`randomise` draws domain-randomised training cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage

from ..core.geometry import Geometry, Image
from ..io.images import write_image
from ..training.data import VESSELS_NAME, VISIBLE_VESSELS_NAME
from .anatomy import (
    AneurysmSpec,
    HeadShape,
    Site,
    build_microvessels,
    build_sinuses,
    build_tree,
    curvature,
    make_aneurysm,
    make_varied_aneurysm,
    sample_diameter,
    sample_varied_diameter,
    site_type,
)
from .params import SCANNERS, PhantomParams, write_params
from .raster import TubeRaster, ellipsoid_sd
from .truth import aneurysm_truth

DEFAULT_SHAPE_XYZ = (256, 256, 96)
VISIBLE_SIGMAS = 3.0  # a vessel voxel is visible when its excess signal exceeds this many noise sigmas


@dataclass
class PhantomCase:
    """One synthetic case. Arrays are ``[z, y, x]``; ``locations`` are (x, y, z, radius_mm) of the
    untreated aneurysms (voxel centre as in ADAM's location.txt), ``treated_locations`` the same for
    label 2."""

    image: Image
    vessels: np.ndarray
    aneurysms: np.ndarray
    locations: list[tuple[int, int, int, float]]
    geometry: Geometry
    params: PhantomParams
    treated_locations: list[tuple[int, int, int, float]] = field(default_factory=list)
    visible: np.ndarray | None = None  # vessel label voxels whose rendered excess signal stands out of the noise
    instances: np.ndarray | None = None  # aneurysm k (1-based, order of params.aneurysms) on its sac voxels
    brain: np.ndarray | None = None  # intracranial space (what skull stripping keeps)
    head: np.ndarray | None = None  # the head with its scalp (what background masking keeps)
    fat: np.ndarray | None = None  # the subcutaneous fat layer (the bright rim artery extraction must reject)
    storage_dtype: str | None = None  # the file's voxel type when a kind fixes it (else from intensity_range)
    cow_world: tuple[float, float, float] | None = None  # LPS centre of the circle of Willis


# --------------------------------------------------------------------------------------------------
# scanner and case parameters
# --------------------------------------------------------------------------------------------------
def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def sample_params(rng: np.random.Generator, scanner: str = "train", shape_xyz: Sequence[int] | None = None,
                  spacing: Sequence[float] | None = None) -> PhantomParams:
    """Random scanner/case parameters (see :class:`PhantomParams`); ``shifted`` draws from wider,
    shifted ranges (generalisation tests). Any of them can be overridden in :func:`generate_case`."""
    if scanner not in SCANNERS:
        raise ValueError(f"scanner must be one of {SCANNERS}, got {scanner!r}")
    sh = scanner == "shifted"
    if shape_xyz is None and spacing is None:
        shape_xyz = DEFAULT_SHAPE_XYZ
    if spacing is None:
        # field of view 180-230 mm in-plane (about the whole head), slab of at least 5 cm
        sxy = _u(rng, 180, 230) / float(shape_xyz[0])
        sz = max(_u(rng, *((0.45, 1.2) if sh else (0.55, 1.0))), 50.0 / float(shape_xyz[2]))
        spacing = (sxy, sxy, sz)
    spacing = tuple(float(s) for s in spacing)
    if shape_xyz is None:
        shape_xyz = (int(round(190 / spacing[0])), int(round(190 / spacing[1])), int(round(70 / spacing[2])))
    shape_xyz = tuple(int(s) for s in shape_xyz)
    n_an = int(rng.choice([0, 1, 2, 3], p=[0.2, 0.6, 0.15, 0.05]))
    ranges = "u8" if sh and rng.random() < 0.3 else str(rng.choice(["12bit", "int1000", "float1000"]))
    return PhantomParams(
        scanner=scanner,
        shape_xyz=list(shape_xyz),
        spacing=list(spacing),
        contrast=_u(rng, *((2.4, 6.0) if sh else (3.2, 5.0))),  # proximal vessel / grey matter
        fat_ratio=_u(rng, *((1.6, 3.6) if sh else (1.8, 2.8))),  # fat / grey matter
        wm_ratio=_u(rng, 0.92, 1.2),  # TOF: white matter slightly brighter (T1) or darker (MT) than grey
        csf_ratio=_u(rng, 0.25, 0.5),
        noise=_u(rng, *((0.02, 0.14) if sh else (0.03, 0.08))),  # Rician sigma / grey matter
        gamma=_u(rng, *((0.65, 1.45) if sh else (0.85, 1.15))),
        inflow_fade=_u(rng, *((0.05, 0.5) if sh else (0.1, 0.35))),
        inflow_length_mm=_u(rng, *((150, 700) if sh else (250, 600))),  # saturation e-folding path
        bias=_u(rng, *((0.1, 0.35) if sh else (0.05, 0.2))),
        psf_xy=_u(rng, 0.45, 0.8),  # Gaussian PSF sigma in voxels
        psf_z=_u(rng, 0.5, 0.9),
        texture=_u(rng, 0.015, 0.05),
        head_scale=_u(rng, *((0.85, 1.15) if sh else (0.92, 1.08))),
        vessel_scale=_u(rng, 0.95, 1.05),
        radius_scale=_u(rng, 0.9, 1.12),
        tortuosity=_u(rng, *((0.4, 2.2) if sh else (0.6, 1.6))),
        rotation_deg=[_u(rng, -10, 10) * (1.8 if sh else 1), _u(rng, -5, 5) * (1.8 if sh else 1),
                         _u(rng, -6, 6) * (1.8 if sh else 1)],
        oblique_deg=_u(rng, -15, 15) if rng.random() < (0.5 if sh else 0.25) else 0.0,
        cow_offset_mm=[_u(rng, -8, 8), _u(rng, -12, 6), 0.0],
        cow_height=_u(rng, 0.3, 0.45),  # fraction of the slab below the circle of Willis
        intensity_range=ranges,
        intensity_max=_u(rng, 0.7, 1.0),
        zero_background=bool(sh and rng.random() < 0.4),
        multislab=int(rng.integers(3, 5)) if rng.random() < (0.5 if sh else 0.2) else 0,
        venous=_u(rng, 0.2, 0.6) if rng.random() < 0.7 else 0.0,  # sinus signal left by the saturation band
        siphon_dephasing=_u(rng, 0.3, 0.7) if rng.random() < 0.3 else 0.0,
        microvessels=int(rng.integers(60, 220)),
        noise_map=_u(rng, 0.0, 0.5 if sh else 0.3),  # parallel-imaging g-factor: noise varies in space
        n_aneurysms=n_an,
        treated=bool(rng.random() < 0.08),
    )


def make_geometry(params: PhantomParams, rng: np.random.Generator) -> tuple[Geometry, np.ndarray]:
    """Image geometry with a realistic LPS origin; returns it and the world position of the CoW centre."""
    nx, ny, nz = params.shape_xyz
    sp = np.asarray(params.spacing, dtype=float)
    a = np.radians(params.oblique_deg)
    direction = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    cow_world = np.array([_u(rng, -5, 5), _u(rng, -20, 0), _u(rng, -15, 15)])
    off = np.asarray(params.cow_offset_mm, dtype=float) / sp
    cow_idx = np.array([nx / 2 + off[0], ny / 2 + off[1], nz * params.cow_height])
    origin = cow_world - direction @ (sp * cow_idx)
    return Geometry(spacing=tuple(sp), origin=tuple(origin), direction=tuple(direction.ravel())), cow_world


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _interp_matrix(n_out: int, n_coarse: int, cell: float) -> np.ndarray:
    """Rows: Gaussian-kernel weights mapping ``n_coarse`` nodes spaced ``cell`` voxels to ``n_out`` voxels."""
    x = np.arange(n_out, dtype=np.float32)[:, None]
    c = (np.arange(n_coarse, dtype=np.float32) - 1.0)[None, :] * np.float32(cell)
    w = np.exp(-0.5 * ((x - c) / np.float32(cell)) ** 2)
    return w / w.sum(axis=1, keepdims=True)


def smooth_field(rng: np.random.Generator, shape_zyx: tuple[int, int, int], cell_vox: Sequence[float]) -> np.ndarray:
    """Zero-mean, roughly unit-std float32 random field with features about ``cell_vox`` voxels (z, y, x).

    White noise on a coarse grid, interpolated separably with Gaussian kernels (three small matrix
    products): smooth everywhere and cheap even for clinical-size volumes.
    """
    cell = [max(float(c), 1.0) for c in cell_vox]
    coarse = [int(np.ceil(n / c)) + 3 for n, c in zip(shape_zyx, cell)]
    f = rng.standard_normal(coarse).astype(np.float32)
    wz, wy, wx = (_interp_matrix(n, m, c) for n, m, c in zip(shape_zyx, coarse, cell))
    f = np.tensordot(f, wx, axes=([2], [1]))  # (cz, cy, nx)
    f = np.tensordot(wy, f, axes=([1], [1])).transpose(1, 0, 2)  # (cz, ny, nx)
    f = np.tensordot(wz, f, axes=([1], [0]))  # (nz, ny, nx)
    sub = f[::3, ::3, ::3]  # statistics from a subsample: same to a fraction of a percent, 27x cheaper
    f -= np.float32(sub.mean())
    f /= np.float32(sub.std() + 1e-9)
    return np.ascontiguousarray(f, dtype=np.float32)


def _ellipsoid_distance(ax, ay, az, centre, semi) -> np.ndarray:
    """First-order signed distance (mm) to an axis-aligned ellipsoid, negative inside (in-place maths:
    this runs on whole volumes)."""
    c = [np.float32(v) for v in centre]
    s = [np.float32(v) for v in semi]
    rho2 = np.zeros(np.broadcast_shapes(ax.shape, ay.shape, az.shape), dtype=np.float32)
    g2 = np.zeros_like(rho2)
    for coord, ck, sk in ((ax, c[0], s[0]), (ay, c[1], s[1]), (az, c[2], s[2])):
        u = coord - ck
        u *= np.float32(1.0) / sk
        np.multiply(u, u, out=u)  # u^2 (normalised)
        rho2 += u
        u *= np.float32(1.0) / (sk * sk)
        g2 += u
    rho = np.sqrt(rho2, out=rho2)
    np.sqrt(g2, out=g2)
    np.maximum(g2, np.float32(1e-6), out=g2)
    out = rho - np.float32(1.0)
    out *= rho
    out /= g2
    out[rho < 1e-6] = -min(s)  # the centre itself
    return out


def _paint(out: np.ndarray, d: np.ndarray, value, h: float) -> None:
    """In place: blend ``value`` where the signed distance ``d`` (mm) is negative, with a linear
    partial-volume ramp one voxel (``h`` mm) wide, so edges are anti-aliased like a real acquisition."""
    c = np.clip(0.5 - d / np.float32(h), 0.0, 1.0).astype(np.float32)
    out += c * (np.asarray(value, dtype=np.float32) - out)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


# --------------------------------------------------------------------------------------------------
# the case generator
# --------------------------------------------------------------------------------------------------
class _Renderer:
    """Holds one case's random state, geometry and intermediate fields while it is being rendered."""

    def __init__(self, seed: int, params: PhantomParams, rng: np.random.Generator) -> None:
        self.seed = seed
        self.p = params
        self.rng = rng
        self.geometry, self.cow_world = make_geometry(params, rng)
        self.shape = tuple(int(s) for s in params.shape_xyz[::-1])  # z, y, x
        self.spacing = np.asarray(params.spacing, dtype=float)
        self.h = float(np.exp(np.mean(np.log(self.spacing))))  # voxel size for partial-volume ramps
        rx, ry, rz = np.radians(params.rotation_deg)
        cx, sx_, cy, sy_, cz, sz_ = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
        rot = (np.array([[cz, -sz_, 0], [sz_, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy_], [0, 1, 0], [-sy_, 0, cy]])
               @ np.array([[1, 0, 0], [0, cx, -sx_], [0, sx_, cx]]))
        d = self.geometry.direction_matrix
        origin = np.asarray(self.geometry.origin)
        # anatomical a = A q + b with q = index * spacing (grid mm); q = A^T (a - b)
        self.A = rot.T @ d
        self.b = rot.T @ (origin - self.cow_world)
        hs = params.head_scale
        self.head = HeadShape(centre=np.array([0.0, 9.0, 16.0]) * hs, semi_axes=np.array([64.0, 84.0, 72.0]) * hs)

    def to_grid(self, a: np.ndarray) -> np.ndarray:
        """Anatomical mm -> grid mm (index * spacing)."""
        return (np.atleast_2d(a) - self.b) @ self.A

    def anatomy_coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Anatomical coordinates of every voxel (three float32 arrays), by broadcasting 1-D axes."""
        nz, ny, nx = self.shape
        qx = (np.arange(nx, dtype=np.float32) * np.float32(self.spacing[0]))[None, None, :]
        qy = (np.arange(ny, dtype=np.float32) * np.float32(self.spacing[1]))[None, :, None]
        qz = (np.arange(nz, dtype=np.float32) * np.float32(self.spacing[2]))[:, None, None]
        A = self.A.astype(np.float32)
        return tuple((A[k, 0] * qx + A[k, 1] * qy + A[k, 2] * qz + np.float32(self.b[k])) for k in range(3))

    def paint_ellipsoid(self, out: np.ndarray, coords, centre, semi, value, where: np.ndarray | None = None) -> None:
        """Blend ``value`` (a number or a full-size array) into an axis-aligned (anatomical) ellipsoid with
        an anti-aliased edge, optionally only ``where`` a full-size mask holds; works in its bounding box."""
        centre, semi = np.asarray(centre, dtype=float), np.asarray(semi, dtype=float)
        grow = semi + 2.0 * self.h
        corners = np.array([[centre[0] + i * grow[0], centre[1] + j * grow[1], centre[2] + k * grow[2]]
                            for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)])
        idx = self.to_grid(corners) / self.spacing
        lo = np.maximum(np.floor(idx.min(axis=0)).astype(int), 0)
        hi = np.minimum(np.ceil(idx.max(axis=0)).astype(int) + 1, np.array(self.shape[::-1]))
        if np.any(hi <= lo):
            return
        sl = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        d = _ellipsoid_distance(coords[0][sl], coords[1][sl], coords[2][sl], centre, semi)
        if where is not None:
            d[~where[sl]] = 9.0
        _paint(out[sl], d, value[sl] if isinstance(value, np.ndarray) else value, self.h)

    # -- vessels --------------------------------------------------------------------------------
    def vessels(self):
        """Rasterise the arterial tree with its TOF signal (inflow saturation along the path inside the
        slab, fading towards the top, weaker in small vessels, optional dephasing in the siphon), then the
        unlabelled venous sinuses and micro-vessels."""
        p = self.p
        tree = build_tree(self.rng, self.head, p.vessel_scale, p.tortuosity, p.radius_scale,
                          varied=p.anatomy == "varied")
        h = float(np.min(self.spacing))
        margin = 1.5 * h + 1.0
        tubes = TubeRaster(self.shape, self.spacing, far_mm=6.0, min_label_radius=0.55 * h)
        nz = self.shape[0]
        path_len: dict[str, np.ndarray] = {}
        for b in tree.branches.values():  # parents are added before children
            q = self.to_grid(b.points)
            zrel = q[:, 2] / (self.spacing[2] * nz)
            steps = np.concatenate([[0.0], np.linalg.norm(np.diff(b.points, axis=0), axis=1)]) * (zrel >= 0)
            start = path_len[b.parent][b.parent_index] if b.parent else 0.0
            path_len[b.name] = start + np.cumsum(steps)
            f = (np.exp(-path_len[b.name] / p.inflow_length_mm) * (0.7 + 0.3 * np.clip(b.radii / 0.8, 0, 1))
                 * (1.0 - p.inflow_fade * np.clip(zrel, 0, 1)))
            if b.name.startswith("ICA") and p.siphon_dephasing > 0:
                f = f * self.dephasing(b.points, p.siphon_dephasing)
            if b.drawn:
                tubes.add_polyline(q, b.radii, f, margin_mm=margin, cistern_mm=b.cistern_mm)
        if p.venous > 0:
            for b in build_sinuses(self.rng, self.head):
                tubes.add_polyline(self.to_grid(b.points), b.radii, np.full(len(b.points), p.venous), margin, labelled=False)
        for b in build_microvessels(self.rng, self.head, int(p.microvessels)):
            level = self.rng.uniform(0.35, 0.75)
            tubes.add_polyline(self.to_grid(b.points), b.radii, np.full(len(b.points), level), margin, labelled=False)
        return tree, tubes

    def dephasing(self, points: np.ndarray, depth: float) -> np.ndarray:
        """Signal dip (intravoxel dephasing of turbulent flow) around the sharpest bend of the siphon."""
        n = len(points)
        lo, hi = n // 3, max(n // 3 + 1, n - 8)
        i = lo + int(np.argmax(curvature(points)[lo:hi]))
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
        width = self.rng.uniform(1.5, 4.0)
        return 1.0 - depth * np.exp(-0.5 * ((arc - arc[i]) / width) ** 2)

    # -- aneurysms ------------------------------------------------------------------------------
    def choose_sites(self, tree, n: int) -> list[Site]:
        """Distinct sites inside the field of view, weighted by how often aneurysms occur there."""
        nz, ny, nx = self.shape
        ext = np.array([nx, ny, nz]) * self.spacing
        margin = np.where(ext >= 40.0, 8.0, 0.1 * ext)  # 8 mm from the edges; less in crops (challenge data: 21 mm)
        ok = [s for s in tree.sites if np.all((self.to_grid(s.point)[0] > margin) & (self.to_grid(s.point)[0] < ext - margin))]
        if not ok or n <= 0:
            return []
        w = np.array([s.weight * (4.0 if self.p.anatomy == "varied" and site_type(s.name) == "sidewall" else 1.0)
                      for s in ok])  # varied anatomy: sidewall aneurysms about as common as in clinical series
        idx = self.rng.choice(len(ok), size=min(n, len(ok)), replace=False, p=w / w.sum())
        chosen = [ok[i] for i in idx]
        # keep aneurysms apart (no two sacs merging)
        kept: list[Site] = []
        for s in chosen:
            if all(np.linalg.norm(s.point - k.point) > 14 for k in kept):
                kept.append(s)
        return kept

    def wall_distance(self, tubes: TubeRaster, site: Site) -> float:
        """Distance (mm) from the site along its dome direction to the outside of every lumen."""
        t = np.arange(0.0, 12.0, 0.2)
        idx = self.to_grid(site.point[None, :] + t[:, None] * site.direction[None, :]) / self.spacing
        sd = ndimage.map_coordinates(tubes.sd, idx[:, ::-1].T, order=1, mode="nearest")
        outside = np.nonzero(sd > 0)[0]
        return float(t[outside[0]]) if len(outside) else site.parent_radius

    def aneurysms(self, tree, tubes: TubeRaster):
        p = self.p
        sites = self.choose_sites(tree, p.n_aneurysms + int(p.treated))
        specs: list[AneurysmSpec] = []
        for i, s in enumerate(sites):
            treated = bool(p.treated) and i == len(sites) - 1
            make, diameter = ((make_varied_aneurysm, sample_varied_diameter) if p.anatomy == "varied"
                              else (make_aneurysm, sample_diameter))
            specs.append(make(self.rng, s, diameter(self.rng, treated), treated, wall_mm=self.wall_distance(tubes, s)))
        sd_an = np.full(self.shape, 6.0, dtype=np.float32)
        ids = np.zeros(self.shape, dtype=np.uint8)
        for i, spec in enumerate(specs, start=1):
            lobes = [(self.to_grid(l.centre)[0], self.A.T @ l.rotation, l.semi_axes) for l in spec.lobes]
            ellipsoid_sd(lobes, self.spacing, self.shape, 6.0, out=sd_an, ids=ids, id_value=i)
        return specs, sites, sd_an, ids

    # -- tissue ---------------------------------------------------------------------------------
    def tissue(self, tubes: TubeRaster) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Static tissue intensity (grey matter = 1), the masks of the air around the head, of the
        intracranial space (skull base excluded) and of the subcutaneous fat.

        Layers are painted from the outside in with anti-aliased edges: skin, subcutaneous fat (the
        bright rim), skull (dark tables, moderately bright diploe), CSF, then the brain with white
        matter, texture, sulci, fissure, ventricles and cisterns, and the skull base with the orbits.
        """
        p, rng, sp, h = self.p, self.rng, self.spacing, self.h
        ax, ay, az = self.anatomy_coords()
        xyz = (ax, ay, az)
        hs = p.head_scale
        cell = lambda mm: (mm / sp[2], mm / sp[1], mm / sp[0])  # noqa: E731
        lump = smooth_field(rng, self.shape, cell(25.0))
        bumps = smooth_field(rng, self.shape, cell(8.0))  # irregular outlines: no perfect ellipsoid shells
        d_ic = _ellipsoid_distance(ax, ay, az, self.head.centre, self.head.semi_axes) + 2.0 * lump + 0.4 * bumps
        intracranial = d_ic < 0
        fat_th = smooth_field(rng, self.shape, cell(40.0))
        fat_th += np.float32(_u(rng, 2.2, 3.8))
        fat_th += 0.6 * bumps
        del bumps
        np.maximum(fat_th * np.float32(hs), np.float32(1.6), out=fat_th)
        skull, csf_th, skin_th = _u(rng, 5.0, 8.0), _u(rng, 1.0, 3.0), _u(rng, 1.2, 2.0)
        out = np.zeros(self.shape, dtype=np.float32)  # air
        d_fat = d_ic - np.float32(skull)
        d_fat -= fat_th
        del fat_th
        _paint(out, d_fat - np.float32(skin_th), _u(rng, 0.9, 1.4), h)  # skin / galea
        outside = d_fat > np.float32(skin_th + 2.0)  # air beyond the scalp (for zeroed-background scanners)
        fine = smooth_field(rng, self.shape, cell(2.5))
        _paint(out, d_fat, p.fat_ratio * (1 + 0.03 * lump + 0.03 * fine), h)  # fat with septa
        fat = (d_fat < 0) & (d_ic > np.float32(skull))  # the subcutaneous fat layer (bright in TOF)
        del d_fat
        _paint(out, d_ic - skull, 0.12, h)  # outer table
        _paint(out, d_ic - (skull - 1.8), _u(rng, 0.4, 1.0), h)  # diploe: marrow, moderately bright
        _paint(out, d_ic - 1.8, 0.12, h)  # inner table
        _paint(out, d_ic, p.csf_ratio, h)  # subarachnoid CSF
        # brain: grey matter cortex, white matter deeper (slightly brighter in TOF), fine texture
        brain = _smoothstep((-d_ic - 9.0 - 4.0 * lump) / 8.0)  # white-matter weight
        brain *= np.float32(p.wm_ratio - 1.0)
        brain += 1.0
        fine *= np.float32(p.texture)
        fine += 1.0
        brain *= fine
        del fine
        _paint(out, d_ic + np.float32(csf_th), brain, h)
        del brain
        # sulci: thin CSF sheets where a random field crosses zero, only in the cortical ribbon
        sulc = np.abs(smooth_field(rng, self.shape, cell(6.0)))
        sulc -= np.float32(0.09)
        sulc *= np.float32(8.0)
        sulc[(d_ic > -csf_th) | (d_ic < -16.0 - 6.0 * lump)] = 9.0
        _paint(out, sulc, p.csf_ratio * 1.1, h)
        del sulc
        # interhemispheric fissure (falx) above the circle of Willis, ventricles, basal cisterns
        fiss = np.abs(ax - 1.5 * lump) - np.float32(0.6)
        fiss[(az <= 12.0) | (d_ic >= 0) | (ay >= 60)] = 9.0
        _paint(out, fiss, p.csf_ratio, h)
        del fiss
        for s in (1, -1):
            self.paint_ellipsoid(out, xyz, np.array([s * 9.0, 6.0, 24.0]) * hs, np.array([6.0, 24.0, 7.0]) * hs, p.csf_ratio)
        self.paint_ellipsoid(out, xyz, np.array([0.0, 2.0, 10.0]) * hs, np.array([1.8, 11.0, 7.0]) * hs, p.csf_ratio)
        self.paint_ellipsoid(out, xyz, np.array([0.0, -6.0, -1.0]) * hs, np.array([11.0, 8.0, 3.5]) * hs, p.csf_ratio * 1.2)
        cist = tubes.cistern
        cist -= 0.8 * lump
        cist[d_ic >= 0] = 9.0
        _paint(out, cist, p.csf_ratio, h)
        tubes.cistern = None  # done with it: free the memory
        # anterior skull base (orbital roofs, ethmoid) under the frontal lobes, orbits, sphenoid sinus;
        # central skull base: clivus (fatty marrow, often bright), petrous bones (dark; the petrous ICA runs
        # through them), mastoid air, and the cavernous sinuses around the siphons (slow venous signal).
        # (centre, semi-axes, value, where, extradural): extradural parts are outside the brain mask
        lump *= np.float32(0.1)
        lump += np.float32(0.18)
        parts = [((0.0, -50.0, -31.0), (42.0, 45.0, 22.0), lump, d_ic < skull, True)]
        for s in (1, -1):
            parts += [((s * 29.0, -52.0, -22.0), (12.0, 15.0, 10.0), p.fat_ratio * 0.85, None, True),
                      ((s * 31.0, -61.0, -20.0), (9.5, 9.5, 9.5), 0.35, None, True)]
        parts += [((0.0, -25.0, -30.0), (12.0, 10.0, 10.0), 0.02, None, True),
                  ((0.0, 3.0, -31.0), (8.0, 5.0, 13.0), _u(rng, 0.3, 1.3), None, True)]
        for s in (1, -1):
            parts += [((s * 22.0, 13.0, -31.0), (7.0, 7.0, 6.0), 0.1, None, True),
                      ((s * 35.0, 25.0, -29.0), (10.0, 9.0, 7.0), 0.1, None, True),
                      ((s * 46.0, 31.0, -36.0), (7.0, 7.0, 7.0), 0.02, None, True),
                      ((s * 14.0, -20.0, -17.0), (6.0, 9.0, 6.0), 1.0 + 2.0 * p.venous, None, False)]
        extradural = np.zeros(self.shape, dtype=np.float32)
        for centre, semi, value, where, outer in parts:
            centre, semi = np.array(centre) * hs, np.array(semi) * hs
            self.paint_ellipsoid(out, xyz, centre, semi, value, where=where)
            if outer:
                self.paint_ellipsoid(extradural, xyz, centre, semi, 1.0, where=where)
        intracranial &= extradural < 0.5
        return out, outside, intracranial, fat

    # -- the whole case -------------------------------------------------------------------------
    def render(self) -> PhantomCase:
        p, rng = self.p, self.rng
        tree, tubes = self.vessels()
        specs, sites, sd_an, ids = self.aneurysms(tree, tubes)
        tissue, outside, brain, fat = self.tissue(tubes)
        vessel_mask = tubes.label
        labels = np.zeros(self.shape, dtype=np.uint8)
        instances = np.zeros(self.shape, dtype=np.uint8)
        bright = np.float32(p.contrast) * tubes.value
        het = smooth_field(rng, self.shape, tuple(2.5 / self.spacing[::-1]))
        locations: list[tuple[int, int, int, float]] = []
        treated: list[tuple[int, int, int, float]] = []
        for i, (spec, site) in enumerate(zip(specs, sites), start=1):
            zyx = self.paint_aneurysm(i, spec, site, ids, sd_an, tubes, labels, bright, tissue, het)
            instances[tuple(zyx.T)] = i
            if len(zyx):  # one ADAM location per aneurysm, even when the parent vessel splits its label
                (treated if spec.treated else locations).append(self.location(zyx))
        del het, ids
        truths = [self.truth(spec, site, tubes) for spec, site in zip(specs, sites)]
        # partial volume: occupancy of the lumen (vessels and sacs) blends lumen and tissue signal
        occ = np.minimum(tubes.sd, sd_an, out=sd_an)
        occ *= np.float32(-1.0 / self.h)
        occ += np.float32(0.5)
        np.clip(occ, 0.0, 1.0, out=occ)
        bright -= tissue
        bright *= occ
        tissue += bright  # bright now holds the lumen's excess over the tissue behind it
        del occ, sd_an
        tubes.sd = tubes.value = None
        img, visible = self.scanner_effects(tissue, outside, bright, vessel_mask)
        # the sidewall/bifurcation type follows from the site's name (anatomy.site_type): not repeated here
        p.aneurysms = [{"site": s.site, "diameter_mm": round(s.diameter_mm, 2), "treated": s.treated,
                        "kind": s.extra["kind"], "signal_loss": round(s.signal_loss, 3),
                        **({"neck": s.extra["neck"]} if "neck" in s.extra else {}), **t}
                       for s, t in zip(specs, truths)]
        p.variants = tree.variants
        return PhantomCase(image=Image(img, self.geometry, f"phantom seed {self.seed}"), vessels=vessel_mask.astype(np.uint8),
                           aneurysms=labels, locations=locations, geometry=self.geometry, params=p,
                           treated_locations=treated, visible=visible.astype(np.uint8), instances=instances,
                           brain=brain, head=~outside, fat=fat, cow_world=tuple(float(v) for v in self.cow_world))

    def paint_aneurysm(self, i: int, spec: AneurysmSpec, site: Site, ids: np.ndarray, sd_an: np.ndarray,
                       tubes: TubeRaster, labels: np.ndarray, bright: np.ndarray, tissue: np.ndarray,
                       het: np.ndarray) -> np.ndarray:
        """Label aneurysm ``i`` (sac only) and give it its intensity, working on its own voxels only;
        returns the (z, y, x) indices of its labelled voxels.

        Vessel voxels deep inside the sac beyond the parent wall become sac (no artery runs through an
        aneurysm lumen); the parent lumen below the neck stays vessel. Large sacs lose signal towards the
        dome (slow, swirling flow) with a heterogeneous pattern; treated ones are a signal void with a dark
        blooming halo (coil or clip artefact)."""
        zz, yy, xx = np.nonzero(ids == i)
        if len(zz) == 0:
            return np.zeros((0, 3), dtype=int)
        sda = sd_an[zz, yy, xx]
        sp = self.spacing
        q_site = self.to_grid(site.point)[0]
        d = self.A.T @ site.direction
        proj = (xx * sp[0] - q_site[0]) * d[0] + (yy * sp[1] - q_site[1]) * d[1] + (zz * sp[2] - q_site[2]) * d[2]
        wall = float(spec.extra.get("wall_mm", site.parent_radius))
        ves = tubes.label[zz, yy, xx]
        absorbed = ves & (proj > wall) & (sda < -0.75)
        in_sac = (sda <= 0) & (~ves | absorbed)
        labels[zz[in_sac], yy[in_sac], xx[in_sac]] = 2 if spec.treated else 1
        tubes.label[zz[absorbed], yy[absorbed], xx[absorbed]] = False
        nearer = sda < tubes.sd[zz, yy, xx]
        if spec.treated:
            tissue[zz[sda < 1.5], yy[sda < 1.5], xx[sda < 1.5]] *= np.float32(0.45)
            val = np.full(len(zz), 0.08, dtype=np.float32)
        else:
            radius = spec.diameter_mm / 2.0
            q = np.clip(np.round(q_site / sp).astype(int), 0, np.array(self.shape[::-1]) - 1)
            parent = float(tubes.value[q[2], q[1], q[0]]) if tubes.sd[q[2], q[1], q[0]] <= 0 else float(np.median(tubes.value[tubes.label]))
            inner = np.clip(-sda / (0.5 * radius), 0, 1) ** 1.5
            dome = np.clip((proj - wall) / (2.0 * radius), 0, 1)
            pattern = np.clip(0.7 + 0.35 * het[zz, yy, xx], 0.2, 1.3)
            loss = np.clip(spec.signal_loss * inner * (0.6 + 0.8 * dome) * pattern, 0.0, 0.92)
            val = np.float32(self.p.contrast) * parent * (1 - loss)
        bright[zz[nearer], yy[nearer], xx[nearer]] = val[nearer]
        return np.stack([zz[in_sac], yy[in_sac], xx[in_sac]], axis=1)

    def truth(self, spec: AneurysmSpec, site: Site, tubes: TubeRaster) -> dict[str, Any]:
        """Morphology ground truth of one aneurysm (:mod:`.truth`): neck, dome height, maximum
        diameter, the parent artery's radius at the site and the inflow artery's (the parent's, except
        the dominant A1 of an AComm aneurysm: the artery a size ratio's parent diameter is taken from)."""
        lobes = [(self.to_grid(lb.centre)[0], self.A.T @ lb.rotation, lb.semi_axes) for lb in spec.lobes]
        out = aneurysm_truth(lobes, tubes.sd, self.spacing, lambda q: self.geometry.index_to_lps(q / self.spacing),
                             self.geometry.direction_matrix, self.to_grid(site.point)[0])
        out["parent_radius_mm"] = round(float(site.parent_radius), 3)
        inflow = site.parent_radius if site.inflow_radius is None else site.inflow_radius
        out["inflow_radius_mm"] = round(float(inflow), 3)
        return out

    def scanner_effects(self, img: np.ndarray, outside: np.ndarray, excess: np.ndarray,
                        vessels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slab profile, bias field, point-spread blur, Rician noise, gamma and intensity range.

        Also returns the visible vessel label: the labelled voxels where the lumen's ``excess`` over
        the tissue, after the same profile, bias and blur, exceeds VISIBLE_SIGMAS times the local noise
        (an artery that does not stand out of the noise cannot be asked of an artery extraction)."""
        p, rng, sp = self.p, self.rng, self.spacing
        nz = self.shape[0]
        z = (np.arange(nz, dtype=np.float32) + 0.5) / nz
        prof = 0.7 + 0.3 * _smoothstep(z / 0.08) * _smoothstep((1 - z) / 0.08)
        if p.multislab:
            k = p.multislab
            prof = prof * (1 - 0.12 * ((z * k) % 1.0))  # venetian-blind banding of multi-slab TOF
        img *= prof[:, None, None]
        bias = np.exp(p.bias * smooth_field(rng, self.shape, (80 / sp[2], 80 / sp[1], 80 / sp[0])))
        img *= bias
        psf = (p.psf_z, p.psf_xy, p.psf_xy)
        img = ndimage.gaussian_filter(img, psf, truncate=3.0)
        excess *= prof[:, None, None]
        excess *= bias
        del bias
        excess = ndimage.gaussian_filter(excess, psf, truncate=3.0)
        sigma = np.float32(p.noise)
        if p.noise_map > 0:
            sigma = sigma * np.exp(np.float32(p.noise_map) * smooth_field(rng, self.shape, tuple(60.0 / sp[::-1])))
        visible = vessels & (excess > np.float32(VISIBLE_SIGMAS) * sigma)
        del excess
        # Rician magnitude: |signal + complex Gaussian noise|, computed in place
        n = rng.standard_normal(self.shape, dtype=np.float32)
        n *= sigma
        img += n
        np.multiply(img, img, out=img)
        rng.standard_normal(dtype=np.float32, out=n)
        n *= sigma
        np.multiply(n, n, out=n)
        img += n
        del n
        np.sqrt(img, out=img)
        ref = np.float32(p.contrast)
        img = ref * (img / ref) ** np.float32(p.gamma)
        top = {"12bit": 4095.0, "int1000": 1000.0, "float1000": 1000.0, "u8": 255.0}[p.intensity_range]
        img *= np.float32(top * p.intensity_max / ref)
        if p.zero_background:
            img[outside] = 0
        if p.intensity_range != "float1000":
            img = np.round(np.clip(img, 0, top))
        return img.astype(np.float32), visible

    def location(self, zyx: np.ndarray) -> tuple[int, int, int, float]:
        return location_of(zyx, self.spacing)


def location_of(zyx: np.ndarray, spacing_xyz: Sequence[float]) -> tuple[int, int, int, float]:
    """ADAM-style (x, y, z, radius_mm) of one aneurysm from its labelled voxels (``[z, y, x]`` rows): the
    centroid (voxel index, rounded) and the largest distance from it to a voxel centre plus half the
    largest voxel side (mm), the same definition as metrics.reference_locations."""
    sp = np.asarray(spacing_xyz, dtype=float)
    centre = zyx.mean(axis=0)
    r = float(np.max(np.linalg.norm((zyx - centre) * sp[::-1], axis=1)) + 0.5 * np.max(sp))
    cx, cy, cz = np.round(centre[::-1]).astype(int)
    return int(cx), int(cy), int(cz), round(r, 2)


def generate_case(seed: int, shape_xyz: Sequence[int] | None = None, spacing: Sequence[float] | None = None,
                  scanner: str = "train", **overrides: Any) -> PhantomCase:
    """One synthetic TOF-MRA case, deterministic from ``seed``.

    ``shape_xyz``/``spacing`` fix the grid (otherwise drawn); ``overrides`` replace any drawn parameter
    by name (see :func:`sample_params`, e.g. ``n_aneurysms=0``, ``noise=0.05``, ``treated=True``).
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x70A7]))
    params = sample_params(rng, scanner, shape_xyz, spacing)
    params = params.with_overrides(**overrides, seed=int(seed))
    return _Renderer(int(seed), params, rng).render()


def write_case(case: PhantomCase, folder: str | Path) -> Path:
    """Write the ADAM layout (orig/TOF.nii.gz, aneurysms.nii.gz, location.txt) plus vessels and params."""
    folder = Path(folder)
    (folder / "orig").mkdir(parents=True, exist_ok=True)
    dtype = case.storage_dtype or {"float1000": np.float32, "u8": np.uint8}.get(case.params.get("intensity_range"), np.int16)
    write_image(case.image.array.astype(dtype), case.geometry, folder / "orig" / "TOF.nii.gz")
    write_image(case.aneurysms.astype(np.uint8), case.geometry, folder / "aneurysms.nii.gz")
    write_image(case.vessels.astype(np.uint8), case.geometry, folder / VESSELS_NAME)
    if case.visible is not None:
        write_image(case.visible.astype(np.uint8), case.geometry, folder / VISIBLE_VESSELS_NAME)
    lines = [f"{x}, {y}, {z}, {r:.2f}" for x, y, z, r in case.locations]
    (folder / "location.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    write_params(case.params, folder / "params.json")
    return folder


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` in a dataset: independent streams derived from (seed, index)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def generate_dataset(out: str | Path, cases: int, seed: int = 0, shape_xyz: Sequence[int] | None = None,
                     spacing: Sequence[float] | None = None, scanner: str = "train", start: int = 0,
                     progress: Callable[[int, int], None] | None = None, **overrides: Any) -> list[Path]:
    """Write ``cases`` case folders ``P0000``... under ``out``; returns their paths."""
    out = Path(out)
    folders = []
    for i in range(start, start + cases):
        case = generate_case(case_seed(seed, i), shape_xyz, spacing, scanner, **overrides)
        folders.append(write_case(case, out / f"P{i:04d}"))
        if progress is not None:
            progress(i - start + 1, cases)
    return folders
