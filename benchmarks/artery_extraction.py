"""Artery extraction on every input kind (issue 10): vessel Dice against the visible vessel tree.

    .venv/bin/python benchmarks/artery_extraction.py --cases 2 --seed 0            # one row per input kind
    .venv/bin/python benchmarks/artery_extraction.py --kinds full_head cow_crop    # some kinds only
    .venv/bin/python benchmarks/artery_extraction.py --cases 0 --clinical          # timing at 512 x 512 x 140
    .venv/bin/python benchmarks/artery_extraction.py --cases 0 --roi DIR           # aneurysms inside the detector region

Each kind is made by the phantom generator (``phantom.kinds.make_kind``: crops, masks, matrices,
intensity conventions, scanners, voxel sizes, obliquity), so the truth moves with the image. Scored on
the input grid: ``preprocess`` runs on the coarse grid as the pipeline does, then the artery mask is
re-thresholded on the input grid gated by the coarse tree (``preprocess.arteries_on``, the function
that builds each VOI's contour channel) and compared with the *visible* vessel label
(``PhantomCase.visible``: vessel voxels whose rendered excess signal stands 3 noise SDs out of the
noise), aneurysm sacs counted as vessel; "fat voxels kept" counts mask voxels on the scalp's fat layer
(``PhantomCase.fat``). "baseline" is the paper's full-head branch forced on every
input (``preprocess(..., adapt=False)``: what the pipeline did before the input check), "half-max" the
branch the input check picks with the half-maximum rule (the fallback without a vessel network), "learnt"
the same with the vessel network of the model folder (``--models``, default the bundled weights): the
tree is its probability above the exported threshold, on the input grid the probability resampled
linearly. Times are CPU (process) seconds of ``preprocess``: on a shared machine the CPU figure is the
one that does not depend on what else runs. The vessel network was trained on phantoms of dataset seeds
1000-1019 and 1100 (docs/training.md); the kinds here are ``make_kind(kind, 0..)``: held out.

``--roi DIR`` counts, for the ADAM-layout cases in DIR, the reference aneurysms with a coarse voxel
of the detector region (``preprocess.coarse_roi``) within their radius (half a voxel added; the rule of
``evaluation.misses``), with the half-maximum tree and with the learnt one, and the region's share of
the coarse grid.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "AneurysmSeg"))

from AneurysmSegLib import preprocess as pp  # noqa: E402
from AneurysmSegLib.core.geometry import Geometry, Image  # noqa: E402
from AneurysmSegLib.phantom.kinds import KINDS, make_kind  # noqa: E402
from AneurysmSegLib.phantom.render import generate_case  # noqa: E402

VESSELS: dict = {}  # the learnt tree's preprocess options (stages.vessels.preprocess_options), set in main


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum()) + int(b.sum()))


def scored(image: Image, truth: np.ndarray, adapt: bool, fat: np.ndarray | None, learnt: bool = False) -> dict:
    """Preprocess (one branch, the learnt tree or not), the artery mask on the input grid, its agreement
    with ``truth`` and how many of the scalp's fat voxels (``fat``, the bright rim extraction must
    reject) it keeps."""
    c = time.process_time()
    pre = pp.preprocess(image, adapt=adapt, **(VESSELS if learnt else {}))
    cpu = time.process_time() - c
    arteries = pp.arteries_on(pre, image.geometry, image.array.shape)
    hit = float((arteries & truth).sum())
    return {"dice": dice(arteries, truth), "recall": hit / max(1, int(truth.sum())),
            "precision": hit / max(1, int(arteries.sum())), "cpu": cpu, "view": pre.input.field_of_view,
            "warnings": len(pre.warnings), "fat": int((arteries & fat).sum()) if fat is not None else 0}


def evaluate(kind: str, seed: int) -> dict:
    case = make_kind(kind, seed)
    truth = (case.visible > 0) | (case.aneurysms == 1)
    fat = case.fat > 0 if case.fat is not None else None
    return {"kind": kind, "seed": seed, "shape": case.image.array.shape[::-1],
            "baseline": scored(case.image, truth, False, fat), "new": scored(case.image, truth, True, fat),
            "learnt": scored(case.image, truth, True, fat, learnt=True)}


def clinical_timing(seed: int, vois: int = 20) -> None:
    """preprocess and voi_channels on a 512 x 512 x 140 grid at 0.35 x 0.35 x 0.5 mm."""
    case = generate_case(seed)
    g = case.image.geometry
    shape_xyz, spacing = np.array([512, 512, 140]), np.array([0.35, 0.35, 0.5])
    centre = g.index_to_lps([(n - 1) / 2.0 for n in case.image.array.shape[::-1]])
    origin = centre - g.direction_matrix @ ((shape_xyz - 1) * spacing / 2.0)
    dst = Geometry(spacing=tuple(spacing), origin=tuple(origin), direction=g.direction)
    image = Image(pp.resample(case.image.array, g, dst, tuple(shape_xyz[::-1])), dst, "clinical-size phantom")
    for name, options in (("half-max", {}), ("learnt", VESSELS)):
        pp.preprocess(image, **options)  # warm-up (imports, allocator)
        t, c = time.perf_counter(), time.process_time()
        pre = pp.preprocess(image, **options)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        roi = pp.coarse_roi(pre)
        print(f"clinical 512x512x140 at 0.35x0.35x0.5 mm, {name} tree: preprocess {wall:.2f}s wall / {cpu:.2f}s CPU, "
              f"tree {int(pre.coarse_arteries.sum())} coarse voxels, detector region {100 * roi.mean():.2f}% "
              "of the coarse grid")
    pts = np.argwhere(pre.coarse_arteries)[:: max(1, int(pre.coarse_arteries.sum()) // vois)][:, ::-1]
    lps = pre.coarse.geometry.index_to_lps(pts.astype(float))
    pp.voi_channels(pre, lps[0])
    t, c = time.perf_counter(), time.process_time()
    for i in range(vois):
        pp.voi_channels(pre, lps[i % len(lps)])
    v_wall, v_cpu = (time.perf_counter() - t) / vois, (time.process_time() - c) / vois
    print(f"one 64^3 VOI (fine network's channels) {1000 * v_wall:.0f}ms wall / {1000 * v_cpu:.0f}ms CPU")


def roi_table(folder: Path) -> None:
    """Reference aneurysms of the cases in ``folder`` inside the detector region, half-max vs learnt."""
    import SimpleITK as sitk

    from AneurysmSegLib.evaluation.metrics import reference_locations
    from AneurysmSegLib.evaluation.misses import _sphere
    from AneurysmSegLib.io.images import read_image
    from AneurysmSegLib.training.data import find_cases

    totals = {"half-max": [0, 0, []], "learnt": [0, 0, []]}
    print("| case | aneurysms | inside, half-max tree | inside, learnt tree | region % half-max | region % learnt |")
    print("|---|---|---|---|---|---|")
    for ref in find_cases([folder]):
        image = read_image(ref.image_path)
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(ref.label_path)))
        sp = image.geometry.spacing_zyx
        refs = reference_locations(labels, sp)
        row = [ref.name, str(len(refs))]
        shares = []
        for name, options in (("half-max", {}), ("learnt", VESSELS)):
            pre = pp.preprocess(image, **options)
            roi = pp.coarse_roi(pre)
            g = pre.coarse.geometry
            inside = 0
            for x, y, z, radius in refs:
                centre = image.geometry.index_to_lps(np.array([x, y, z], dtype=float))
                near = _sphere(g, roi.shape, centre, radius + 0.5 * float(max(g.spacing)))
                inside += int(roi[near].any())
            totals[name][0] += inside
            totals[name][1] += len(refs)
            totals[name][2].append(100 * float(roi.mean()))
            row.append(f"{inside}/{len(refs)}")
            shares.append(f"{100 * float(roi.mean()):.2f}")
        print("| " + " | ".join(row + shares) + " |", flush=True)
    h, l = totals["half-max"], totals["learnt"]
    print(f"| **all** | {h[1]} | {h[0]}/{h[1]} | {l[0]}/{l[1]} | {np.mean(h[2]):.2f} | {np.mean(l[2]):.2f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2, help="phantom cases per kind")
    ap.add_argument("--seed", type=int, default=0, help="first case seed")
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="input kinds (default: all)")
    ap.add_argument("--clinical", action="store_true", help="also time a 512 x 512 x 140 case at 0.35 x 0.35 x 0.5 mm")
    ap.add_argument("--roi", type=Path, metavar="DIR", help="also count the aneurysms of the cases in DIR inside the "
                    "detector region, half-max vs learnt tree")
    ap.add_argument("--models", type=Path, default=None, help="model folder with a vessel network (default: bundled)")
    args = ap.parse_args(argv)
    from AneurysmSegLib.core.models import load_models
    from AneurysmSegLib.stages.vessels import preprocess_options

    VESSELS.update(preprocess_options(load_models(args.models, device="cpu")))
    if not VESSELS:
        ap.error(f"the weights in {args.models or 'the bundled folder'} have no vessel network")
    if args.cases > 0:
        print("vessel Dice against the visible vessel tree, input grid; mean over "
              f"{args.cases} case(s) per kind (seeds {args.seed}..{args.seed + args.cases - 1})")
        print("| kind | field of view found | paper baseline Dice | half-max Dice | learnt Dice | learnt recall "
              "| learnt precision | fat voxels kept (half-max / learnt) | warnings (learnt) "
              "| preprocess CPU s (half-max / learnt) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
    means = []
    for kind in args.kinds if args.cases > 0 else []:
        rows = [evaluate(kind, args.seed + i) for i in range(args.cases)]
        b = float(np.mean([r["baseline"]["dice"] for r in rows]))
        n = {k: float(np.mean([r["new"][k] for r in rows])) for k in ("dice", "cpu")}
        m = {k: float(np.mean([r["learnt"][k] for r in rows])) for k in ("dice", "recall", "precision", "cpu")}
        views = sorted({r["learnt"]["view"] for r in rows})
        warnings = sum(r["learnt"]["warnings"] for r in rows)
        fat = f"{sum(r['new']['fat'] for r in rows)} / {sum(r['learnt']['fat'] for r in rows)}"
        means.append((b, n["dice"], m["dice"]))
        print(f"| {kind} | {', '.join(views)} | {b:.3f} | {n['dice']:.3f} | {m['dice']:.3f} | {m['recall']:.3f} | "
              f"{m['precision']:.3f} | {fat} | {warnings} | {n['cpu']:.1f} / {m['cpu']:.1f} |", flush=True)
    if means:
        b, n, m = np.array(means).T
        print(f"| **all kinds** | | {b.mean():.3f} (min {b.min():.3f}) | {n.mean():.3f} (min {n.min():.3f}) | "
              f"{m.mean():.3f} (min {m.min():.3f}) | | | | | |")
    if args.clinical:
        clinical_timing(args.seed)
    if args.roi:
        roi_table(args.roi)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
