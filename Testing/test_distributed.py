"""Distributed training: two gloo processes on the CPU train the same model as one process with the
same total batch (DistributedDataParallel, per-sample random generators, the batch Dice summed over
processes), and checkpoints load with ``weights_only=True``."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from AneurysmSegLib.networks import SEUNet3D
from AneurysmSegLib.training import distributed, loop
from AneurysmSegLib.training.fine import FineTask
from AneurysmSegLib.training.sampling import FineVOIs

STEPS, EPOCHS, BATCH = 3, 1, 4


def _vois(seed: int, big: int = 24, n_an: int = 3, n_bg: int = 2) -> FineVOIs:
    """Noisy VOIs with a bright tube and, in the first ``n_an``, a bright ball (the aneurysm label)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.ogrid[:big, :big, :big]
    imgs, lbls = [], []
    for k in range(n_an + n_bg):
        img = rng.normal(0, 0.3, (2, big, big, big)).astype(np.float32)
        tube = np.zeros((big,) * 3, bool)
        tube[:, big // 2 - 1: big // 2 + 1, big // 2 - 1: big // 2 + 1] = True
        lab = np.zeros((big,) * 3, bool)
        if k < n_an:
            c = big / 2 + rng.uniform(-2, 2, 3)
            lab = (zz - c[0]) ** 2 + (yy - c[1] - 3) ** 2 + (xx - c[2]) ** 2 <= rng.uniform(2.0, 4.0) ** 2
        img[0][tube | lab] += 3.0
        img[1][tube | lab] = 1.0
        imgs.append(img.astype(np.float16))
        lbls.append(lab.astype(np.uint8))
    return FineVOIs(name=f"v{seed}", images=np.stack(imgs), labels=np.stack(lbls),
                    kinds=np.array([0] * n_an + [1] * n_bg), diameters=np.array([2.0, 4.0, 7.0] + [np.nan] * n_bg))


def _task() -> FineTask:
    """A tiny U-Net without dropout. SGD, not Adam: Adam divides each gradient by its own running size,
    so the float-noise gradients of biases that a norm layer cancels (about 1e-9 here, different in
    the last bits with every summation order) would become full-size steps and the comparison would
    test rounding, not training."""
    model = SEUNet3D(2, 1, base_filters=4, depth=3, dropout=0.0, seed=3)
    task = FineTask(model, [_vois(0), _vois(1)], [_vois(2)], torch.device("cpu"), batch=BATCH, lr=5e-3,
                    val_max=3, voi=16, p_aneurysm=0.5)
    task.optimizer = torch.optim.SGD(task.model.parameters(), lr=0.05)
    return task


def _train(out: Path, world: distributed.World = distributed.World()) -> None:
    torch.set_num_threads(1)
    cfg = loop.LoopConfig(out=out, epochs=EPOCHS, steps_per_epoch=STEPS, seed=11, progress=False)
    loop.run(_task(), cfg, log=lambda s: None, world=world)


def _worker(rank: int, size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=str(rank))
    world, _ = distributed.start(torch.device("cpu"), timeout_minutes=3.0)
    try:
        _train(Path(out), world)
    finally:
        distributed.stop(world)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_gloo_processes_train_the_same_model_as_one(tmp_path: Path) -> None:
    _train(tmp_path / "one")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two")), nprocs=2, join=True)
    one = loop.load_checkpoint(tmp_path / "one" / "last.pt")
    two = loop.load_checkpoint(tmp_path / "two" / "last.pt")
    assert one["loop"]["epoch"] == two["loop"]["epoch"] == EPOCHS - 1
    start = SEUNet3D(2, 1, base_filters=4, depth=3, dropout=0.0, seed=3).state_dict()
    moved = 0.0
    for key, a in one["model"].items():
        b = two["model"][key]
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), key
        moved = max(moved, float((a.float() - start[key].float()).abs().max()))
    assert moved > 1e-3  # the models did train
    # same validation numbers, same losses (averaged over the two processes)
    for r1, r2 in zip(one["loop"]["history"], two["loop"]["history"]):
        assert r1["loss"] == pytest.approx(r2["loss"], rel=1e-4, abs=1e-6)
        assert r1["val_loss"] == pytest.approx(r2["val_loss"], rel=1e-4, abs=1e-6)


def test_batch_must_split_evenly_over_processes() -> None:
    with pytest.raises(ValueError, match="evenly"):
        distributed.World(rank=0, size=3).shard(BATCH)
    assert list(distributed.World(rank=1, size=2).shard(4)) == [2, 3]
    assert list(distributed.World().shard(4)) == [0, 1, 2, 3]


def test_a_sample_does_not_depend_on_which_process_draws_it() -> None:
    task = _task()
    a = task.sample(distributed.sample_rng(5, 1, 2, 3), 3)
    b = task.sample(distributed.sample_rng(5, 1, 2, 3), 3)
    c = task.sample(distributed.sample_rng(5, 1, 2, 2), 2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_checkpoints_are_plain_data(tmp_path: Path) -> None:
    _train(tmp_path)
    ck = torch.load(tmp_path / "best.pt", weights_only=True)  # no pickled code needed
    assert ck["kind"] == "fine" and ck["hyperparameters"]["base_filters"] == 4
    assert isinstance(ck["loop"]["history"][0]["loss"], float)


def test_environment_without_torchrun_is_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    world, device = distributed.start(torch.device("cpu"))
    assert not world.distributed and world.is_main and device.type == "cpu"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="RANK"):
        distributed.from_environment()
