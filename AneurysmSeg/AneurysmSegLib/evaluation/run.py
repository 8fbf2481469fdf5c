"""The paper's tables on ADAM-layout cases, written as markdown together with the command that made them.

* coarse: the detector's seeds (``detect``'s tiling and components on the cached coarse grid) against
  the reference aneurysms with ADAM's rule (a seed within an aneurysm's maximum radius), and with the
  criterion the fine stage needs (the aneurysm's centre inside the seed's 64^3 VOI);
* fine: inside 64^3 VOIs centred on each reference aneurysm (the paper's Table 2-4 setting): DSC,
  HD, HD95, VS;
* whole: ``pipeline.segment`` on the full scan: sensitivity, FP/case, PPV, DSC and HD95;
* beta / ablation: short fine-stage trainings (``--budget-minutes`` each) compared inside VOIs, ranked
  with ``metrics.rank_methods``.

The coarse and fine tables reuse the training cache (same preprocessing, same VOIs).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import metrics
from ..training.data import CaseRef, find_cases

VOI = 64
FINE_SPACING = 0.4
THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)  #: detector thresholds reported in the coarse table


def _fmt(v: Any, digits: int = 2) -> str:
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{float(v):.{digits}f}"


def _mean_sd(values: Sequence[float], digits: int = 2) -> str:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return "n/a"
    if v.size == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def treated_locations(label_path: Path) -> list[tuple[np.ndarray, float]]:
    """(centre LPS, radius mm) of treated aneurysms (label 2): detections there are ignored."""
    import SimpleITK as sitk

    from ..io.images import geometry_of

    img = sitk.ReadImage(str(label_path))
    lab = sitk.GetArrayFromImage(img)
    geom = geometry_of(img)
    locs = metrics.reference_locations((lab == 2).astype(np.uint8), geom.spacing_zyx)
    return [(geom.index_to_lps(r[:3]), float(r[3])) for r in locs]


def match_detections(seeds_lps: Sequence[np.ndarray], refs: Sequence[tuple[np.ndarray, float]],
                     treated: Sequence[tuple[np.ndarray, float]] = (), voi_half_mm: float | None = None
                     ) -> metrics.DetectionResult:
    """ADAM's rule in physical space: a reference is found when a seed lies within its radius; a seed
    within no radius is a FP unless it lies in a treated aneurysm. With ``voi_half_mm`` the criterion
    is instead 'the reference centre lies inside the seed's cubic VOI' (what the fine stage needs)."""
    seeds = np.asarray(seeds_lps, dtype=float).reshape(-1, 3)
    centres = np.array([c for c, _ in refs], dtype=float).reshape(-1, 3)
    radii = np.array([r for _, r in refs], dtype=float)
    if voi_half_mm is None:
        within = np.linalg.norm(seeds[:, None] - centres[None], axis=2) <= radii[None]
    else:  # VOI axes = image axes; the grid is axis-aligned with the image, LPS rotation ignored
        within = np.abs(seeds[:, None] - centres[None]).max(axis=2) <= voi_half_mm
    ignored = np.zeros(len(seeds), bool)
    for c, r in treated:
        ignored |= np.linalg.norm(seeds - np.asarray(c)[None], axis=1) <= r
    hit = within.any(axis=0)
    fp = int((~within.any(axis=1) & ~ignored).sum())
    return metrics.DetectionResult(tp=int(hit.sum()), fn=int((~hit).sum()), fp=fp, ignored=int(ignored.sum()))


# ------------------------------------------------------------------------------------------ coarse


def coarse_case(model: Any, case_dir: Path, device: Any, segment_out: int = 45, context: int = 48,
                threshold: float = 0.5) -> dict[str, Any]:
    """Detector seeds of one cached case and their detection counts (ADAM rule and VOI criterion)."""
    from scipy import ndimage

    from ..stages import detect as det
    from ..core.geometry import Geometry
    from ..training.cache import load_coarse, load_masks, load_meta

    meta = load_meta(case_dir)
    vol = load_coarse(case_dir)
    arteries, head = load_masks(case_dir)
    geom = Geometry(**meta["coarse_geometry"])
    dist = ndimage.distance_transform_edt(~arteries, sampling=geom.spacing_zyx) if arteries.any() else None
    roi = (dist <= det.ROI_MARGIN_MM) & head if dist is not None else np.zeros_like(arteries)
    t = time.time()
    prob, tiles = det.run_detector(model, vol.image.astype(np.float32), roi, segment_out=segment_out,
                                   context=context, pad_value=float(vol.fill), device=device)
    secs = time.time() - t
    refs = [(np.asarray(a["centre_lps"]), float(a["radius_mm"])) for a in meta["aneurysms"]]
    treated = treated_locations(Path(meta["folder"]) / "aneurysms.nii.gz")
    out: dict[str, Any] = {"case": meta["name"], "seconds": secs, "tiles": tiles, "by_threshold": {}}
    for thr in sorted({float(threshold), *THRESHOLDS}):
        seeds = det.seeds_from_probability(prob, geom, thr)
        pts = [np.asarray(s.position_lps) for s in seeds]
        out["by_threshold"][thr] = {"adam": match_detections(pts, refs, treated),
                                    "voi": match_detections(pts, refs, treated, voi_half_mm=VOI * FINE_SPACING / 2),
                                    "seeds": len(seeds)}
    out.update(out["by_threshold"][float(threshold)])
    return out


def coarse_table(rows: Sequence[dict[str, Any]], threshold: float | None = None) -> dict[str, float]:
    pick = (lambda r: r) if threshold is None else (lambda r: r["by_threshold"][threshold])
    adam = metrics.aggregate([pick(r)["adam"] for r in rows])
    voi = metrics.aggregate([pick(r)["voi"] for r in rows])
    return {"cases": len(rows), "aneurysms": adam["tp"] + adam["fn"], "sensitivity": adam["sensitivity"],
            "fp_per_case": adam["fp_per_case"], "ppv": adam["ppv"], "voi_sensitivity": voi["sensitivity"],
            "voi_fp_per_case": voi["fp_per_case"], "seconds_per_case": float(np.mean([r["seconds"] for r in rows]))}


# ------------------------------------------------------------------------------------------ fine


def fine_scores(predict: Callable[[np.ndarray], np.ndarray], case_dirs: Sequence[Path], channels: int,
                threshold: float = 0.5) -> list[dict[str, float]]:
    """DSC/HD/HD95/VS inside the 64^3 VOI centred on every reference aneurysm of the cached cases.

    ``predict`` maps (N, C, 64, 64, 64) float32 to probabilities (N, 64, 64, 64).
    """
    from ..training.cache import load_fine

    out = []
    for d in case_dirs:
        fv = load_fine(d)
        for k, kind in enumerate(fv.kinds):
            if int(kind) != 0:
                continue
            off = (fv.big - VOI) // 2
            sl = slice(off, off + VOI)
            x = np.asarray(fv.images[k, :channels, sl, sl, sl], dtype=np.float32)
            ref = np.asarray(fv.labels[k, sl, sl, sl])
            pred = predict(x[None])[0] > threshold
            s = metrics.segmentation_scores(pred.astype(np.uint8), ref, (FINE_SPACING,) * 3)
            s["case"] = fv.name  # type: ignore[assignment]
            s["diameter_mm"] = equivalent_diameter(int((ref == 1).sum()) * FINE_SPACING**3)
            out.append(s)
    return out


#: size classes of the fine-stage table (equivalent sphere diameter, mm)
SIZE_CLASSES = (("< 3 mm", 0.0, 3.0), ("3-6 mm", 3.0, 6.0), (">= 6 mm", 6.0, float("inf")))


def equivalent_diameter(volume_mm3: float) -> float:
    """Diameter of the sphere with this volume: a size that does not depend on the aneurysm's shape."""
    return float((6.0 * volume_mm3 / np.pi) ** (1.0 / 3.0))


def fine_summary(scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"vois": len(scores), **{k: [float(s[k]) for s in scores] for k in metrics.SCORE_KEYS}}


def torchscript_predictor(model: Any, device: Any) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = model(torch.from_numpy(np.ascontiguousarray(x)).to(device))
            return torch.sigmoid(logits.float())[:, 0].cpu().numpy()

    return predict


# ------------------------------------------------------------------------------------------ whole


def whole_case(ref: CaseRef, models: Any, threshold: float | None = None) -> dict[str, Any]:
    """pipeline.segment on one full scan (threshold None: the manifest's); detection (ADAM rule) and scores."""
    import SimpleITK as sitk

    from ..io import images as io
    from ..core import pipeline

    image = io.read_image(ref.image_path)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(ref.label_path)))
    t = time.time()
    res = pipeline.segment(image, models, detection_threshold=threshold)
    secs = time.time() - t
    pred = res.labels if res is not None else np.zeros(labels.shape, np.uint16)
    sp = image.geometry.spacing_zyx
    det = metrics.detection(pred, labels, sp)
    out: dict[str, Any] = {"case": ref.name, "detection": det, "seconds": secs}
    if ((labels > 0) & (labels != 2)).any():
        out["scores"] = metrics.segmentation_scores((pred > 0).astype(np.uint8), labels, sp)
    return out


def whole_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    agg = metrics.aggregate([r["detection"] for r in rows], [r["scores"] for r in rows if "scores" in r])
    agg["seconds_per_case"] = float(np.mean([r["seconds"] for r in rows])) if rows else float("nan")
    return agg


# ------------------------------------------------------------------------------------------ short runs


def short_fine_run(out: Path, train_data: Sequence[str], val_data: Sequence[str], cache: str | None,
                   beta: float, channels: int, minutes: float, seed: int = 0, threads: int = 0,
                   steps: int = 25, any_preprocess: bool = False) -> Path:
    """Train the fine net for ``minutes`` with the train command (resumable); returns the run folder."""
    from ..cli import train

    summary = out / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("training_minutes", 0.0) >= minutes * 0.98:
        return out  # already trained with this budget (e.g. started separately, in parallel)
    p = argparse.ArgumentParser()
    train.configure_parser(p)
    argv = ["fine", "--data", *train_data, "--val", *val_data, "--out", str(out), "--beta", str(beta),
            "--channels", str(channels), "--max-minutes", str(minutes), "--seed", str(seed), "--no-progress",
            "--steps-per-epoch", str(steps), "--resume", "--threads", str(threads)]
    if cache:
        argv += ["--cache", cache]
    if any_preprocess:
        argv.append("--any-preprocess-version")
    train.run(p.parse_args(argv))
    return out


def eager_predictor(run_dir: Path, device: Any) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    import torch

    from ..cli.export import build_model, resolve_checkpoint
    from ..training.loop import load_checkpoint

    ck = load_checkpoint(resolve_checkpoint(run_dir))
    model = build_model(ck).to(device)

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(x)).to(device)).float())[:, 0].cpu().numpy()

    return predict, int(ck["hyperparameters"]["in_channels"])


# ------------------------------------------------------------------------------------------ markdown


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def evaluate_command(args: argparse.Namespace, tables: Sequence[str]) -> int:
    import torch

    from ..core.models import load_models, resolve_device
    from ..training.cache import ensure_cached

    if args.threads:
        torch.set_num_threads(int(args.threads))
    device = resolve_device(args.device)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    groups: dict[str, list[CaseRef]] = {}
    for d in args.data:
        refs = find_cases([d])
        groups[Path(d).name] = refs[: args.max_cases] if args.max_cases else refs
    cache = Path(args.cache) if args.cache else Path(args.runs) / "cache"
    dirs: dict[str, list[Path]] = {}
    if set(tables) & {"coarse", "fine", "beta", "ablation"}:
        for g, refs in groups.items():
            dirs[g] = ensure_cached(refs, cache, progress=lambda i, n, name: log(f"cached {i}/{n} {name}"),
                                    any_preprocess=bool(getattr(args, "any_preprocess_version", False)))
    loaded = load_models(args.models, device) if set(tables) & {"coarse", "fine", "whole"} else None
    command = "aneurysmseg evaluate " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "aneurysmseg evaluate"
    md: list[str] = ["# Evaluation", "",
                     f"Written by `{command}` on {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", ""]
    raw: dict[str, Any] = {}
    if loaded is not None:
        m = loaded.manifest
        md += [f"Models: `{loaded.model_dir}` (coarse sha256 {m['coarse']['sha256'][:12]}…, "
               f"fine sha256 {m['fine']['sha256'][:12]}…, fine input channels {m['fine']['in_channels']}).", ""]
    md += ["Data: " + ", ".join(f"`{g}` ({len(r)} cases)" for g, r in groups.items()) + ".", ""]

    if "coarse" in tables and loaded is not None:
        log("coarse stage ...")
        res = {}
        for g in groups:
            rows = []
            for i, d in enumerate(dirs[g]):
                rows.append(coarse_case(loaded.coarse, d, device, loaded.coarse_segment_out, loaded.coarse_context))
                a = rows[-1]["adam"]
                log(f"coarse {g} {i + 1}/{len(dirs[g])}: tp={a.tp} fn={a.fn} fp={a.fp} ({rows[-1]['seconds']:.0f} s)")
            res[g] = rows
        allrows = [r for rows in res.values() for r in rows]
        md += ["## Coarse stage (DeepMedic detector)", "",
               "Seeds = components of the detector's probability >= 0.5 on the 0.7 mm grid, restricted to the "
               "artery mask + 3 mm (as `detect.detect`). ADAM rule: a reference aneurysm is found when a seed "
               "lies within its maximum radius; VOI criterion: the aneurysm centre lies inside the seed's "
               "64³ VOI (25.6 mm), which is what the fine stage needs.", ""]
        hdr = ["data", "threshold", "cases", "aneurysms", "sensitivity (ADAM)", "FP/case (ADAM)", "PPV (ADAM)",
               "sensitivity (VOI)", "FP/case (VOI)", "s/case"]
        trows = []
        for g, rows in list(res.items()) + [("all", allrows)]:
            for thr in THRESHOLDS:
                t = coarse_table(rows, thr)
                raw.setdefault("coarse", {}).setdefault(g, {})[thr] = t
                trows.append([g, f"{thr:g}", _fmt(t["cases"]), _fmt(t["aneurysms"]), _fmt(t["sensitivity"]),
                              _fmt(t["fp_per_case"]), _fmt(t["ppv"]), _fmt(t["voi_sensitivity"]),
                              _fmt(t["voi_fp_per_case"]), _fmt(t["seconds_per_case"], 1)])
        md += [_table(hdr, trows), "", "Paper (ADAM validation, real data): sensitivity 1.00, 0.99 FP/case, PPV 0.53.", ""]

    if "fine" in tables and loaded is not None:
        log("fine stage ...")
        pred = torchscript_predictor(loaded.fine, device)
        res_f = {g: fine_scores(pred, dirs[g], loaded.fine_channels) for g in groups}
        allf = [s for v in res_f.values() for s in v]
        md += ["## Fine stage inside VOIs (SE 3D U-Net)", "",
               "One 64³ VOI (0.4 mm) centred on each reference aneurysm, made by `preprocess.voi_channels`; "
               "prediction = sigmoid > 0.5; mean ± SD over VOIs. HD/HD95 in mm (ADAM's border definition). "
               "Size classes by the diameter of the sphere of the aneurysm's volume.", ""]
        hdr = ["data", "VOIs", "DSC", "HD (mm)", "HD95 (mm)", "VS"]
        trows = []
        by_size = [(f"all, {name}", [s for s in allf if lo <= s["diameter_mm"] < hi]) for name, lo, hi in SIZE_CLASSES]
        for g, sc in list(res_f.items()) + [("all", allf)] + by_size:
            raw.setdefault("fine", {})[g] = fine_summary(sc)
            trows.append([g, str(len(sc))] + [_mean_sd([s[k] for s in sc]) for k in metrics.SCORE_KEYS])
        md += [_table(hdr, trows), "", "Paper (ADAM validation, real data): DSC 0.81, VS 0.84 (HD 17.93).", ""]

    if "whole" in tables and loaded is not None:
        thr = getattr(args, "detection_threshold", None)
        if thr is None:
            thr = loaded.detection_threshold
        log(f"whole volume (detection threshold {thr:g}) ...")
        res_w = {}
        for g, refs in groups.items():
            rows = []
            for i, r in enumerate(refs):
                rows.append(whole_case(r, loaded, thr))
                log(f"whole {g} {i + 1}/{len(refs)}: {rows[-1]['detection']} {rows[-1].get('scores', '')}")
            res_w[g] = rows
        allw = [r for rows in res_w.values() for r in rows]
        md += ["## Whole volume (`pipeline.segment`)", "",
               f"Detector threshold {thr:g}. "
               "Detection by ADAM's rule on the input grid (label-1 components); DSC, HD95 and VS over "
               "cases with aneurysms (label 2 masked out); mean over cases.", ""]
        hdr = ["data", "cases", "sensitivity", "FP/case", "PPV", "DSC", "HD95 (mm)", "VS", "s/case"]
        trows = []
        for g, rows in list(res_w.items()) + [("all", allw)]:
            a = whole_summary(rows)
            raw.setdefault("whole", {})[g] = a
            trows.append([g, _fmt(a["cases"]), _fmt(a["sensitivity"]), _fmt(a["fp_per_case"]), _fmt(a["ppv"]),
                          _fmt(a.get("dsc")), _fmt(a.get("hd95")), _fmt(a.get("vs")), _fmt(a["seconds_per_case"], 1)])
        md += [_table(hdr, trows), "", "Targets (issue 4): sensitivity >= 0.9, FP/case <= 0.5, DSC >= 0.75, "
               "HD95 <= 2 mm. Paper, whole framework on its external cohort: DSC 0.12, HD 11.61, VS 0.16.", ""]

    short = {}
    if "beta" in tables or "ablation" in tables:
        if not args.train_data:
            from ..core.errors import InputError

            raise InputError("--tables beta/ablation need --train-data (the short runs train on it)")
        configs: dict[str, tuple[float, int]] = {}
        if "ablation" in tables:
            configs.update({"baseline": (0.0, 1), "+ dual-channel": (0.0, 2), "+ WDL": (1.0, 1), "both": (1.0, 2)})
        if "beta" in tables:
            for b in (0.0, 0.25, 0.5, 0.75, 1.0):
                configs.setdefault(f"beta {b:g}", (b, 2))
        val_dirs = [p for v in dirs.values() for p in v]
        done: dict[tuple[float, int], dict[str, Any]] = {}
        for name, (beta, ch) in configs.items():
            if (beta, ch) not in done:
                run_dir = Path(args.runs) / f"fine-beta{beta:g}-ch{ch}"
                log(f"short run {name}: {run_dir}")
                short_fine_run(run_dir, args.train_data, args.data, str(cache), beta, ch, args.budget_minutes,
                               threads=args.threads, any_preprocess=bool(getattr(args, "any_preprocess_version", False)))
                predict, channels = eager_predictor(run_dir, device)
                sc = fine_scores(predict, val_dirs, channels)
                summ = json.loads((run_dir / "summary.json").read_text())
                done[(beta, ch)] = {"scores": sc, "epochs": summ.get("epochs_done"),
                                    "minutes": summ.get("training_minutes")}
            short[name] = done[(beta, ch)]
        means = {n: {k: float(np.nanmean([s[k] for s in v["scores"]])) if v["scores"] else float("nan")
                     for k in metrics.SCORE_KEYS} for n, v in short.items()}
        hib = {"dsc": True, "hd": False, "hd95": False, "vs": True}
        budget = (f"Each run: `aneurysmseg train fine` for {args.budget_minutes:g} minutes of wall time on this "
                  f"machine (same data, seed and augmentation; only beta and the input channels differ), "
                  f"evaluated inside centred VOIs of {', '.join(groups)}. Runs this short are far from "
                  f"converged: differences of a few hundredths are noise.")
        for tname, keys in (("ablation", ["baseline", "+ dual-channel", "+ WDL", "both"]),
                            ("beta", [k for k in short if k.startswith("beta")])):
            if tname not in tables or not keys:
                continue
            ranking = metrics.rank_methods({k: means[k] for k in keys}, hib)
            title = "Ablation inside VOIs" if tname == "ablation" else "Beta sweep of the WDL inside VOIs"
            md += [f"## {title}", "", budget, ""]
            hdr = ["method", "beta", "channels", "epochs", "DSC", "HD (mm)", "HD95 (mm)", "VS", "rank score"]
            trows = [[k, _fmt(configs[k][0]), str(configs[k][1]), _fmt(short[k]["epochs"])]
                     + [_mean_sd([s[m] for s in short[k]["scores"]]) for m in metrics.SCORE_KEYS]
                     + [_fmt(ranking[k])] for k in keys]
            md += [_table(hdr, trows), "", "Ranking (lower is better): " + " < ".join(ranking) + ".", ""]
            raw[tname] = {k: {**means[k], "rank": ranking[k], "epochs": short[k]["epochs"]} for k in keys}
        md += ["Paper (ADAM validation): baseline DSC 0.73 / + dual-channel 0.76 / + WDL 0.79 / both 0.81; "
               "beta = 1 best.", ""]

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and getattr(args, "append", False):
        md = [out.read_text(encoding="utf-8"), ""] + md[2:]
    out.write_text("\n".join(md) + "\n", encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str))
    log(f"wrote {out}")
    return 0
