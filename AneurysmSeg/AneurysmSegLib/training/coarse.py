"""Coarse stage trainer: DeepMedic on 57^3 segments (9^3 targets) of the coarse grid.

DeepMedic's recipe (REFERENCE.md): 50/50 foreground/background segments, batch 10, RMSProp
(lr 1e-3, rho 0.9, eps 1e-4) with L2 1e-4 (weight decay) and L1 1e-6 (added to the loss),
cross-entropy on the adaptively dilated aneurysm labels.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from .augment import augment_coarse
from .distributed import World
from .precision import Precision
from .sampling import BG_MIX, COARSE_IN, COARSE_OUT, CoarseVolume, coarse_sample, sample_coarse_batch


class CoarseTask:
    kind = "coarse"

    def __init__(self, model: torch.nn.Module, train: Sequence[CoarseVolume], val: Sequence[CoarseVolume],
                 device: torch.device, batch: int = 10, lr: float = 1e-3, l1: float = 1e-6, l2: float = 1e-4,
                 precision: Precision = Precision(), val_segments: int = 200, seed: int = 0, augment: bool = True,
                 fg_fraction: float = 0.5, bg_mix: Sequence[float] = BG_MIX) -> None:
        if not train:
            raise ValueError("coarse training needs at least one training case")
        self.model = model.to(device)
        self.device = device
        self.train_vols = list(train)
        self.val_vols = list(val) if val else list(train)
        self.batch = int(batch)
        self.l1 = float(l1)
        self.precision = precision
        self.augment = augment
        self.fg_fraction = float(fg_fraction)
        self.bg_mix = tuple(float(v) for v in bg_mix)
        self.optimizer = torch.optim.RMSprop(self.model.parameters(), lr=lr, alpha=0.9, eps=1e-4, weight_decay=l2)
        vrng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0A5]))
        x, y, _ = sample_coarse_batch(self.val_vols, vrng, int(val_segments))
        self.val_x = torch.from_numpy(x.astype(np.float16))
        self.val_y = torch.from_numpy(y)
        self._hp = dict(batch=self.batch, lr=lr, l1=l1, l2=l2, optimizer="RMSprop(alpha=0.9, eps=1e-4)",
                        segment_in=COARSE_IN, segment_out=COARSE_OUT, fg_fraction=self.fg_fraction,
                        background_mix=dict(zip(("vessel", "hard vessel places", "bright tissue", "head"), self.bg_mix)),
                        precision=precision.name, val_segments=int(val_segments), augment=augment)

    def describe(self) -> dict[str, Any]:
        return {"train_cases": [v.name for v in self.train_vols], "val_cases": [v.name for v in self.val_vols],
                **self._hp}

    def _l1_penalty(self) -> torch.Tensor:
        return sum(p.abs().sum() for n, p in self.model.named_parameters() if p.dim() > 1)  # type: ignore[return-value]

    def sample(self, rng: np.random.Generator, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` of a batch: the first ``round(batch * fg_fraction)`` are foreground."""
        fg = index < int(round(self.batch * self.fg_fraction))
        x, y = coarse_sample(self.train_vols, rng, fg, self.bg_mix)
        if self.augment:
            x, y = augment_coarse(x, y, rng)
        return x.astype(np.float32, copy=False), y

    def loss(self, logits: torch.Tensor, target: torch.Tensor, world: World) -> tuple[torch.Tensor, float]:
        """Cross-entropy (mean over this process's voxels: equal shards make the mean of the means the
        batch mean) plus the L1 penalty; reports the cross-entropy."""
        ce = F.cross_entropy(logits, target)
        total = ce + self.l1 * self._l1_penalty() if self.l1 > 0 else ce
        return total, float(ce.detach())

    def train_step(self, rng: np.random.Generator) -> float:
        """One step of one process with samples drawn from ``rng`` (tests, experiments)."""
        from .loop import train_step

        return train_step(self, [self.sample(rng, i) for i in range(self.batch)], precision=self.precision)

    def validate(self, chunk: int = 20) -> dict[str, float]:
        losses, tp, fp, fn = [], 0, 0, 0
        for i in range(0, len(self.val_x), chunk):
            xt = self.val_x[i:i + chunk].float().to(self.device)
            yt = self.val_y[i:i + chunk].to(self.device)
            with self.precision.autocast(self.device):
                logits = self.model(xt)
            logits = logits.float()
            losses.append(float(F.cross_entropy(logits, yt, reduction="sum")))
            pred = logits.argmax(1)
            tp += int(((pred == 1) & (yt == 1)).sum())
            fp += int(((pred == 1) & (yt == 0)).sum())
            fn += int(((pred == 0) & (yt == 1)).sum())
        n = self.val_y.numel()
        return {"val_loss": sum(losses) / n, "val_dsc": 2 * tp / max(1, 2 * tp + fp + fn),
                "val_sensitivity": tp / max(1, tp + fn), "val_precision": tp / max(1, tp + fp)}
