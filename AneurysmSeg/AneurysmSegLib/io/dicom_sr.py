"""DICOM SR measurement report (TID 1500, highdicom) of the aneurysms of one DICOM SEG.

One "Imaging Measurements" group (TID 1411, volumetric ROI) per aneurysm: it references its segment
in the SEG (and so the source series), names the finding (SNOMED CT "Aneurysm"), its site (parent
artery and side when known) and carries every numeric measurement of the aneurysm record: volume and
maximum diameter with their standard codes, and whatever the morphology stage adds (neck, dome,
ratios, indices) under local codes of this tool, units from the field name's suffix. Reading a field
generically means a new measurement appears in the SR without touching this file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..core.terminology import aneurysm_terminology, location_of, segment_name
from .dicom_seg import MANUFACTURER, MODEL_NAME, SR_SERIES_NUMBER, Algorithm, coded, content_uid

if TYPE_CHECKING:
    from .atomic import OutputSet
    from pydicom import Dataset

    from ..core.result import SegmentationResult

#: Coding scheme of the measurements that have no standard code (DICOM PS3.16 8.2: local schemes start with 99).
LOCAL_SCHEME = "99ANEURYSMSEG"
#: Fields of an Aneurysm record that are identification or positions, not measurements.
NOT_MEASUREMENTS = frozenset({"id", "voxel_count", "confidence", "finding_score"})
#: (suffix of the field name, UCUM unit code, unit meaning), longest suffix first.
UNITS: tuple[tuple[str, str, str], ...] = (
    ("_mm3", "mm3", "cubic millimeter"), ("_mm2", "mm2", "square millimeter"), ("_mm", "mm", "millimeter"),
    ("_deg", "deg", "degree"),
)
NO_UNIT = ("1", "no units")
#: Local codes (at most 16 characters: a DICOM Code Value is a short string; longer ones need Long Code
#: Value, which highdicom does not read back inside a measurement group) and meanings of the
#: morphology stage's measurements, by field name without its unit suffix.
LOCAL_CODES: dict[str, tuple[str, str]] = {
    "neck_width": ("NECK_WIDTH", "Aneurysm neck width"),
    "ostium_area": ("OSTIUM_AREA", "Aneurysm ostium area"),
    "dome_height": ("DOME_HEIGHT", "Aneurysm dome height"),
    "dome_width": ("DOME_WIDTH", "Aneurysm dome width"),
    "aspect_ratio": ("ASPECT_RATIO", "Aspect ratio (dome height / neck width)"),
    "dome_to_neck_ratio": ("DOME_NECK_RATIO", "Dome-to-neck ratio"),
    "bottleneck_factor": ("BOTTLENECK", "Bottleneck factor (dome width / neck width)"),
    "parent_diameter": ("PARENT_DIAMETER", "Parent artery diameter"),
    "size_ratio": ("SIZE_RATIO", "Size ratio (maximum diameter / parent artery diameter)"),
    "nonsphericity_index": ("NSI", "Non-sphericity index"),
    "undulation_index": ("UI", "Undulation index"),
}


def measurements_of(record: Any) -> list[tuple[str, float]]:
    """(field name, value) of every finite numeric scalar of an aneurysm record, in field order,
    including those of a nested record (the morphology stage's block); None (not measurable) is left out."""
    import math

    out: list[tuple[str, float]] = []
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            if f.name != "seed":
                out += measurements_of(value)
        elif f.name in NOT_MEASUREMENTS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        elif math.isfinite(float(value)):
            out.append((f.name, float(value)))
    return out


def unit_of(field_name: str) -> tuple[str, str]:
    for suffix, code, meaning in UNITS:
        if field_name.endswith(suffix):
            return code, meaning
    return NO_UNIT


def local_code(base: str) -> tuple[str, str]:
    """(code value of at most 16 characters, meaning) of a measurement without a standard code: from
    LOCAL_CODES, else the upper-case name, shortened with a digest of the full name when too long."""
    import hashlib

    if base in LOCAL_CODES:
        return LOCAL_CODES[base]
    value = base.upper()
    if len(value) > 16:
        value = value[:10] + "_" + hashlib.sha1(base.encode()).hexdigest()[:5].upper()
    return value, base.replace("_", " ").capitalize()


def _measurement(name: str, value: float):
    """A TID 300 measurement: standard codes for volume and maximum diameter, local ones otherwise."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    unit_code, unit_meaning = unit_of(name)
    unit = Code(unit_code, "UCUM", unit_meaning)
    derivation = None
    if name == "volume_mm3":
        concept = codes.SCT.Volume
    elif name == "max_diameter_mm":
        concept, derivation = codes.SCT.Diameter, codes.SCT.Maximum
    else:
        base = name
        for suffix, _, _ in UNITS:
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                break
        concept = Code(*local_code(base)[:1], LOCAL_SCHEME, local_code(base)[1])
    return hd.sr.Measurement(name=concept, value=value, unit=unit, derivation=derivation)


def build_dicom_sr(result: SegmentationResult, seg: Dataset, datasets: Sequence[Dataset], algorithm: Algorithm):
    """The Comprehensive 3D SR measurement report on ``seg`` (not written)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name, version=algorithm.version,
        parameters=[f"{k}={v}" for k, v in algorithm.all_parameters().items()] or None)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=content_uid(algorithm.name, algorithm.version, *sorted(algorithm.weights_sha256.values())),
            name=algorithm.name, manufacturer_name=MANUFACTURER, model_name=MODEL_NAME))
    groups = []
    for i, aneurysm in enumerate(result.aneurysms):
        number = i + 1
        segment = seg.SegmentSequence[i]
        assert int(segment.SegmentNumber) == number
        term = aneurysm_terminology(*location_of(aneurysm))
        tracking = hd.sr.TrackingIdentifier(uid=segment.TrackingUID, identifier=segment_name(aneurysm))
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg, segment_number=number),
            finding_type=coded(term.type), algorithm_id=algorithm_id,
            finding_sites=[hd.sr.FindingSite(anatomic_location=coded(term.region),
                                             laterality=coded(term.region_modifier) if term.region_modifier else None)],
            measurements=[_measurement(name, value) for name, value in measurements_of(aneurysm)]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.MagneticResonanceAngiography, imaging_measurements=groups)
    key = (str(seg.SOPInstanceUID), algorithm.version)
    return hd.sr.Comprehensive3DSR(
        evidence=[seg, *datasets], content=report[0],
        series_instance_uid=content_uid(*key, "sr series"), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=content_uid(*key, "sr instance"), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description="AneurysmSeg measurements")


def write_dicom_sr(result: SegmentationResult, seg: Dataset, source_files: Sequence[str | Path], path: str | Path,
                   algorithm: Algorithm, outputs: OutputSet | None = None) -> Path:
    """Write the SR measurement report referencing ``seg`` (atomically; with ``outputs``, at its commit)."""
    from .atomic import write_atomic
    from .dicom_seg import source_series

    sr = build_dicom_sr(result, seg, source_series(source_files), algorithm)
    return write_atomic(Path(path), lambda tmp: sr.save_as(tmp, enforce_file_format=True), outputs)
