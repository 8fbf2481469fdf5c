"""The learnt artery tree's side of preprocessing (torch-free): its input features and its mask.

A small network (``networks.vessel_unet``, run by ``stages.vessels``) reads, on the coarse grid, the
z-scored image, the image's rise over the local tissue level in units of the local noise (what the
half-maximum rule thresholds) and the intracranial region, and returns a vessel probability per
coarse voxel. The probability, resampled linearly onto any grid (the input grid, a VOI) and cut at
the exported threshold, is the artery mask there: on the coarse grid it is the tree that the
detector searches around.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .arteries import SIGNIFICANCE_SD, bias_scale, remove_specks

#: Feature channels: z-scored image, significance-normalised rise over the local tissue, region.
FEATURES = 3
#: Scale of the channels (the network sees values of order one).
Z_SCALE, RISE_SCALE = 5.0, 20.0
#: Clips of the z-score and of the rise (noise SDs): beyond them nothing changes for a vessel.
Z_CLIP, RISE_CLIP = (-5.0, 15.0), (-20.0, 60.0)

#: A function from features ``(FEATURES, D, H, W)`` to probabilities ``(D, H, W)`` (``stages.vessels``).
VesselModel = Callable[[np.ndarray], np.ndarray]


def vessel_features(zscored: np.ndarray, region: np.ndarray, tissue: float | np.ndarray, level: float,
                    threshold: float, zero: float | None) -> np.ndarray:
    """float32 ``(FEATURES, D, H, W)``: the learnt tree's input on the coarse grid.

    ``tissue`` is the local tissue level (or one number), ``level`` its median, ``threshold`` the
    artery significance at that level (``SIGNIFICANCE_SD`` noise SDs above it) and ``zero`` the
    zero-signal level from which the noise follows a bias field (None: one noise level).
    """
    z = np.asarray(zscored, dtype=np.float32)
    sd = max((float(threshold) - float(level)) / SIGNIFICANCE_SD, 1e-3)
    noise = np.float32(sd) * bias_scale(tissue, level, zero)
    out = np.empty((FEATURES,) + z.shape, dtype=np.float32)
    out[0] = np.clip(z, *Z_CLIP) / Z_SCALE
    out[1] = np.clip((z - tissue) / noise, *RISE_CLIP) / RISE_SCALE
    out[2] = region
    return out


def tree_from_probability(probability: np.ndarray, threshold: float, spacing_zyx: Sequence[float],
                          min_mm3: float | None = None) -> np.ndarray:
    """bool: the coarse voxels above ``threshold``, isolated specks removed (as the classical tree)."""
    return remove_specks(np.asarray(probability) > threshold, spacing_zyx, min_mm3)
