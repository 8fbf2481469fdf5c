"""``aneurysmseg train coarse|fine``: train one network on ADAM-layout folders (phantoms or real data).

Example (the bundled weights, see docs/training.md)::

    aneurysmseg train fine --data work-data/train --val work-data/val-train work-data/val-shifted \\
        --out runs/fine --cache work-data/cache --max-minutes 45
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

DEFAULTS = {
    "coarse": dict(epochs=700, steps=50, batch=10, lr=1e-3),
    "fine": dict(epochs=500, steps=50, batch=2, lr=5e-4),
}


def _ints(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", choices=["coarse", "fine"], help="coarse = DeepMedic detector, fine = SE 3D U-Net")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR",
                   help="ADAM-layout folders: a case folder or a folder of cases (label 2 becomes background)")
    p.add_argument("--out", required=True, metavar="RUNDIR", help="run folder: checkpoints, metrics.csv, summary.json")
    p.add_argument("--val", nargs="+", metavar="DIR", help="separate validation folders (then --data is all training)")
    p.add_argument("--folds", type=int, default=5, help="k-fold split of --data by case (1 = no split)")
    p.add_argument("--fold", type=int, default=0, help="which fold is validation (0-based)")
    p.add_argument("--epochs", type=int, help="maximum epochs (coarse 700, fine 500)")
    p.add_argument("--steps-per-epoch", type=int, help="optimizer steps per epoch (50)")
    p.add_argument("--batch", type=int, help="batch size (coarse 10 segments, fine 2 VOIs)")
    p.add_argument("--lr", type=float, help="initial learning rate (coarse 1e-3 RMSProp, fine 5e-4 Adam)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from RUNDIR/last.pt")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    p.add_argument("--amp", choices=["auto", "on", "off"], default="auto",
                   help="bfloat16 autocast (auto: on for CUDA with bf16 and CPUs with AVX512-BF16/AMX)")
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


def _amp_available(device: Any) -> bool:
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def run(args: argparse.Namespace) -> int:
    import torch

    from ..core.errors import InputError
    from ..core.models import resolve_device
    from ..training import cache as cache_mod
    from ..training import loop
    from ..training.data import find_cases, kfold_split

    t0 = time.time()
    if args.threads:
        torch.set_num_threads(int(args.threads))
    device = resolve_device(args.device)
    amp = args.amp == "on" or (args.amp == "auto" and _amp_available(device))
    d = DEFAULTS[args.stage]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    refs = find_cases(args.data)
    if args.val:
        train_refs, val_refs = refs, find_cases(args.val)
        split = {"validation": "separate folders", "val_data": [str(v) for v in args.val]}
    else:
        tr, va = kfold_split([r.name for r in refs], args.folds, args.fold, args.seed)
        by_name = {r.name: r for r in refs}
        train_refs, val_refs = [by_name[n] for n in tr], [by_name[n] for n in va]
        split = {"validation": f"fold {args.fold} of {args.folds} (seed {args.seed})"}
    overlap = {r.folder.resolve() for r in train_refs} & {r.folder.resolve() for r in val_refs}
    if overlap:
        raise InputError(f"{len(overlap)} validation cases are also training cases")
    cache_dir = Path(args.cache) if args.cache else out / "cache"
    print(f"{len(train_refs)} training and {len(val_refs)} validation cases; caching into {cache_dir}",
          file=sys.stderr, flush=True)
    all_refs = train_refs + val_refs
    dirs = cache_mod.ensure_cached(all_refs, cache_dir, progress=lambda i, n, name: print(
        f"cached {i}/{n} {name}", file=sys.stderr, flush=True), any_preprocess=args.any_preprocess_version)
    versions = sorted({cache_mod.load_meta(d).get("preprocess_version", "?") for d in dirs})
    split["preprocess_versions"] = versions
    train_dirs, val_dirs = dirs[:len(train_refs)], dirs[len(train_refs):]
    cache_s = time.time() - t0

    ck_last = out / loop.LAST_NAME
    saved_hp = loop.load_checkpoint(ck_last)["hyperparameters"] if args.resume and ck_last.is_file() else None
    torch.manual_seed(args.seed)
    if args.stage == "coarse":
        from ..networks import PAPER_FC_WIDTHS, PAPER_WIDTHS, DeepMedic
        from ..training.coarse import CoarseTask

        hp = saved_hp or dict(in_channels=1, num_classes=2, widths=args.widths or list(PAPER_WIDTHS),
                              fc_widths=args.fc_widths or list(PAPER_FC_WIDTHS))
        model = DeepMedic(**hp)
        task: Any = CoarseTask(model, [cache_mod.load_coarse(p) for p in train_dirs],
                               [cache_mod.load_coarse(p) for p in val_dirs], device,
                               batch=args.batch or d["batch"], lr=args.lr or d["lr"], amp=amp, seed=args.seed,
                               augment=not args.no_augment)
    else:
        from ..networks import SEUNet3D
        from ..training.fine import FineTask

        hp = saved_hp or dict(in_channels=args.channels, out_channels=1, base_filters=args.base_filters,
                              depth=args.depth)
        model = SEUNet3D(**hp)
        task = FineTask(model, [cache_mod.load_fine(p) for p in train_dirs], [cache_mod.load_fine(p) for p in val_dirs],
                        device, beta=args.beta, channels=int(hp["in_channels"]), batch=args.batch or d["batch"],
                        lr=args.lr or d["lr"], amp=amp, augment=not args.no_augment)
    command = "aneurysmseg " + " ".join(sys.argv[1:]) if sys.argv and "train" in sys.argv else ""
    cfg = loop.LoopConfig(out=out, epochs=args.epochs or d["epochs"], steps_per_epoch=args.steps_per_epoch or d["steps"],
                          seed=args.seed, resume=args.resume, max_minutes=args.max_minutes,
                          lr_patience=args.lr_patience, stop_patience=args.stop_patience,
                          progress=not args.no_progress, lr_override=args.lr if args.resume else None,
                          extra={"stage": args.stage, "command": command, "data": [str(p) for p in args.data],
                                 "seed": args.seed, "device": str(device), "threads": torch.get_num_threads(),
                                 "amp_bf16": amp, **split})
    state = loop.run(task, cfg)
    summary = {
        "stage": args.stage, "command": command, "data": [str(p) for p in args.data], **split,
        "train_cases": len(train_refs), "val_cases": len(val_refs), "seed": args.seed, "device": str(device),
        "threads": torch.get_num_threads(), "amp_bf16": amp, "hyperparameters": model.hyperparameters(),
        "task": task.describe() | {"train_cases": len(train_refs), "val_cases": len(val_refs)},
        "epochs_done": state["epoch"] + 1, "stopped": state.get("stopped", ""), "best_epoch": state["best_epoch"],
        "best_val_loss": state["best_val"], "best_metrics": state.get("best_metrics", {}),
        "training_minutes": state["elapsed_s"] / 60.0, "cache_minutes": cache_s / 60.0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"done: {summary['epochs_done']} epochs, best epoch {state['best_epoch']} "
          f"(val loss {state['best_val']:.4g}); checkpoints in {out}", file=sys.stderr)
    return 0
