"""Quick-look pictures: maximum-intensity projections of the TOF-MRA with the aneurysm outlines, and
close-ups of each aneurysm with its neck and measurements (:func:`save_neck_picture`).

Radiologists read TOF-MRA as MIPs; the aneurysms' outlines (projected masks) drawn on the axial and
coronal MIPs, each in its own colour and numbered like the label image, show at a glance where each
one is. Physical aspect ratio is kept (anisotropic voxels). PNG through matplotlib's Agg backend.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from ..core.geometry import Image
from .atomic import write_atomic

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



def save_neck_picture(image: Image, labels: np.ndarray, aneurysms: Sequence[Any], path: str | Path,
                      half_mm: float = 12.0, dpi: int = 110) -> Path:
    """Write a PNG: one close-up MIP per aneurysm with its outline, its neck and what is reported.

    Each panel projects a cube around the aneurysm along the image axis most nearly parallel to the
    neck plane, so that the neck is seen side-on: the sac outline, the neck outline (projected closed
    curve) and the dome direction from the neck centre, titled with the segment's name and captioned
    with neck width, dome height, aspect and size ratios and the PHASES groups."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    array = np.asarray(image.array, dtype=np.float32)
    labels = np.asarray(labels)
    g = image.geometry
    sp = np.asarray(g.spacing)  # x y z
    shown = list(aneurysms)[:4]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(4.6 * max(1, len(shown)), 5.0), facecolor="black",
                             squeeze=False)
    for ax, (i, a) in zip(axes[0], enumerate(shown)):
        colour = COLOURS[i % len(COLOURS)]
        m = getattr(a, "morphology", None)
        centre = np.asarray(g.lps_to_index(a.centroid_lps), float)  # x y z index
        half = np.ceil(max(half_mm, 1.5 * a.max_diameter_mm) / sp).astype(int)
        lo = np.maximum(np.round(centre).astype(int) - half, 0)
        hi = np.minimum(np.round(centre).astype(int) + half + 1, np.array(array.shape[::-1]))
        box = tuple(slice(lo[k], hi[k]) for k in (2, 1, 0))
        # project along the image axis (x, y, z) closest to lying in the neck plane
        normal_idx = g.direction_matrix.T @ np.asarray(m.neck_normal_lps) if m and m.neck_normal_lps else np.eye(3)[2]
        axis_xyz = int(np.argmin(np.abs(normal_idx)))
        keep = [k for k in range(3) if k != axis_xyz]  # the two in-picture axes (x y z order)
        mip = array[box].max(axis=2 - axis_xyz)
        sac = (labels[box] == a.id).any(axis=2 - axis_xyz)
        extent = (lo[keep[0]] * sp[keep[0]], hi[keep[0]] * sp[keep[0]], hi[keep[1]] * sp[keep[1]], lo[keep[1]] * sp[keep[1]])
        vmin, vmax = np.percentile(mip, [1.0, 99.8])
        ax.imshow(mip, cmap="gray", vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1, extent=extent, origin="upper",
                  interpolation="bilinear")
        rows, cols = mip.shape
        xs = (lo[keep[0]] + np.arange(cols)) * sp[keep[0]]
        ys = (lo[keep[1]] + np.arange(rows)) * sp[keep[1]]
        if sac.any():
            ax.contour(xs, ys, sac.astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
        lines = [f"max diameter {a.max_diameter_mm:.1f} mm"]
        if m is not None and m.neck_curve_lps:
            curve = (g.lps_to_index(np.asarray(m.neck_curve_lps)) * sp)[:, keep]
            try:  # the neck's outline as this view sees it
                curve = curve[ConvexHull(curve, qhull_options="QJ").vertices]
            except (QhullError, ValueError):
                pass
            closed = np.vstack([curve, curve[:1]])
            ax.plot(closed[:, 0], closed[:, 1], color="#00e5ff", linewidth=2.0)
            c = g.lps_to_index(np.asarray(m.neck_centre_lps)) * sp
            d = normal_idx * sp / np.linalg.norm(normal_idx * sp) * (m.dome_height_mm or 0.0)
            ax.annotate("", xy=(c[keep[0]] + d[keep[0]], c[keep[1]] + d[keep[1]]), xytext=(c[keep[0]], c[keep[1]]),
                        arrowprops={"arrowstyle": "->", "color": "#ffd60a", "linewidth": 1.5})
            lines = [f"neck {m.neck_width_mm:.1f} mm   dome height {m.dome_height_mm:.1f} mm",
                     f"AR {m.aspect_ratio:.2f}   SR " + (f"{m.size_ratio:.2f}" if m.size_ratio else "n/a")
                     + f"   NSI {m.nonsphericity_index:.2f}"]
        if m is not None:
            lines.append(f"PHASES: size {m.phases_size_bin}, site {m.site_group or 'unknown'}")
        ax.set_title(getattr(a, "name", f"Aneurysm {a.id}"), color=colour, fontsize=11, weight="bold")
        ax.text(0.02, 0.02, "\n".join(lines), transform=ax.transAxes, color="white", fontsize=9, va="bottom",
                bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none"})
        ax.set_axis_off()
    if not shown:
        axes[0][0].text(0.5, 0.5, "no aneurysm", color="white", ha="center", transform=axes[0][0].transAxes)
        axes[0][0].set_axis_off()
    fig.suptitle("necks (cyan), dome direction and height (yellow)", color="white", fontsize=10)
    fig.tight_layout()
    try:
        write_atomic(path, lambda file: fig.savefig(file, dpi=dpi, facecolor="black"))
    finally:
        plt.close(fig)
    return path
