"""io: reading every supported format with exact geometry, validation of bad inputs, safe writing."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from AneurysmSegLib.core.errors import AneurysmSegError, InputError, OutputError
from AneurysmSegLib.core.geometry import Geometry, Image
from AneurysmSegLib.io import images as io


def volume(shape_zyx: tuple[int, int, int] = (6, 7, 8), seed: int = 0) -> np.ndarray:
    """A non-constant float32 test volume with values that float32 and int16 hold exactly."""
    rng = np.random.default_rng(seed)
    return rng.integers(-200, 1500, size=shape_zyx).astype(np.float32)


def assert_same_geometry(a: Geometry, b: Geometry, atol: float = 1e-6) -> None:
    np.testing.assert_allclose(a.spacing, b.spacing, atol=atol)
    np.testing.assert_allclose(a.origin, b.origin, atol=atol)
    np.testing.assert_allclose(a.direction, b.direction, atol=atol)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_oblique_geometry_and_values(tmp_path: Path, oblique_geometry: Geometry, ext: str) -> None:
    array = volume()
    first = io.write_image(array, oblique_geometry, tmp_path / f"scan{ext}")
    image = io.read_image(first)
    assert image.array.dtype == np.float32 and image.array.shape == array.shape
    np.testing.assert_array_equal(image.array, array)
    # NIfTI stores the direction as a float32 quaternion; the others keep doubles.
    assert_same_geometry(image.geometry, oblique_geometry, atol=1e-5 if ext.startswith(".nii") else 1e-12)
    assert image.source == str(first)

    labels = (array > 600).astype(np.uint8) + (array > 1200)
    second = io.write_label(labels, image.geometry, tmp_path / f"labels{ext}")
    back = sitk.ReadImage(str(second))
    assert back.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
    assert_same_geometry(io.geometry_of(back), image.geometry, atol=1e-5 if ext.startswith(".nii") else 1e-12)
    # the physical position of a voxel is the same in input and output
    np.testing.assert_allclose(back.TransformIndexToPhysicalPoint((3, 2, 1)),
                               oblique_geometry.index_to_lps((3, 2, 1)), atol=1e-4)


def test_two_file_formats_are_read(tmp_path: Path, oblique_geometry: Geometry) -> None:
    array = volume(seed=1)
    for name in ("scan.mhd", "scan.nhdr"):
        sitk.WriteImage(io.to_sitk(array, oblique_geometry), str(tmp_path / name))
        image = io.read_image(tmp_path / name)
        np.testing.assert_array_equal(image.array, array)
        assert_same_geometry(image.geometry, oblique_geometry, atol=1e-12)


def test_large_labels_are_written_as_uint16(tmp_path: Path, oblique_geometry: Geometry) -> None:
    labels = np.zeros((4, 5, 6), dtype=np.int64)
    labels[1, 2, 3] = 300
    out = io.write_label(labels, oblique_geometry, tmp_path / "many.nrrd")
    back = sitk.ReadImage(str(out))
    assert back.GetPixelID() == sitk.sitkUInt16
    assert sitk.GetArrayFromImage(back)[1, 2, 3] == 300


def test_write_leaves_no_temporary_files(tmp_path: Path, oblique_geometry: Geometry) -> None:
    io.write_label(np.ones((3, 4, 5), np.uint8), oblique_geometry, tmp_path / "sub" / "out.nii.gz")
    assert listing(tmp_path / "sub") == ["out.nii.gz"]
    assert listing(tmp_path) == ["sub"]


# ------------------------------------------------------------------------------------------- DICOM


def write_dicom_series(array: np.ndarray, geometry: Geometry, folder: Path, uid: str, prefix: str = "slice") -> None:
    """One file per slice with position (0020|0032), orientation (0020|0037) and spacing tags set."""
    folder.mkdir(parents=True, exist_ok=True)
    img = io.to_sitk(array.astype(np.int16), geometry)
    d = geometry.direction
    orientation = "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        tags = {
            "0008|0060": "MR", "0008|0008": "ORIGINAL\\PRIMARY", "0008|0031": "120000", "0008|0021": "20260101",
            "0020|000d": uid + ".1", "0020|000e": uid + ".2", "0020|0037": orientation,
            "0020|0032": "\\".join(f"{v:.10f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0013": str(k + 1), "0018|0050": f"{geometry.spacing[2]:.6f}", "0008|103e": "TOF test",
            "0008|0018": f"{uid}.3.{k + 1}",
        }
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_geometry(tmp_path: Path, oblique_geometry: Geometry) -> None:
    array = volume((7, 9, 10), seed=2)
    write_dicom_series(array, oblique_geometry, tmp_path / "dicom", uid="1.2.826.0.1.3680043.8.498.1")
    image = io.read_image(tmp_path / "dicom")
    np.testing.assert_array_equal(image.array, array)
    # DICOM keeps positions and cosines as decimal strings: micrometre agreement is exact enough.
    assert_same_geometry(image.geometry, oblique_geometry, atol=1e-4)
    assert "1.2.826.0.1.3680043.8.498.1.2" in image.source and "7 files" in image.source


def test_dicom_folder_with_two_series_uses_the_largest(tmp_path: Path, oblique_geometry: Geometry) -> None:
    small = Geometry(spacing=(0.5, 0.5, 1.0), origin=(1.0, 2.0, 3.0))
    write_dicom_series(volume((3, 9, 10), seed=3), small, tmp_path / "dicom", uid="1.2.3.4.5", prefix="a")
    write_dicom_series(volume((5, 9, 10), seed=4), oblique_geometry, tmp_path / "dicom", uid="1.2.3.4.6", prefix="b")
    image = io.read_image(tmp_path / "dicom")
    assert image.array.shape == (5, 9, 10)
    assert "1.2.3.4.6.2" in image.source and "the largest of 2 series" in image.source
    assert_same_geometry(image.geometry, oblique_geometry, atol=1e-4)


def test_a_single_dicom_file_reads_its_own_series(tmp_path: Path, oblique_geometry: Geometry) -> None:
    write_dicom_series(volume((3, 9, 10), seed=3), oblique_geometry, tmp_path / "dicom", uid="1.2.3.4.5", prefix="a")
    write_dicom_series(volume((5, 9, 10), seed=4), oblique_geometry, tmp_path / "dicom", uid="1.2.3.4.6", prefix="b")
    image = io.read_image(tmp_path / "dicom" / "a001.dcm")
    np.testing.assert_array_equal(image.array, volume((3, 9, 10), seed=3))
    assert "1.2.3.4.5.2" in image.source and "the series of a001.dcm of 2 series" in image.source


# -------------------------------------------------------------------------------------- bad inputs


def write_raw(img: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(img, str(path))
    return path


BAD_FILES = {
    "2D": (lambda p: write_raw(sitk.GetImageFromArray(volume()[0]), p / "input.nii.gz"), "is 2D (8 x 7)"),
    "single slice": (lambda p: write_raw(sitk.GetImageFromArray(volume((1, 7, 8))), p / "slab.nrrd"), "is 2D (8 x 7"),
    "4D": (lambda p: write_raw(sitk.GetImageFromArray(np.stack([volume(), volume(seed=5)]), isVector=False),
                               p / "series.nii.gz"), "is 4D"),
    "vector": (lambda p: write_raw(sitk.GetImageFromArray(np.stack([volume()] * 3, axis=-1), isVector=True),
                                   p / "rgb.mha"), "3 components per voxel"),
    "complex": (lambda p: write_raw(sitk.GetImageFromArray(volume().astype(np.complex64)), p / "complex.mha"),
                "components per voxel"),
    "constant": (lambda p: write_raw(sitk.GetImageFromArray(np.full((4, 5, 6), 7, np.int16)), p / "flat.nii.gz"),
                 "constant (every voxel is 7"),
    "nan": (lambda p: write_raw(sitk.GetImageFromArray(np.where(volume() > 1400, np.nan, volume())), p / "nan.nrrd"),
            "NaN or infinite"),
    "inf": (lambda p: write_raw(sitk.GetImageFromArray(np.where(volume() > 1400, np.inf, volume())), p / "inf.mha"),
            "NaN or infinite"),
    "unknown extension": (lambda p: write_raw(sitk.GetImageFromArray(volume()), p / "scan.vtk"),
                          "unknown image format '.vtk'"),
    "corrupt": (lambda p: (p / "garbage.nii.gz").write_bytes(b"\x1f\x8b not really gzip" * 10) and p / "garbage.nii.gz",
                "could not be read as a NIfTI image"),
    "truncated": (lambda p: _truncated(p), "could not be read as a NRRD image"),
    "zero bytes": (lambda p: (p / "empty.mha").write_bytes(b"") or p / "empty.mha", "could not be read as a MetaImage"),
    "missing": (lambda p: p / "nothere.nii.gz", "does not exist"),
    "no DICOM": (lambda p: _folder_without_dicom(p), "without a DICOM series"),
}


def _truncated(folder: Path) -> Path:
    path = folder / "cut.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(volume((20, 30, 40))), str(path), False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _folder_without_dicom(folder: Path) -> Path:
    sub = folder / "notdicom"
    sub.mkdir()
    (sub / "readme.txt").write_text("no images here")
    return sub


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_inputs_raise_clear_input_errors(tmp_path: Path, case: str) -> None:
    make, expected = BAD_FILES[case]
    path = make(tmp_path)
    before = listing(tmp_path)
    with pytest.raises(InputError) as err:
        io.read_image(path)
    assert expected in str(err.value), str(err.value)
    assert path.name in str(err.value) or str(path) in str(err.value)
    assert isinstance(err.value, AneurysmSegError) and "\n" not in str(err.value)
    assert listing(tmp_path) == before  # nothing written


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.zeros((0, 5, 5), np.float32), "is empty"),
        (np.zeros((5, 5), np.float32) + np.eye(5, dtype=np.float32), "is 2D (5 x 5)"),
        (np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5), "is 4D"),
        (np.array([["a", "b"], ["c", "d"]] * 2).reshape(2, 2, 2), "non-numeric"),
        (np.ones((3, 4, 5), np.uint8), "constant"),
    ],
)
def test_validate_image_on_arrays(array: np.ndarray, expected: str) -> None:
    with pytest.raises(InputError, match=re.escape(expected)):
        io.validate_image(array, name="node 'TOF'")


def test_validate_image_accepts_a_good_volume(oblique_geometry: Geometry) -> None:
    io.validate_image(Image(volume(), oblique_geometry, "ok"))  # must not raise
    io.validate_image(volume().astype(np.uint8))


# ------------------------------------------------------------------------------------------ output


def test_output_checks(tmp_path: Path, oblique_geometry: Geometry) -> None:
    labels = np.ones((3, 4, 5), np.uint8)
    (tmp_path / "afile").write_text("x")
    bad = {
        "/proc/aneurysmseg-test/out.nii.gz": "not writable",
        str(tmp_path / "afile" / "out.nii.gz"): "is a file, not a folder",
        str(tmp_path / "out.png"): "cannot write '.png'",
        str(tmp_path / "out.mhd"): "cannot write '.mhd'",
        str(tmp_path): "is a folder",
    }
    for path, expected in bad.items():
        with pytest.raises(OutputError, match=re.escape(expected)):
            io.check_writable(path)
        with pytest.raises(OutputError, match=re.escape(expected)):
            io.write_label(labels, oblique_geometry, path)
    assert listing(tmp_path) == ["afile"]
    assert io.check_writable(tmp_path / "new" / "deeper" / "x.nrrd") == tmp_path / "new" / "deeper" / "x.nrrd"
    assert listing(tmp_path) == ["afile"]  # the check itself creates nothing


def test_failed_write_keeps_previous_file_and_leaves_no_partial_file(tmp_path: Path, oblique_geometry: Geometry) -> None:
    out = tmp_path / "labels.nii"
    out.write_bytes(b"previous result")
    too_wide = np.zeros((2, 2, 40000), np.uint8)  # NIfTI-1 dimensions stop at 32767: the writer itself fails
    with pytest.raises(OutputError, match="writing .*labels.nii failed"):
        io.write_label(too_wide, oblique_geometry, out)
    assert out.read_bytes() == b"previous result"
    assert listing(tmp_path) == ["labels.nii"]


@pytest.mark.parametrize(
    "labels, expected",
    [
        (np.full((3, 4, 5), -1, np.int16), "0..65535"),
        (np.full((3, 4, 5), 70000, np.int32), "0..65535"),
        (np.full((3, 4, 5), 0.5), "whole numbers"),
        (np.ones((4, 5), np.uint8), "3D"),
    ],
)
def test_invalid_labels_leave_existing_output_untouched(tmp_path: Path, oblique_geometry: Geometry,
                                                        labels: np.ndarray, expected: str) -> None:
    out = tmp_path / "labels.nii.gz"
    out.write_bytes(b"previous result")
    with pytest.raises(InputError, match=expected):
        io.write_label(labels, oblique_geometry, out)
    assert out.read_bytes() == b"previous result"
    assert listing(tmp_path) == ["labels.nii.gz"]
