"""Plain-data results of the pipeline: seeds, one entry per aneurysm, and the label image.

Every front end (command line, Slicer module, tests) consumes these; none recomputes them.
Physical positions are kept in LPS (ITK's convention, like the files); RAS is derived.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from .geometry import Geometry, lps_to_ras
from .terminology import aneurysm_name


@dataclass
class Seed:
    """Centre of one 64^3 VOI for the fine stage. ``source`` is "detector" or "user"."""

    position_lps: tuple[float, float, float]
    confidence: float = 1.0
    source: str = "user"
    label: str = ""

    @property
    def position_ras(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in lps_to_ras(self.position_lps))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "position_ras": list(self.position_ras)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Seed":
        """Inverse of :meth:`to_dict` (derived RAS positions are ignored: LPS is the truth)."""
        return cls(position_lps=tuple(float(v) for v in data["position_lps"]),  # type: ignore[arg-type]
                   confidence=float(data.get("confidence", 1.0)), source=str(data.get("source", "user")),
                   label=str(data.get("label", "")))


@dataclass
class Morphology:
    """What a neuroradiologist reports per aneurysm (definitions and method: ``stages/morphology.py``).

    Lengths in mm, areas in mm^2, positions and directions in LPS. None: not measurable (no contact with
    an artery was found, so there is no neck and nothing measured from it). ``site``/``site_group``/
    ``side`` are empty when the artery tree gave no landmark.
    """

    phases_size_bin: str = ""
    neck_width_mm: float | None = None
    ostium_area_mm2: float | None = None
    dome_height_mm: float | None = None
    dome_width_mm: float | None = None
    aspect_ratio: float | None = None
    dome_to_neck_ratio: float | None = None
    bottleneck_factor: float | None = None
    parent_diameter_mm: float | None = None
    size_ratio: float | None = None
    nonsphericity_index: float | None = None
    undulation_index: float | None = None
    site: str = ""  #: e.g. "MCA bifurcation"
    site_group: str = ""  #: PHASES: ICA, MCA, ACA/AComm/PComm, posterior
    side: str = ""  #: "left", "right", "" (midline)
    neck_centre_lps: tuple[float, float, float] | None = None
    neck_normal_lps: tuple[float, float, float] | None = None  #: unit, pointing into the sac
    neck_curve_lps: list[tuple[float, float, float]] = field(default_factory=list)  #: closed outline of the neck

    @property
    def location(self) -> str:
        """"right MCA bifurcation"; "" when the site is unknown."""
        return f"{self.side} {self.site}".strip()

    def as_row(self) -> dict[str, Any]:
        """Flat scalar columns for a table (the neck outline is left out; centre and normal as x/y/z)."""
        row: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "neck_curve_lps":
                continue
            if f.name in ("neck_centre_lps", "neck_normal_lps"):
                for axis, x in zip("xyz", v if v is not None else (None, None, None)):
                    row[f"{f.name}_{axis}"] = x
            else:
                row[f.name] = v
        row["location"] = self.location
        return row

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Morphology":
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            v = data[f.name]
            if f.name == "neck_curve_lps":
                v = [tuple(float(c) for c in p) for p in v]
            elif isinstance(v, list):
                v = tuple(v)
            values[f.name] = v
        return cls(**values)


@dataclass
class Aneurysm:
    """One segmented aneurysm: its label value in ``SegmentationResult.labels`` and measurements."""

    id: int
    seed: Seed
    centroid_lps: tuple[float, float, float]
    centroid_voxel: tuple[float, float, float]  # continuous index, (x, y, z) order
    volume_mm3: float
    max_diameter_mm: float
    confidence: float
    voxel_count: int
    morphology: Morphology | None = None  #: neck, dome, ratios, irregularity, site (stages/morphology.py)
    #: what the false-positive reduction saw (stages/fp_reduction.py FEATURES; empty when not computed)
    evidence: dict[str, float] = field(default_factory=dict)
    #: the finding classifier's score 0..1 (kept: at least its threshold); None: no classifier, or a user's seed
    finding_score: float | None = None

    @property
    def name(self) -> str:
        """"Aneurysm 1 - right MCA bifurcation" (the site when it is known)."""
        return aneurysm_name(self.id, self.morphology.location if self.morphology is not None else None)

    @property
    def centroid_ras(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in lps_to_ras(self.centroid_lps))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["centroid_ras"] = list(self.centroid_ras)
        d["seed"] = self.seed.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Aneurysm":
        """Inverse of :meth:`to_dict`: every dataclass field is read back, derived keys are ignored."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            v = data[f.name]
            if f.name == "seed":
                values[f.name] = Seed.from_dict(v)
            elif f.name == "morphology":
                values[f.name] = Morphology.from_dict(v) if v is not None else None
            else:
                values[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**values)


@dataclass
class SegmentationResult:
    """Label image in the input geometry (0 background, 1..N one label per aneurysm)."""

    labels: np.ndarray
    geometry: Geometry
    aneurysms: list[Aneurysm]
    seeds: list[Seed]
    timings: dict[str, float] = field(default_factory=dict)
    #: what the input check found (field of view, intensities, voxel size, vessel fraction)
    input: dict[str, Any] = field(default_factory=dict)
    #: what the user must be told about this input (empty for a normal full-head TOF-MRA)
    warnings: list[str] = field(default_factory=list)
    #: detector findings the finding classifier dropped (score below its threshold; id 0, not in ``labels``)
    rejected: list[Aneurysm] = field(default_factory=list)

    def binary(self) -> np.ndarray:
        return (self.labels > 0).astype(np.uint8)

    def to_report(self) -> dict[str, Any]:
        """JSON-able summary (coordinates in both LPS and RAS, millimetres)."""
        return {
            "coordinate_systems": "positions given in LPS (ITK/files) and RAS (Slicer world), mm",
            "geometry": asdict(self.geometry),
            "aneurysm_count": len(self.aneurysms),
            "aneurysms": [a.to_dict() for a in self.aneurysms],
            "seeds": [s.to_dict() for s in self.seeds],
            "timings_s": dict(self.timings),
            "input": dict(self.input),
            "warnings": list(self.warnings),
            "rejected_findings": [a.to_dict() for a in self.rejected],
        }

    @classmethod
    def from_report(cls, report: dict[str, Any], labels: np.ndarray, geometry: Geometry) -> "SegmentationResult":
        """Inverse of :meth:`to_report` given the label image it describes (e.g. read from a child process)."""
        return cls(labels=labels, geometry=geometry,
                   aneurysms=[Aneurysm.from_dict(a) for a in report.get("aneurysms", [])],
                   seeds=[Seed.from_dict(s) for s in report.get("seeds", [])],
                   timings={k: float(v) for k, v in report.get("timings_s", {}).items()},
                   input=dict(report["input"]) if isinstance(report.get("input"), dict) else {},
                   warnings=[str(w) for w in report.get("warnings", [])],
                   rejected=[Aneurysm.from_dict(a) for a in report.get("rejected_findings", [])])
