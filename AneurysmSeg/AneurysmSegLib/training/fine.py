"""Fine stage trainer: the (dual-channel) SE 3D U-Net on jittered 64^3 VOIs with the WDL.

Adam lr 5e-4; batches pair one aneurysm VOI with a second VOI (aneurysm or background) and the WDL's
Dice is computed over the whole batch: a background VOI alone has an empty target, for which a
per-sample Dice gives almost no gradient, so batch Dice is what teaches the net to stay silent on
vessels without aneurysms. ``beta = 0`` is the plain soft Dice loss (the paper's baseline).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .losses import soft_dice, weighted_dice_loss
from .augment import augment_fine
from .distributed import World
from .precision import Precision
from .sampling import FineVOIs, sample_fine, voi_crop

VOI = 64


class FineTask:
    kind = "fine"

    def __init__(self, model: torch.nn.Module, train: Sequence[FineVOIs], val: Sequence[FineVOIs],
                 device: torch.device, beta: float = 1.0, channels: int = 2, batch: int = 2, lr: float = 5e-4,
                 precision: Precision = Precision(), val_max: int = 40, max_jitter: int | None = None,
                 augment: bool = True, p_aneurysm: float = 0.5, voi: int = VOI, balance_sizes: bool = True) -> None:
        if not any(len(c.kinds) for c in train):
            raise ValueError("fine training needs at least one VOI")
        self.model = model.to(device)
        self.device = device
        self.train_cases = list(train)
        self.val_cases = list(val) if val else list(train)
        self.beta = float(beta)
        self.channels = int(channels)
        self.batch = int(batch)
        self.precision = precision
        self.max_jitter = max_jitter
        self.augment = augment
        self.p_aneurysm = float(p_aneurysm)
        self.balance_sizes = bool(balance_sizes)
        self.voi = int(voi)  # 64 for real training; tests use smaller crops
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        pairs = [(ci, k) for ci, c in enumerate(self.val_cases) for k in range(len(c.kinds))]
        if len(pairs) > val_max:  # deterministic, evenly spread subset
            pairs = [pairs[int(i)] for i in np.linspace(0, len(pairs) - 1, val_max).round()]
        self.val_pairs = pairs
        self._hp = dict(beta=self.beta, channels=self.channels, batch=self.batch, lr=lr, optimizer="Adam",
                        loss="WDL with batch Dice", precision=precision.name, val_vois=len(pairs),
                        max_jitter_vox=max_jitter, augment=augment, p_aneurysm_second=self.p_aneurysm,
                        balance_sizes=self.balance_sizes)

    def describe(self) -> dict[str, Any]:
        return {"train_cases": [c.name for c in self.train_cases], "val_cases": [c.name for c in self.val_cases],
                **self._hp}

    def sample(self, rng: np.random.Generator, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` of a batch: the first is always an aneurysm VOI, the others one with
        probability ``p_aneurysm`` (size classes balanced), else a background VOI."""
        x, y, _ = sample_fine(self.train_cases, rng, 1.0 if index == 0 else self.p_aneurysm, self.voi,
                              self.channels, self.max_jitter, self.balance_sizes)
        if self.augment:
            x, y = augment_fine(x, y, rng)
        return x, y[None].astype(np.float32)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, world: World) -> tuple[torch.Tensor, float]:
        """WDL with the Dice of the whole batch: its sums are added over processes (differentiably), so
        every process computes the loss one process would compute on the whole batch."""
        loss = weighted_dice_loss(torch.sigmoid(logits), target, self.beta, per_sample=False,
                                  reduce=world.all_reduce_sum)
        return loss, float(loss.detach())

    def train_step(self, rng: np.random.Generator) -> float:
        """One step of one process with samples drawn from ``rng`` (tests, experiments)."""
        from .loop import train_step

        return train_step(self, [self.sample(rng, i) for i in range(self.batch)], precision=self.precision)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (N, 64^3) for inputs (N, C, 64^3)."""
        with self.precision.autocast(self.device):
            logits = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return torch.sigmoid(logits.float())[:, 0].cpu().numpy()

    def validate(self) -> dict[str, float]:
        """Centred VOIs of the validation cases: val_loss = 1 - pooled binary DSC over all of them
        (false positives in background VOIs count), plus the mean DSC of aneurysm VOIs."""
        inter = total = 0.0
        dscs, soft, bg_fp = [], [], []
        for ci, k in self.val_pairs:
            c = self.val_cases[ci]
            off = np.full(3, (c.big - self.voi) // 2)
            x, y = voi_crop(c, k, off, self.voi, self.channels)
            p = self.predict(x[None])[0]
            pred = p > 0.5
            ref = y > 0
            i, s = float((pred & ref).sum()), float(pred.sum() + ref.sum())
            inter += i
            total += s
            if int(c.kinds[k]) == 0 and ref.any():
                dscs.append(2 * i / s)
                soft.append(float(soft_dice(torch.from_numpy(p[None]), torch.from_numpy(ref[None].astype(np.float32)))[0]))
            elif not ref.any():
                bg_fp.append(float(pred.sum()))
        pooled = 2 * inter / total if total > 0 else 1.0
        return {"val_loss": 1.0 - pooled, "val_dsc": float(np.mean(dscs)) if dscs else float("nan"),
                "val_soft_dice": float(np.mean(soft)) if soft else float("nan"),
                "val_bg_fp_voxels": float(np.mean(bg_fp)) if bg_fp else float("nan")}
