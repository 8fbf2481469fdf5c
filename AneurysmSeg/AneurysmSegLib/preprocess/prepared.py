"""What global preprocessing hands to every later stage: one scan's statistics and coarse masks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from ..core.geometry import Geometry, Image
from ..io.images import to_sitk
from .grids import _resample_sitk
from .vessels import vessel_features


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
    #: the half-maximum tree on the coarse grid (the fine network's contour channel); None: coarse_arteries
    classical_arteries: np.ndarray | None = None
    #: learnt vessel probability on the coarse grid (None: no vessel model; the tree is the half-maximum one)
    coarse_vessels: np.ndarray | None = None
    vessel_threshold: float = 0.5  #: the probability above which a voxel is vessel
    _sitk_image: sitk.Image | None = field(default=None, repr=False, compare=False)
    _sitk_trees: dict = field(default_factory=dict, repr=False, compare=False)
    _sitk_vessels: sitk.Image | None = field(default=None, repr=False, compare=False)
    _sitk_tissue: sitk.Image | None = field(default=None, repr=False, compare=False)

    def vessel_features(self) -> np.ndarray:
        """The learnt tree's input on the coarse grid (:func:`vessels.vessel_features`)."""
        tissue = self.coarse_tissue if self.coarse_tissue is not None else self.tissue_level
        return vessel_features(self.coarse.array, self.coarse_brain, tissue, self.tissue_level,
                               self.artery_threshold, self.zero_level)

    def sitk_image(self) -> sitk.Image:
        """The original image as SimpleITK, converted once (each VOI resamples from it)."""
        if self._sitk_image is None:
            self._sitk_image = to_sitk(np.asarray(self.image.array, dtype=np.float32), self.image.geometry)
        return self._sitk_image

    @property
    def half_maximum_tree(self) -> np.ndarray:
        """The half-maximum artery tree on the coarse grid (the learnt one's fallback)."""
        return self.coarse_arteries if self.classical_arteries is None else self.classical_arteries

    def sitk_tree(self, learnt: bool = False) -> sitk.Image:
        """A coarse tree as a float SimpleITK image, converted once (gates every VOI): the half-maximum
        tree, or with ``learnt`` the tree the pipeline uses (``coarse_arteries``)."""
        key = "learnt" if learnt else "half-max"
        if key not in self._sitk_trees:
            tree = self.coarse_arteries if learnt else self.half_maximum_tree
            self._sitk_trees[key] = to_sitk(tree.astype(np.float32), self.coarse.geometry)
        return self._sitk_trees[key]

    def vessels_on(self, dst: Geometry, shape_zyx: Sequence[int]) -> np.ndarray:
        """The learnt vessel probability resampled (linear) onto another grid; needs ``coarse_vessels``."""
        if self.coarse_vessels is None:
            raise ValueError("no learnt vessel probability (preprocess ran without a vessel model)")
        if self._sitk_vessels is None:
            self._sitk_vessels = to_sitk(self.coarse_vessels, self.coarse.geometry)
        return _resample_sitk(self._sitk_vessels, dst, shape_zyx, True, 0.0)

    def tissue_on(self, dst: Geometry, shape_zyx: Sequence[int]) -> np.ndarray | float:
        """The local tissue level resampled onto another grid (the median level if there is none)."""
        if self.coarse_tissue is None:
            return self.tissue_level
        if self._sitk_tissue is None:
            self._sitk_tissue = to_sitk(self.coarse_tissue.astype(np.float32), self.coarse.geometry)
        return _resample_sitk(self._sitk_tissue, dst, shape_zyx, True, self.tissue_level)
