"""Plain-data results of the pipeline: seeds, one entry per aneurysm, and the label image.

Every front end (command line, Slicer module, tests) consumes these; none recomputes them.
Physical positions are kept in LPS (ITK's convention, like the files); RAS is derived.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .geometry import Geometry, lps_to_ras


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

    @property
    def centroid_ras(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in lps_to_ras(self.centroid_lps))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["centroid_ras"] = list(self.centroid_ras)
        d["seed"] = {**asdict(self.seed), "position_ras": list(self.seed.position_ras)}
        return d


@dataclass
class SegmentationResult:
    """Label image in the input geometry (0 background, 1..N one label per aneurysm)."""

    labels: np.ndarray
    geometry: Geometry
    aneurysms: list[Aneurysm]
    seeds: list[Seed]
    timings: dict[str, float] = field(default_factory=dict)

    def binary(self) -> np.ndarray:
        return (self.labels > 0).astype(np.uint8)

    def to_report(self) -> dict[str, Any]:
        """JSON-able summary (coordinates in both LPS and RAS, millimetres)."""
        return {
            "coordinate_systems": "positions given in LPS (ITK/files) and RAS (Slicer world), mm",
            "geometry": asdict(self.geometry),
            "aneurysm_count": len(self.aneurysms),
            "aneurysms": [a.to_dict() for a in self.aneurysms],
            "seeds": [{**asdict(s), "position_ras": list(s.position_ras)} for s in self.seeds],
            "timings_s": dict(self.timings),
        }
