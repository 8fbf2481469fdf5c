"""seeds_io: Slicer markups round trip, RAS/LPS, the plain form, malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from AneurysmSegLib.core.errors import InputError, OutputError
from AneurysmSegLib.core.result import Seed
from AneurysmSegLib.io import seeds as seeds_io

SEEDS = [Seed((10.5, -20.25, 33.0), 0.875, "detector", "S1"), Seed((-1.0, 2.0, -3.5), 1.0, "user", "S2")]


@pytest.mark.parametrize("cs", ["LPS", "RAS"])
def test_markups_round_trip(tmp_path: Path, cs: str) -> None:
    path = seeds_io.write_seeds(SEEDS, tmp_path / "seeds.mrk.json", coordinate_system=cs)
    doc = json.loads(path.read_text())
    assert doc["@schema"].endswith("markups-schema-v1.0.3.json#")
    markup = doc["markups"][0]
    assert markup["type"] == "Fiducial" and markup["coordinateSystem"] == cs
    first = markup["controlPoints"][0]["position"]
    expected = SEEDS[0].position_lps if cs == "LPS" else SEEDS[0].position_ras
    np.testing.assert_allclose(first, expected)
    back = seeds_io.read_seeds(path)
    assert len(back) == 2
    for a, b in zip(back, SEEDS):
        np.testing.assert_allclose(a.position_lps, b.position_lps, atol=1e-6)
        assert a.confidence == pytest.approx(b.confidence, abs=1e-4)
        assert (a.source, a.label) == (b.source, b.label)
    assert [p.name for p in tmp_path.iterdir()] == ["seeds.mrk.json"]  # no temporary files left


def test_reads_a_file_as_slicer_writes_it(tmp_path: Path) -> None:
    """A Slicer 5 markups file in RAS with an unplaced point and no description."""
    doc = {
        "@schema": seeds_io.MARKUPS_SCHEMA,
        "markups": [{"type": "Fiducial", "coordinateSystem": "RAS", "coordinateUnits": "mm",
                     "controlPoints": [
                         {"id": "1", "label": "F-1", "description": "", "associatedNodeID": "vtkMRMLScalarVolumeNode1",
                          "position": [-12.0, 30.5, 7.25], "orientation": [-1, 0, 0, 0, -1, 0, 0, 0, 1],
                          "selected": True, "locked": False, "visibility": True, "positionStatus": "defined"},
                         {"id": "2", "label": "F-2", "position": [0, 0, 0], "positionStatus": "undefined"}],
                     "display": {"visibility": True, "color": [0.4, 1.0, 1.0]}}]}
    path = tmp_path / "F.mrk.json"
    path.write_text(json.dumps(doc))
    seeds = seeds_io.read_seeds(path)
    assert len(seeds) == 1
    np.testing.assert_allclose(seeds[0].position_lps, (12.0, -30.5, 7.25))
    assert seeds[0].label == "F-1" and seeds[0].confidence == 1.0 and seeds[0].source == "user"


@pytest.mark.parametrize("cs,expected", [("RAS", (-1.0, -2.0, 3.0)), ("lps", (1.0, 2.0, 3.0))])
def test_plain_form(tmp_path: Path, cs: str, expected: tuple) -> None:
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps({"coordinate_system": cs, "seeds": [{"position": [1, 2, 3], "confidence": 0.5}]}))
    (seed,) = seeds_io.read_seeds(path)
    np.testing.assert_allclose(seed.position_lps, expected)
    assert seed.confidence == 0.5


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a seeds file"),
    ('{"seeds": [{"position": [1, 2, 3]}]}', "coordinate system"),
    ('{"coordinate_system": "XYZ", "seeds": []}', "LPS or RAS"),
    ('{"coordinate_system": "RAS", "seeds": [{"position": [1, 2]}]}', "three finite numbers"),
    ('{"coordinate_system": "RAS", "seeds": [{"position": [1, "a", 2]}]}', "three numbers"),
    ('{"coordinate_system": "RAS", "seeds": [{"position": [1, 2, NaN]}]}', "finite"),
    ('{"markups": [{"coordinateSystem": "IJK", "controlPoints": []}]}', "LPS or RAS"),
    ('{"markups": [{"controlPoints": [{"position": null}]}]}', "position"),
])
def test_malformed_files_raise_one_clear_input_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        seeds_io.read_seeds(path)
    assert "\n" not in str(info.value)


def test_missing_file_and_folder_destination(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        seeds_io.read_seeds(tmp_path / "nope.mrk.json")
    with pytest.raises(OutputError, match="is a folder"):
        seeds_io.write_seeds(SEEDS, tmp_path)
