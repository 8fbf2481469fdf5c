"""DICOM Segmentation (highdicom) of a result whose input was a DICOM series: what reaches PACS.

The SEG references the source series (same study, patient and frame of reference), has one segment
per aneurysm ("Aneurysm N", SNOMED CT "Morphologically Altered Structure" / "Aneurysm" with the
parent artery as anatomic region once the location is known, the module's colour) and names the
algorithm: AneurysmSeg, its version, and the sha256 of the weights that produced it. Frames are tied to
the source slices by their positions, not by file order, so the SEG overlays the series exactly; a
series whose slices do not lie on the label image's grid is refused rather than resampled.

pydicom and highdicom are imported here only, so that nothing else (the Slicer module in particular)
needs them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..core.errors import InputError, OutputError
from ..core.geometry import Geometry
from ..core.terminology import aneurysm_terminology, location_of, segment_color, segment_name

if TYPE_CHECKING:
    from .atomic import OutputSet
    from pydicom import Dataset

    from ..core.result import SegmentationResult

#: DICOM Equipment module: who made the derived objects.
MANUFACTURER = "AneurysmSeg"
MODEL_NAME = "AneurysmSeg DeepMedic + SE 3D U-Net"
SEG_SERIES_NUMBER = 901
SR_SERIES_NUMBER = 902
#: Largest misplacement (in voxels) between a source slice and the label grid that still counts as
#: the same plane: DICOM stores positions as decimal strings of at most 16 characters.
PLANE_TOLERANCE_VOXELS = 0.01


@dataclass(frozen=True)
class Algorithm:
    """Identification of what produced the segments (DICOM Algorithm Identification)."""

    name: str
    version: str
    weights_sha256: dict[str, str] = field(default_factory=dict)  # e.g. {"coarse": "...", "fine": "..."}
    parameters: dict[str, str] = field(default_factory=dict)

    def all_parameters(self) -> dict[str, str]:
        return {**{f"{k}_sha256": v for k, v in self.weights_sha256.items()}, **self.parameters}


def require_dicom_libraries() -> None:
    """Raise :class:`OutputError` naming the packages when pydicom/highdicom are not installed."""
    try:
        import highdicom  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError as exc:
        raise OutputError(f"DICOM SEG/SR output needs pydicom and highdicom ({exc.name} is not installed); "
                          "pip install pydicom highdicom") from None


# ----------------------------------------------------------------------------------- the source


def source_series(files: Sequence[str | Path]) -> list[Dataset]:
    """Headers (no pixel data) of the source series' files."""
    require_dicom_libraries()
    import pydicom

    datasets = []
    for f in files:
        try:
            datasets.append(pydicom.dcmread(str(f), stop_before_pixels=True))
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise InputError(f"{Path(f).name} of the source series cannot be read as DICOM: {exc}") from None
    if not datasets:
        raise InputError("DICOM SEG needs the source DICOM series: the input is not a DICOM series")
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {str(getattr(ds, key, "") or "") for ds in datasets}
        if "" in values:
            raise InputError(f"the source DICOM files lack a {key}: a DICOM SEG must name the study, series and "
                             "frame of reference of the images it segments (the series was not written by a scanner?)")
        if len(values) != 1:
            raise InputError(f"the source DICOM files do not share one {key} ({len(values)} values); "
                             "a DICOM SEG needs one series in one frame of reference")
    return datasets


def frame_indices(datasets: Sequence[Dataset], geometry: Geometry, shape_zyx: Sequence[int]) -> list[int]:
    """Slice index ``k`` of the label image that each source dataset shows (same order as datasets).

    Refuses (InputError) a dataset whose plane is not exactly a slice of the label grid: other rows or
    columns, another orientation, or a position between slices.
    """
    axes = geometry.direction_matrix
    taken: dict[int, str] = {}
    out: list[int] = []
    for ds in datasets:
        name = str(ds.get("SOPInstanceUID", "?"))
        if int(ds.Rows) != shape_zyx[1] or int(ds.Columns) != shape_zyx[2]:
            raise InputError(f"source slice {name} is {ds.Columns} x {ds.Rows}, the label image "
                             f"{shape_zyx[2]} x {shape_zyx[1]}: not the series that was segmented")
        orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient]).reshape(2, 3)
        if not (np.allclose(orientation[0], axes[:, 0], atol=1e-4) and np.allclose(orientation[1], axes[:, 1], atol=1e-4)):
            raise InputError(f"source slice {name} has another orientation than the label image")
        index = geometry.lps_to_index([float(v) for v in ds.ImagePositionPatient])
        k = int(round(index[2]))
        if (abs(index[0]) > PLANE_TOLERANCE_VOXELS or abs(index[1]) > PLANE_TOLERANCE_VOXELS
                or abs(index[2] - k) > PLANE_TOLERANCE_VOXELS or not 0 <= k < shape_zyx[0]):
            raise InputError(f"source slice {name} at {list(ds.ImagePositionPatient)} is not a slice of the "
                             "label image's grid")
        if k in taken:
            raise InputError(f"source slices {taken[k]} and {name} lie in the same plane")
        taken[k] = name
        out.append(k)
    if len(out) != shape_zyx[0]:
        raise InputError(f"the source series has {len(out)} slices, the label image {shape_zyx[0]}")
    return out


def content_uid(*parts: str | bytes) -> str:
    """A UID derived from content (same input, weights and result: same UID; anything else: another)."""
    from pydicom.uid import generate_uid

    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return generate_uid(entropy_srcs=[h.hexdigest()])


# ---------------------------------------------------------------------------------- segmentation


def consecutive_labels(result: SegmentationResult) -> np.ndarray:
    """Label image with the i-th aneurysm of the result as segment i+1 (DICOM numbers segments 1..N)."""
    high = int(result.labels.max()) if result.labels.size else 0
    lut = np.zeros(max(high, max((a.id for a in result.aneurysms), default=0)) + 1, dtype=np.uint16)
    for i, a in enumerate(result.aneurysms):
        lut[a.id] = i + 1
    dtype = np.uint8 if len(result.aneurysms) < 256 else np.uint16
    return lut[result.labels].astype(dtype)


def coded(code: Any):
    from highdicom.sr import CodedConcept

    return CodedConcept(code.value, code.scheme, code.meaning)


def segment_descriptions(result: SegmentationResult, algorithm: Algorithm, tracking_uids: Sequence[str]) -> list:
    """One highdicom SegmentDescription per aneurysm, in result order (segment numbers 1..N)."""
    import highdicom as hd
    from pydicom import Dataset
    from pydicom.sr.codedict import codes

    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name, version=algorithm.version, family=codes.DCM.ArtificialIntelligence,
        source=MANUFACTURER, parameters=algorithm.all_parameters() or None)
    out = []
    for i, aneurysm in enumerate(result.aneurysms):
        term = aneurysm_terminology(*location_of(aneurysm))
        rgb = segment_color(i)
        desc = hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=segment_name(aneurysm),
            segmented_property_category=coded(term.category), segmented_property_type=coded(term.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=identification,
            tracking_uid=tracking_uids[i], tracking_id=segment_name(aneurysm),
            anatomic_regions=[coded(term.region)], display_color=hd.color.CIELabColor.from_rgb(*rgb))
        if term.region_modifier is not None:
            modifier = Dataset()
            modifier.CodeValue, modifier.CodingSchemeDesignator, modifier.CodeMeaning = (
                term.region_modifier.value, term.region_modifier.scheme, term.region_modifier.meaning)
            desc.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [modifier]
        out.append(desc)
    return out


def build_dicom_seg(result: SegmentationResult, datasets: Sequence[Dataset], algorithm: Algorithm):
    """The highdicom Segmentation of ``result`` on the source series ``datasets`` (not written)."""
    import highdicom as hd

    if not result.aneurysms:
        raise OutputError("no aneurysm was found: a DICOM SEG needs at least one segment, so none is written "
                          "(the label image, report and tables say 'no aneurysm')")
    ks = frame_indices(datasets, result.geometry, result.labels.shape)
    labels = consecutive_labels(result)
    frames = labels[ks]
    first = datasets[0]
    digest = hashlib.sha256(np.ascontiguousarray(labels).tobytes()).hexdigest()
    key = (str(first.SeriesInstanceUID), algorithm.version, *sorted(algorithm.weights_sha256.values()), digest)
    tracking = [content_uid(*key, "tracking", str(a.id)) for a in result.aneurysms]
    return hd.seg.Segmentation(
        source_images=list(datasets), pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(result, algorithm, tracking),
        series_instance_uid=content_uid(*key, "seg series"), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=content_uid(*key, "seg instance"), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME, software_versions=algorithm.version,
        device_serial_number="0", content_label="ANEURYSMS",
        content_description="Cerebral aneurysms (AneurysmSeg, not for clinical use)",
        series_description="AneurysmSeg aneurysms", omit_empty_frames=True)


def write_dicom_seg(result: SegmentationResult, source_files: Sequence[str | Path], path: str | Path,
                    algorithm: Algorithm, outputs: OutputSet | None = None) -> tuple[Path, Any]:
    """Write the DICOM SEG of ``result`` (atomically; with ``outputs``, at its commit); returns the path
    and the SEG dataset."""
    from .atomic import write_atomic

    seg = build_dicom_seg(result, source_series(source_files), algorithm)
    path = Path(path)
    write_atomic(path, lambda tmp: seg.save_as(tmp, enforce_file_format=True), outputs)
    return path, seg
