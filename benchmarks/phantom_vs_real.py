"""Phantoms against real TOF-MRA: intensity statistics and a side-by-side picture on the same grid.

    .venv/bin/python benchmarks/phantom_vs_real.py --real /work/data/real/chris_MRA.nii.gz --kind vessels_only \
        --seeds 4 --picture docs/phantom_vs_real.png
    .venv/bin/python benchmarks/phantom_vs_real.py --real /work/data/real/topcow_example_mra.mha --kind full_head
    .venv/bin/python benchmarks/phantom_vs_real.py --real ... --kind high_cnr_3t

Each phantom is made with ``phantom.kinds.make_kind`` on the real scan's matrix and voxel size (the
generator centres the circle of Willis in it, so a small real crop gets a crop-sized phantom). Printed
per image: how bright the brightest voxels are against the median (99th and 99.9th percentile over
the 50th: the vessel contrast; of the non-zero voxels when most are zero), the noise (robust std of neighbour differences in the darker half,
over the median), the share of voxels brighter than 3 x the median and, for vessels-only volumes,
the share of non-zero voxels and their volume. The real scans are not in the repository (see
docs/training.md for where they come from and their licences).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "AneurysmSeg"))

from AneurysmSegLib.phantom import kinds  # noqa: E402


def statistics(a: np.ndarray, spacing) -> dict[str, float]:
    a = a.astype(np.float32)
    values = a if np.median(a) > 0 else a[a > 0]  # vessels-only volumes: statistics of what is not zero
    base = float(np.median(values))
    p99, p999 = np.percentile(values, [99, 99.9])
    darker = a[:, :, 1:] < base
    d = (a[:, :, 1:] - a[:, :, :-1])[darker]
    noise = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2) if d.size else 0.0
    return {"p99/p50": p99 / base, "p99.9/p50": p999 / base, "noise/p50": noise / base,
            "bright %": 100 * float(np.mean(a > 3 * base)), "nonzero %": 100 * float(np.mean(a > 0)),
            "nonzero ml": float(np.sum(a > 0) * np.prod(spacing) / 1000)}


def picture(real: np.ndarray, phantom: np.ndarray, spacing, names: tuple[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ext = np.array(real.shape[::-1]) * np.array(spacing)
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.4), gridspec_kw={"width_ratios": [ext[0], ext[0], ext[1]]})
    for ax, arr, name in zip(axes, (real, phantom), names):
        vmax = float(np.percentile(arr, 99.9))
        views = ((arr.max(0), spacing[1] / spacing[0], "upper", "axial MIP"),
                 (arr.max(1), spacing[2] / spacing[0], "lower", "coronal MIP"),
                 (arr.max(2), spacing[2] / spacing[1], "lower", "sagittal MIP"))
        for a, (mip, aspect, origin, title) in zip(ax, views):
            a.imshow(mip, cmap="gray", vmin=0, vmax=vmax, aspect=aspect, origin=origin)
            a.set_title(title, fontsize=9)
            a.axis("off")
        ax[1].text(0.5, 1.12, name, transform=ax[1].transAxes, fontsize=10, ha="center")
    fig.tight_layout(h_pad=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=70)
    plt.close(fig)


def radiological(img: sitk.Image) -> np.ndarray:
    """The array with its rows and columns ordered like the phantom's (LPS: x to the left, y posterior)."""
    return sitk.GetArrayFromImage(sitk.DICOMOrient(img, "LPS"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real", type=Path, required=True, help="a real TOF-MRA file (NIfTI, MHA, NRRD)")
    ap.add_argument("--kind", default="full_head", choices=kinds.KINDS, help="phantom input kind to compare with")
    ap.add_argument("--seeds", type=int, default=4, help="phantoms to make (seeds 0..N-1)")
    ap.add_argument("--picture", type=Path, default=None, help="write real vs phantom (seed 0) MIPs here")
    args = ap.parse_args()
    img = sitk.ReadImage(str(args.real))
    real = radiological(img)
    spacing = sitk.DICOMOrient(img, "LPS").GetSpacing()
    rows = [("real: " + args.real.name, statistics(real, spacing))]
    first = None
    for seed in range(args.seeds):
        case = kinds.make_kind(args.kind, seed, real.shape[::-1], spacing, n_aneurysms=1, treated=False)
        rows.append((f"phantom {args.kind} seed {seed}", statistics(case.image.array, spacing)))
        first = case.image.array if first is None else first
    keys = list(rows[0][1])
    print(f"{args.real.name}: {real.shape[::-1]} voxels of {tuple(round(s, 3) for s in spacing)} mm, {real.dtype}")
    print("| image | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, st in rows:
        print(f"| {name} | " + " | ".join(f"{st[k]:.3g}" for k in keys) + " |")
    if args.picture is not None:
        picture(real.astype(np.float32), first, spacing,
                (f"real: {args.real.name}", f"phantom: aneurysmseg phantom --kind {args.kind}, same grid (seed 0)"),
                args.picture)
        print(f"wrote {args.picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
