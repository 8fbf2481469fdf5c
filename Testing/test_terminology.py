"""One terminology for every output: the module's .term.json as Slicer reads it, locations as codes."""

from __future__ import annotations

import pytest
import slicer
from slicerio.segmentation import terminology_entry_from_string

from AneurysmSegLib.core import terminology as t


def test_term_json_loads_in_slicers_terminologies_logic() -> None:
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    name = logic.LoadTerminologyFromFile(str(t.TERMINOLOGY_FILE))
    assert name == "Segmentation category and type - AneurysmSeg"
    category = slicer.vtkSlicerTerminologyCategory()
    assert logic.GetNumberOfCategoriesInTerminology(name) == 1
    assert logic.GetNthCategoryInTerminology(name, 0, category)
    assert (category.GetCodingSchemeDesignator(), category.GetCodeValue()) == ("SCT", "49755003")
    kind = slicer.vtkSlicerTerminologyType()
    assert logic.GetNthTypeInTerminologyCategory(name, category, 0, kind)
    assert (kind.GetCodeValue(), kind.GetCodeMeaning()) == ("85659009", "Aneurysm")
    rgb = kind.GetRecommendedDisplayRGBValue()
    assert [round(255 * c) for c in t.segment_color(0)] == pytest.approx(list(rgb), abs=1)


def test_entry_is_what_slicer_serialises() -> None:
    term = t.aneurysm_terminology("left MCA bifurcation")
    expected = slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
        "Segmentation category and type - AneurysmSeg", "49755003", "SCT", "Morphologically Altered Structure",
        "85659009", "SCT", "Aneurysm", "", "", "", "Anatomic codes - DICOM master list",
        "17232002", "SCT", "Middle Cerebral Artery", "7771000", "SCT", "Left")
    assert term.slicer_entry() == expected
    assert terminology_entry_from_string(expected) == term.slicerio()


@pytest.mark.parametrize("location, side, region, modifier", [
    (None, None, "88556005", None),                    # unknown: cerebral artery
    ("ICA", "R", "86117002", "24028007"),
    ("right PComm", None, "43119007", "24028007"),
    ("AComm", "left", "8012006", None),                # midline: no side
    ("basilar tip", None, "59011009", None),
    ("Vertebral/PICA", "L", "85234005", "7771000"),
    ("ICA ophthalmic segment", "right", "698348000", "24028007"),
    ("somewhere odd", "left", "88556005", None),       # not an artery name: unknown, no side on its own
    # the morphology stage's site names
    ("MCA bifurcation", "right", "17232002", "24028007"),
    ("MCA M1", "left", "414722000", "7771000"),
    ("ICA terminus", "left", "415646005", "7771000"),
    ("ICA-PComm", "right", "43119007", "24028007"),
    ("ICA siphon", "right", "54409005", "24028007"),
    ("pericallosal", "left", "60176003", "7771000"),
    ("A2", "right", "60176003", "24028007"),
])
def test_locations_map_to_dicom_anatomic_codes(location, side, region, modifier) -> None:
    term = t.aneurysm_terminology(location, side)
    assert term.region.value == region
    assert (term.region_modifier.value if term.region_modifier else None) == modifier


def test_name_and_location_come_from_the_record_when_it_has_them() -> None:
    from dataclasses import dataclass

    @dataclass
    class Morphology:
        site: str = ""
        side: str = ""

    @dataclass
    class Record:
        id: int
        morphology: Morphology | None = None

        @property
        def name(self) -> str:
            where = f"{self.morphology.side} {self.morphology.site}".strip() if self.morphology else ""
            return f"Aneurysm {self.id}" + (f" - {where}" if where else "")

    placed = Record(3, Morphology("PComm", "right"))
    assert t.segment_name(placed) == "Aneurysm 3 - right PComm"
    assert t.location_of(placed) == ("PComm", "right")
    assert t.aneurysm_terminology(*t.location_of(placed)).region_modifier == t.RIGHT
    assert t.location_of(Record(4)) == (None, None) and t.segment_name(Record(4)) == "Aneurysm 4"


def test_the_dicom_and_slicerio_libraries_are_imported_only_when_their_outputs_are_asked_for() -> None:
    import os
    import subprocess
    import sys

    code = ("import sys; import AneurysmSegLib.core.terminology, AneurysmSegLib.io.exports, "
            "AneurysmSegLib.io.tables, AneurysmSegLib.io.cohort, AneurysmSegLib.cli.segment; "
            "print(sorted({'pydicom', 'highdicom', 'slicerio', 'nrrd'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
