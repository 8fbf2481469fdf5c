"""The epoch loop shared by both networks, on one process or many: checkpoints (last + best), resume,
a per-epoch CSV, a progress bar, halving the learning rate on a validation plateau, early stopping and
a wall-clock budget.

Determinism: sample ``i`` of step ``s`` in epoch ``e`` is drawn from its own generator
(:func:`distributed.sample_rng`), and torch is seeded with ``(seed, e, rank)``, so a run resumed after
epoch ``e`` continues exactly as if never stopped, and N processes sharing a batch draw exactly the
samples one process would (up to floating-point nondeterminism of the device).

Checkpoints hold plain tensors and containers only (``torch.load(..., weights_only=True)`` reads
them): model and optimizer state, the gradient scaler's state, the loop state and the run's record.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from .checkpoints import load_checkpoint, plain
from .distributed import World, sample_rng, stack, wrap
from .precision import Precision

CSV_NAME = "metrics.csv"
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"


class Task(Protocol):
    """What the loop needs from a network-specific trainer."""

    kind: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    batch: int  #: samples per optimizer step, over all processes

    def sample(self, rng: np.random.Generator, index: int) -> tuple[np.ndarray, np.ndarray]: ...

    def loss(self, logits: torch.Tensor, target: torch.Tensor, world: World) -> tuple[torch.Tensor, float]: ...

    def validate(self) -> dict[str, float]: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class LoopConfig:
    out: Path
    epochs: int = 100
    steps_per_epoch: int = 100
    seed: int = 0
    resume: bool = False
    max_minutes: float | None = None
    lr_patience: int = 10  #: halve the lr after this many epochs without a better val loss
    stop_patience: int = 50  #: stop after this many epochs without a better val loss
    min_lr: float = 1e-6
    lr_override: float | None = None  #: on resume: replace the checkpoint's learning rate
    validate_first: bool = False  #: a fresh run from given weights: score them first (``initial_metrics``)
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  #: saved in the checkpoints (command line, data)


def save_checkpoint(path: Path, task: Task, state: dict[str, Any], cfg: LoopConfig,
                    scaler: "torch.amp.GradScaler | None" = None) -> None:
    """Atomic torch.save of model, optimizer, scaler and loop state (plain containers)."""
    payload = {
        "kind": task.kind,
        "model_class": type(task.model).__name__,
        "hyperparameters": task.model.hyperparameters() if hasattr(task.model, "hyperparameters") else {},
        "model": task.model.state_dict(),
        "optimizer": task.optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "loop": state,
        "task": task.describe(),
        "extra": cfg.extra,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(plain(payload), tmp)  # plain data only: read back with weights_only=True
    os.replace(tmp, path)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    os.replace(tmp, path)


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def train_step(task: Task, samples: Sequence[tuple[np.ndarray, np.ndarray]], net: torch.nn.Module | None = None,
               world: World = World(), precision: Precision = Precision(),
               scaler: "torch.amp.GradScaler | None" = None) -> float:
    """One optimizer step on this process's ``samples``; returns the loss averaged over processes."""
    net = task.model if net is None else net
    x, y = stack(samples)
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(task.device)
    yt = torch.from_numpy(np.ascontiguousarray(y)).to(task.device)
    with precision.autocast(task.device):
        logits = net(xt)
    loss, report = task.loss(logits.float(), yt, world)
    task.optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(task.optimizer)
        scaler.update()
    else:
        loss.backward()
        task.optimizer.step()
    return world.mean(report)


def draw(task: Task, seed: int, epoch: int, step: int, indices: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Samples ``indices`` of a step, each from its own generator."""
    return [task.sample(sample_rng(seed, epoch, step, i), i) for i in indices]


def _minutes_left(cfg: LoopConfig, epoch: int, elapsed_s: float, done_epochs: int, run_s: float) -> float:
    per_epoch = run_s / max(done_epochs, 1)
    left = (cfg.epochs - epoch - 1) * per_epoch / 60.0
    if cfg.max_minutes is not None:
        left = min(left, max(0.0, cfg.max_minutes - elapsed_s / 60.0))
    return left


def run(task: Task, cfg: LoopConfig, log: Callable[[str], None] | None = None, world: World = World(),
        precision: Precision = Precision()) -> dict[str, Any]:
    """Train until ``epochs``, early stopping or ``max_minutes``; returns the final loop state.

    Every process runs this; each trains its shard of every batch, rank 0 validates, writes the
    checkpoints, the CSV and the log, and shares the validation result so that all processes take
    the same decisions (learning rate, stopping).
    """
    quiet = not world.is_main
    log = (lambda s: None) if quiet else (log or (lambda s: print(s, file=sys.stderr, flush=True)))
    cfg.out.mkdir(parents=True, exist_ok=True)
    last, best, csv_path = cfg.out / LAST_NAME, cfg.out / BEST_NAME, cfg.out / CSV_NAME
    scaler = precision.scaler(task.device)
    state: dict[str, Any] = {"epoch": -1, "best_val": math.inf, "best_epoch": -1, "since_best": 0,
                             "elapsed_s": 0.0, "history": [], "lr": task.optimizer.param_groups[0]["lr"],
                             "stopped": ""}
    if cfg.resume and last.is_file():
        ck = load_checkpoint(last, map_location=task.device)
        task.model.load_state_dict(ck["model"])
        task.optimizer.load_state_dict(ck["optimizer"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        state = ck["loop"]
        if cfg.lr_override is not None:
            _set_lr(task.optimizer, cfg.lr_override)
            log(f"learning rate set to {cfg.lr_override:g} (was {state.get('lr')})")
        log(f"resumed from {last} after epoch {state['epoch']} ({state['elapsed_s'] / 60:.1f} min so far)")
        if state.get("stopped") == "early stopping" or int(state["epoch"]) + 1 >= cfg.epochs:
            log(f"run already finished ({state['stopped']})")
            return state
        state["stopped"] = ""
    if cfg.validate_first and int(state["epoch"]) < 0 and "initial_metrics" not in state:
        # the starting weights are the first candidate for best.pt: fine-tuning must beat them
        task.model.eval()
        first: dict[str, float] = {}
        if world.is_main:
            with torch.no_grad():
                first = {k: float(v) for k, v in task.validate().items()}
        first = world.broadcast(first)
        state["initial_metrics"] = first
        state["best_val"] = float(first.get("val_loss", math.inf))
        state["best_metrics"] = {"epoch": -1, **first}
        if world.is_main:
            save_checkpoint(best, task, state, cfg)
        log("starting weights: " + ", ".join(f"{k}={v:.4g}" for k, v in first.items()))
    net = wrap(task.model, world, task.device)
    start_time = time.time() - float(state["elapsed_s"])
    run_start, first_epoch = time.time(), int(state["epoch"]) + 1
    shard = world.shard(task.batch)
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps_per_epoch, desc=task.kind, disable=quiet or not cfg.progress, mininterval=5.0,
               file=sys.stderr, dynamic_ncols=True)
    last_val = state["history"][-1].get("val_dsc", float("nan")) if state["history"] else float("nan")
    for epoch in range(first_epoch, cfg.epochs):
        torch.manual_seed(int(np.random.SeedSequence([int(cfg.seed), int(epoch), 7, world.rank]).generate_state(1)[0]))
        net.train()
        losses = []
        bar.reset(total=cfg.steps_per_epoch)
        bar.set_description(f"{task.kind} epoch {epoch}")
        for step in range(cfg.steps_per_epoch):
            losses.append(train_step(task, draw(task, cfg.seed, epoch, step, shard), net, world, precision, scaler))
            elapsed = time.time() - start_time
            left = _minutes_left(cfg, epoch, elapsed, epoch - first_epoch, time.time() - run_start) \
                if epoch > first_epoch else float("nan")
            bar.set_postfix_str(f"loss {np.mean(losses[-20:]):.4f}, val DSC {last_val:.3f}, "
                                f"left {left:.0f} min" if math.isfinite(left) else
                                f"loss {np.mean(losses[-20:]):.4f}, val DSC {last_val:.3f}", refresh=False)
            bar.update()
        task.model.eval()
        val: dict[str, float] = {}
        if world.is_main:
            with torch.no_grad():
                val = task.validate()
        # rank 0's numbers and clock decide for everyone (same learning rate, same stopping epoch)
        val, elapsed = world.broadcast((val, time.time() - start_time))
        row: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
                               **{k: float(v) for k, v in val.items()},
                               "lr": task.optimizer.param_groups[0]["lr"], "elapsed_min": elapsed / 60.0}
        last_val = row.get("val_dsc", float("nan"))
        state["history"].append(row)
        state["epoch"] = epoch
        state["elapsed_s"] = elapsed
        vloss = float(val.get("val_loss", row["loss"]))
        improved = vloss < state["best_val"] - 1e-6
        if improved:
            state.update(best_val=vloss, best_epoch=epoch, since_best=0, best_metrics=dict(row))
        else:
            state["since_best"] += 1
            if state["since_best"] % cfg.lr_patience == 0:
                new_lr = max(cfg.min_lr, task.optimizer.param_groups[0]["lr"] * 0.5)
                _set_lr(task.optimizer, new_lr)
                log(f"epoch {epoch}: no val improvement for {state['since_best']} epochs, lr -> {new_lr:.3g}")
        state["lr"] = task.optimizer.param_groups[0]["lr"]
        if state["since_best"] >= cfg.stop_patience:
            state["stopped"] = "early stopping"
        elif epoch + 1 >= cfg.epochs:
            state["stopped"] = "epochs"
        elif cfg.max_minutes is not None and elapsed / 60.0 >= cfg.max_minutes:
            state["stopped"] = "time budget"
        if world.is_main:
            save_checkpoint(last, task, state, cfg, scaler)
            if improved:
                save_checkpoint(best, task, state, cfg, scaler)
            _write_csv(csv_path, state["history"])
        log(f"epoch {epoch}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in row.items() if k != "epoch") + (" *" if improved else ""))
        world.barrier()
        if state["stopped"]:
            log(f"stopped: {state['stopped']} (best epoch {state['best_epoch']}, val loss {state['best_val']:.4g})")
            break
    bar.close()
    return state
