"""Small real MR DICOM series for tests, written with pydicom as a scanner would store them.

MR Image Storage, one file per slice, patient/study/series/frame-of-reference modules filled in,
positions and orientation from the geometry, files named in a shuffled order (readers must sort by
position, not by name). Only the DICOM-output tests import this (pydicom is needed only there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from AneurysmSegLib.core.geometry import Geometry


def write_mr_series(array: np.ndarray, geometry: Geometry, folder: Path, seed: int = 0) -> list[Path]:
    """Write ``array`` ([z, y, x], int16 range) as an MR series in ``geometry``; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    axes = geometry.direction_matrix
    study, series, frame = (generate_uid(entropy_srcs=[f"{seed}-{k}"]) for k in ("study", "series", "frame"))
    order = np.random.default_rng(seed).permutation(array.shape[0])
    files = []
    for n, k in enumerate(order):
        sop = generate_uid(entropy_srcs=[f"{seed}-sop-{k}"])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"IM{n:04d}"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Test", f"PHANTOM{seed}", "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", f"ACC{seed}"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "MR", 3, int(k) + 1, "Test"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "GR", "SP", "3D"
        ds.SeriesDescription = "TOF 3D multi-slab"
        ds.ImageOrientationPatient = [float(v) for v in (*axes[:, 0], *axes[:, 1])]
        ds.ImagePositionPatient = [float(v) for v in geometry.index_to_lps((0.0, 0.0, float(k)))]
        ds.PixelSpacing = [geometry.spacing[1], geometry.spacing[0]]  # between rows (y), between columns (x)
        ds.SliceThickness = geometry.spacing[2]
        ds.Rows, ds.Columns = array.shape[1], array.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(np.round(array[k]).astype(np.int16)).tobytes()
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def headers(files: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]
