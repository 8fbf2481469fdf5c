"""What an image file's header promises, checked before the voxels are allocated or trusted.

ITK reads a NIfTI whose voxel data stops early with the missing part as zeros, and reads NaN and
infinite NIfTI voxels as 0, so a truncated download or a broken conversion would be segmented as if
it were a scan. A header can also claim a size that would exhaust the machine's memory before any
reader complains (a 101-byte .nii.gz may claim 1000^3 voxels). So before the pixels are read:

- the header's size, dimension and pixel type are checked (:func:`check_header`), with a limit on
  the number of voxels that a caller can raise (``max_voxels``, the CLI's ``--max-voxels``);
- for NIfTI, the bytes the header promises must be there (the file size; for .nii.gz the length the
  gzip trailer states, or a decompressing pass), and float data are streamed once to find NaN/Inf
  (:func:`check_nifti_payload`);
- for MetaImage with raw data, the file must hold the bytes its header promises
  (:func:`check_metaimage_payload`); NRRD's reader already refuses short data itself.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError

#: Default limit on the voxels of one scan (1024 x 1024 x 512): a clinical TOF-MRA has 20-100 million;
#: the pipeline needs about 20 bytes per voxel, so this already asks for about 10 GB of memory.
DEFAULT_MAX_VOXELS = 1024 * 1024 * 512
#: Bytes of voxel data decoded per step when streaming a NIfTI.
_CHUNK = 1 << 24

# NIfTI datatype code -> numpy dtype of one stored value (NaN/Inf exist only in the float ones)
_NIFTI_FLOATS = {16: "f4", 64: "f8", 32: "f4", 1792: "f8"}  # complex types hold two floats


def check_header(reader: sitk.ImageFileReader, name: str, max_voxels: int = DEFAULT_MAX_VOXELS) -> None:
    """Dimension, components, pixel type and size from the header (read with ReadImageInformation)."""
    size = tuple(int(s) for s in reader.GetSize())
    text = " x ".join(str(s) for s in size)
    dim = reader.GetDimension()
    if dim == 2:
        raise InputError(f"{name} is 2D ({text}); a 3D TOF-MRA volume is needed")
    if dim > 3:
        raise InputError(f"{name} is {dim}D ({text}); a single 3D TOF-MRA volume is needed, not a time "
                         "series or multi-volume image")
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    if "complex" in pixel.lower():
        raise InputError(f"{name} has complex voxels; a real-valued TOF-MRA magnitude image is needed")
    if reader.GetNumberOfComponents() > 1:
        raise InputError(f"{name} has {reader.GetNumberOfComponents()} components per voxel ({pixel}); "
                         "a scalar (grey-value) TOF-MRA is needed")
    check_voxel_count(size, name, max_voxels)


def check_voxel_count(size_xyz: tuple[int, ...], name: str, max_voxels: int = DEFAULT_MAX_VOXELS) -> None:
    """InputError when a volume of ``size_xyz`` voxels exceeds ``max_voxels`` (checked before reading)."""
    count = int(np.prod([int(s) for s in size_xyz], dtype=object))
    if count > max_voxels:
        text = " x ".join(str(s) for s in size_xyz)
        raise InputError(f"{name} would have {text} = {count:,} voxels, more than the limit of {max_voxels:,} "
                         f"(about {20 * count / 1e9:.0f} GB of memory would be needed); if the scan is real "
                         "and the machine has the memory, raise the limit (--max-voxels)")


# -------------------------------------------------------------------------------------------- NIfTI


def _nifti_header(raw: bytes, name: str) -> tuple[str, np.dtype | None, int, int, int, float, float]:
    """(endian, float dtype or None, element bytes, voxel count, voxel offset, scl_slope, scl_inter)."""
    if len(raw) < 348:
        raise InputError(f"{name} is too short to hold a NIfTI header ({len(raw)} bytes)")
    for endian in "<>":
        (sizeof_hdr,) = struct.unpack(endian + "i", raw[:4])
        if sizeof_hdr == 348:
            dims = struct.unpack(endian + "8h", raw[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", raw[70:74])
            vox_offset, slope, inter = struct.unpack(endian + "3f", raw[108:120])
            break
        if sizeof_hdr == 540 and len(raw) >= 540:
            datatype, bitpix = struct.unpack(endian + "2h", raw[12:16])
            dims = struct.unpack(endian + "8q", raw[16:80])
            (vox_offset,) = struct.unpack(endian + "q", raw[168:176])
            slope, inter = struct.unpack(endian + "2d", raw[176:192])
            break
    else:
        raise InputError(f"{name} does not start with a NIfTI header")
    ndim = int(dims[0])
    if not 1 <= ndim <= 7 or any(int(d) < 1 for d in dims[1:ndim + 1]) or bitpix < 8 or bitpix % 8:
        raise InputError(f"{name} has an invalid NIfTI header (dim {list(dims[:ndim + 1])}, bitpix {bitpix})")
    count = int(np.prod([int(d) for d in dims[1:ndim + 1]], dtype=object))
    float_code = _NIFTI_FLOATS.get(int(datatype))
    dtype = np.dtype(endian + float_code) if float_code else None
    return endian, dtype, bitpix // 8, count, int(vox_offset), float(slope), float(inter)


def check_nifti_payload(path: Path, nonfinite: bool = True) -> float | None:
    """InputError if the voxel data are shorter than the header promises or (``nonfinite``) hold NaN/Inf.

    Needed because ITK fills missing NIfTI data with zeros and reads NaN/Inf NIfTI voxels as 0. The
    length is checked without decoding where the file tells it (size; gzip trailer); finding NaN/Inf
    takes a decoding pass, so a caller may first read the image and look only if ITK returned zeros
    (``nonfinite=False``, then again with True). Returns the value ITK shows a NaN/Inf voxel as (0, or
    the intercept when the header scales values), or None when the stored values are integers.
    """
    name = path.name
    gz = name.lower().endswith(".gz")
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as f:
            head = f.read(540)
            _, dtype, itemsize, count, offset, slope, inter = _nifti_header(head, name)
            if not (np.isfinite(slope) and (slope == 0 or np.isfinite(inter))):
                raise InputError(f"{name}: its NIfTI intensity scaling (scl_slope {slope}, scl_inter {inter}) "
                                 "is not finite; a finite scale is needed")
            expected = count * itemsize
            shown = (inter if slope != 0 else 0.0) if dtype is not None else None
            if not nonfinite:
                dtype = None  # the length only
            if dtype is None and not gz:  # nothing to decode: the file's size tells
                available = path.stat().st_size - offset
                if available < expected:
                    _truncated(name, available, expected)
                return shown
            if dtype is None and _gzip_length(path) == (offset + expected) % 2**32:
                # A gzip stream ends with the length of what it holds; a cut-off file has no such end
                # (its last four bytes match by chance once in 4 billion): complete, no need to decode.
                return shown
            f.seek(max(offset, 0))
            got, bad, rest = 0, 0, b""
            while True:
                block = f.read(_CHUNK)
                if not block:
                    break
                got += len(block)
                if dtype is not None:
                    data = rest + block
                    whole = len(data) - len(data) % dtype.itemsize
                    values = np.frombuffer(data[:whole], dtype=dtype)
                    bad += int(values.size - np.count_nonzero(np.isfinite(values)))
                    rest = data[whole:]
                if got >= expected:
                    break
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"{name} is a damaged or truncated gzip file ({exc}); the scan cannot be trusted") from None
    except OSError as exc:
        raise InputError(f"{name} could not be read: {exc.strerror or exc}") from None
    if got < expected:
        _truncated(name, got, expected)
    if bad and dtype is not None and bad >= expected // dtype.itemsize:
        raise InputError(f"{name} holds only NaN or infinite voxels ({bad}); it holds no image")
    if bad:
        raise InputError(f"{name} contains {bad} NaN or infinite voxels; a TOF-MRA with finite values is needed")
    return shown


def _gzip_length(path: Path) -> int:
    """The uncompressed length (mod 2^32) a complete single-member gzip file states in its last 4 bytes."""
    with open(path, "rb") as f:
        f.seek(-4, 2)
        return struct.unpack("<I", f.read(4))[0]


def _truncated(name: str, got: int, expected: int) -> None:
    raise InputError(f"{name} is truncated: it holds {max(got, 0):,} of the {expected:,} bytes of voxel data its "
                     f"header promises ({100 * max(got, 0) / expected:.0f}%); copy or download it again")


# ---------------------------------------------------------------------------------------- MetaImage

_META_BYTES = {"MET_UCHAR": 1, "MET_CHAR": 1, "MET_USHORT": 2, "MET_SHORT": 2, "MET_UINT": 4, "MET_INT": 4,
               "MET_ULONG": 8, "MET_LONG": 8, "MET_ULONG_LONG": 8, "MET_LONG_LONG": 8, "MET_FLOAT": 4,
               "MET_DOUBLE": 8}


def check_metaimage_payload(path: Path) -> None:
    """InputError when an uncompressed MetaImage (.mha, or .mhd with its data file) is shorter than its header says."""
    name = path.name
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as exc:
        raise InputError(f"{name} could not be read: {exc.strerror}") from None
    fields: dict[str, str] = {}
    header_end = 0
    for line in head.split(b"\n"):
        header_end += len(line) + 1
        key, sep, value = line.decode("latin-1").partition("=")
        if not sep:
            return  # not a header line ITK would accept either; its reader gives the error
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            break
    if fields.get("compresseddata", "false").lower() == "true":
        return  # a short zlib stream makes ITK's reader fail by itself
    try:
        dims = [int(v) for v in fields["dimsize"].split()]
        itemsize = _META_BYTES[fields["elementtype"].upper()]
        channels = int(fields.get("elementnumberofchannels", "1"))
        data_file = fields["elementdatafile"]
    except (KeyError, ValueError):
        return
    expected = int(np.prod(dims, dtype=object)) * itemsize * channels
    if data_file.upper() == "LOCAL":
        available = path.stat().st_size - header_end
    elif data_file.upper().startswith("LIST") or "%" in data_file:
        return  # several data files: ITK checks each
    else:
        data_path = path.parent / data_file
        if not data_path.is_file():
            raise InputError(f"{name} names its voxel data file {data_file}, which does not exist next to it")
        available = data_path.stat().st_size
    if available < expected:
        _truncated(name, available, expected)


# -------------------------------------------------------------------------------------------- DICOM

#: Slices may deviate this much (fraction of the typical spacing) from an even spacing.
SPACING_TOLERANCE = 0.05


def check_slice_positions(positions: list[tuple[float, float, float]], orientation: tuple[float, ...],
                          files: list[str], series: str) -> None:
    """InputError when the slices of a series are not evenly spaced along their normal (a missing,
    truncated or duplicated slice, or a series of several stacks); the message names the gap."""
    if len(positions) < 3:
        return
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    normal = np.cross(row, col)
    if not np.isfinite(normal).all() or np.linalg.norm(normal) < 1e-6:
        raise InputError(f"DICOM series {series}: image orientation {list(orientation)} is not a valid pair of axes")
    pos = np.asarray(positions, float) @ (normal / np.linalg.norm(normal))
    steps = np.diff(pos)
    spacing = float(np.median(np.abs(steps)))
    if spacing <= 1e-6:
        raise InputError(f"DICOM series {series}: several slices share one position; "
                         "the folder may mix repeated acquisitions")
    off = np.abs(np.abs(steps) - spacing) > SPACING_TOLERANCE * spacing
    flipped = np.sign(steps) != np.sign(np.median(steps))
    bad = np.flatnonzero(off | flipped)
    if bad.size == 0:
        return
    i = int(bad[0])
    step = abs(float(steps[i]))
    names = f"{Path(files[i]).name} and {Path(files[i + 1]).name}"
    whole = round(step / spacing)  # a gap of whole slices is missing slices, anything else uneven spacing
    if whole >= 2 and not flipped[i] and abs(step - whole * spacing) <= SPACING_TOLERANCE * spacing:
        what = f"{whole - 1} slice{'s' if whole != 2 else ''} missing"
    else:
        what = "uneven slice spacing"
    more = f" ({bad.size} such gaps in all)" if bad.size > 1 else ""
    raise InputError(f"DICOM series {series}: {what} between {names} (positions {pos[i]:.3f} and "
                     f"{pos[i + 1]:.3f} mm along the slice normal, {step:.3f} mm apart; the other slices are "
                     f"{spacing:.3f} mm apart){more}; a complete series with even spacing is needed")
