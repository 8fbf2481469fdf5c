"""A quick-look picture: maximum-intensity projections of the TOF-MRA with the aneurysm outlines.

Radiologists read TOF-MRA as MIPs; the aneurysms' outlines (projected masks) drawn on the axial and
coronal MIPs, each in its own colour and numbered like the label image, show at a glance where each
one is. Physical aspect ratio is kept (anisotropic voxels). PNG through matplotlib's Agg backend.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..core.geometry import Image

COLOURS = ("#ff3b30", "#34c759", "#ffcc00", "#0a84ff", "#ff9f0a", "#bf5af2", "#64d2ff", "#ff375f")


def save_mip_picture(image: Image, labels: np.ndarray, path: str | Path, title: str = "",
                     reference: np.ndarray | None = None, dpi: int = 110) -> Path:
    """Write a PNG: axial and coronal MIPs with outlines of labels 1..N (and the reference, dashed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    array = np.asarray(image.array, dtype=np.float32)
    labels = np.asarray(labels)
    sx, sy, sz = image.geometry.spacing
    nz, ny, nx = array.shape
    views = [  # (title, projection axis, extent in mm (left, right, bottom, top))
        ("axial MIP", 0, (0, nx * sx, ny * sy, 0)),
        ("coronal MIP", 1, (0, nx * sx, 0, nz * sz)),
    ]
    values = [int(v) for v in np.unique(labels) if v > 0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6), facecolor="black")
    for ax, (name, axis, extent) in zip(axes, views):
        mip = array.max(axis=axis)
        lo, hi = np.percentile(mip, [1.0, 99.8])
        origin = "upper" if axis == 0 else "lower"
        ax.imshow(mip, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, extent=extent, origin=origin,
                  interpolation="bilinear")
        rows, cols = mip.shape
        xs = (np.arange(cols) + 0.5) * (extent[1] - extent[0]) / cols
        ys = (np.arange(rows) + 0.5) * abs(extent[3] - extent[2]) / rows
        if reference is not None and np.any(reference == 1):
            ax.contour(xs, ys, (np.asarray(reference) == 1).any(axis=axis).astype(float), levels=[0.5],
                       colors="white", linewidths=0.8, linestyles="dashed")
        for i, value in enumerate(values):
            projected = (labels == value).any(axis=axis)
            colour = COLOURS[i % len(COLOURS)]
            ax.contour(xs, ys, projected.astype(float), levels=[0.5], colors=[colour], linewidths=1.4)
            where = np.argwhere(projected)
            row = int(round(where[:, 0].mean()))
            ax.text(xs[where[:, 1].max()] + 1.0, ys[row], str(value), color=colour, fontsize=11, weight="bold",
                    va="center", ha="left")  # just right of the outline
        ax.set_title(name, color="white", fontsize=10)
        ax.set_axis_off()
    text = title or f"{len(values)} aneurysm(s)"
    if reference is not None:
        text += "   (dashed: ground truth)"
    fig.suptitle(text, color="white", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, facecolor="black")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path

