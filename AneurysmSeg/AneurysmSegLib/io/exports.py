"""The outputs beyond the label image: Slicer .seg.nrrd, DICOM SEG and SR, CSV table, ADAM result.txt.

:class:`Exports` says which are wanted for one case; :func:`check_exports` refuses, before any work,
what cannot be done (a DICOM SEG of a NIfTI input, an SR without a SEG, wrong suffixes, unwritable
folders); :func:`write_exports` writes them, each atomically. The DICOM and slicerio libraries are
imported only when their output is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..core.errors import InputError, OutputError

if TYPE_CHECKING:
    from .atomic import OutputSet
    from ..core.result import SegmentationResult
    from .dicom_seg import Algorithm

#: --format values: what the main OUTPUT file is, and the file suffix it gets in batch mode.
FORMATS: dict[str, str] = {"labels": ".nii.gz", "seg-nrrd": ".seg.nrrd", "dicom-seg": ".dcm"}


def format_of(path: Path, given: str | None) -> str:
    """The --format of OUTPUT: as given, else from its name (.seg.nrrd, .dcm), else a label image."""
    if given is not None:
        return given
    name = path.name.lower()
    if name.endswith(".seg.nrrd"):
        return "seg-nrrd"
    if name.endswith(".dcm"):
        return "dicom-seg"
    return "labels"


@dataclass
class Exports:
    """Which extra files one case gets (None: not asked for)."""

    seg_nrrd: Path | None = None
    dicom_seg: Path | None = None
    dicom_sr: Path | None = None
    csv: Path | None = None
    adam_result: Path | None = None

    def paths(self) -> list[Path]:
        return [p for p in (getattr(self, f.name) for f in fields(self)) if p is not None]


def check_exports(exports: Exports, dicom_files: Sequence[str] | None, input_name: str) -> None:
    """Raise InputError/OutputError before the long work when a requested output cannot be written."""
    from .atomic import ensure_can_create
    from .images import READ_EXTENSIONS

    if exports.dicom_sr is not None and exports.dicom_seg is None:
        raise InputError("a DICOM SR measurement report references a DICOM SEG: ask for one too (--dicom-seg)")
    if (exports.dicom_seg is not None or exports.dicom_sr is not None) and not dicom_files:
        raise InputError(f"{input_name} is not a DICOM series: a DICOM SEG/SR must reference the DICOM images it "
                         "was made from; give the DICOM series folder as input, or choose --format labels/seg-nrrd")
    if exports.dicom_seg is not None or exports.dicom_sr is not None:
        from .dicom_seg import source_series

        source_series(dicom_files)  # the headers a SEG must reference: checked now, not after the work
    for path in (exports.dicom_seg, exports.dicom_sr):
        if path is not None and path.name.lower().endswith(READ_EXTENSIONS):
            raise OutputError(f"{path.name}: a DICOM file would carry the name of another format; "
                              "use a name ending in .dcm")
    if exports.seg_nrrd is not None:
        if not exports.seg_nrrd.name.lower().endswith(".seg.nrrd"):
            raise OutputError(f"{exports.seg_nrrd.name}: a Slicer segmentation file name ends in .seg.nrrd")
        try:
            import slicerio  # noqa: F401
        except ImportError:
            raise OutputError(".seg.nrrd output needs slicerio (pip install slicerio)") from None
    for path, suffix in ((exports.csv, ".csv"), (exports.adam_result, ".txt")):
        if path is not None and not path.name.lower().endswith(suffix):
            raise OutputError(f"{path.name}: this table is written as {suffix}; use a name ending in {suffix}")
    for path in exports.paths():
        if path.is_dir():
            raise OutputError(f"{path} is a folder; give a file name")
        ensure_can_create(path)


def algorithm_of(models: Any, detection_threshold: float | None = None) -> Algorithm:
    """Identification of the run for DICOM: AneurysmSeg, its version, the sha256 of both networks."""
    from .. import __version__
    from .dicom_seg import Algorithm

    manifest = models.manifest
    threshold = models.detection_threshold if detection_threshold is None else detection_threshold
    return Algorithm(name="AneurysmSeg", version=__version__,
                     weights_sha256={k: str(manifest[k]["sha256"]) for k in ("coarse", "fine") if "sha256" in manifest.get(k, {})},
                     parameters={"detection_threshold": f"{threshold:g}"})


def write_exports(result: SegmentationResult, exports: Exports, *, case: str, algorithm: Algorithm | None,
                  dicom_files: Sequence[str] | None = None, warnings: Sequence[str] = (),
                  outputs: OutputSet | None = None) -> list[tuple[str, Path]]:
    """Write every requested export of one case (with ``outputs``: at its commit); returns (what, path) pairs."""
    written: list[tuple[str, Path]] = []
    if exports.seg_nrrd is not None:
        from .seg_nrrd import write_seg_nrrd

        written.append(("segmentation", write_seg_nrrd(result, exports.seg_nrrd, outputs)))
    if exports.dicom_seg is not None and result.aneurysms:  # a SEG needs a segment: none when nothing was found
        from .dicom_seg import write_dicom_seg

        assert dicom_files and algorithm is not None, "check_exports first"
        path, seg = write_dicom_seg(result, dicom_files, exports.dicom_seg, algorithm, outputs)
        written.append(("DICOM SEG", path))
        if exports.dicom_sr is not None:
            from .dicom_sr import write_dicom_sr

            written.append(("DICOM SR", write_dicom_sr(result, seg, dicom_files, exports.dicom_sr, algorithm, outputs)))
    if exports.csv is not None:
        from .tables import case_rows, write_csv

        written.append(("table", write_csv(case_rows(case, result, warnings), exports.csv, outputs)))
    if exports.adam_result is not None:
        from .tables import write_adam_result

        written.append(("ADAM result", write_adam_result(result, exports.adam_result, outputs)))
    return written
