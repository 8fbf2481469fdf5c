"""How an aneurysm is named, coloured and coded, the same in Slicer and in every exported file.

One terminology file, ``AneurysmSeg/Resources/Terminology/SegmentationCategoryTypeModifier-AneurysmSeg.term.json``
(Slicer's segment-context schema, loadable by Slicer's Terminologies module), holds the category and
type: SNOMED CT 49755003 "Morphologically Altered Structure" / 85659009 "Aneurysm", which are not in
Slicer's own lists. The anatomic region is the aneurysm's parent artery once its location is known
(codes of DICOM's anatomic master list, which Slicer ships as "Anatomic codes - DICOM master list"),
"Cerebral artery" before that. The Slicer scene, the .seg.nrrd writer and the DICOM SEG/SR writers
all take names, colours and codes from here, so that every output of one run shows the same segment.

Plain Python (json only): importable by the Slicer module without pydicom or highdicom.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

#: The module's terminology file (Slicer segment-context schema).
TERMINOLOGY_FILE = (Path(__file__).resolve().parents[2] / "Resources" / "Terminology"
                    / "SegmentationCategoryTypeModifier-AneurysmSeg.term.json")
#: Slicer's name of the anatomic context that holds the artery codes (DICOM's anatomic master list).
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"

#: Distinct, saturated colours (RGB 0..1) that stand out against grey MRA and each other; segment i
#: (0-based, in the order of the result's aneurysms) gets colour i modulo their number.
SEGMENT_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.90, 0.16, 0.16), (0.12, 0.62, 0.95), (0.98, 0.78, 0.10), (0.30, 0.80, 0.30),
    (0.85, 0.35, 0.90), (1.00, 0.50, 0.05), (0.10, 0.85, 0.80), (0.95, 0.45, 0.65),
    (0.60, 0.45, 0.25), (0.55, 0.55, 1.00),
)


class Code(NamedTuple):
    """A coded concept as DICOM writes it: coding scheme designator, code value, code meaning."""

    scheme: str
    value: str
    meaning: str

    def slicer(self) -> str:
        """Slicer's terminology-entry form ``SCHEME^VALUE^MEANING``."""
        return f"{self.scheme}^{self.value}^{self.meaning}"


#: Anatomic region before the location is known: the tool only looks at intracranial arteries.
CEREBRAL_ARTERY = Code("SCT", "88556005", "Cerebral artery")
LEFT = Code("SCT", "7771000", "Left")
RIGHT = Code("SCT", "24028007", "Right")

#: Parent arteries (codes and meanings as in DICOM's anatomic master list), keyed by the short names
#: radiologists and the PHASES score use. Paired arteries take a Left/Right modifier; AComm and the
#: basilar artery are midline.
ARTERY_CODES: dict[str, Code] = {
    "ICA": Code("SCT", "86117002", "Internal Carotid Artery"),
    "ICA cavernous": Code("SCT", "415637004", "Internal Carotid Artery C5 segment"),
    "ICA ophthalmic": Code("SCT", "698348000", "Internal Carotid Artery C6 segment"),
    "ICA terminus": Code("SCT", "415646005", "Terminal internal carotid artery"),
    "carotid siphon": Code("SCT", "54409005", "Carotid Siphon"),
    "ophthalmic": Code("SCT", "53549008", "Ophthalmic Artery"),
    "PComm": Code("SCT", "43119007", "Posterior Communicating Artery"),
    "MCA": Code("SCT", "17232002", "Middle Cerebral Artery"),
    "MCA M1": Code("SCT", "414722000", "Middle Cerebral Artery M1 Segment"),
    "MCA M2": Code("SCT", "414723005", "Middle Cerebral Artery M2 Segment"),
    "ACA": Code("SCT", "60176003", "Anterior Cerebral Artery"),
    "AComm": Code("SCT", "8012006", "Anterior Communicating Artery"),
    "PCA": Code("SCT", "70382005", "Posterior Cerebral Artery"),
    "PCA P1": Code("SCT", "415144009", "Posterior Cerebral Artery P1 Segment"),
    "PCA P2": Code("SCT", "415145005", "Posterior Cerebral Artery P2 Segment"),
    "basilar": Code("SCT", "59011009", "Basilar Artery"),
    "vertebral": Code("SCT", "85234005", "Vertebral artery"),
}
MIDLINE = frozenset({"AComm", "basilar"})

# Free-text location names (what a morphology stage or a user writes) -> key of ARTERY_CODES.
# Checked in order, most specific first; matched case-insensitively as whole words.
_LOCATION_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"acom+|anterior communicating", "AComm"),
    (r"pcom+|posterior communicating", "PComm"),
    (r"cavernous|\bc4\b|\bc5\b", "ICA cavernous"),
    (r"ophthalmic segment|\bc6\b|paraclinoid", "ICA ophthalmic"),
    (r"ophthalmic", "ophthalmic"),
    (r"carotid terminus|ica terminus|ica bifurcation|terminal ica|\bc7\b", "ICA terminus"),
    (r"siphon", "carotid siphon"),
    (r"\bica\b|internal carotid", "ICA"),
    (r"\bm1\b", "MCA M1"),
    (r"\bm2\b", "MCA M2"),
    (r"\bmca\b|middle cerebral", "MCA"),
    (r"\baca\b|anterior cerebral|pericallosal|\ba1\b|\ba2\b", "ACA"),
    (r"\bp1\b", "PCA P1"),
    (r"\bp2\b", "PCA P2"),
    (r"\bpca\b|posterior cerebral", "PCA"),
    (r"basilar|\bba\b|\bsca\b|superior cerebellar|\baica\b", "basilar"),
    (r"vertebral|\bva\b|\bpica\b|posterior inferior cerebellar", "vertebral"),
)


def artery_key(location: str | None) -> str | None:
    """The ARTERY_CODES key a free-text location names ("left MCA bifurcation" -> "MCA"); None if none."""
    if not location:
        return None
    if location in ARTERY_CODES:
        return location
    text = location.lower()
    for pattern, key in _LOCATION_PATTERNS:
        if re.search(pattern, text):
            return key
    return None


def side_of(side: str | None, location: str | None = None) -> str | None:
    """"left" / "right" from an explicit side ("L", "Left", "right") or a location text; else None."""
    for text in (side, location):
        if not text:
            continue
        t = text.strip().lower()
        if t in ("l", "left", "lt") or re.search(r"\bleft\b|^l[ -]", t):
            return "left"
        if t in ("r", "right", "rt") or re.search(r"\bright\b|^r[ -]", t):
            return "right"
    return None


@dataclass(frozen=True)
class SegmentTerminology:
    """Category, type and anatomic region (with its left/right modifier) of one segment."""

    context: str
    category: Code
    type: Code
    region: Code = CEREBRAL_ARTERY
    region_modifier: Code | None = None
    anatomic_context: str = ANATOMIC_CONTEXT

    def slicer_entry(self) -> str:
        """Slicer's terminology entry string (``vtkSegment`` tag "TerminologyEntry", .seg.nrrd)."""
        modifier = self.region_modifier.slicer() if self.region_modifier else "^^"
        return "~".join((self.context, self.category.slicer(), self.type.slicer(), "^^", self.anatomic_context,
                         self.region.slicer(), modifier))

    def slicerio(self) -> dict[str, Any]:
        """The same entry as slicerio's terminology dict."""
        d: dict[str, Any] = {"contextName": self.context, "category": list(self.category),
                             "type": list(self.type), "anatomicContextName": self.anatomic_context,
                             "anatomicRegion": list(self.region)}
        if self.region_modifier is not None:
            d["anatomicRegionModifier"] = list(self.region_modifier)
        return d


@lru_cache(maxsize=None)
def _terminology_file(path: str) -> tuple[str, Code, Code, tuple[int, int, int]]:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    category = doc["SegmentationCodes"]["Category"][0]
    kind = category["Type"][0]
    code = lambda d: Code(d["CodingSchemeDesignator"], d["CodeValue"], d["CodeMeaning"])  # noqa: E731
    return (doc["SegmentationCategoryTypeContextName"], code(category), code(kind),
            tuple(int(v) for v in kind["recommendedDisplayRGBValue"]))  # type: ignore[return-value]


def aneurysm_terminology(location: str | None = None, side: str | None = None,
                         path: Path = TERMINOLOGY_FILE) -> SegmentTerminology:
    """Terminology of an aneurysm at ``location`` (free text or an ARTERY_CODES key; None: unknown)."""
    context, category, kind, _ = _terminology_file(str(path))
    key = artery_key(location)
    if key is None:
        return SegmentTerminology(context, category, kind)
    laterality = side_of(side, location) if key not in MIDLINE else None
    modifier = {"left": LEFT, "right": RIGHT}.get(laterality or "")
    return SegmentTerminology(context, category, kind, ARTERY_CODES[key], modifier)


def location_of(aneurysm: Any) -> tuple[str | None, str | None]:
    """(site, side) of an aneurysm once the morphology stage has placed it: from its ``morphology``
    record (``site``, ``side``) when it has one, else from ``location``/``site`` and ``side`` fields."""
    record = getattr(aneurysm, "morphology", None) or aneurysm
    site = getattr(record, "site", None) or getattr(record, "location", None)
    side = getattr(record, "side", None)
    return (str(site) if site else None, str(side) if side else None)


def aneurysm_name(number: int | str, location: str | None = None) -> str:
    """"Aneurysm 1 - right MCA bifurcation": the one spelling of a finding's name (files, Slicer
    segments, tables), the site appended when the morphology stage placed it."""
    return f"Aneurysm {number}" + (f" - {location}" if location else "")


def segment_name(aneurysm: Any) -> str:
    """The aneurysm's own name when its record has one ("Aneurysm 1 - right MCA bifurcation"), else
    "Aneurysm N", N its label value in the label image."""
    name = getattr(aneurysm, "name", None)
    return name if isinstance(name, str) and name else f"Aneurysm {aneurysm.id}"


def segment_color(index: int) -> tuple[float, float, float]:
    """Colour (RGB 0..1) of the ``index``-th segment (0-based, in result order)."""
    return SEGMENT_COLORS[index % len(SEGMENT_COLORS)]
