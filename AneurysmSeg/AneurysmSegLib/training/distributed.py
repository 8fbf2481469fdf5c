"""One process or many: the few collective operations training needs, identical code either way.

``aneurysmseg train`` started plainly is one process (world size 1: every call here is a no-op);
started by ``torchrun --nproc_per_node N`` (or on several machines with ``--nnodes``) each process
reads its rank from torchrun's environment variables, joins the process group (NCCL on GPUs, gloo on
CPUs) and trains its shard of every batch; DistributedDataParallel averages the gradients. Samples
are drawn from per-sample random generators (:func:`sample_rng`), so which process draws a sample
never changes the sample: N processes with batch B train the same model as one process with batch B.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> range:
        """This process's contiguous share of ``n`` items (``n`` must divide evenly)."""
        if n % self.size:
            raise ValueError(f"a batch of {n} cannot be split evenly over {self.size} processes")
        per = n // self.size
        return range(self.rank * per, (self.rank + 1) * per)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over processes that gradients flow through (the identity in one process).

        Its backward pass sums the gradients too, so a loss built from global sums gives every
        process W times its local gradient; DDP's averaging divides by W again: the one-process
        gradient of the whole batch.
        """
        if not self.distributed:
            return tensor
        return _SumOverProcesses.apply(tensor)

    def mean(self, value: float) -> float:
        """A number averaged over processes (for logging)."""
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device_for_collectives())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item()) / self.size

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's object on every process."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def device_for_collectives(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


class _SumOverProcesses(torch.autograd.Function):
    """all_reduce(SUM) forward; the gradient is summed over processes too (each process's loss
    depends on every process's contribution)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = grad.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


def from_environment() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's variables; (0, 1, 0) when started plainly."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return rank, world, local


def start(device: torch.device, timeout_minutes: float = 30.0) -> tuple[World, torch.device]:
    """Join the process group when started by torchrun; returns the world and this process's device.

    On CUDA each process takes GPU ``LOCAL_RANK`` and NCCL; on CPU gloo. One process: nothing to join.
    """
    rank, size, local = from_environment()
    if size == 1:
        return World(), device
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=_dt.timedelta(minutes=timeout_minutes))
    return World(rank=rank, size=size, local_rank=local, backend=backend), device


def stop(world: World) -> None:
    """Leave the process group (after the last collective)."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def sample_rng(seed: int, epoch: int, step: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of ``step`` in ``epoch``: the same whichever process draws it."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(step), int(index)]))


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when there are several processes, else the model itself.

    On GPUs batch norm is synchronised across processes (SyncBatchNorm: the statistics of the whole
    batch, as in one process); gloo on CPUs cannot, so there each process normalises its shard.
    """
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index], output_device=device.index)
    return DistributedDataParallel(model)


def stack(samples: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples])
