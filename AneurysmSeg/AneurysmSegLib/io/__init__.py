"""Files in and out: images (geometry kept exactly), seeds, STL surfaces, pictures, atomic writes, and the exports (DICOM SEG/SR, .seg.nrrd, tables, cohorts)."""
