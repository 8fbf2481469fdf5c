"""Reading and writing images with SimpleITK without losing geometry.

``to_sitk``/``from_sitk`` convert between SimpleITK images and :class:`Image`; every reader and
writer in the project goes through them so that spacing, origin and direction survive.

Reading validates before anything else runs, so that a bad input fails in a second with one clear
line (:class:`InputError`) instead of deep inside the pipeline: the header's size before any voxel is
allocated, the bytes it promises, NaN/Inf in every format, DICOM slice spacing (see ``io.headers``). Writing checks the destination first
and goes through a temporary file in the same folder followed by ``os.replace``: a failure or a
cancellation never leaves a half-written output behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError, OutputError
from ..core.geometry import Geometry, Image
from .atomic import OutputSet, ensure_can_create, write_atomic
from .headers import (DEFAULT_MAX_VOXELS, check_header, check_metaimage_payload, check_nifti_payload,
                      check_slice_positions, check_voxel_count)

#: Extensions read from a single file (lower case, longest first so ".nii.gz" wins over ".gz").
READ_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Extensions written as one self-contained file, so the write can be made atomic.
WRITE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")
_FORMAT_NAMES = {".nii.gz": "NIfTI", ".nii": "NIfTI", ".nrrd": "NRRD", ".nhdr": "NRRD",
                 ".mha": "MetaImage", ".mhd": "MetaImage"}


def geometry_of(img: sitk.Image) -> Geometry:
    return Geometry(spacing=img.GetSpacing(), origin=img.GetOrigin(), direction=img.GetDirection())


def to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """numpy ``[z, y, x]`` array + geometry -> SimpleITK image (pixel type follows the dtype)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.SetSpacing(geometry.spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(geometry.direction)
    return img


def from_sitk(img: sitk.Image, source: str = "") -> Image:
    return Image(array=sitk.GetArrayFromImage(img).astype(np.float32, copy=False), geometry=geometry_of(img), source=source,
                 pixel_type=img.GetPixelIDTypeAsString())


# --------------------------------------------------------------------------------------------- read


def extension_of(path: str | Path) -> str:
    """Lower-case image extension including ``.nii.gz``; '' when none is recognised."""
    name = Path(path).name.lower()
    for ext in READ_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def read_image(path: str | Path, max_voxels: int = DEFAULT_MAX_VOXELS) -> Image:
    """Read a 3D scalar volume (NIfTI, NRRD, MetaImage or a DICOM series folder) and validate it.

    Returns a float32 ``[z, y, x]`` array with the file's spacing, origin and direction unchanged.
    Raises :class:`InputError` with a one-line reason for anything that cannot be a TOF-MRA volume,
    including a header that claims more than ``max_voxels`` voxels (checked before reading them).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.is_dir():
        img, source = _read_dicom_folder(path, max_voxels=max_voxels)
    elif extension_of(path) not in READ_EXTENSIONS and is_dicom_file(path):
        img, source = _read_dicom_folder(path.parent, containing=path, max_voxels=max_voxels)
    else:
        img, source = _read_file(path, max_voxels), str(path)
    _validate_sitk(img, path.name)
    # validated in the file's own pixel type: a float64 voxel beyond float32's range is named as such
    # instead of becoming infinity (with a numpy overflow warning) in the conversion
    native = Image(sitk.GetArrayFromImage(img), geometry_of(img), source)
    validate_image(native, name=path.name)
    return Image(native.array.astype(np.float32, copy=False), native.geometry, source,
                 pixel_type=img.GetPixelIDTypeAsString())


def _read_file(path: Path, max_voxels: int) -> sitk.Image:
    """Header first (size, type, promised bytes, NaN/Inf where ITK would hide them), then the voxels."""
    ext = extension_of(path)
    if ext not in READ_EXTENSIONS:
        known = ", ".join(READ_EXTENSIONS)
        raise InputError(f"{path.name}: unknown image format '{ext or '(no extension)'}'; "
                         f"use one of {known} or a DICOM series folder")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{path.name} could not be read as a {_FORMAT_NAMES[ext]} image "
                         f"(corrupt or incomplete file?): {_first_line(exc)}") from None
    check_header(reader, path.name, max_voxels)
    nan_shown_as = None
    if ext in (".nii", ".nii.gz"):
        nan_shown_as = check_nifti_payload(path, nonfinite=False)
    elif ext in (".mha", ".mhd"):
        check_metaimage_payload(path)
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{path.name} could not be read as a {_FORMAT_NAMES[ext]} image "
                         f"(corrupt or incomplete file?): {_first_line(exc)}") from None
    if nan_shown_as is not None and np.any(sitk.GetArrayViewFromImage(img) == nan_shown_as):
        # ITK shows NaN/Inf as 0 (scaled: the intercept); where that value occurs, the file decides
        check_nifti_payload(path)
    return img


def is_dicom_file(path: Path) -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble, whatever their name."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


@dataclass(frozen=True)
class DicomSeries:
    """The DICOM series an input path stands for: its UID and files (in GDCM's slice order)."""

    folder: Path
    uid: str
    files: tuple[str, ...]
    series_in_folder: int


def dicom_series(path: str | Path) -> DicomSeries | None:
    """The series ``read_image(path)`` reads when ``path`` is a DICOM folder or file; None otherwise.

    A folder gives its series with the most files (not recursive); a single DICOM file the series
    holding it. Raises :class:`InputError` for a folder or DICOM file without a readable series.
    """
    path = Path(path)
    if path.is_dir():
        folder, containing = path, None
    elif path.is_file() and extension_of(path) not in READ_EXTENSIONS and is_dicom_file(path):
        folder, containing = path.parent, path
    else:
        return None
    reader = sitk.ImageSeriesReader()
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM warns on stderr for every non-DICOM folder
    try:
        series_ids = reader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError:
        series_ids = ()
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    if not series_ids:
        raise InputError(f"{folder} is a folder without a DICOM series; give a DICOM series folder "
                         f"or an image file ({', '.join(READ_EXTENSIONS)})")
    files = {sid: reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids}
    chosen = max(series_ids, key=lambda sid: (len(files[sid]), sid))
    if containing is not None:
        target = os.path.realpath(containing)
        holding = [sid for sid in series_ids if target in {os.path.realpath(f) for f in files[sid]}]
        if not holding:
            raise InputError(f"{containing.name} is a DICOM file but no readable series in {folder} holds it")
        chosen = holding[0]
    return DicomSeries(folder, chosen, tuple(files[chosen]), len(series_ids))


def _read_dicom_folder(folder: Path, containing: Path | None = None,
                       max_voxels: int = DEFAULT_MAX_VOXELS) -> tuple[sitk.Image, str]:
    """Read the DICOM series of ``folder`` (or the one holding the file ``containing``): its size checked
    from the first slice's header before reading, its slice positions checked after (even spacing)."""
    series = dicom_series(containing if containing is not None else folder)
    assert series is not None
    first = sitk.ImageFileReader()
    first.SetFileName(series.files[0])
    try:
        first.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"DICOM series {series.uid} in {folder} could not be read: {_first_line(exc)}") from None
    width, height = first.GetSize()[:2]
    check_voxel_count((width, height, len(series.files)), f"DICOM series {series.uid} in {folder}", max_voxels)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series.files)
    reader.MetaDataDictionaryArrayUpdateOn()
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK only warns of uneven slices: checked below instead
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"DICOM series {series.uid} in {folder} could not be read: {_first_line(exc)}") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    _check_dicom_slices(reader, series)
    source = f"{folder} (DICOM series {series.uid}, {len(series.files)} files"
    if series.series_in_folder > 1:
        why = f"the series of {containing.name}" if containing is not None else "the largest"
        source += f"; {why} of {series.series_in_folder} series"
    return img, source + ")"


def _check_dicom_slices(reader: sitk.ImageSeriesReader, series: DicomSeries) -> None:
    """Slice positions (0020,0032) along the slice normal must be evenly spaced: a missing or truncated
    file (GDCM leaves an unreadable one out of the series) or a second stack would otherwise move
    everything after the gap. The error names the files on both sides and any unreadable file."""
    count = len(series.files)
    if count < 3 or not all(reader.HasMetaDataKey(i, "0020|0032") for i in range(count)) \
            or not reader.HasMetaDataKey(0, "0020|0037"):
        return  # a single multi-frame file, or positions not given: nothing to compare
    try:
        positions = [tuple(float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")) for i in range(count)]
        orientation = tuple(float(v) for v in reader.GetMetaData(0, "0020|0037").split("\\"))
    except ValueError:
        raise InputError(f"DICOM series {series.uid} in {series.folder}: unreadable slice position or "
                         "orientation tags") from None
    try:
        check_slice_positions(positions, orientation, list(series.files), series.uid)
    except InputError as exc:
        members = {os.path.realpath(f) for f in series.files}
        outside = [p.name for p in sorted(series.folder.iterdir())
                   if p.is_file() and os.path.realpath(p) not in members and is_dicom_file(p)]
        if outside:
            raise InputError(f"{exc}; DICOM files in the folder outside the series (unreadable or truncated?): "
                             f"{', '.join(outside[:5])}{' ...' if len(outside) > 5 else ''}") from None
        raise


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK messages start with file/line noise; the last line carries the reason.
    return lines[-1] if lines else type(exc).__name__


# ----------------------------------------------------------------------------------------- validate


def _validate_sitk(img: sitk.Image, name: str) -> None:
    """Checks that need the SimpleITK image (dimension, components, pixel type)."""
    size = " x ".join(str(s) for s in img.GetSize())
    if img.GetDimension() == 2:
        raise InputError(f"{name} is 2D ({size}); a 3D TOF-MRA volume is needed")
    if img.GetDimension() > 3:
        raise InputError(f"{name} is {img.GetDimension()}D ({size}); a single 3D TOF-MRA volume is "
                         "needed, not a time series or multi-volume image")
    if img.GetNumberOfComponentsPerPixel() > 1:
        raise InputError(f"{name} has {img.GetNumberOfComponentsPerPixel()} components per voxel "
                         f"({img.GetPixelIDTypeAsString()}); a scalar (grey-value) TOF-MRA is needed")
    if "complex" in img.GetPixelIDTypeAsString().lower():
        raise InputError(f"{name} has complex voxels; a real-valued TOF-MRA magnitude image is needed")


#: How far a direction matrix may be from orthonormal (rounding in file headers stays far below).
DIRECTION_TOLERANCE = 1e-3


def validate_image(image: Image | np.ndarray, name: str = "") -> None:
    """Raise :class:`InputError` unless ``image`` is a usable 3D scalar TOF-MRA volume.

    Works on arrays from anywhere (files, Slicer volume nodes): shape must be ``[z, y, x]`` with every
    size > 1, the dtype numeric (not a boolean mask), the values finite, within float32's range (what
    the pipeline computes in) and not all equal; an :class:`Image`'s direction must be a rotation or
    reflection (orthonormal).
    """
    array = image.array if isinstance(image, Image) else np.asarray(image)
    name = name or (image.source if isinstance(image, Image) and image.source else "the image")
    size_xyz = " x ".join(str(s) for s in array.shape[::-1])
    if array.dtype.kind == "b":
        raise InputError(f"{name} is a boolean mask, not a grey-value TOF-MRA; give the scan's intensities")
    if array.dtype.kind not in "iuf":
        raise InputError(f"{name} has non-numeric voxels ({array.dtype}); a grey-value TOF-MRA is needed")
    if array.size == 0:
        raise InputError(f"{name} is empty (size {size_xyz or '0'}); a 3D TOF-MRA volume is needed")
    if array.ndim < 3:
        raise InputError(f"{name} is {array.ndim}D ({size_xyz}); a 3D TOF-MRA volume is needed")
    if array.ndim > 3:
        raise InputError(f"{name} is {array.ndim}D ({size_xyz}); a single-component 3D TOF-MRA "
                         "volume is needed, not a 4D or multi-component image")
    if min(array.shape) == 1:
        kept = [str(s) for s in array.shape[::-1] if s != 1]
        what = {0: f"a single voxel ({size_xyz})", 1: f"a line of {kept[0] if kept else 1} voxels ({size_xyz})"}.get(
            len(kept), f"2D ({' x '.join(kept)}, a single slice)")
        raise InputError(f"{name} is {what}; a 3D TOF-MRA volume is needed")
    # two passes over the voxels (min and max propagate NaN and show infinities) instead of five
    lo, hi = array.min(), array.max()
    if array.dtype.kind == "f":
        if not (np.isfinite(lo) and np.isfinite(hi)):
            bad = array.size - int(np.count_nonzero(np.isfinite(array)))
            if bad == array.size:
                raise InputError(f"{name} holds only NaN or infinite voxels ({bad}); it holds no image")
            raise InputError(f"{name} contains {bad} NaN or infinite voxels; "
                             "a TOF-MRA with finite values is needed")
        largest, limit = max(abs(float(lo)), abs(float(hi))), float(np.finfo(np.float32).max)
        if largest > limit:  # compared as Python floats: numpy would cast to float32 and overflow
            raise InputError(f"{name} holds values up to {largest:.3g}, beyond the range of float32 "
                             f"({limit:.3g}) that AneurysmSeg computes in; rescale the image")
    if lo == hi:
        raise InputError(f"{name} is constant (every voxel is {array.flat[0]}); it holds no image")
    if isinstance(image, Image):
        check_direction(image.geometry, name)


def check_direction(geometry: Geometry, name: str = "the image") -> None:
    """InputError unless the direction matrix is orthonormal: a singular one has no inverse (positions
    cannot be mapped back to voxels) and a sheared or scaled one is not a scanner orientation."""
    d = geometry.direction_matrix
    shown = "[" + ", ".join(f"{v:.4g}" for v in geometry.direction) + "]"
    if not np.isfinite(d).all() or abs(np.linalg.det(d)) < 1e-6:
        raise InputError(f"{name} has a singular direction matrix {shown} (its axes are not independent); "
                         "the file's orientation is broken")
    error = float(np.abs(d.T @ d - np.eye(3)).max())
    if error > DIRECTION_TOLERANCE:
        raise InputError(f"{name} has a direction matrix that is not orthonormal {shown} (deviation "
                         f"{error:.2g}): its axes must be perpendicular unit vectors; fix the orientation")


# -------------------------------------------------------------------------------------------- write


def check_writable(path: str | Path) -> Path:
    """Raise :class:`OutputError` unless an image can be written at ``path``; call before long work.

    The format must be a single-file one (so the write can be atomic) and the nearest existing parent
    folder must accept a new file (tested by creating and removing one; permission bits alone lie
    when running as root or on read-only mounts).
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name such as {path / 'labels.nii.gz'}")
    ext = extension_of(path)
    if ext not in WRITE_EXTENSIONS:
        raise OutputError(f"{path.name}: cannot write '{ext or '(no extension)'}'; "
                          f"use one of {', '.join(WRITE_EXTENSIONS)}")
    ensure_can_create(path)
    return path


def _write_atomic(img: sitk.Image, path: Path, compress: bool, outputs: OutputSet | None) -> Path:
    """Checked, then staged and moved into place (:func:`write_atomic`; with ``outputs``, at its commit)."""
    check_writable(path)
    return write_atomic(path, lambda file: sitk.WriteImage(img, file, compress), outputs)


def write_image(array: np.ndarray, geometry: Geometry, path: str | Path, compress: bool = True,
                outputs: OutputSet | None = None) -> Path:
    """Write an array in the given geometry (format from the file name, parent created, atomic)."""
    return _write_atomic(to_sitk(array, geometry), Path(path), compress, outputs)


def write_label(labels: np.ndarray, geometry: Geometry, path: str | Path, compress: bool = True,
                outputs: OutputSet | None = None) -> Path:
    """Write a ``[z, y, x]`` label image (0 background, 1..N) in exactly ``geometry``.

    Stored as uint8 when every label fits, else uint16. Invalid labels raise :class:`InputError` and
    an unusable destination :class:`OutputError`, both before anything is written.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or min(labels.shape, default=0) < 1:
        raise InputError(f"labels must be a 3D [z, y, x] array, got shape {labels.shape}")
    if labels.dtype.kind not in "biuf":
        raise InputError(f"labels must be integers, got {labels.dtype}")
    if labels.dtype.kind == "f" and not (np.all(np.isfinite(labels)) and np.array_equal(labels, np.round(labels))):
        raise InputError("labels must be whole numbers (got fractional, NaN or infinite values)")
    low, high = (labels.min(), labels.max()) if labels.size else (0, 0)
    if low < 0 or high > np.iinfo(np.uint16).max:
        raise InputError(f"labels must lie in 0..65535, got {low}..{high}")
    dtype = np.uint8 if high <= np.iinfo(np.uint8).max else np.uint16
    check_writable(path)
    return _write_atomic(to_sitk(labels.astype(dtype), geometry), Path(path), compress, outputs)
