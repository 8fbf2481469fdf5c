"""``aneurysmseg evaluate --data DIR [DIR ...] --out docs/evaluation.md``: the paper's tables on
ADAM-layout cases (phantom validation sets or real data), written as markdown with the command."""

from __future__ import annotations

import argparse

TABLES = ("coarse", "fine", "whole", "beta", "ablation")


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", required=True, metavar="DIR",
                   help="ADAM-layout folders to evaluate on (each folder is one group in the tables)")
    p.add_argument("--models", metavar="DIR", help="model folder with manifest.json (default: the bundled weights)")
    p.add_argument("--out", default="docs/evaluation.md", help="markdown file to write")
    p.add_argument("--tables", default="coarse,fine,whole",
                   help=f"comma-separated subset of {','.join(TABLES)}")
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
    p.add_argument("--append", action="store_true", help="add these tables to the end of --out instead of replacing it")


def run(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..evaluation.run import evaluate_command

    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        raise InputError(f"unknown tables {unknown}; choose from {','.join(TABLES)}")
    return evaluate_command(args, tables)
