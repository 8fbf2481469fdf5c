"""What global preprocessing hands to every later stage: one scan's statistics and coarse masks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from ..core.geometry import Geometry, Image
from ..io.images import to_sitk
from .grids import _resample_sitk


@dataclass
class Preprocessed:
    """Global preprocessing of one scan, computed once and reused for the coarse input and every VOI."""

    image: Image  #: the input image as read (float32, input geometry)
    mean: float  #: z-score statistics from the head (not the air)
    std: float
    artery_threshold: float  #: threshold in z-score units used for artery extraction
    coarse: Image  #: z-scored image on the coarse grid (linear, SimpleITK), axes = input axes
    coarse_head: np.ndarray  #: bool [z, y, x] on the coarse grid: head (for statistics)
    coarse_brain: np.ndarray  #: bool on the coarse grid: intracranial region (no scalp/fat/skull)
    coarse_arteries: np.ndarray  #: bool on the coarse grid: extracted arteries
    background: float = 0.0  #: raw intensity used to pad outside the image (the air level)
    tissue_level: float = 0.0  #: median brain tissue level (z units); artery_threshold is relative to it
    coarse_tissue: np.ndarray | None = None  #: local tissue level (z units) on the coarse grid
    input: Any = None  #: survey.InputSummary: what the input check found (field of view, intensities...)
    warnings: list[str] = field(default_factory=list)  #: what the user must be told about this input
    #: zero-signal level (z units) from which the significance scales with the local tissue brightness
    #: (arteries.bias_scale); None: one significance everywhere
    zero_level: float | None = None
    roi_fallback: bool = False  #: no plausible arteries: the detector searches the whole foreground
    _sitk_image: sitk.Image | None = field(default=None, repr=False, compare=False)
    _sitk_arteries: sitk.Image | None = field(default=None, repr=False, compare=False)
    _sitk_tissue: sitk.Image | None = field(default=None, repr=False, compare=False)

    def sitk_image(self) -> sitk.Image:
        """The original image as SimpleITK, converted once (each VOI resamples from it)."""
        if self._sitk_image is None:
            self._sitk_image = to_sitk(np.asarray(self.image.array, dtype=np.float32), self.image.geometry)
        return self._sitk_image

    def sitk_arteries(self) -> sitk.Image:
        """The coarse artery mask as a float SimpleITK image, converted once (gates every VOI)."""
        if self._sitk_arteries is None:
            self._sitk_arteries = to_sitk(self.coarse_arteries.astype(np.float32), self.coarse.geometry)
        return self._sitk_arteries

    def tissue_on(self, dst: Geometry, shape_zyx: Sequence[int]) -> np.ndarray | float:
        """The local tissue level resampled onto another grid (the median level if there is none)."""
        if self.coarse_tissue is None:
            return self.tissue_level
        if self._sitk_tissue is None:
            self._sitk_tissue = to_sitk(self.coarse_tissue.astype(np.float32), self.coarse.geometry)
        return _resample_sitk(self._sitk_tissue, dst, shape_zyx, True, self.tissue_level)
