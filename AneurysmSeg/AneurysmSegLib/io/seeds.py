"""Seeds files: JSON in physical millimetres, written in 3D Slicer's markups format.

Written files are Slicer markups (``.mrk.json``, one "Fiducial" list, coordinate system stated in the
file, LPS by default like Slicer's own files), so a user can open them in Slicer, move, add or delete
points and hand them back. Read are: Slicer markups in LPS or RAS, and a plain form
``{"coordinate_system": "RAS"|"LPS", "seeds": [{"position": [x, y, z], "confidence": c}]}``.
Positions are stored internally in LPS (:class:`~AneurysmSegLib.result.Seed`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

from ..core.errors import InputError, OutputError
from ..core.geometry import check_coordinate_system, ras_to_lps
from ..core.result import Seed
from .atomic import OutputSet, ensure_can_create, write_text_atomic

MARKUPS_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                  "Resources/Schema/markups-schema-v1.0.3.json#")
_DESCRIPTION_KEYS = re.compile(r"(confidence|source)\s*=\s*([^;,\s]+)")


# -------------------------------------------------------------------------------------------- write


def seeds_to_markups(seeds: Sequence[Seed], coordinate_system: str = "LPS", name: str = "AneurysmSeeds") -> dict[str, Any]:
    """Seeds -> a Slicer markups document (dict); confidence and source go into each description."""
    cs = check_coordinate_system(coordinate_system, "seeds coordinate system")
    points = []
    for i, seed in enumerate(seeds, start=1):
        pos = seed.position_lps if cs == "LPS" else seed.position_ras
        points.append({
            "id": str(i),
            "label": seed.label or f"S{i}",
            "description": f"confidence={seed.confidence:.4f}; source={seed.source}",
            "associatedNodeID": "",
            "position": [round(float(v), 6) for v in pos],
            "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
            "selected": True,
            "locked": False,
            "visibility": True,
            "positionStatus": "defined",
        })
    return {
        "@schema": MARKUPS_SCHEMA,
        "markups": [{
            "type": "Fiducial",
            "coordinateSystem": cs,
            "coordinateUnits": "mm",
            "locked": False,
            "fixedNumberOfControlPoints": False,
            "labelFormat": "S%d",
            "lastUsedControlPointNumber": len(points),
            "name": name,
            "controlPoints": points,
            "measurements": [],
        }],
    }


def write_seeds(seeds: Sequence[Seed], path: str | Path, coordinate_system: str = "LPS",
                outputs: OutputSet | None = None) -> Path:
    """Write seeds as a Slicer ``.mrk.json`` file atomically (with ``outputs``: at its commit)."""
    path = Path(path)
    text = json.dumps(seeds_to_markups(seeds, coordinate_system), indent=2) + "\n"
    check_json_writable(path)
    return write_text_atomic(path, text, outputs)


def check_json_writable(path: str | Path) -> Path:
    """Raise :class:`OutputError` unless a file can be created at ``path`` (call before long work)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name such as {path / 'seeds.mrk.json'}")
    ensure_can_create(path)
    return path


# --------------------------------------------------------------------------------------------- read


def read_seeds(path: str | Path) -> list[Seed]:
    """Read a seeds file (Slicer markups or the plain form); :class:`InputError` when malformed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"seeds file {path} does not exist" if not path.exists() else f"seeds file {path} is not a file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"seeds file {path.name} is not valid JSON: {exc}") from None
    return seeds_from_json(data, path.name)


def seeds_from_json(data: Any, name: str = "seeds") -> list[Seed]:
    """Parse an already-loaded JSON document (either accepted form) into LPS seeds."""
    if isinstance(data, dict) and "markups" in data:
        return _from_markups(data, name)
    if isinstance(data, dict) and "seeds" in data:
        return _from_plain(data, name)
    raise InputError(f"{name}: not a seeds file; expected Slicer markups ({{'markups': [...]}}) or "
                     "{'coordinate_system': 'RAS'|'LPS', 'seeds': [{'position': [x, y, z]}]}")


def _from_markups(data: dict, name: str) -> list[Seed]:
    markups = data["markups"]
    if not isinstance(markups, list):
        raise InputError(f"{name}: 'markups' must be a list")
    seeds: list[Seed] = []
    for m, markup in enumerate(markups):
        if not isinstance(markup, dict):
            raise InputError(f"{name}: markups[{m}] must be an object")
        # Slicer's schema makes LPS the default when the field is absent.
        cs = check_coordinate_system(markup.get("coordinateSystem", "LPS"), f"{name}: markups[{m}].coordinateSystem")
        points = markup.get("controlPoints", [])
        if not isinstance(points, list):
            raise InputError(f"{name}: markups[{m}].controlPoints must be a list")
        for p, point in enumerate(points):
            where = f"{name}: markups[{m}].controlPoints[{p}]"
            if not isinstance(point, dict):
                raise InputError(f"{where} must be an object")
            if point.get("positionStatus", "defined") not in ("defined", "preview"):
                continue  # a point the user has not placed yet
            description = str(point.get("description", ""))
            fields = dict(_DESCRIPTION_KEYS.findall(description))
            seeds.append(Seed(position_lps=_to_lps(point.get("position"), cs, where),
                              confidence=_confidence(fields.get("confidence", 1.0), where),
                              source=fields.get("source", "user"),
                              label=str(point.get("label", ""))))
    return seeds


def _from_plain(data: dict, name: str) -> list[Seed]:
    if "coordinate_system" not in data:
        raise InputError(f"{name}: state the coordinate system of the positions: "
                         "\"coordinate_system\": \"RAS\" or \"LPS\"")
    cs = check_coordinate_system(data["coordinate_system"], f"{name}: coordinate_system")
    items = data["seeds"]
    if not isinstance(items, list):
        raise InputError(f"{name}: 'seeds' must be a list")
    seeds = []
    for i, item in enumerate(items):
        where = f"{name}: seeds[{i}]"
        if not isinstance(item, dict):
            raise InputError(f"{where} must be an object with a 'position'")
        seeds.append(Seed(position_lps=_to_lps(item.get("position"), cs, where),
                          confidence=_confidence(item.get("confidence", 1.0), where),
                          source=str(item.get("source", "user")), label=str(item.get("label", ""))))
    return seeds


def _to_lps(position: Any, cs: str, where: str) -> tuple[float, float, float]:
    try:
        values = [float(v) for v in position]
    except (TypeError, ValueError):
        raise InputError(f"{where}: position must be three numbers [x, y, z], got {position!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise InputError(f"{where}: position must be three finite numbers [x, y, z], got {position!r}")
    lps = ras_to_lps(values) if cs == "RAS" else values
    return tuple(float(v) for v in lps)  # type: ignore[return-value]


def _confidence(value: Any, where: str) -> float:
    try:
        c = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: confidence must be a number, got {value!r}") from None
    if not math.isfinite(c):
        raise InputError(f"{where}: confidence must be finite, got {value!r}")
    return c


__all__ = ["read_seeds", "write_seeds", "seeds_from_json", "seeds_to_markups", "check_json_writable"]
