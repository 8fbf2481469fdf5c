"""Domain-randomised phantom cases for training, in the spirit of SynthSeg and vesselFM.

Networks trained only on one realistic-looking phantom rely on its look (its fat rim, its grey
levels, its field of view) and fail on real scans that look otherwise. Here each case draws its
appearance far beyond realism (tissue intensities, vessel contrast, noise, blur, gamma, bias, venous
signal, inflow saturation along the slab), its grid (voxel sizes 0.2-1.0 mm, anisotropic, within a
voxel budget, so fine grids cover small fields of view as on scanners), its field of view and
masking (full head, slab, circle-of-Willis crop, skull-stripped, background-masked, vessels-only),
its matrix (zero-filled) and its intensity convention (dtype, offset, scale). A share of the cases
keeps the generator's realistic appearance. The anatomy and labels are the generator's, so only the
shapes are common to all cases. Everything is drawn from the case seed: the same seed gives the
same case. The choices are recorded in ``params.randomised``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import kinds
from .render import PhantomCase, generate_case

REALISTIC_SHARE = 0.3  # cases with the generator's realistic appearance, its training or shifted scanner (any field of view)
MAX_VOXELS = 256 * 256 * 96  # grids larger than this are cropped in-plane around the circle of Willis


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def random_appearance(rng: np.random.Generator) -> dict[str, Any]:
    """Generator parameters far outside the realistic ranges (vessels stay brighter than the brain,
    as in any TOF-MRA: that is what the networks may rely on)."""
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    drawn = {
        "contrast": u(1.6, 8.0),
        "fat_ratio": u(0.2, 4.5),
        "wm_ratio": u(0.6, 1.6),
        "csf_ratio": u(0.05, 1.3),
        "noise": _log_uniform(rng, 0.01, 0.25),
        "noise_map": u(0.0, 0.7),
        "gamma": u(0.5, 2.0),
        "inflow_fade": u(0.0, 0.7),
        "inflow_length_mm": u(100.0, 900.0),
        "bias": u(0.0, 0.7),
        "psf_xy": u(0.3, 1.2),
        "psf_z": u(0.3, 1.5),
        "texture": u(0.0, 0.12),
        "venous": u(0.0, 1.6) if rng.random() < 0.8 else 0.0,
        "siphon_dephasing": u(0.2, 0.8) if rng.random() < 0.3 else 0.0,
        "microvessels": int(rng.integers(0, 400)),
        "multislab": int(rng.integers(2, 6)) if rng.random() < 0.3 else 0,
        "tortuosity": u(0.3, 2.6),
        "radius_scale": u(0.8, 1.25),
        "head_scale": u(0.8, 1.2),
        "rotation_deg": [u(-20, 20), u(-12, 12), u(-15, 15)],
        "oblique_deg": u(-30, 30) if rng.random() < 0.4 else 0.0,
        "intensity_range": str(rng.choice(["12bit", "int1000", "float1000", "u8"])),
        "intensity_max": u(0.3, 1.0),
    }
    drawn["contrast"] = max(drawn["contrast"], 1.3 * drawn["wm_ratio"], 1.3 * drawn["csf_ratio"])
    return drawn


def random_grid(rng: np.random.Generator, max_voxels: int = MAX_VOXELS) -> tuple[list[int], list[float], str]:
    """Voxel size (0.2-1.0 mm in-plane, slices up to 2.5x thicker, at most 1.2 mm), field of view (a
    whole-head slab or a crop) and the matrix; an over-budget grid shrinks towards a 50 x 50 x 30 mm
    crop around the circle of Willis (and below it when even that is over budget)."""
    sxy = float(np.clip(_log_uniform(rng, 0.2, 1.0), 0.2, 1.0))
    sz = float(np.clip(sxy * rng.uniform(1.0, 2.5), 0.25, 1.2))
    if rng.random() < 0.6:
        fov, fov_kind = [rng.uniform(170, 230)] * 2 + [rng.uniform(40, 110)], "slab"
    else:
        side = rng.uniform(50, 110)
        fov, fov_kind = [side * rng.uniform(0.85, 1.15), side, rng.uniform(30, 60)], "crop"
    spacing = np.array([sxy, sxy, sz])
    shape = np.maximum(np.round(np.asarray(fov) / spacing), 16)
    if np.prod(shape) > max_voxels:  # shrink towards a 50 x 50 x 30 mm crop, then below it if need be
        least = np.minimum(np.ceil(np.array([50.0, 50.0, 30.0]) / spacing), shape)
        f = (max_voxels / np.prod(shape)) ** (1 / 3)
        shape = np.maximum(np.floor(shape * f), least)
        while np.prod(shape) > max_voxels:
            shape = np.maximum(np.floor(shape * 0.95), 16)
        fov_kind = "crop"
    return [int(v) for v in shape], [float(v) for v in spacing], fov_kind


_STEPS = {"partial_slab": kinds.partial_slab, "cow_crop": kinds.cow_crop, "vessels_only": kinds.vessels_only,
          "brain_extracted": kinds.brain_extracted, "background_masked": kinds.background_masked,
          "matrix_zerofilled": kinds.matrix_zerofilled, "uint8": kinds.as_uint8, "int16_offset": kinds.as_int16_offset,
          "uint16_4095": kinds.as_uint16_4095, "float_scaled": kinds.as_float_scaled}


@dataclass
class Plan:
    """Every draw of one randomised case, made before anything is rendered."""

    realistic: bool
    scanner: str  # the generator's scanner distribution (realistic cases: either; randomised: "train")
    shape_xyz: list[int]
    spacing: list[float]
    field_of_view: str
    appearance: dict[str, Any]
    steps: list[tuple[str, tuple]]  # transform name (of phantom.kinds) and its extra arguments


def plan(seed: int, max_voxels: int = MAX_VOXELS, realistic_share: float = REALISTIC_SHARE) -> Plan:
    """The draws of :func:`randomised_case` for ``seed``: grid, appearance and transform steps."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    realistic = bool(rng.random() < realistic_share)
    shape, spacing, fov_kind = random_grid(rng, max_voxels)
    appearance = {} if realistic else random_appearance(rng)
    scanner = str(rng.choice(["train", "shifted"])) if realistic else "train"
    steps: list[tuple[str, tuple]] = []
    u = rng.random()
    if fov_kind == "slab" and u < 0.25:
        steps.append(("partial_slab", (float(rng.uniform(25, 60)),)))
    elif fov_kind == "slab" and u < 0.4:
        # down to the size of challenge crops (TopCoW: about 44 x 36 x 21 mm)
        steps.append(("cow_crop", ([float(v) for v in rng.uniform([35, 35, 20], [100, 100, 60])],)))
    u = rng.random()
    if u < 0.05:
        steps.append(("vessels_only", ()))
    elif u < 0.25:
        steps.append(("brain_extracted", ()))
    elif u < 0.4:
        steps.append(("background_masked", ()))
    if rng.random() < 0.08 and np.prod(shape) * 4 <= 2 * max_voxels:
        steps.append(("matrix_zerofilled", ()))
    u = rng.random()  # the stored convention (vessels-only exports are uint8 already); from 0.6 the generator's
    if u < 0.6 and ("vessels_only", ()) not in steps:
        steps.append((("uint8", "int16_offset", "uint16_4095", "float_scaled")[int(u / 0.15)], ()))
    return Plan(realistic, scanner, shape, spacing, fov_kind, appearance, steps)


def randomised_case(seed: int, max_voxels: int = MAX_VOXELS, realistic_share: float = REALISTIC_SHARE,
                    **overrides: Any) -> PhantomCase:
    """One domain-randomised case, deterministic from ``seed``; ``overrides`` fix generator parameters
    (e.g. ``n_aneurysms``) after the draws."""
    pl = plan(seed, max_voxels, realistic_share)
    case = generate_case(seed, pl.shape_xyz, pl.spacing, pl.scanner,
                         **{"anatomy": "varied", **pl.appearance, **overrides})
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED, 1]))
    for name, args in pl.steps:
        case = _STEPS[name](case, rng, *args)
    case.params.kind_detail = None
    case.params.randomised = {"realistic_appearance": pl.realistic, "field_of_view": pl.field_of_view,
                              "steps": [name for name, _ in pl.steps]}
    return case
