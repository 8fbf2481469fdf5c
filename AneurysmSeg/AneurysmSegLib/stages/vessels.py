"""The learnt artery tree: the vessel network run over the coarse grid (``preprocess(..., vessels=...)``).

The network (``networks.vessel_unet``) runs inside the box of the intracranial region (feature 2)
grown by ``BOX_MARGIN_VOXELS``, in slabs along the first axis small enough to keep memory low; slabs
overlap by the network's receptive field and start on its pooling grid, so the result equals one pass
over the whole box. Outside the box the probability is 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..networks.vessel_unet import RECEPTIVE_HALF_WIDTH
from ..preprocess.vessels import FEATURES

#: Voxels around the intracranial region's box that are still searched (arteries at the skull base).
BOX_MARGIN_VOXELS = 8
#: Largest slab (voxels of output) one pass computes: about 100 bytes a voxel at the peak.
SLAB_VOXELS = 4_000_000
#: The network's spatial sizes must be multiples of this (two poolings).
MULTIPLE = 4


def _box(region: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of ``region`` grown by ``margin`` (the whole array when the region is empty)."""
    if not region.any():
        return tuple(slice(0, n) for n in region.shape)
    out = []
    for axis in range(3):
        hit = np.flatnonzero(region.any(axis=tuple(a for a in range(3) if a != axis)))
        out.append(slice(max(0, int(hit[0]) - margin), min(region.shape[axis], int(hit[-1]) + 1 + margin)))
    return tuple(out)


class VesselSegmenter:
    """Callable: features ``(FEATURES, D, H, W)`` -> vessel probability ``(D, H, W)`` float32."""

    def __init__(self, module: Any, device: torch.device | str = "cpu", slab_voxels: int = SLAB_VOXELS) -> None:
        self.module = module
        self.device = torch.device(device)
        self.slab_voxels = int(slab_voxels)

    def _run(self, block: np.ndarray) -> np.ndarray:
        pad = [(0, 0)] + [(0, (-n) % MULTIPLE) for n in block.shape[1:]]
        # Channels-last (channels_last_3d): oneDNN then convolves without reordering each layer's
        # input and output into its blocked layout, copies the size of a full-resolution activation.
        x = np.ascontiguousarray(np.moveaxis(np.pad(block, pad), 0, -1))
        x = torch.from_numpy(x)[None].permute(0, 4, 1, 2, 3).to(self.device)
        with torch.inference_mode():
            p = torch.sigmoid(self.module(x))[0, 0].float().cpu().numpy()
        return p[: block.shape[1], : block.shape[2], : block.shape[3]]

    def __call__(self, features: np.ndarray) -> np.ndarray:
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 4 or f.shape[0] != FEATURES:
            raise ValueError(f"vessel features must be ({FEATURES}, D, H, W), got {f.shape}")
        out = np.zeros(f.shape[1:], dtype=np.float32)
        box = _box(f[2] > 0.5, BOX_MARGIN_VOXELS)
        sub = f[(slice(None),) + box]
        depth = sub.shape[1]
        plane = sub.shape[2] * sub.shape[3]
        step = max(MULTIPLE, (self.slab_voxels // max(1, plane)) // MULTIPLE * MULTIPLE)
        halo = -(-RECEPTIVE_HALF_WIDTH // MULTIPLE) * MULTIPLE
        prob = np.empty(sub.shape[1:], dtype=np.float32)
        for z0 in range(0, depth, step):
            z1 = min(depth, z0 + step)
            a, b = max(0, z0 - halo), min(depth, z1 + halo)
            prob[z0:z1] = self._run(sub[:, a:b])[z0 - a: z1 - a]
        out[box] = prob
        return out


def preprocess_options(models: Any) -> dict[str, Any]:
    """``preprocess`` keyword arguments for loaded models (``core.models.LoadedModels``): their vessel
    network and its threshold, or none (the half-maximum tree) when the weights have no vessel network
    or it was trained on another coarse grid than the detector's."""
    if getattr(models, "vessels", None) is None:
        return {}
    entry = models.manifest.vessels or {}
    spacing = [float(s) for s in entry.get("spacing_mm", [0.0])]
    if any(abs(s - float(models.coarse_spacing[0])) > 1e-6 for s in spacing):
        return {}
    return {"vessels": VesselSegmenter(models.vessels, models.device),
            "vessel_threshold": models.manifest.vessel_threshold}
