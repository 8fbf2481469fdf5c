"""``aneurysmseg evaluate --data DIR [DIR ...] --out docs/evaluation.md``: the paper's tables on
ADAM-layout cases (phantom validation sets or real data), written as markdown with the command."""

from __future__ import annotations

import argparse
import sys


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", default=[], metavar="DIR",
                   help="ADAM-layout folders to evaluate on (each folder is one group in the tables)")
    p.add_argument("--negatives", nargs="+", default=[], metavar="SCAN",
                   help="scans without known aneurysms (image files): every finding is a false positive; "
                        "reported by the negatives table and as rows of the robustness table")
    p.add_argument("--models", metavar="DIR", help="model folder with manifest.json (default: the bundled weights)")
    p.add_argument("--out", default="docs/evaluation.md", help="markdown file to write")
    p.add_argument("--tables", default="coarse,fine,whole",
                   help="comma-separated table names from evaluation.run.TABLES (coarse, fine, whole, misses, robustness, "
                        "negatives, morphology, sweep, ablation, beta, ...; misses: why each missed aneurysm was missed, from the "
                        "same run as whole; sweep: the whole pipeline at many detector thresholds from one detector "
                        "pass per case, and the operating threshold chosen); an unknown name is refused with the full "
                        "list")
    p.add_argument("--train-data", nargs="+", metavar="DIR",
                   help="beta/ablation: training folders for the short runs")
    p.add_argument("--budget-minutes", type=float, default=5.0, help="beta/ablation: minutes of training per run")
    p.add_argument("--runs", metavar="DIR", default="runs/eval", help="beta/ablation: where the short runs go")
    p.add_argument("--cache", metavar="DIR", help="case cache folder shared with training")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--max-cases", type=int, default=0, help="evaluate at most this many cases per folder (0 = all)")
    p.add_argument("--json", metavar="FILE", help="also write the raw numbers as JSON")
    p.add_argument("--any-preprocess-version", action="store_true",
                   help="reuse cached cases made by another version of preprocess.py (as the training did)")
    p.add_argument("--detection-threshold", type=float, default=None,
                   help="whole: detector threshold passed to pipeline.segment (default: the manifest's "
                        "coarse probability_threshold, else 0.5)")
    p.add_argument("--thresholds", type=float, nargs="+", metavar="P",
                   help="sweep: the detector thresholds (default: evaluation.sweep.SWEEP_THRESHOLDS)")
    p.add_argument("--flip-tta", action="store_true",
                   help="detector test-time augmentation: average it over the scan and its left-right mirror")
    p.add_argument("--no-fp-reduction", action="store_true",
                   help="whole/misses/negatives/robustness: keep every detector finding (skip the weights' finding "
                        "classifier; with it, the whole and negatives tables also show the figures without it)")
    p.add_argument("--append", action="store_true", help="add these tables to the end of --out instead of replacing it")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.run import EvaluationConfig, run_evaluation

    command = "aneurysmseg evaluate " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "aneurysmseg evaluate"
    run_evaluation(EvaluationConfig(
        data=args.data, tables=[t.strip() for t in args.tables.split(",") if t.strip()], models=args.models,
        out=args.out, train_data=args.train_data, budget_minutes=args.budget_minutes, runs=args.runs,
        cache=args.cache, device=args.device, threads=args.threads, max_cases=args.max_cases, json_path=args.json,
        any_preprocess_version=args.any_preprocess_version, detection_threshold=args.detection_threshold,
        append=args.append, command=command, negatives=args.negatives, detector_flip=args.flip_tta,
        thresholds=args.thresholds, fp_reduction=not args.no_fp_reduction))
    return 0
