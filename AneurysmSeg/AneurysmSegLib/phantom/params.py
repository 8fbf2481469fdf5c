"""The parameters of one phantom case: what was drawn, what was overridden, what was rendered.

A case folder's ``params.json`` is this dataclass as JSON (:meth:`PhantomParams.to_dict`, keys in the
order files have always had); :func:`read_params` reads it back, also from folders written before
the dataclass existed. The class also reads like that dict (``params["noise"]``, ``params.get(...)``)
for code written against the JSON.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

SCANNERS = ("train", "shifted")
INTENSITY_RANGES = ("12bit", "int1000", "float1000", "u8")
ANATOMIES = ("classic", "varied")  # varied: more circle-of-Willis variants, every aneurysm shape, 1.5-25 mm
# written to params.json only when they differ from these defaults (older files lack them)
_OPTIONAL = {"anatomy": "classic", "input_kind": None, "kind_detail": None, "randomised": None}


@dataclass(eq=False)  # equality from Mapping: equal when the params.json dicts are
class PhantomParams(Mapping):
    """Scanner and case parameters; intensities relative to grey matter (= 1).

    ``contrast`` proximal arteries, ``fat_ratio`` the scalp fat, ``wm_ratio``/``csf_ratio``; ``noise``
    Rician sigma (``noise_map``: its spatial spread, a parallel-imaging g-factor); ``gamma``;
    ``inflow_length_mm``/``inflow_fade`` the saturation of blood along its path in the slab and towards
    the top; ``bias`` the log-std of the receive field; ``psf_xy``/``psf_z`` Gaussian blur in voxels;
    ``texture`` brain texture; ``head_scale``, ``vessel_scale``, ``radius_scale``, ``tortuosity``;
    ``rotation_deg`` (head in the slab), ``oblique_deg`` (slab tilt), ``cow_offset_mm`` and
    ``cow_height`` (position of the circle of Willis in the slab); ``intensity_range`` and
    ``intensity_max`` the stored values; ``zero_background``; ``multislab`` (venetian blind, number of
    slabs or 0); ``venous`` sinus signal; ``siphon_dephasing``; ``microvessels`` (count);
    ``n_aneurysms`` and ``treated`` (one more, treated). Filled in by rendering: ``seed``,
    ``aneurysms`` (per aneurysm: site, site_type, diameter_mm, treated, kind = shape type,
    signal_loss, and neck for varied anatomy) and ``variants`` (circle-of-Willis variants). Options:
    ``anatomy``; ``input_kind``/``kind_detail`` (:mod:`phantom.kinds`); ``randomised`` (the draws of
    :mod:`phantom.randomise`).
    """

    scanner: str
    shape_xyz: list
    spacing: list
    contrast: float
    fat_ratio: float
    wm_ratio: float
    csf_ratio: float
    noise: float
    gamma: float
    inflow_fade: float
    inflow_length_mm: float
    bias: float
    psf_xy: float
    psf_z: float
    texture: float
    head_scale: float
    vessel_scale: float
    radius_scale: float
    tortuosity: float
    rotation_deg: list
    oblique_deg: float
    cow_offset_mm: list
    cow_height: float
    intensity_range: str
    intensity_max: float
    zero_background: bool
    multislab: int
    venous: float
    siphon_dephasing: float
    microvessels: int
    noise_map: float
    n_aneurysms: int
    treated: bool
    seed: int | None = None
    aneurysms: list = field(default_factory=list)
    variants: list = field(default_factory=list)
    anatomy: str = "classic"
    input_kind: str | None = None
    kind_detail: dict | None = None
    randomised: dict | None = None

    def __post_init__(self) -> None:
        if self.scanner not in SCANNERS:
            raise ValueError(f"scanner must be one of {SCANNERS}, got {self.scanner!r}")
        if self.intensity_range not in INTENSITY_RANGES:
            raise ValueError(f"intensity_range must be one of {INTENSITY_RANGES}, got {self.intensity_range!r}")
        if self.anatomy not in ANATOMIES:
            raise ValueError(f"anatomy must be one of {ANATOMIES}, got {self.anatomy!r}")

    # -- the params.json form -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; options at their defaults are left out (files stay as they were)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _OPTIONAL and value == _OPTIONAL[f.name]:
                continue
            out[f.name] = _jsonable(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PhantomParams":
        """From a params.json dict; unknown keys are an error (a typo would otherwise be ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown phantom parameters: {sorted(unknown)}")
        return cls(**dict(data))

    def with_overrides(self, **overrides: Any) -> "PhantomParams":
        """A copy with some parameters replaced (ValueError on unknown names or invalid values)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"unknown phantom parameters: {sorted(unknown)}")
        return dataclasses.replace(self, **overrides)

    # -- read access like the dict --------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    @classmethod
    def _names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_params(params: PhantomParams, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(params.to_dict(), indent=1))
    return path


def read_params(path: str | Path) -> PhantomParams:
    """A case's params.json (give the file or the case folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "params.json"
    return PhantomParams.from_dict(json.loads(path.read_text()))
