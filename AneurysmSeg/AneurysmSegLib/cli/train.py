"""``aneurysmseg train coarse|fine|vessels|fpr``: train one network (or the finding classifier) on ADAM-layout folders.

Runs unchanged under ``torchrun --nproc_per_node N -m AneurysmSegLib.cli train ...`` (one process per
GPU, or several CPU processes): ``--batch`` is then the batch of all processes together.

Example (the bundled weights, see docs/training.md)::

    aneurysmseg train fine --data work-data/train --val work-data/val-train work-data/val-shifted \\
        --out runs/fine --cache work-data/cache --max-minutes 45
"""

from __future__ import annotations

import argparse
import sys


def _ints(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", choices=["coarse", "fine", "vessels", "fpr"],
                   help="coarse = DeepMedic detector, fine = SE 3D U-Net, vessels = the learnt artery tree "
                        "(tiny U-Net on the coarse grid; needs vessels_visible.nii.gz; an epoch = --steps-per-epoch "
                        "steps between validations, --widths = its three widths, --val is not used: every "
                        "8th case validates), fpr = the false-positive reduction's classifier (the pipeline of "
                        "--models on every case of --data fits it, --val chooses its threshold; no network is trained)")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR",
                   help="ADAM-layout folders: a case folder or a folder of cases (label 2 becomes background)")
    p.add_argument("--out", required=True, metavar="RUNDIR", help="run folder: checkpoints, metrics.csv, summary.json")
    p.add_argument("--val", nargs="+", metavar="DIR", help="separate validation folders (then --data is all training)")
    p.add_argument("--folds", type=int, default=5, help="k-fold split of --data by case (1 = no split)")
    p.add_argument("--fold", type=int, default=0, help="which fold is validation (0-based)")
    p.add_argument("--epochs", type=int, help="maximum epochs (coarse 700, fine 500, vessels 12)")
    p.add_argument("--steps-per-epoch", type=int, help="optimizer steps per epoch (50; vessels 250)")
    p.add_argument("--batch", type=int, help="batch size (coarse 10 segments, fine 2 VOIs, vessels 4 patches)")
    p.add_argument("--lr", type=float, help="initial learning rate (coarse 1e-3 RMSProp, fine 5e-4 Adam, vessels 2e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from RUNDIR/last.pt")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (auto: CUDA when available; fpr: CPU)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default; vessels and fpr: 1)")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto",
                   help="mixed precision: auto = float16 with gradient scaling on CUDA, bfloat16 on CPUs with "
                        "AVX512-BF16/AMX, else off")
    p.add_argument("--init-from", metavar="MODELS_OR_CKPT",
                   help="start from these weights: a model folder with manifest.json (e.g. the bundled "
                        "AneurysmSeg/Resources/Models, to fine-tune them) or a checkpoint; the architecture comes with them")
    p.add_argument("--no-size-balance", action="store_true",
                   help="fine: draw aneurysm VOIs uniformly instead of balancing the size classes <3, 3-6, >=6 mm")
    p.add_argument("--beta", type=float, default=1.0, help="fine: WDL beta (0 = plain soft Dice loss)")
    p.add_argument("--channels", type=int, choices=[1, 2], default=2, help="fine: 2 = image + vessel contour, 1 = image")
    p.add_argument("--base-filters", type=int, default=16, help="fine: U-Net base filters")
    p.add_argument("--depth", type=int, default=4, help="fine: U-Net levels (4 = the paper's four-layer structure)")
    p.add_argument("--widths", type=_ints, help="coarse: 8 conv widths per pathway (default: the paper's 30,...,50)")
    p.add_argument("--fc-widths", type=_ints, help="coarse: widths of the 1^3 'fully connected' layers (150,150)")
    p.add_argument("--max-minutes", type=float, help="stop after the epoch that passes this wall-clock budget")
    p.add_argument("--lr-patience", type=int, default=10, help="halve lr after this many epochs without val gain")
    p.add_argument("--stop-patience", type=int, default=50, help="early stopping patience (epochs)")
    p.add_argument("--cache", metavar="DIR", help="case cache folder (default RUNDIR/cache); share it between runs")
    p.add_argument("--any-preprocess-version", action="store_true",
                   help="reuse cached cases made by another version of preprocess.py instead of rebuilding them")
    p.add_argument("--no-augment", action="store_true", help="disable augmentation (tests, debugging)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--models", metavar="DIR", help="fpr: model folder whose networks make the candidates (default: bundled)")


def run(args: argparse.Namespace) -> int:
    from ..training.run import TrainConfig, run_training

    command = "aneurysmseg " + " ".join(sys.argv[1:]) if sys.argv and "train" in sys.argv else ""
    if args.stage == "fpr":
        from ..core.errors import InputError
        from ..training.fp_reduction import FprConfig, train_fpr

        if not args.val:
            raise InputError("train fpr needs --val: the classifier's threshold is chosen on cases it was not fitted on")
        train_fpr(FprConfig(data=args.data, val=args.val, out=args.out, models=args.models,
                            threads=args.threads or 1, device=args.device if args.device != "auto" else "cpu",
                            command=command))
        return 0
    if args.stage == "vessels":
        from ..training.vessels import VesselTrainConfig, train_vessels

        every = args.steps_per_epoch or 250
        train_vessels(VesselTrainConfig(
            data=args.data, out=args.out, cache=args.cache, steps=(args.epochs or 12) * every, eval_every=every,
            batch=args.batch or 4, lr=args.lr or 2e-3, seed=args.seed, widths=args.widths or (8, 16, 16),
            max_minutes=args.max_minutes, threads=args.threads or 1, resume=args.resume, init_from=args.init_from,
            command=command))
        return 0
    run_training(TrainConfig(
        stage=args.stage, data=args.data, out=args.out, val=args.val, folds=args.folds, fold=args.fold,
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch=args.batch, lr=args.lr, seed=args.seed,
        resume=args.resume, device=args.device, threads=args.threads, amp=args.amp, beta=args.beta,
        channels=args.channels, base_filters=args.base_filters, depth=args.depth, widths=args.widths,
        fc_widths=args.fc_widths, max_minutes=args.max_minutes, lr_patience=args.lr_patience,
        stop_patience=args.stop_patience, cache=args.cache, any_preprocess_version=args.any_preprocess_version,
        augment=not args.no_augment, balance_sizes=not args.no_size_balance, init_from=args.init_from,
        progress=not args.no_progress, command=command))
    return 0
