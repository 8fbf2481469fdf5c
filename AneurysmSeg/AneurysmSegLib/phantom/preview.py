"""Pictures of a phantom case (MIPs and slices) to judge its realism against real TOF-MRA by eye."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .render import PhantomCase


def _aspect(spacing_a: float, spacing_b: float) -> float:
    return float(spacing_a / spacing_b)


def save_mip(case: PhantomCase, path: str | Path, title: str = "") -> Path:
    """Axial, coronal and sagittal maximum-intensity projections with the aneurysm outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = case.image.array
    sx, sy, sz = case.geometry.spacing
    lab = case.aneurysms
    vmax = float(np.percentile(img, 99.97))
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4), gridspec_kw={"width_ratios": [1, 1, 1]})
    views = [("axial MIP", img.max(axis=0), lab.max(axis=0), _aspect(sy, sx), False),
             ("coronal MIP", img.max(axis=1), lab.max(axis=1), _aspect(sz, sx), True),
             ("sagittal MIP", img.max(axis=2), lab.max(axis=2), _aspect(sz, sy), True)]
    for ax, (name, mip, lmip, aspect, flip) in zip(axes, views):
        ax.imshow(mip, cmap="gray", vmin=0, vmax=vmax, aspect=aspect, origin="lower" if flip else "upper",
                  interpolation="lanczos")
        if lmip.any():
            ax.contour(lmip > 0, levels=[0.5], colors="r", linewidths=0.7)
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title or _describe(case), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def save_slices(case: PhantomCase, path: str | Path, title: str = "") -> Path:
    """Axial slices through the slab (bottom to top) plus one through each aneurysm, outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = case.image.array
    sx, sy, _ = case.geometry.spacing
    nz = img.shape[0]
    zs = [int(nz * f) for f in (0.12, 0.3, 0.45, 0.65, 0.85)]
    zs += [loc[2] for loc in (case.locations + case.treated_locations)[:3]]
    vmax = float(np.percentile(img, 99.9))
    cols = 4
    rows = int(np.ceil(len(zs) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.3 * rows))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, z in zip(np.ravel(axes), zs):
        ax.imshow(img[z], cmap="gray", vmin=0, vmax=vmax, aspect=_aspect(sy, sx))
        if case.aneurysms[z].any():
            ax.contour(case.aneurysms[z] > 0, levels=[0.5], colors="r", linewidths=0.6)
        ax.set_title(f"axial slice z={z}", fontsize=9)
    fig.suptitle(title or _describe(case), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _describe(case: PhantomCase) -> str:
    p = case.params
    sp = ", ".join(f"{s:.2f}" for s in p.spacing)
    an = "; ".join(f"{a['site']} {a['diameter_mm']:.1f} mm{' treated' if a['treated'] else ''}" for a in p.aneurysms)
    kind = f", {p.input_kind}" if p.input_kind else ""
    return (f"synthetic TOF-MRA, seed {p.seed} ({p.scanner}{kind}), spacing {sp} mm, "
            f"contrast {p.contrast:.1f}, noise {p.noise:.3f}; aneurysms: {an or 'none'}")


def save_closeups(case: PhantomCase, path: str | Path, half_mm: float = 16.0) -> Path | None:
    """Per aneurysm: axial slice, local axial MIP and coronal slice through its centre (a 64^3 VOI at
    0.4 mm is 25.6 mm wide: about what the fine stage sees), with the label outline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    locs = case.locations + case.treated_locations
    if not locs:
        return None
    img, lab = case.image.array, case.aneurysms
    sx, sy, sz = case.geometry.spacing
    vmax = float(np.percentile(img, 99.95))
    fig, axes = plt.subplots(len(locs), 3, figsize=(10, 3.4 * len(locs)), squeeze=False)
    for row, (x, y, z, _) in zip(axes, locs):
        hx, hy, hz = (int(round(half_mm / s)) for s in (sx, sy, sz))
        sl = (slice(max(z - hz, 0), z + hz), slice(max(y - hy, 0), y + hy), slice(max(x - hx, 0), x + hx))
        sub, sub_lab = img[sl], lab[sl] > 0
        zc, yc = z - sl[0].start, y - sl[1].start
        panels = [(sub[zc], sub_lab[zc], sy / sx, "upper", "axial slice"),
                  (sub.max(axis=0), sub_lab.max(axis=0), sy / sx, "upper", "local axial MIP"),
                  (sub[:, yc], sub_lab[:, yc], sz / sx, "lower", "coronal slice")]
        for ax, (im, lb, aspect, origin, name) in zip(row, panels):
            ax.imshow(im, cmap="gray", vmin=0, vmax=vmax, aspect=aspect, origin=origin)
            if lb.any():
                ax.contour(lb, levels=[0.5], colors="r", linewidths=0.7)
            ax.set_title(f"{name} ({x}, {y}, {z})", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
