"""Training orchestration: one call, ``run_training(TrainConfig(...))``, trains one network.

The command line (``aneurysmseg train``) and the evaluation's short runs both call it, so a run
means the same thing wherever it starts: cases found and split, cached with the current
preprocessing, the task built, the loop run with resumable checkpoints, ``summary.json`` written.

The same call runs on one CPU, one GPU, or several processes started by ``torchrun`` (one per GPU,
on one machine or several): each process joins the group, trains its share of every batch, and rank 0
validates and writes (see :mod:`training.distributed`)::

    torchrun --nproc_per_node 4 -m AneurysmSegLib.cli train fine --data ... --batch 8
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
    amp: str = "auto"  #: "auto" | "bf16" | "fp16" | "off" (see training.precision.Precision.choose)
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
    balance_sizes: bool = True  #: fine: draw the aneurysm size classes (<3, 3-6, >=6 mm) equally often
    init_from: str | Path | None = None  #: start from these weights (model folder or checkpoint)
    progress: bool = True
    command: str = ""  #: the command line that started the run, recorded in checkpoints and summary
    extra: dict[str, Any] = field(default_factory=dict)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_training(cfg: TrainConfig, log: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Train one network as ``cfg`` says; returns the summary also written to ``<out>/summary.json``."""
    import torch

    from ..core.errors import InputError
    from ..core.models import resolve_device
    from . import distributed

    if cfg.stage not in DEFAULTS:
        raise InputError(f"stage must be one of {sorted(DEFAULTS)}, got {cfg.stage!r}")
    t0 = time.time()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    world, device = distributed.start(resolve_device(cfg.device))
    try:
        return _run(cfg, log, world, device, t0)
    finally:
        distributed.stop(world)


def _run(cfg: TrainConfig, log: Callable[[str], None], world: Any, device: Any, t0: float) -> dict[str, Any]:
    import torch

    from ..core.errors import InputError
    from . import cache as cache_mod
    from . import loop
    from .checkpoints import load_checkpoint
    from .data import find_cases, kfold_split
    from .precision import Precision

    if not world.is_main:
        log = lambda s: None  # noqa: E731  (rank 0 speaks for all)
    precision = Precision.choose(cfg.amp, device)
    d = DEFAULTS[cfg.stage]
    batch = cfg.batch or d["batch"]
    if batch % world.size:
        raise InputError(f"--batch {batch} cannot be shared evenly by {world.size} processes")
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
    init = initial_weights(cfg.init_from, cfg.stage) if cfg.init_from and saved_hp is None else None
    if init is not None:
        saved_hp = init[0]
    torch.manual_seed(cfg.seed)
    if cfg.stage == "coarse":
        from ..networks import PAPER_FC_WIDTHS, PAPER_WIDTHS, DeepMedic
        from .coarse import CoarseTask

        hp = saved_hp or dict(in_channels=1, num_classes=2, widths=list(cfg.widths or PAPER_WIDTHS),
                              fc_widths=list(cfg.fc_widths or PAPER_FC_WIDTHS))
        model = DeepMedic(**hp)
        if init is not None:
            model.load_state_dict(init[1])
        task: Any = CoarseTask(model, [cache_mod.load_coarse(p) for p in train_dirs],
                               [cache_mod.load_coarse(p) for p in val_dirs], device,
                               batch=batch, lr=cfg.lr or d["lr"], precision=precision, seed=cfg.seed,
                               augment=cfg.augment)
    else:
        from ..networks import SEUNet3D
        from .fine import FineTask

        hp = saved_hp or dict(in_channels=cfg.channels, out_channels=1, base_filters=cfg.base_filters,
                              depth=cfg.depth)
        model = SEUNet3D(**hp)
        if init is not None:
            model.load_state_dict(init[1])
        task = FineTask(model, [cache_mod.load_fine(p) for p in train_dirs], [cache_mod.load_fine(p) for p in val_dirs],
                        device, beta=cfg.beta, channels=int(hp["in_channels"]), batch=batch,
                        lr=cfg.lr or d["lr"], precision=precision, augment=cfg.augment,
                        balance_sizes=cfg.balance_sizes)
    record = {"stage": cfg.stage, "command": cfg.command, "data": [str(p) for p in cfg.data], "seed": cfg.seed,
              "device": str(device), "threads": torch.get_num_threads(), "precision": precision.name,
              "processes": world.size, "init_from": str(cfg.init_from or ""), **split, **cfg.extra}
    loop_cfg = loop.LoopConfig(out=out, epochs=cfg.epochs or d["epochs"],
                               steps_per_epoch=cfg.steps_per_epoch or d["steps"], seed=cfg.seed, resume=cfg.resume,
                               max_minutes=cfg.max_minutes, lr_patience=cfg.lr_patience,
                               stop_patience=cfg.stop_patience, progress=cfg.progress,
                               lr_override=cfg.lr if cfg.resume else None, extra=record,
                               validate_first=init is not None)
    state = loop.run(task, loop_cfg, world=world, precision=precision)
    summary = {
        **{k: record[k] for k in ("stage", "command", "data")}, **split,
        "train_cases": len(train_refs), "val_cases": len(val_refs), "seed": cfg.seed, "device": str(device),
        "threads": torch.get_num_threads(), "precision": precision.name, "processes": world.size,
        "init_from": record["init_from"], "hyperparameters": model.hyperparameters(),
        "task": task.describe() | {"train_cases": len(train_refs), "val_cases": len(val_refs)},
        "epochs_done": state["epoch"] + 1, "stopped": state.get("stopped", ""), "best_epoch": state["best_epoch"],
        "best_val_loss": state["best_val"], "best_metrics": state.get("best_metrics", {}),
        "training_minutes": state["elapsed_s"] / 60.0, "cache_minutes": cache_s / 60.0,
    }
    if world.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    log(f"done: {summary['epochs_done']} epochs, best epoch {state['best_epoch']} "
        f"(val loss {state['best_val']:.4g}); checkpoints in {out}")
    return summary


def initial_weights(source: str | Path, stage: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyperparameters, state_dict) of the ``stage`` network in a model folder (its manifest, sha256
    verified: e.g. the bundled weights, to fine-tune them) or in a training checkpoint."""
    from ..core.errors import InputError
    from .checkpoints import load_checkpoint

    path = Path(source)
    if path.is_dir():
        from ..core.models import load_models

        models = load_models(path, "cpu")
        script = {"coarse": models.coarse, "fine": models.fine, "vessels": models.vessels}[stage]
        if script is None:
            raise InputError(f"the models in {path} have no {stage} network")
        return dict(models.manifest[stage]["hyperparameters"]), dict(script.state_dict())
    if path.is_file():
        ck = load_checkpoint(path)
        kind = ck.get("kind", "vessels" if "best_threshold" in ck else None)  # vessel runs before "kind"
        if kind != stage:
            raise InputError(f"{path} holds a {ck.get('kind')} network, not a {stage} one")
        return dict(ck["hyperparameters"]), dict(ck["model"])
    raise InputError(f"initial weights {source}: expected a model folder with manifest.json or a checkpoint file")
