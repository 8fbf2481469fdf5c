"""Coarse stage trainer: DeepMedic on 57^3 segments (9^3 targets) of the coarse grid.

DeepMedic's recipe (REFERENCE.md): 50/50 foreground/background segments, batch 10, RMSProp
(lr 1e-3, rho 0.9, eps 1e-4) with L2 1e-4 (weight decay) and L1 1e-6 (added to the loss),
cross-entropy on the adaptively dilated aneurysm labels.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from .augment import augment_coarse
from .sampling import COARSE_IN, COARSE_OUT, CoarseVolume, sample_coarse_batch


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast (CPU with AVX512-BF16 or CUDA) or nothing."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class CoarseTask:
    kind = "coarse"

    def __init__(self, model: torch.nn.Module, train: Sequence[CoarseVolume], val: Sequence[CoarseVolume],
                 device: torch.device, batch: int = 10, lr: float = 1e-3, l1: float = 1e-6, l2: float = 1e-4,
                 amp: bool = False, val_segments: int = 200, seed: int = 0, augment: bool = True) -> None:
        if not train:
            raise ValueError("coarse training needs at least one training case")
        self.model = model.to(device)
        self.device = device
        self.train_vols = list(train)
        self.val_vols = list(val) if val else list(train)
        self.batch = int(batch)
        self.l1 = float(l1)
        self.amp = bool(amp)
        self.augment = augment
        self.optimizer = torch.optim.RMSprop(self.model.parameters(), lr=lr, alpha=0.9, eps=1e-4, weight_decay=l2)
        vrng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0A5]))
        x, y, _ = sample_coarse_batch(self.val_vols, vrng, int(val_segments))
        self.val_x = torch.from_numpy(x.astype(np.float16))
        self.val_y = torch.from_numpy(y)
        self._hp = dict(batch=self.batch, lr=lr, l1=l1, l2=l2, optimizer="RMSprop(alpha=0.9, eps=1e-4)",
                        segment_in=COARSE_IN, segment_out=COARSE_OUT, fg_fraction=0.5, amp_bf16=self.amp,
                        val_segments=int(val_segments), augment=augment)

    def describe(self) -> dict[str, Any]:
        return {"train_cases": [v.name for v in self.train_vols], "val_cases": [v.name for v in self.val_vols],
                **self._hp}

    def _l1_penalty(self) -> torch.Tensor:
        return sum(p.abs().sum() for n, p in self.model.named_parameters() if p.dim() > 1)  # type: ignore[return-value]

    def train_step(self, rng: np.random.Generator) -> float:
        x, y, _ = sample_coarse_batch(self.train_vols, rng, self.batch)
        if self.augment:
            pairs = [augment_coarse(x[i], y[i], rng) for i in range(len(x))]
            x = np.stack([p[0] for p in pairs])
            y = np.stack([p[1] for p in pairs])
        xt = torch.from_numpy(x).to(self.device)
        yt = torch.from_numpy(y).to(self.device)
        with autocast(self.device, self.amp):
            logits = self.model(xt)
        loss = F.cross_entropy(logits.float(), yt)
        total = loss + self.l1 * self._l1_penalty() if self.l1 > 0 else loss
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return float(loss.detach())

    def validate(self, chunk: int = 20) -> dict[str, float]:
        losses, tp, fp, fn = [], 0, 0, 0
        for i in range(0, len(self.val_x), chunk):
            xt = self.val_x[i:i + chunk].float().to(self.device)
            yt = self.val_y[i:i + chunk].to(self.device)
            with autocast(self.device, self.amp):
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
