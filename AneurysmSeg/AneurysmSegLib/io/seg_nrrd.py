"""Slicer segmentation files (.seg.nrrd, through slicerio): the result as Slicer itself would save it.

One segment per aneurysm with the name, colour and terminology the module gives it in the scene
("Aneurysm N", the module's colour, SNOMED CT aneurysm with its anatomic region), label value N as in
the label image, in the input's exact geometry (LPS). Slicer opens the file as a segmentation node.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..core.errors import OutputError
from ..core.terminology import aneurysm_terminology, location_of, segment_color, segment_name

if TYPE_CHECKING:
    from .atomic import OutputSet
    from ..core.result import SegmentationResult

SUFFIX = ".seg.nrrd"


def ijk_to_lps(geometry) -> np.ndarray:
    """4x4 matrix from voxel index (i, j, k) = (x, y, z) to LPS millimetres."""
    m = np.eye(4)
    m[:3, :3] = geometry.direction_matrix * np.asarray(geometry.spacing)[None, :]
    m[:3, 3] = geometry.origin
    return m


def segmentation_of(result: SegmentationResult) -> dict:
    """slicerio's segmentation dict of ``result`` (voxels in i, j, k order)."""
    labels = np.asarray(result.labels)
    dtype = np.uint8 if labels.max(initial=0) <= np.iinfo(np.uint8).max else np.uint16
    segments = []
    for i, aneurysm in enumerate(result.aneurysms):
        mask = labels == aneurysm.id
        idx = np.nonzero(mask)  # z, y, x
        extent = ([int(v) for axis in idx[::-1] for v in (axis.min(), axis.max())] if mask.any()
                  else [0, -1, 0, -1, 0, -1])
        segments.append({
            "id": f"Aneurysm_{aneurysm.id}", "name": segment_name(aneurysm), "color": list(segment_color(i)),
            "labelValue": int(aneurysm.id), "layer": 0, "extent": extent,
            "terminology": aneurysm_terminology(*location_of(aneurysm)).slicerio(),
            "tags": {"AneurysmSeg.confidence": f"{aneurysm.confidence:.4f}"},
        })
    return {"voxels": labels.astype(dtype).transpose(2, 1, 0), "ijkToLPS": ijk_to_lps(result.geometry),
            "containedRepresentationNames": ["Binary labelmap"], "masterRepresentation": "Binary labelmap",
            "segments": segments}


def write_seg_nrrd(result: SegmentationResult, path: str | Path, outputs: OutputSet | None = None) -> Path:
    """Write ``result`` as a Slicer .seg.nrrd (atomically; with ``outputs``, at its commit)."""
    try:
        import slicerio
    except ImportError:
        raise OutputError(".seg.nrrd output needs slicerio (pip install slicerio)") from None
    from .atomic import write_atomic

    path = Path(path)
    if not path.name.lower().endswith(SUFFIX):
        raise OutputError(f"{path.name}: a Slicer segmentation file name ends in {SUFFIX}")
    segmentation = segmentation_of(result)
    return write_atomic(path, lambda tmp: slicerio.write_segmentation(tmp, segmentation), outputs)
