"""Training orchestration: one call, ``run_training(TrainConfig(...))``, trains one network.

The command line (``aneurysmseg train``) and the evaluation's short runs both call it, so a run
means the same thing wherever it starts: cases found and split, cached with the current
preprocessing, the task built, the loop run with resumable checkpoints, ``summary.json`` written.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

#: Per-stage defaults (the paper's and DeepMedic's settings) for what a config leaves as None.
DEFAULTS: dict[str, dict[str, Any]] = {
    "coarse": dict(epochs=700, steps=50, batch=10, lr=1e-3),
    "fine": dict(epochs=500, steps=50, batch=2, lr=5e-4),
}


@dataclass
class TrainConfig:
    """Everything one training run depends on; None = the stage's default from :data:`DEFAULTS`."""

    stage: str  #: "coarse" (DeepMedic detector) or "fine" (SE 3D U-Net)
    data: Sequence[str]  #: ADAM-layout folders (a case or a folder of cases)
    out: str | Path  #: run folder: checkpoints, metrics.csv, summary.json
    val: Sequence[str] | None = None  #: separate validation folders (then ``data`` is all training)
    folds: int = 5
    fold: int = 0
    epochs: int | None = None
    steps_per_epoch: int | None = None
    batch: int | None = None
    lr: float | None = None
    seed: int = 0
    resume: bool = False
    device: str = "auto"
    threads: int = 0
    amp: str = "auto"  #: "auto" | "on" | "off" (bfloat16 autocast)
    beta: float = 1.0  #: fine: WDL beta (0 = plain soft Dice)
    channels: int = 2  #: fine: 2 = image + vessel contour
    base_filters: int = 16
    depth: int = 4
    widths: Sequence[int] | None = None  #: coarse: conv widths per pathway
    fc_widths: Sequence[int] | None = None
    max_minutes: float | None = None
    lr_patience: int = 10
    stop_patience: int = 50
    cache: str | Path | None = None  #: case cache folder (default: <out>/cache)
    any_preprocess_version: bool = False
    augment: bool = True
    progress: bool = True
    command: str = ""  #: the command line that started the run, recorded in checkpoints and summary
    extra: dict[str, Any] = field(default_factory=dict)


def _amp_available(device: Any) -> bool:
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_training(cfg: TrainConfig, log: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Train one network as ``cfg`` says; returns the summary also written to ``<out>/summary.json``."""
    import torch

    from ..core.errors import InputError
    from ..core.models import resolve_device
    from . import cache as cache_mod
    from . import loop
    from .checkpoints import load_checkpoint
    from .data import find_cases, kfold_split

    if cfg.stage not in DEFAULTS:
        raise InputError(f"stage must be one of {sorted(DEFAULTS)}, got {cfg.stage!r}")
    t0 = time.time()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    amp = cfg.amp == "on" or (cfg.amp == "auto" and _amp_available(device))
    d = DEFAULTS[cfg.stage]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    refs = find_cases(list(cfg.data))
    if cfg.val:
        train_refs, val_refs = refs, find_cases(list(cfg.val))
        split: dict[str, Any] = {"validation": "separate folders", "val_data": [str(v) for v in cfg.val]}
    else:
        tr, va = kfold_split([r.name for r in refs], cfg.folds, cfg.fold, cfg.seed)
        by_name = {r.name: r for r in refs}
        train_refs, val_refs = [by_name[n] for n in tr], [by_name[n] for n in va]
        split = {"validation": f"fold {cfg.fold} of {cfg.folds} (seed {cfg.seed})"}
    overlap = {r.folder.resolve() for r in train_refs} & {r.folder.resolve() for r in val_refs}
    if overlap:
        raise InputError(f"{len(overlap)} validation cases are also training cases")
    cache_dir = Path(cfg.cache) if cfg.cache else out / "cache"
    log(f"{len(train_refs)} training and {len(val_refs)} validation cases; caching into {cache_dir}")
    dirs = cache_mod.ensure_cached(train_refs + val_refs, cache_dir,
                                   progress=lambda i, n, name: log(f"cached {i}/{n} {name}"),
                                   any_preprocess=cfg.any_preprocess_version)
    split["preprocess_versions"] = sorted({cache_mod.load_meta(p).get("preprocess_version", "?") for p in dirs})
    train_dirs, val_dirs = dirs[:len(train_refs)], dirs[len(train_refs):]
    cache_s = time.time() - t0

    ck_last = out / loop.LAST_NAME
    saved_hp = load_checkpoint(ck_last)["hyperparameters"] if cfg.resume and ck_last.is_file() else None
    torch.manual_seed(cfg.seed)
    if cfg.stage == "coarse":
        from ..networks import PAPER_FC_WIDTHS, PAPER_WIDTHS, DeepMedic
        from .coarse import CoarseTask

        hp = saved_hp or dict(in_channels=1, num_classes=2, widths=list(cfg.widths or PAPER_WIDTHS),
                              fc_widths=list(cfg.fc_widths or PAPER_FC_WIDTHS))
        model = DeepMedic(**hp)
        task: Any = CoarseTask(model, [cache_mod.load_coarse(p) for p in train_dirs],
                               [cache_mod.load_coarse(p) for p in val_dirs], device,
                               batch=cfg.batch or d["batch"], lr=cfg.lr or d["lr"], amp=amp, seed=cfg.seed,
                               augment=cfg.augment)
    else:
        from ..networks import SEUNet3D
        from .fine import FineTask

        hp = saved_hp or dict(in_channels=cfg.channels, out_channels=1, base_filters=cfg.base_filters,
                              depth=cfg.depth)
        model = SEUNet3D(**hp)
        task = FineTask(model, [cache_mod.load_fine(p) for p in train_dirs], [cache_mod.load_fine(p) for p in val_dirs],
                        device, beta=cfg.beta, channels=int(hp["in_channels"]), batch=cfg.batch or d["batch"],
                        lr=cfg.lr or d["lr"], amp=amp, augment=cfg.augment)
    record = {"stage": cfg.stage, "command": cfg.command, "data": [str(p) for p in cfg.data], "seed": cfg.seed,
              "device": str(device), "threads": torch.get_num_threads(), "amp_bf16": amp, **split, **cfg.extra}
    loop_cfg = loop.LoopConfig(out=out, epochs=cfg.epochs or d["epochs"],
                               steps_per_epoch=cfg.steps_per_epoch or d["steps"], seed=cfg.seed, resume=cfg.resume,
                               max_minutes=cfg.max_minutes, lr_patience=cfg.lr_patience,
                               stop_patience=cfg.stop_patience, progress=cfg.progress,
                               lr_override=cfg.lr if cfg.resume else None, extra=record)
    state = loop.run(task, loop_cfg)
    summary = {
        **{k: record[k] for k in ("stage", "command", "data")}, **split,
        "train_cases": len(train_refs), "val_cases": len(val_refs), "seed": cfg.seed, "device": str(device),
        "threads": torch.get_num_threads(), "amp_bf16": amp, "hyperparameters": model.hyperparameters(),
        "task": task.describe() | {"train_cases": len(train_refs), "val_cases": len(val_refs)},
        "epochs_done": state["epoch"] + 1, "stopped": state.get("stopped", ""), "best_epoch": state["best_epoch"],
        "best_val_loss": state["best_val"], "best_metrics": state.get("best_metrics", {}),
        "training_minutes": state["elapsed_s"] / 60.0, "cache_minutes": cache_s / 60.0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    log(f"done: {summary['epochs_done']} epochs, best epoch {state['best_epoch']} "
        f"(val loss {state['best_val']:.4g}); checkpoints in {out}")
    return summary
