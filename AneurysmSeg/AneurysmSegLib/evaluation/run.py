"""``run_evaluation(EvaluationConfig(...))``: the evaluation tables on ADAM-layout cases, as markdown.

Each table is a function of an :class:`EvaluationContext` returning :class:`report.Section` objects,
registered in :data:`TABLES`; the numbers come from :mod:`.tables`, the markdown from :mod:`.report`.
The figures quoted in the text (VOI size, spacing, detector region) come from the weights' manifest
and the library's constants, so the document cannot drift from the code.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..training.data import CaseRef, find_cases
from . import metrics
from .misses import REASONS, explain_case, reason_counts
from .morphology import morphology_section
from .negatives import negative_case, negatives_section
from .report import Section, fmt, markdown_table, mean_sd, write_markdown
from .robustness import robustness_section
from .sweep import sweep_section
from .tables import (
    SIZE_CLASSES,
    THRESHOLDS,
    coarse_case,
    coarse_table,
    eager_predictor,
    fine_scores,
    fine_summary,
    short_fine_run,
    torchscript_predictor,
    unscreened_rows,
    whole_summary,
)


@dataclass
class EvaluationConfig:
    """What to evaluate, on what, with which weights, and where the document goes."""

    data: Sequence[str]  #: ADAM-layout folders; each is one group (row) in the tables
    tables: Sequence[str] = ("coarse", "fine", "whole")
    models: str | None = None  #: model folder (default: the bundled weights)
    out: str = "docs/evaluation.md"
    train_data: Sequence[str] | None = None  #: beta/ablation: training folders for the short runs
    budget_minutes: float = 5.0
    runs: str = "runs/eval"
    cache: str | None = None
    device: str = "auto"
    threads: int = 0
    max_cases: int = 0
    json_path: str | None = None
    any_preprocess_version: bool = False
    detection_threshold: float | None = None  #: whole: None = the manifest's
    negatives: Sequence[str] = ()  #: scans without known aneurysms (negatives, robustness tables)
    detector_flip: bool = False  #: left-right flip test-time augmentation of the detector
    fp_reduction: bool = True  #: apply the weights' finding classifier (when their manifest has one)
    thresholds: Sequence[float] | None = None  #: sweep: None = sweep.SWEEP_THRESHOLDS
    append: bool = False
    command: str = "aneurysmseg evaluate"


@dataclass
class EvaluationContext:
    """What every table function gets: the config, the case groups, their cache folders, the models."""

    config: EvaluationConfig
    groups: dict[str, list[CaseRef]]
    cache: Path
    device: Any
    log: Callable[[str], None]
    models: Any = None  #: core.models.LoadedModels when a table needs them
    _dirs: dict[str, list[Path]] = field(default_factory=dict)
    _whole: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _negatives: list[dict[str, Any]] | None = None

    def threshold(self) -> float:
        """The detector threshold of the whole-volume tables: the config's, else the manifest's."""
        thr = self.config.detection_threshold
        return float(thr) if thr is not None else float(self.models.detection_threshold)

    def whole(self) -> dict[str, list[dict[str, Any]]]:
        """The pipeline on every case, once for the whole-volume and the misses tables
        (:func:`misses.explain_case`)."""
        if not self._whole:
            thr = self.threshold()
            self.log(f"whole volume (detection threshold {thr:g}) ...")
            for g, refs in self.groups.items():
                rows = []
                for i, r in enumerate(refs):
                    rows.append(explain_case(r, self.models, thr, flip=self.config.detector_flip,
                                             screen=self.config.fp_reduction))
                    self.log(f"whole {g} {i + 1}/{len(refs)}: {rows[-1]['detection']} "
                             f"{[a['reason'] for a in rows[-1]['aneurysms']]} ({rows[-1]['seconds']:.0f} s)")
                self._whole[g] = rows
        return self._whole

    def negative_results(self) -> list[dict[str, Any]]:
        """The pipeline on every scan without known aneurysms (``config.negatives``), once."""
        if self._negatives is None:
            self._negatives = []
            for i, path in enumerate(self.config.negatives):
                self._negatives.append(negative_case(path, self.models, self.threshold(), self.config.detector_flip,
                                                     self.config.fp_reduction))
                r = self._negatives[-1]
                self.log(f"negatives {i + 1}/{len(self.config.negatives)} {r['scan']}: {r['false_positives']} "
                         f"false positive(s) ({r['seconds']:.0f} s)")
        return self._negatives

    def cached(self) -> dict[str, list[Path]]:
        """Cache folders per group (built on first use with the current preprocessing)."""
        from ..training.cache import ensure_cached

        if not self._dirs:
            for g, refs in self.groups.items():
                self._dirs[g] = ensure_cached(refs, self.cache, any_preprocess=self.config.any_preprocess_version,
                                              progress=lambda i, n, name: self.log(f"cached {i}/{n} {name}"))
        return self._dirs


# ------------------------------------------------------------------------------------------ tables


def coarse_section(ctx: EvaluationContext) -> list[Section]:
    from ..preprocess import ROI_MARGIN_MM

    m = ctx.models
    voi_mm = m.voi_size * m.fine_spacing[0]
    res = {}
    for g, dirs in ctx.cached().items():
        rows = []
        for i, d in enumerate(dirs):
            rows.append(coarse_case(m.coarse, d, ctx.device, voi_mm / 2, m.coarse_segment_out, m.coarse_context))
            a = rows[-1]["adam"]
            ctx.log(f"coarse {g} {i + 1}/{len(dirs)}: tp={a.tp} fn={a.fn} fp={a.fp} ({rows[-1]['seconds']:.0f} s)")
        res[g] = rows
    allrows = [r for rows in res.values() for r in rows]
    lines = ["## Coarse stage (DeepMedic detector)", "",
             f"Seeds = components of the detector's probability >= threshold on the {m.coarse_spacing[0]:g} mm grid, "
             f"restricted to the artery mask + {ROI_MARGIN_MM:g} mm (as `detect.detect`). ADAM rule: a reference "
             "aneurysm is found when a seed lies within its maximum radius; VOI criterion: the aneurysm centre lies "
             f"inside the seed's {m.voi_size}³ VOI ({voi_mm:g} mm), which is what the fine stage needs.", ""]
    hdr = ["data", "threshold", "cases", "aneurysms", "sensitivity (ADAM)", "FP/case (ADAM)", "PPV (ADAM)",
           "sensitivity (VOI)", "FP/case (VOI)", "s/case"]
    raw: dict[str, Any] = {}
    trows = []
    for g, rows in list(res.items()) + [("all", allrows)]:
        for thr in THRESHOLDS:
            t = coarse_table(rows, thr)
            raw.setdefault(g, {})[thr] = t
            trows.append([g, f"{thr:g}", fmt(t["cases"]), fmt(t["aneurysms"]), fmt(t["sensitivity"]),
                          fmt(t["fp_per_case"]), fmt(t["ppv"]), fmt(t["voi_sensitivity"]),
                          fmt(t["voi_fp_per_case"]), fmt(t["seconds_per_case"], 1)])
    lines += [markdown_table(hdr, trows), "",
              "Paper (ADAM validation, real data): sensitivity 1.00, 0.99 FP/case, PPV 0.53.", ""]
    return [Section("coarse", lines, raw)]


def fine_section(ctx: EvaluationContext) -> list[Section]:
    m = ctx.models
    pred = torchscript_predictor(m.fine, ctx.device)
    res = {g: fine_scores(pred, dirs, m.fine_channels, m.voi_size, m.fine_spacing[0]) for g, dirs in ctx.cached().items()}
    allf = [s for v in res.values() for s in v]
    lines = ["## Fine stage inside VOIs (SE 3D U-Net)", "",
             f"One {m.voi_size}³ VOI ({m.fine_spacing[0]:g} mm) centred on each reference aneurysm, made by "
             "`preprocess.voi_channels`; prediction = sigmoid > 0.5; mean ± SD over VOIs. HD/HD95 in mm (ADAM's "
             "border definition). Size classes by the diameter of the sphere of the aneurysm's volume.", ""]
    hdr = ["data", "VOIs", "DSC", "HD (mm)", "HD95 (mm)", "VS"]
    raw: dict[str, Any] = {}
    trows = []
    by_size = [(f"all, {name}", [s for s in allf if lo <= s["diameter_mm"] < hi]) for name, lo, hi in SIZE_CLASSES]
    for g, sc in list(res.items()) + [("all", allf)] + by_size:
        raw[g] = fine_summary(sc)
        trows.append([g, str(len(sc))] + [mean_sd([s[k] for s in sc]) for k in metrics.SCORE_KEYS])
    lines += [markdown_table(hdr, trows), "", "Paper (ADAM validation, real data): DSC 0.81, VS 0.84 (HD 17.93).", ""]
    return [Section("fine", lines, raw)]


def whole_section(ctx: EvaluationContext) -> list[Section]:
    thr = ctx.threshold()
    res = ctx.whole()
    allw = [r for rows in res.values() for r in rows]
    flip = ", left-right flip test-time augmentation" if ctx.config.detector_flip else ""
    lines = ["## Whole volume (`pipeline.segment`)", "",
             f"Detector threshold {thr:g}{flip}. Detection by ADAM's rule on the input grid (label-1 components); DSC, "
             "HD95 and VS over cases with aneurysms (label 2 masked out); mean over cases.", ""]
    hdr = ["data", "cases", "sensitivity", "FP/case", "PPV", "DSC", "HD95 (mm)", "VS", "s/case"]
    raw: dict[str, Any] = {}
    trows = []
    screened = bool(unscreened_rows(allw))
    for g, rows in list(res.items()) + [("all", allw)]:
        versions = [(g, rows)] + ([(f"{g}, without the false-positive reduction", unscreened_rows(rows))] if screened else [])
        for name, these in versions:
            a = whole_summary(these)
            raw[name] = a
            trows.append([name, fmt(a["cases"]), fmt(a["sensitivity"]), fmt(a["fp_per_case"]), fmt(a["ppv"]),
                          fmt(a.get("dsc")), fmt(a.get("hd95")), fmt(a.get("vs")), fmt(a["seconds_per_case"], 1)])
    if screened:
        lines += ["With the weights' finding classifier (false-positive reduction, `stages/fp_reduction.py`, threshold "
                  f"{ctx.models.finding_classifier.threshold:g}); the rows \"without\" are the same run before it "
                  "(s/case: the whole run).", ""]
    lines += [markdown_table(hdr, trows), "",
              "Targets: sensitivity >= 0.9, FP/case <= 0.5, DSC >= 0.75, HD95 <= 2 mm. Paper, whole framework on "
              "its external cohort: DSC 0.12, HD 11.61, VS 0.16.", ""]
    return [Section("whole", lines, raw)]


def misses_section(ctx: EvaluationContext) -> list[Section]:
    """Every reference aneurysm the pipeline misses, with the first step that lost it."""
    from ..preprocess import ROI_MARGIN_MM

    thr = ctx.threshold()
    res = ctx.whole()
    groups = {g: [a for r in rows for a in r["aneurysms"]] for g, rows in res.items()}
    groups["all"] = [a for v in list(groups.values()) for a in v]
    reasons = list(REASONS)
    hdr = ["data", "aneurysms"] + reasons
    trows = [[g, str(len(v))] + [str(reason_counts(v)[r]) for r in reasons] for g, v in groups.items()]
    lines = ["## Where the missed aneurysms go", "",
             f"Every reference aneurysm of the whole-volume run (detector threshold {thr:g}), with the first step "
             f"that lost it (`evaluation/misses.py`): outside the detector region (artery mask + {ROI_MARGIN_MM:g} mm), "
             f"too small for the {ctx.models.coarse_spacing[0]:g} mm coarse grid (under two voxels across and not "
             "flagged), below the detector threshold, merged with a neighbour (its seed dropped for a more "
             "confident one nearby), lost at VOI placement (its component's seed outside the aneurysm), segmented "
             "with its vessel (one object whose centre lies outside the aneurysm) or missed by the fine stage.", "",
             markdown_table(hdr, trows), ""]
    missed = [(g, a) for g, rows in res.items() for r in rows for a in r["aneurysms"] if a["reason"] != "found"]
    if missed:
        dhdr = ["data", "case", "aneurysm", "diameter (mm)", "detector region voxels", "peak probability",
                "nearest seed (mm)", "reason", "step", "whose"]
        drows = [[g, a["case"], str(a["aneurysm"]), fmt(a["diameter_mm"], 1), str(a["roi_voxels"]),
                  fmt(a["peak_probability"], 3), fmt(a["nearest_seed_mm"], 1), a["reason"], *REASONS[a["reason"]]]
                 for g, a in missed]
        lines += [markdown_table(dhdr, drows), ""]
    raw = {g: {"counts": reason_counts(v), "aneurysms": v} for g, v in groups.items() if g != "all"}
    return [Section("misses", lines, raw)]


ABLATION = {"baseline": (0.0, 1), "+ dual-channel": (0.0, 2), "+ WDL": (1.0, 1), "both": (1.0, 2)}
BETAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def short_run_sections(ctx: EvaluationContext, which: Sequence[str]) -> list[Section]:
    """Fine-stage trainings of ``budget_minutes`` each (beta sweep and/or ablation), scored inside VOIs."""
    from ..core.errors import InputError

    cfg = ctx.config
    if not cfg.train_data:
        raise InputError("--tables beta/ablation need --train-data (the short runs train on it)")
    configs: dict[str, tuple[float, int]] = {}
    if "ablation" in which:
        configs.update(ABLATION)
    if "beta" in which:
        for b in BETAS:
            configs.setdefault(f"beta {b:g}", (b, 2))
    val_dirs = [p for v in ctx.cached().values() for p in v]
    done: dict[tuple[float, int], dict[str, Any]] = {}
    short: dict[str, dict[str, Any]] = {}
    for name, (beta, ch) in configs.items():
        if (beta, ch) not in done:
            run_dir = Path(cfg.runs) / f"fine-beta{beta:g}-ch{ch}"
            ctx.log(f"short run {name}: {run_dir}")
            short_fine_run(run_dir, cfg.train_data, cfg.data, str(ctx.cache), beta, ch, cfg.budget_minutes,
                           threads=cfg.threads, any_preprocess=cfg.any_preprocess_version)
            predict, channels, voi_size, spacing = eager_predictor(run_dir, ctx.device)
            sc = fine_scores(predict, val_dirs, channels, voi_size, spacing)
            summ = json.loads((run_dir / "summary.json").read_text())
            done[(beta, ch)] = {"scores": sc, "epochs": summ.get("epochs_done"), "minutes": summ.get("training_minutes")}
        short[name] = done[(beta, ch)]
    means = {n: {k: float(np.nanmean([s[k] for s in v["scores"]])) if v["scores"] else float("nan")
                 for k in metrics.SCORE_KEYS} for n, v in short.items()}
    higher_is_better = {"dsc": True, "hd": False, "hd95": False, "vs": True}
    budget = (f"Each run: `aneurysmseg train fine` for {cfg.budget_minutes:g} minutes of wall time on this machine "
              f"(same data, seed and augmentation; only beta and the input channels differ), evaluated inside "
              f"centred VOIs of {', '.join(ctx.groups)}. Runs this short are far from converged: differences of a "
              "few hundredths are noise.")
    sections = []
    for tname, keys in (("ablation", list(ABLATION)), ("beta", [k for k in short if k.startswith("beta")])):
        if tname not in which or not keys:
            continue
        ranking = metrics.rank_methods({k: means[k] for k in keys}, higher_is_better)
        title = "Ablation inside VOIs" if tname == "ablation" else "Beta sweep of the WDL inside VOIs"
        hdr = ["method", "beta", "channels", "epochs", "DSC", "HD (mm)", "HD95 (mm)", "VS", "rank score"]
        trows = [[k, fmt(configs[k][0]), str(configs[k][1]), fmt(short[k]["epochs"])]
                 + [mean_sd([s[m] for s in short[k]["scores"]]) for m in metrics.SCORE_KEYS]
                 + [fmt(ranking[k])] for k in keys]
        lines = [f"## {title}", "", budget, "", markdown_table(hdr, trows), "",
                 "Ranking (lower is better): " + " < ".join(ranking) + ".", "",
                 "Paper (ADAM validation): baseline DSC 0.73 / + dual-channel 0.76 / + WDL 0.79 / both 0.81; "
                 "beta = 1 best.", ""]
        sections.append(Section(tname, lines, {k: {**means[k], "rank": ranking[k], "epochs": short[k]["epochs"]}
                                               for k in keys}))
    return sections


#: table name -> (function, needs the models). Tables are computed in this order.
TABLES: dict[str, tuple[Callable[[EvaluationContext], list[Section]], bool]] = {
    "coarse": (coarse_section, True),
    "fine": (fine_section, True),
    "whole": (whole_section, True),
    "misses": (misses_section, True),
    "robustness": (robustness_section, True),
    "negatives": (negatives_section, True),
    "sweep": (sweep_section, True),
    "morphology": (morphology_section, True),
    "ablation": (lambda ctx: short_run_sections(ctx, [t for t in ctx.config.tables if t in ("ablation", "beta")]), False),
    "beta": (lambda ctx: [] if "ablation" in ctx.config.tables else short_run_sections(ctx, ["beta"]), False),
}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_evaluation(cfg: EvaluationConfig, log: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Compute the tables ``cfg.tables`` and write the markdown (and JSON); returns the raw numbers."""
    import torch

    from ..core.errors import InputError
    from ..core.models import load_models, resolve_device

    unknown = sorted(set(cfg.tables) - set(TABLES))
    if unknown:
        raise InputError(f"unknown tables {unknown}; choose from {','.join(TABLES)}")
    if not cfg.data and not cfg.negatives:
        raise InputError("nothing to evaluate: give --data folders and/or --negatives scans")
    if cfg.negatives and "negatives" not in cfg.tables and "robustness" not in cfg.tables:
        raise InputError("--negatives scans are reported by the negatives and robustness tables; add one to --tables")
    missing = [p for p in cfg.negatives if not Path(p).exists()]
    if missing:
        raise InputError(f"--negatives: {', '.join(missing)} not found")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    groups: dict[str, list[CaseRef]] = {}
    for d in cfg.data:
        refs = find_cases([d])
        groups[Path(d).name] = refs[: cfg.max_cases] if cfg.max_cases else refs
    ctx = EvaluationContext(cfg, groups, Path(cfg.cache) if cfg.cache else Path(cfg.runs) / "cache", device, log)
    if any(TABLES[t][1] for t in cfg.tables):
        ctx.models = load_models(cfg.models, device)
    header = ["# Evaluation", "",
              f"Written by `{cfg.command}` on {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.", ""]
    if ctx.models is not None:
        m = ctx.models.manifest
        header += [f"Models: `{m.model_dir}` (coarse sha256 {m['coarse']['sha256'][:12]}…, "
                   f"fine sha256 {m['fine']['sha256'][:12]}…, fine input channels {m.fine_channels}).", ""]
    header += ["Data: " + ", ".join([f"`{g}` ({len(r)} cases)" for g, r in groups.items()]
                                    + [f"`{Path(p).name}` (no known aneurysm)" for p in cfg.negatives]) + ".", ""]
    sections: list[Section] = []
    for name, (table, _) in TABLES.items():
        if name in cfg.tables:
            log(f"{name} ...")
            sections += table(ctx)
    out = write_markdown(cfg.out, header, sections, append=cfg.append)
    raw = {s.name: s.raw for s in sections}
    if cfg.json_path:
        Path(cfg.json_path).write_text(json.dumps(raw, indent=1, default=str))
    log(f"wrote {out}")
    return raw
