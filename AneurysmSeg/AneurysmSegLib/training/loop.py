"""The epoch loop shared by both networks: checkpoints (last + best), resume, a per-epoch CSV, halving
the learning rate on a validation plateau, early stopping and a wall-clock budget.

Determinism: epoch ``e`` draws its samples from ``numpy.random.default_rng([seed, e])`` and seeds
torch with ``(seed, e)``, so a run resumed after epoch ``e`` continues exactly as if never stopped
(up to floating-point nondeterminism of the device).
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from .checkpoints import load_checkpoint, plain

CSV_NAME = "metrics.csv"
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"


class Task(Protocol):
    """What the loop needs from a network-specific trainer."""

    kind: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def train_step(self, rng: np.random.Generator) -> float: ...

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
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  #: saved in the checkpoints (command line, data)


def save_checkpoint(path: Path, task: Task, state: dict[str, Any], cfg: LoopConfig) -> None:
    """Atomic torch.save of model, optimizer and loop state."""
    payload = {
        "kind": task.kind,
        "model_class": type(task.model).__name__,
        "hyperparameters": task.model.hyperparameters() if hasattr(task.model, "hyperparameters") else {},
        "model": task.model.state_dict(),
        "optimizer": task.optimizer.state_dict(),
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


def run(task: Task, cfg: LoopConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train until ``epochs``, early stopping or ``max_minutes``; returns the final loop state."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    cfg.out.mkdir(parents=True, exist_ok=True)
    last, best, csv_path = cfg.out / LAST_NAME, cfg.out / BEST_NAME, cfg.out / CSV_NAME
    state: dict[str, Any] = {"epoch": -1, "best_val": math.inf, "best_epoch": -1, "since_best": 0,
                             "elapsed_s": 0.0, "history": [], "lr": task.optimizer.param_groups[0]["lr"],
                             "stopped": ""}
    if cfg.resume and last.is_file():
        ck = load_checkpoint(last)
        task.model.load_state_dict(ck["model"])
        task.optimizer.load_state_dict(ck["optimizer"])
        state = ck["loop"]
        if cfg.lr_override is not None:
            _set_lr(task.optimizer, cfg.lr_override)
            log(f"learning rate set to {cfg.lr_override:g} (was {state.get('lr')})")
        log(f"resumed from {last} after epoch {state['epoch']} ({state['elapsed_s'] / 60:.1f} min so far)")
        if state.get("stopped") == "early stopping" or int(state["epoch"]) + 1 >= cfg.epochs:
            log(f"run already finished ({state['stopped']})")
            return state
        state["stopped"] = ""
    start_time = time.time() - float(state["elapsed_s"])
    from tqdm import tqdm

    for epoch in range(int(state["epoch"]) + 1, cfg.epochs):
        rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), int(epoch)]))
        torch.manual_seed(int(np.random.SeedSequence([int(cfg.seed), int(epoch), 7]).generate_state(1)[0]))
        task.model.train()
        losses = []
        bar = tqdm(range(cfg.steps_per_epoch), desc=f"{task.kind} epoch {epoch}", leave=False,
                   disable=not cfg.progress, mininterval=10.0, file=sys.stderr)
        for _ in bar:
            losses.append(float(task.train_step(rng)))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
        bar.close()
        task.model.eval()
        with torch.no_grad():
            val = task.validate()
        elapsed = time.time() - start_time
        row: dict[str, Any] = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
                               **{k: float(v) for k, v in val.items()},
                               "lr": task.optimizer.param_groups[0]["lr"], "elapsed_min": elapsed / 60.0}
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
        save_checkpoint(last, task, state, cfg)
        if improved:
            save_checkpoint(best, task, state, cfg)
        _write_csv(csv_path, state["history"])
        log(f"epoch {epoch}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in row.items() if k != "epoch") + (" *" if improved else ""))
        if state["stopped"]:
            log(f"stopped: {state['stopped']} (best epoch {state['best_epoch']}, val loss {state['best_val']:.4g})")
            break
    return state
