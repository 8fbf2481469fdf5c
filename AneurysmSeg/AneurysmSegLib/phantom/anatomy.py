"""Vessel tree and aneurysm geometry of the synthetic TOF-MRA, in a head-centred anatomical frame.

The frame is millimetres with its origin at the centre of the circle of Willis and axes like LPS:
``x`` to the patient's left, ``y`` posterior, ``z`` superior. Everything here is pure geometry
(centrelines with radii, aneurysm lobes); :mod:`phantom_raster` turns it into voxels and
:mod:`phantom` gives it a TOF-MRA appearance. Calibres follow real anatomy (ICA 4-5 mm, M1 2.5-3 mm,
A1/P1 about 2 mm, distal branches 0.5-1 mm) so that models trained on it see realistic sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import make_interp_spline

STEP_MM = 1.0  # centreline sampling step; tubes are capsules between samples (chord error < 0.03 mm)
MIN_RADIUS_MM = 0.22


@dataclass
class Branch:
    """One vessel: a smooth centreline sampled every ~STEP_MM with a radius per point."""

    name: str
    points: np.ndarray  # (N, 3) anatomical mm
    radii: np.ndarray  # (N,) mm
    parent: str | None = None
    parent_index: int = 0  # index on the parent's centreline where this branch starts
    cistern_mm: float = 0.0  # CSF margin around it (basal cisterns, sylvian fissure)
    drawn: bool = True  # False: an absent segment (kept only as the path its children's blood takes)


@dataclass
class HeadShape:
    """Intracranial ellipsoid (anatomical mm) shared by the tree (targets) and the appearance."""

    centre: np.ndarray
    semi_axes: np.ndarray

    def surface_point(self, direction: np.ndarray, depth: float = 0.0) -> np.ndarray:
        """Point on the ellipsoid along ``direction`` from the centre, ``depth`` mm inside."""
        u = direction / np.linalg.norm(direction)
        rho = 1.0 / np.sqrt(np.sum((u / self.semi_axes) ** 2))
        return self.centre + u * (rho - depth)


@dataclass
class Site:
    """A place where aneurysms grow: a point on a vessel and the direction the dome points to."""

    name: str
    point: np.ndarray
    direction: np.ndarray
    parent_radius: float
    weight: float
    #: radius of the artery the blood reaches the sac through, where that is not the parent: the
    #: dominant A1 at its junction for an AComm aneurysm (what a size ratio's parent diameter measures)
    inflow_radius: float | None = None


@dataclass
class Lobe:
    """An ellipsoid of an aneurysm sac: centre (mm), rotation (columns = axes) and semi-axes (mm)."""

    centre: np.ndarray
    rotation: np.ndarray
    semi_axes: np.ndarray


@dataclass
class AneurysmSpec:
    site: str
    diameter_mm: float
    lobes: list[Lobe]
    treated: bool = False
    signal_loss: float = 0.0  # 0 = as bright as the parent vessel, 1 = void at the centre
    extra: dict = field(default_factory=dict)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def smooth_curve(ctrl: np.ndarray, rng: np.random.Generator, tortuosity: float, step: float = STEP_MM) -> np.ndarray:
    """Spline through control points with random interior wiggles (tortuosity), sampled every ``step`` mm.

    Interior nodes every ~7 mm get an isotropic jitter of ``tortuosity`` mm; the two ends stay fixed
    because they are junctions with other vessels.
    """
    ctrl = np.asarray(ctrl, dtype=float)
    nodes = [ctrl[0]]
    for a, b in zip(ctrl[:-1], ctrl[1:]):
        m = max(1, int(np.ceil(np.linalg.norm(b - a) / 7.0)))
        nodes.extend(a + (b - a) * (j / m) for j in range(1, m + 1))
    nodes = np.asarray(nodes)
    if tortuosity > 0 and len(nodes) > 2:
        nodes[1:-1] += rng.normal(0.0, tortuosity, size=(len(nodes) - 2, 3))
    chord = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(nodes, axis=0), axis=1))])
    ok = np.concatenate([[True], np.diff(chord) > 1e-6])
    nodes, chord = nodes[ok], chord[ok]
    k = min(3, len(nodes) - 1)
    spline = make_interp_spline(chord, nodes, k=k)
    dense = spline(np.linspace(0.0, chord[-1], max(4, int(chord[-1] / 0.2))))
    # resample by arc length for an even step
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    n = max(2, int(round(arc[-1] / step)) + 1)
    t = np.linspace(0.0, arc[-1], n)
    return np.stack([np.interp(t, arc, dense[:, k]) for k in range(3)], axis=1)


def curvature(points: np.ndarray) -> np.ndarray:
    """Curvature (1/mm) at each centreline point, from finite differences."""
    d1 = np.gradient(points, axis=0)
    d2 = np.gradient(d1, axis=0)
    return np.linalg.norm(np.cross(d1, d2), axis=1) / np.maximum(np.linalg.norm(d1, axis=1) ** 3, 1e-9)


def taper(points: np.ndarray, r0: float, r1: float) -> np.ndarray:
    """Radius decreasing linearly with arc length from r0 to r1 (never below MIN_RADIUS_MM)."""
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    frac = arc / max(arc[-1], 1e-6)
    return np.maximum(r0 + (r1 - r0) * frac, MIN_RADIUS_MM)


class TreeBuilder:
    """Builds the circle of Willis and its branches with per-seed anatomical variation."""

    def __init__(self, rng: np.random.Generator, head: HeadShape, scale: float, tortuosity: float,
                 radius_scale: float, varied: bool = False) -> None:
        self.rng = rng
        self.varied = varied  # more circle-of-Willis variants (drawn after the classic ones: classic cases unchanged)
        self.head = head
        self.g = scale
        self.tort = tortuosity
        self.rs = radius_scale
        self.branches: dict[str, Branch] = {}
        self.sites: list[Site] = []
        self.variants: list[str] = []

    # -- helpers ---------------------------------------------------------------------------------
    def jit(self, p, sigma: float = 1.5) -> np.ndarray:
        return np.asarray(p, dtype=float) * self.g + self.rng.normal(0.0, sigma, 3)

    def add(self, name: str, ctrl, r0: float, r1: float, parent: str | None = None, cistern: float = 0.0,
            tort: float | None = None) -> Branch:
        """Add a branch through ``ctrl``; when it has a parent, it starts on the parent's centreline."""
        ctrl = [np.asarray(c, dtype=float) for c in ctrl]
        pidx = 0
        if parent is not None:
            pb = self.branches[parent]
            pidx = int(np.argmin(np.linalg.norm(pb.points - ctrl[0], axis=1)))
            ctrl[0] = pb.points[pidx].copy()
        t = self.tort if tort is None else tort
        pts = smooth_curve(np.stack(ctrl), self.rng, t * min(1.0, 0.4 + r0))
        rr = taper(pts, r0 * self.rs, r1 * self.rs)
        b = Branch(name, pts, rr, parent, pidx, cistern)
        self.branches[name] = b
        return b

    def maybe_infundibulum(self, b: Branch, probability: float) -> None:
        """Sometimes widen a branch's origin into a funnel (infundibulum, under 3 mm): part of the vessel,
        not an aneurysm; real scans have them and they are a classic false positive."""
        if self.rng.random() >= probability:
            return
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(b.points, axis=0), axis=1))])
        length = self.rng.uniform(1.5, 3.0)
        r_mouth = max(float(b.radii[0]) * 1.6, self.rng.uniform(0.9, 1.4))
        cone = r_mouth + (b.radii - r_mouth) * np.clip(arc / length, 0, 1)
        b.radii = np.maximum(b.radii, cone)
        self.variants.append(f"infundibulum_{b.name}")

    def tangent(self, name: str, index: int) -> np.ndarray:
        p = self.branches[name].points
        i0, i1 = max(0, index - 3), min(len(p) - 1, index + 3)
        return _unit(p[i1] - p[i0])

    def site(self, name: str, point: np.ndarray, direction: np.ndarray, parent_radius: float, weight: float,
             inflow_radius: float | None = None) -> None:
        d = _unit(np.asarray(direction, dtype=float) + self.rng.normal(0.0, 0.25, 3))
        self.sites.append(Site(name, np.asarray(point, dtype=float), d, parent_radius, weight, inflow_radius))

    def surface_target(self, direction: np.ndarray, depth: float) -> np.ndarray:
        return self.head.surface_point(np.asarray(direction, dtype=float), depth)

    # -- anatomy ---------------------------------------------------------------------------------
    def build(self) -> None:
        rng = self.rng
        J = {
            "BA_tip": self.jit((0, 7, -1), 1.0),
            "VB": self.jit((0, 15, -33), 2.0),
            "ACOM_L": None,
            "ACOM_R": None,
        }
        acom_centre = self.jit((0, -22, 6), 1.5)
        acom_half = rng.uniform(1.2, 2.5)
        J["ACOM_L"] = acom_centre + np.array([acom_half, 0, 0])
        J["ACOM_R"] = acom_centre - np.array([acom_half, 0, 0])
        ica_r = rng.uniform(2.0, 2.45)
        # vertebral dominance and fetal-PCA / hypoplastic A1 variants
        vert_r = {1: rng.uniform(1.3, 1.8), -1: rng.uniform(1.3, 1.8)}
        if rng.random() < 0.25:
            vert_r[int(rng.choice([-1, 1]))] *= rng.uniform(0.45, 0.7)
            self.variants.append("vertebral_dominance")
        for s, tag in ((1, "L"), (-1, "R")):
            J[f"ICA_term_{tag}"] = self.jit((s * 14.5, -9, 1.5), 1.2)
            J[f"MCA_bif_{tag}"] = self.jit((s * 36, -4, 5), 2.5)
            J[f"P1P2_{tag}"] = self.jit((s * 9, 6, 0), 1.0)
            # ICA from the neck through petrous, cavernous (siphon) and supraclinoid segments
            self.add(f"ICA_{tag}", [self.jit((s * 24, 12, -75), 2), self.jit((s * 23, 8, -55), 2),
                                    self.jit((s * 21, 2, -38), 1.5), self.jit((s * 19, -8, -30), 1.5),
                                    self.jit((s * 16, -15, -23), 1.2), self.jit((s * 15.5, -24, -18), 1.2),
                                    self.jit((s * 15, -27.5, -10), 1.0), self.jit((s * 14, -22, -4), 1.0),
                                    self.jit((s * 14, -14, -1.5), 0.8), J[f"ICA_term_{tag}"]],
                     ica_r, ica_r * 0.88, cistern=0.0, tort=0.8)
            self.add(f"VA_{tag}", [self.jit((s * 11, 32, -80), 2), self.jit((s * 9, 25, -55), 2),
                                   self.jit((s * 5, 18, -40), 1.5), J["VB"]],
                     vert_r[s], vert_r[s] * 0.95, cistern=1.0)
        self.add("BA", [J["VB"], self.jit((0, 12, -22), 1.5), self.jit((0, 9, -10), 1.5), J["BA_tip"]],
                 rng.uniform(1.3, 1.7), rng.uniform(1.2, 1.5), cistern=1.5)
        for s, tag in ((1, "L"), (-1, "R")):
            self._anterior_circulation(s, tag, J)
            self._posterior_circulation(s, tag, J)
        a_r = rng.uniform(0.5, 0.8)
        self.add("AcomA", [J["ACOM_R"], (J["ACOM_R"] + J["ACOM_L"]) / 2 + rng.normal(0, 0.6, 3), J["ACOM_L"]],
                 a_r, a_r, parent="A1_R", cistern=1.5, tort=0.2)
        # sites where saccular aneurysms are typical
        mid = self.branches["AcomA"].points[len(self.branches["AcomA"].points) // 2]
        # the AComm joins the two A1/A2 junctions; the blood reaches it through the larger drawn A1
        a1_ends = [float(self.branches[f"A1_{t}"].radii[-1]) for t in ("L", "R") if self.branches[f"A1_{t}"].drawn]
        self.site("AcomA", mid, np.array([0, -1.0, 0.35]), a_r, 0.30, inflow_radius=max(a1_ends))
        ba = self.branches["BA"]
        self.site("BA_tip", ba.points[-1], self.tangent("BA", len(ba.points) - 1), ba.radii[-1], 0.10)
        self._bend_sites()

    def _anterior_circulation(self, s: int, tag: str, J: dict) -> None:
        rng = self.rng
        ica = self.branches[f"ICA_{tag}"]
        term = ica.points[-1]
        m1_r = rng.uniform(1.2, 1.5)
        self.add(f"M1_{tag}", [term, self.jit((s * 22, -8.5, 2), 1.2), self.jit((s * 30, -6, 3), 1.5), J[f"MCA_bif_{tag}"]],
                 m1_r, m1_r * 0.9, parent=f"ICA_{tag}", cistern=1.5)
        a1_r = rng.uniform(0.85, 1.1)
        if rng.random() < 0.08:
            a1_r *= 0.45
            self.variants.append(f"hypoplastic_A1_{tag}")
        absent = False
        if self.varied and f"hypoplastic_A1_{tag}" not in self.variants:
            u = rng.random()
            if u < 0.08:
                a1_r *= 0.45
                self.variants.append(f"hypoplastic_A1_{tag}")
            elif u < 0.13 and not any(v.startswith("absent_A1") for v in self.variants):
                absent = True  # both A2 then fill through the anterior communicating artery
                self.variants.append(f"absent_A1_{tag}")
        a1 = self.add(f"A1_{tag}", [term, self.jit((s * 8, -16, 4), 1.0), J[f"ACOM_{tag}"]], a1_r,
                      max(a1_r * 0.95, 0.5), parent=f"ICA_{tag}", cistern=1.5, tort=0.3)
        a1.drawn = not absent
        # A2 runs up in front of and around the genu of the corpus callosum (pericallosal artery)
        a2_r = rng.uniform(0.8, 1.0)
        a2 = self.add(f"A2_{tag}", [J[f"ACOM_{tag}"], self.jit((s * 2.2, -28, 14), 1.2), self.jit((s * 2.8, -33, 26), 1.5),
                                    self.jit((s * 3, -31, 38), 2), self.jit((s * 3.5, -18, 49), 2),
                                    self.jit((s * 3.5, 2, 55), 2.5), self.jit((s * 3.5, 24, 54), 3)],
                      a2_r, 0.5, parent=f"A1_{tag}", cistern=0.0, tort=0.6)
        ci = int(np.argmin(np.linalg.norm(a2.points - (np.array([s * 3, -31, 38]) * self.g), axis=1)))
        cm = self.add(f"CallMarg_{tag}", [a2.points[ci], a2.points[ci] + np.array([s * 4, -10, 10]),
                                          self.surface_target(np.array([s * 0.15, -0.5, 0.9]), 8)],
                      0.6, 0.4, parent=f"A2_{tag}", tort=1.0)
        self.site(f"Pericallosal_{tag}", a2.points[ci], self.tangent(f"A2_{tag}", ci), a2.radii[ci], 0.04)
        self._cortical_tree(cm, "ACA", s, depth=2)
        self._cortical_tree(a2, "ACA", s, depth=2, n_children=3)
        # ophthalmic artery from the anterior genu, forward into the orbit
        oi = int(np.argmin(np.linalg.norm(ica.points - np.array([s * 15, -27, -9]) * self.g, axis=1)))
        self.add(f"Ophth_{tag}", [ica.points[oi], ica.points[oi] + np.array([s * 3, -8, -1]),
                                  np.array([s * 26, -55, -14]) * self.g], 0.55, 0.35, parent=f"ICA_{tag}")
        # anterior choroidal artery (small, posterior from the supraclinoid ICA)
        acha = self.add(f"AChA_{tag}", [term - np.array([0, 2, 1]), term + np.array([s * 6, 10, 2]),
                                        term + np.array([s * 14, 25, 8])], 0.35, 0.25, parent=f"ICA_{tag}", tort=1.0)
        self.maybe_infundibulum(acha, 0.05)
        # MCA bifurcation: superior and inferior M2 trunks in the sylvian fissure/insula
        bif = self.branches[f"M1_{tag}"].points[-1]
        m2_r = m1_r * rng.uniform(0.68, 0.8)
        sup = self.add(f"M2sup_{tag}", [bif, bif + np.array([s * 5, -3, 6]), bif + np.array([s * 6, 2, 18]),
                                        self.surface_target(np.array([s * 1.0, -0.2, 0.55]), 10)],
                       m2_r, m2_r * 0.6, parent=f"M1_{tag}", cistern=0.0)
        inf = self.add(f"M2inf_{tag}", [bif, bif + np.array([s * 6, 4, -1]), bif + np.array([s * 8, 16, 4]),
                                        self.surface_target(np.array([s * 1.0, 0.6, 0.0]), 10)],
                       m2_r * 0.95, m2_r * 0.55, parent=f"M1_{tag}", cistern=0.0)
        m1 = self.branches[f"M1_{tag}"]
        self.site(f"MCA_bif_{tag}", bif, self.tangent(f"M1_{tag}", len(m1.points) - 1), m1.radii[-1], 0.13)
        self.site(f"ICA_term_{tag}", term, self.tangent(f"ICA_{tag}", len(ica.points) - 1), ica.radii[-1], 0.03)
        self._cortical_tree(sup, "MCA", s, depth=3, n_children=4)
        self._cortical_tree(inf, "MCA", s, depth=3, n_children=4)
        # lenticulostriate perforators rising from M1
        for k in range(int(rng.integers(2, 5))):
            i = int(rng.integers(2, max(3, len(m1.points) - 2)))
            p = m1.points[i]
            self.add(f"LSA{k}_{tag}", [p, p + np.array([s * rng.uniform(0, 4), rng.uniform(-3, 3), 8]),
                                       p + np.array([s * rng.uniform(0, 8), rng.uniform(-5, 5), rng.uniform(16, 24)])],
                     0.3, 0.22, parent=f"M1_{tag}", tort=0.8)

    def _posterior_circulation(self, s: int, tag: str, J: dict) -> None:
        rng = self.rng
        tip = self.branches["BA"].points[-1]
        p1_r = rng.uniform(0.85, 1.1)
        pcom_r = rng.uniform(0.4, 0.75)
        fetal = rng.random() < 0.12
        hypoplastic_pcom = False
        if self.varied and not fetal:
            u = rng.random()
            fetal = u < 0.12
            hypoplastic_pcom = 0.12 <= u < 0.3
        if fetal:  # fetal PCA: large PcomA, small P1
            pcom_r, p1_r = p1_r, max(0.45, pcom_r * 0.7)
            self.variants.append(f"fetal_PCA_{tag}")
        elif hypoplastic_pcom:
            pcom_r = max(0.3, pcom_r * 0.5)
            self.variants.append(f"hypoplastic_PcomA_{tag}")
        self.add(f"P1_{tag}", [tip, self.jit((s * 5, 6.5, 0), 0.6), J[f"P1P2_{tag}"]], p1_r, p1_r,
                 parent="BA", cistern=1.5, tort=0.3)
        p2_r = max(p1_r, pcom_r) * rng.uniform(0.85, 1.0)
        p2 = self.add(f"P2_{tag}", [J[f"P1P2_{tag}"], self.jit((s * 16, 12, 1), 1.5), self.jit((s * 22, 23, 4), 2),
                                    self.jit((s * 24, 36, 7), 2), self.jit((s * 20, 52, 9), 2.5)],
                      p2_r, p2_r * 0.75, parent=f"P1_{tag}", cistern=1.0)
        self._cortical_tree(p2, "PCA", s, depth=3, n_children=3)
        ica = self.branches[f"ICA_{tag}"]
        pc_origin = np.array([s * 14, -13, -1.0]) * self.g
        ii = int(np.argmin(np.linalg.norm(ica.points - pc_origin, axis=1)))
        if rng.random() < 0.15 and f"fetal_PCA_{tag}" not in self.variants:
            self.variants.append(f"absent_PcomA_{tag}")
        else:
            pc = self.add(f"PcomA_{tag}", [ica.points[ii], self.jit((s * 12, -3, -0.5), 1.0), J[f"P1P2_{tag}"]],
                          pcom_r, pcom_r, parent=f"ICA_{tag}", cistern=1.5, tort=0.3)
            self.maybe_infundibulum(pc, 0.12)
            out = np.array([s * 0.5, 1.0, -0.3])
            t = self.tangent(f"ICA_{tag}", ii)
            self.site(f"ICA_PcomA_{tag}", ica.points[ii], out - t * np.dot(out, t), ica.radii[ii], 0.10)
        # superior cerebellar artery wrapping around the brainstem
        ba = self.branches["BA"]
        bi = max(0, len(ba.points) - int(rng.integers(4, 8)))
        self.add(f"SCA_{tag}", [ba.points[bi], ba.points[bi] + np.array([s * 6, 1, -1]),
                                ba.points[bi] + np.array([s * 14, 10, -3]), ba.points[bi] + np.array([s * 18, 24, -4]),
                                ba.points[bi] + np.array([s * 14, 40, -6])],
                 0.6, 0.4, parent="BA", cistern=0.0, tort=1.0)
        ai = int(rng.integers(3, max(4, len(ba.points) // 2)))
        self.add(f"AICA_{tag}", [ba.points[ai], ba.points[ai] + np.array([s * 8, -1, -2]),
                                 ba.points[ai] + np.array([s * 18, 6, -6]), ba.points[ai] + np.array([s * 22, 18, -10])],
                 0.45, 0.3, parent="BA", tort=1.0)

    def _sector_direction(self, sector: str, s: int) -> np.ndarray:
        """A random outward direction from the head centre inside a vascular territory."""
        rng = self.rng
        if sector == "MCA":
            az, el = np.radians(rng.uniform(-55, 60)), np.radians(rng.uniform(-35, 50))
            return np.array([s * np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        if sector == "ACA":
            th = np.radians(rng.uniform(20, 150))
            return np.array([s * rng.uniform(0.05, 0.35), -np.cos(th), np.sin(th)])
        az, el = np.radians(rng.uniform(5, 60)), np.radians(rng.uniform(-35, 25))  # PCA: occipital, inferior temporal
        return np.array([s * np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), np.sin(el)])

    def _cortical_tree(self, parent: Branch, sector: str, s: int, depth: int, n_children: int = 2) -> None:
        """Branches leaving ``parent`` towards the cortex, running along the surface; recursive."""
        rng = self.rng
        n = len(parent.points)
        if n < 6 or depth <= 0:
            return
        for k in range(n_children):
            i = int(rng.integers(n // 5, max(n // 5 + 1, n - 3)))
            r0 = float(parent.radii[i]) * rng.uniform(0.6, 0.82)
            if r0 < 0.3:
                continue
            d = self._sector_direction(sector, s)
            t1 = self.surface_target(d, rng.uniform(4, 8))
            d2 = _unit(d + np.array([0, 0, 0.35]) + rng.normal(0, 0.2, 3))
            t2 = self.surface_target(d2, rng.uniform(2, 5))
            p = parent.points[i]
            lead = p + _unit(self.tangent(parent.name, i) + 0.8 * _unit(t1 - p)) * 5.0
            b = self.add(f"{parent.name}.{k}", [p, lead, (lead + t1) / 2, t1, t2], r0, max(r0 * 0.55, MIN_RADIUS_MM),
                         parent=parent.name, tort=1.2)
            self._cortical_tree(b, sector, s, depth - 1, n_children=2)

    def _bend_sites(self) -> None:
        """Outer sides of the sharpest bends of the siphon, M1 and A2 (sidewall aneurysms)."""
        for name in ("ICA_L", "ICA_R", "M1_L", "M1_R", "A2_L", "A2_R"):
            b = self.branches[name]
            p = b.points
            if len(p) < 12:
                continue
            d1 = np.gradient(p, axis=0)
            d2 = np.gradient(d1, axis=0)
            curv = curvature(p)
            lo = len(p) // 3 if name.startswith("ICA") else 3
            i = lo + int(np.argmax(curv[lo:-3]))
            normal = d2[i] - d1[i] * np.dot(d2[i], d1[i]) / max(np.dot(d1[i], d1[i]), 1e-9)
            self.site(f"bend_{name}", p[i], -_unit(normal), float(b.radii[i]), 0.04 if name.startswith("ICA") else 0.02)


def build_tree(rng: np.random.Generator, head: HeadShape, scale: float = 1.0, tortuosity: float = 1.0,
               radius_scale: float = 1.0, varied: bool = False) -> TreeBuilder:
    """Circle of Willis with carotids, vertebrobasilar system and cortical branches (one random draw);
    ``varied`` adds absent A1, hypoplastic PcomA and more fetal PCAs to the classic variants."""
    tb = TreeBuilder(rng, head, scale, tortuosity, radius_scale, varied)
    tb.build()
    return tb


def build_sinuses(rng: np.random.Generator, head: HeadShape) -> list[Branch]:
    """Dural venous sinuses along the inner table (superior sagittal, transverse, straight sinus).

    TOF saturates venous inflow, but the large sinuses often still show up moderately bright: a
    source of false positives that a detector must learn to ignore (they are not labelled)."""
    def on_surface(direction, depth):
        return head.surface_point(np.asarray(direction, dtype=float), depth)

    th = np.radians(np.linspace(35, 200, 12))
    sss = np.stack([on_surface((0.0, -np.cos(t), np.sin(t)), 3.5) for t in th])
    sss[:, 0] += rng.normal(0, 0.7, len(sss))
    r_sss = rng.uniform(2.0, 3.2)
    pts = smooth_curve(sss, rng, 0.0)
    branches = [Branch("SSS", pts, taper(pts, r_sss * 0.55, r_sss))]
    torcula = sss[-1]
    for s in (1, -1):
        az = np.radians(np.linspace(0, 75, 8))
        ts = np.stack([on_surface((s * np.sin(a), np.cos(a), -0.15 - 0.25 * np.sin(a)), 4.0) for a in az])
        ts[0] = torcula
        pts = smooth_curve(ts, rng, 0.6)
        branches.append(Branch(f"TS_{'L' if s > 0 else 'R'}", pts, taper(pts, r_sss * rng.uniform(0.7, 1.0), r_sss * 0.8)))
    st = np.stack([head.centre + np.array([0.0, 25.0, 5.0]), (head.centre + np.array([0.0, 25.0, 5.0]) + torcula) / 2
                   + np.array([0, 0, 4.0]), torcula])
    pts = smooth_curve(st, rng, 0.3)
    branches.append(Branch("StraightS", pts, taper(pts, 1.2, 1.8)))
    return branches


def build_microvessels(rng: np.random.Generator, head: HeadShape, count: int) -> list[Branch]:
    """Short, sub-millimetre vessel fragments scattered in the brain (perforators, small cortical
    veins): the fine bright speckle of real TOF-MRA parenchyma. Too small to be annotated."""
    out: list[Branch] = []
    for k in range(count):
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        start = head.centre + (head.surface_point(u) - head.centre) * rng.uniform(0.2, 0.92)
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        length = rng.uniform(3.0, 10.0)
        mid = start + d * length / 2 + rng.normal(0, 0.8, 3)
        pts = smooth_curve(np.stack([start, mid, start + d * length]), rng, 0.0)
        r = rng.uniform(0.15, 0.3)
        out.append(Branch(f"micro{k}", pts, np.full(len(pts), r)))
    return out


def random_rotation(rng: np.random.Generator, max_deg: float = 180.0) -> np.ndarray:
    """A rotation matrix with each Euler angle uniform in +-max_deg."""
    a, b, c = np.radians(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_aneurysm(rng: np.random.Generator, site: Site, diameter_mm: float, treated: bool = False,
                  wall_mm: float | None = None) -> AneurysmSpec:
    """Saccular sac on ``site``: a main ellipsoid straddling the vessel wall (its overlap with the lumen
    forms the neck), sometimes a second lobe (lobulated) or daughter blebs.

    ``wall_mm``: distance from the site point to the outside of the lumen along the dome direction
    (measured on the rasterised tree, so bifurcations are handled); default: the parent radius.
    """
    R = diameter_mm / 2.0
    wall = site.parent_radius if wall_mm is None else wall_mm
    k = rng.uniform(0.35, 0.85)  # neck half-width = R * sqrt(1 - k^2): the smaller k, the wider the neck
    lobes, perp, rot = _main_lobe(rng, site, R, wall, k)
    kind = "simple"
    u = rng.random()
    if u < 0.2 and R > 1.5:  # lobulated: a second overlapping lobe
        _add_lobe(rng, lobes, site.direction, perp, rot, R)
        kind = "lobulated"
    elif u < 0.45 and R > 1.2:  # daughter blebs on the dome
        _add_blebs(rng, lobes, site.direction, R, int(rng.integers(1, 3)), (0.22, 0.42))
        kind = "bleb"
    loss = float(np.clip((R - 2.0) / 4.5, 0.0, 0.75) * rng.uniform(0.6, 1.1))
    return AneurysmSpec(site.name, float(diameter_mm), lobes, treated, loss,
                        {"kind": kind, "neck_k": float(k), "wall_mm": float(wall)})


SHAPES = ("simple", "lobulated", "multilobular", "bleb", "irregular")  # the shape types of make_varied_aneurysm


def make_varied_aneurysm(rng: np.random.Generator, site: Site, diameter_mm: float, treated: bool = False,
                         wall_mm: float | None = None) -> AneurysmSpec:
    """Like :func:`make_aneurysm` with every shape type of :data:`SHAPES` (multilobular: 2-3 extra lobes;
    irregular: 4-9 small bumps all over the sac) and a neck drawn wide (about the sac's width) or narrow
    (less than two thirds of it)."""
    R = diameter_mm / 2.0
    wall = site.parent_radius if wall_mm is None else wall_mm
    neck = "wide" if rng.random() < 0.5 else "narrow"
    k = rng.uniform(0.15, 0.45) if neck == "wide" else rng.uniform(0.72, 0.9)
    lobes, perp, rot = _main_lobe(rng, site, R, wall, k)
    kind = str(rng.choice(SHAPES, p=[0.3, 0.15, 0.15, 0.2, 0.2])) if R > 1.2 else "simple"
    if kind == "lobulated":
        _add_lobe(rng, lobes, site.direction, perp, rot, R)
    elif kind == "multilobular":
        for _ in range(int(rng.integers(2, 4))):
            _add_lobe(rng, lobes, site.direction, perp, rot, R)
    elif kind == "bleb":
        _add_blebs(rng, lobes, site.direction, R, int(rng.integers(1, 3)), (0.22, 0.42))
    elif kind == "irregular":
        _add_blebs(rng, lobes, site.direction, R, int(rng.integers(4, 10)), (0.12, 0.25), spread=1.2)
    loss = float(np.clip((R - 2.0) / 4.5, 0.0, 0.85) * rng.uniform(0.6, 1.1))
    return AneurysmSpec(site.name, float(diameter_mm), lobes, treated, loss,
                        {"kind": kind, "neck": neck, "neck_k": float(k), "wall_mm": float(wall)})


def _main_lobe(rng: np.random.Generator, site: Site, R: float, wall: float, k: float):
    """The main body: elongated along the dome axis, random aspect across it, its centre ``k`` semi-axes
    beyond the wall. Returns the lobe list, a unit vector across the dome axis and the lobe's axes."""
    d = site.direction
    perp = _unit(np.cross(d, rng.normal(size=3)))
    rot = np.stack([d, perp, np.cross(d, perp)], axis=1)
    axes = R * np.array([rng.uniform(0.95, 1.3), rng.uniform(0.8, 1.05), rng.uniform(0.8, 1.05)])
    centre = site.point + d * (wall + k * axes[0])
    return [Lobe(centre, rot, axes)], perp, rot


def _add_lobe(rng: np.random.Generator, lobes: list[Lobe], d: np.ndarray, perp: np.ndarray, rot: np.ndarray,
              R: float) -> None:
    """A second overlapping lobe, 0.5-0.8 of the sac's radius, off the main lobe towards the dome."""
    centre = lobes[0].centre
    off = _unit(d * 0.5 + perp * rng.uniform(-1, 1) + rot[:, 2] * rng.uniform(-1, 1))
    r2 = R * rng.uniform(0.5, 0.8)
    lobes.append(Lobe(centre + off * R * 0.75, random_rotation(rng), r2 * rng.uniform(0.85, 1.15, 3)))


def _add_blebs(rng: np.random.Generator, lobes: list[Lobe], d: np.ndarray, R: float, count: int,
               size: tuple[float, float], spread: float = 0.5) -> None:
    """``count`` small spheres on the sac's surface, mostly towards the dome (``spread``: how far off)."""
    centre = lobes[0].centre
    for _ in range(count):
        off = _unit(d * rng.uniform(0.6, 1.2) + rng.normal(0, spread, 3))
        rb = R * rng.uniform(*size)
        lobes.append(Lobe(centre + off * (R * 0.95), np.eye(3), np.full(3, rb)))


def site_type(name: str) -> str:
    """``sidewall`` for the outer bends of a vessel, ``bifurcation`` for sites at a branching."""
    return "sidewall" if name.startswith("bend_") else "bifurcation"


def sample_diameter(rng: np.random.Generator, treated: bool = False, largest_mm: float = 12.0) -> float:
    """Aneurysm diameter (mm): mostly 2-7 mm, a tail up to ``largest_mm``, never under 1.5 mm."""
    mu = np.log(6.0 if treated else 4.2)
    return float(np.clip(np.exp(rng.normal(mu, 0.42)), 1.5, largest_mm))


def sample_varied_diameter(rng: np.random.Generator, treated: bool = False) -> float:
    """1.5-25 mm: the classic distribution, with one in ten drawn large to giant (10-25 mm)."""
    if rng.random() < 0.1:
        return float(rng.uniform(10.0, 25.0))
    return sample_diameter(rng, treated)
