"""Training: adaptive dilation, 50/50 sampling, augmentation alignment, loss decreasing, checkpoint and
resume, k-fold split, export + verified loading, and the train command end to end on phantom cases.

Everything is tiny (synthetic cached arrays, narrow networks) and single-threaded."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from AneurysmSegLib.evaluation.tables import SIZE_CLASSES
from AneurysmSegLib.networks import DeepMedic, SEUNet3D
from AneurysmSegLib.training import augment, loop, sampling
from AneurysmSegLib.training.checkpoints import load_checkpoint
from AneurysmSegLib.training.coarse import CoarseTask
from AneurysmSegLib.training.data import find_cases, kfold_split, training_labels
from AneurysmSegLib.training.fine import FineTask
from AneurysmSegLib.training.sampling import CoarseVolume, FineVOIs

TINY_WIDTHS = (4, 4, 4, 4, 4, 4, 6, 6)
TINY_FC = (8,)


def ball(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float) -> np.ndarray:
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2


def synthetic_coarse(seed: int, shape=(40, 40, 40)) -> CoarseVolume:
    """A noisy volume with a bright ball (the 'aneurysm', target = the ball) and a bright tube."""
    rng = np.random.default_rng(seed)
    img = rng.normal(0, 0.3, shape).astype(np.float32)
    centre = tuple(float(v) for v in rng.integers(14, 26, 3))
    target = ball(shape, centre, 4)
    img[target] += 3.0
    tube = np.zeros(shape, bool)
    tube[:, 8:10, 8:10] = True
    img[tube] += 3.0
    head = np.ones(shape, bool)
    return CoarseVolume(name=f"s{seed}", image=img, target=target.astype(np.uint8), fg=np.flatnonzero(target),
                        vessel=np.flatnonzero(tube), bright=np.zeros(0, np.int64),
                        head=np.flatnonzero(head & ~target), fill=-1.0)


def synthetic_fine(seed: int, big: int = 72, n_an: int = 2, n_bg: int = 1) -> FineVOIs:
    rng = np.random.default_rng(seed)
    imgs, lbls = [], []
    for k in range(n_an + n_bg):
        img = rng.normal(0, 0.3, (2, big, big, big)).astype(np.float32)
        tube = np.zeros((big, big, big), bool)
        tube[:, big // 2 - 2: big // 2 + 2, big // 2 - 2: big // 2 + 2] = True
        lab = np.zeros((big, big, big), bool)
        if k < n_an:
            lab = ball((big,) * 3, (big / 2 + rng.uniform(-2, 2), big / 2 + big // 10, big / 2),
                       float(rng.uniform(big / 10, big / 7)))
        img[0][tube | lab] += 3.0
        img[1][tube | lab] = 1.0
        imgs.append(img.astype(np.float16))
        lbls.append(lab.astype(np.uint8))
    return FineVOIs(name=f"f{seed}", images=np.stack(imgs), labels=np.stack(lbls),
                    kinds=np.array([0] * n_an + [1] * n_bg))


# ------------------------------------------------------------------------------------------ pieces


def test_adaptive_dilation_grows_small_aneurysms_more() -> None:
    shape = (60, 60, 60)
    small, large = ball(shape, (15, 30, 30), 2), ball(shape, (42, 30, 30), 9)
    dil = sampling.adaptive_dilation(small | large, (0.5, 0.5, 0.5), min_radius_mm=4.0, min_margin_mm=0.5)
    assert np.all(dil[small | large])
    grow_small = dil[:29].sum() / small.sum()
    grow_large = dil[29:].sum() / large.sum()
    assert grow_small > 5.0  # a 1 mm aneurysm becomes a ~4 mm blob
    assert 1.0 < grow_large < 1.6  # a 4.5 mm one only gains the margin
    # anisotropic spacing: the dilation is physical (fewer voxels along the coarse axis)
    dz = sampling.adaptive_dilation(ball(shape, (30, 30, 30), 1), (1.0, 0.5, 0.5), min_radius_mm=3.0)
    zs, ys = np.nonzero(dz.any(axis=2))[0], np.nonzero(dz.any(axis=0))[0]
    assert np.ptp(zs) < np.ptp(ys)


def test_coarse_sampling_is_50_50_and_deterministic() -> None:
    vols = [synthetic_coarse(0), synthetic_coarse(1)]
    x1, y1, fg1 = sampling.sample_coarse_batch(vols, np.random.default_rng(3), batch=10)
    x2, y2, fg2 = sampling.sample_coarse_batch(vols, np.random.default_rng(3), batch=10)
    x3, _, _ = sampling.sample_coarse_batch(vols, np.random.default_rng(4), batch=10)
    assert x1.shape == (10, 1, 57, 57, 57) and y1.shape == (10, 9, 9, 9)
    assert fg1.sum() == 5 and (~fg1).sum() == 5
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    # foreground segments are centred on target voxels, background ones never are
    assert np.all(y1[fg1][:, 4, 4, 4] == 1)
    assert np.all(y1[~fg1][:, 4, 4, 4] == 0)
    # the input centre and the target centre are the same voxel
    assert np.all(x1[fg1][:, 0, 28, 28, 28] > 1.5)


def test_crop_pads_outside_the_volume() -> None:
    a = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    c = sampling.crop(a, (-1, 0, 2), (3, 3, 3), fill=-5.0)
    assert c.shape == (3, 3, 3)
    assert np.all(c[0] == -5.0) and np.all(c[:, :, 1:] == -5.0)
    assert np.array_equal(c[1:, :, 0], a[:2, :, 2])


def test_flip_moves_image_and_label_together() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 16, 16, 16)).astype(np.float32)
    y = np.zeros((16, 16, 16), np.uint8)
    y[2:5, 3:6, 10:14] = 1
    x[:, y > 0] += 10.0
    fx, fy = augment.flip(x, y, (0, 2))
    assert fx.shape == x.shape and fy.shape == y.shape
    assert np.array_equal(fy, y[::-1, :, ::-1])
    assert np.all(fx[:, fy > 0] > 5.0)  # the bright object moved with its label
    # centred pair of different sizes (57^3 input, 9^3 target) stays aligned
    big = np.zeros((1, 57, 57, 57), np.float32)
    big[0, 24, 28, 30] = 1.0  # input voxel of target index (0, 4, 6)
    small = np.zeros((9, 9, 9), np.uint8)
    small[0, 4, 6] = 1
    fb, fs = augment.flip(big, small, (0, 2))
    assert fb[0, 32, 28, 26] == 1.0 and fs[8, 4, 2] == 1


def test_fine_augmentation_keeps_shapes_labels_and_determinism() -> None:
    vois = synthetic_fine(0, big=64, n_an=1, n_bg=0)
    x, y = sampling.voi_crop(vois, 0, (0, 0, 0), 64)
    outs = [augment.augment_fine(x, y, np.random.default_rng(s), strength=3.0) for s in range(6)]
    again = augment.augment_fine(x, y, np.random.default_rng(5), strength=3.0)
    for ax, ay in outs:
        assert ax.shape == x.shape and ay.shape == y.shape and ax.dtype == np.float32
        assert ay.sum() == y.sum()  # labels are only moved, never changed
        assert np.array_equal(ax[1][ay > 0] > 0.5, np.ones(int(ay.sum()), bool))  # contour channel moved with it
    assert np.array_equal(outs[5][0], again[0])
    assert any(not np.allclose(ax[0], x[0]) for ax, _ in outs)
    eq = augment.histogram_equalise(x[0])
    assert eq.shape == x[0].shape and abs(float(eq.mean() - x[0].mean())) < 1e-3


def test_fine_jitter_crop_matches_shifted_centre() -> None:
    vois = synthetic_fine(1, big=72, n_an=1, n_bg=0)
    rng = np.random.default_rng(0)
    offs = np.array([sampling.jitter_offset(rng, 72, 64, p_centred=0.0) for _ in range(50)])
    assert offs.min() >= 0 and offs.max() <= 8 and len({tuple(o) for o in offs}) > 10
    x, y = sampling.voi_crop(vois, 0, (2, 5, 8), 64)
    assert np.array_equal(y, vois.labels[0, 2:66, 5:69, 8:72])


def test_kfold_split_is_deterministic_and_disjoint() -> None:
    names = [f"case{i:02d}" for i in range(23)]
    splits = [kfold_split(names, 5, k, seed=7) for k in range(5)]
    assert splits == [kfold_split(list(reversed(names)), 5, k, seed=7) for k in range(5)]
    vals = [set(v) for _, v in splits]
    for i in range(5):
        assert set(splits[i][0]).isdisjoint(vals[i])
        assert set(splits[i][0]) | vals[i] == set(names)
        for j in range(i + 1, 5):
            assert vals[i].isdisjoint(vals[j])
    assert set().union(*vals) == set(names)
    assert kfold_split(names, 5, 0, seed=8) != splits[0]
    assert kfold_split(names, 1, 0, seed=7) == (sorted(names), [])


def test_label_two_is_background() -> None:
    lab = np.array([0, 1, 2, 1, 2])
    assert training_labels(lab).tolist() == [False, True, False, True, False]


# ------------------------------------------------------------------------------------------ training


def _coarse_task(seed: int = 0) -> CoarseTask:
    torch.manual_seed(seed)
    model = DeepMedic(1, 2, widths=TINY_WIDTHS, fc_widths=TINY_FC, dropout=0.0)
    return CoarseTask(model, [synthetic_coarse(0), synthetic_coarse(1)], [synthetic_coarse(2)],
                      torch.device("cpu"), batch=4, lr=3e-3, val_segments=8, seed=seed, augment=False)


def _fine_task(seed: int = 0, beta: float = 1.0) -> FineTask:
    torch.manual_seed(seed)
    model = SEUNet3D(2, 1, base_filters=8, depth=3, dropout=0.0)
    return FineTask(model, [synthetic_fine(0, big=32)], [synthetic_fine(1, big=32)], torch.device("cpu"),
                    beta=beta, batch=1, lr=5e-3, val_max=2, augment=False, voi=24)


def test_coarse_training_lowers_the_loss() -> None:
    task = _coarse_task()
    fixed = np.random.default_rng(42)
    x, y, _ = sampling.sample_coarse_batch(task.train_vols, fixed, 8)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def loss() -> float:
        task.model.eval()
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(task.model(xt), yt))

    before = loss()
    rng = np.random.default_rng(0)
    task.model.train()
    for _ in range(12):
        task.train_step(rng)
    assert loss() < 0.8 * before


def test_fine_training_lowers_the_loss() -> None:
    task = _fine_task(beta=1.0)
    x, y = sampling.voi_crop(task.train_cases[0], 0, (4, 4, 4), 24)
    xt, yt = torch.from_numpy(x[None]), torch.from_numpy(y[None, None].astype(np.float32))
    from AneurysmSegLib.training.losses import soft_dice

    def dsc() -> float:
        task.model.eval()
        with torch.no_grad():
            return float(soft_dice(torch.sigmoid(task.model(xt)), yt)[0])

    before = dsc()
    rng = np.random.default_rng(0)
    task.model.train()
    for _ in range(8):
        task.train_step(rng)
    assert dsc() > before + 0.05


def test_checkpoint_resume_continues_exactly(tmp_path: Path) -> None:
    def cfg(out: Path, epochs: int, resume: bool) -> loop.LoopConfig:
        return loop.LoopConfig(out=out, epochs=epochs, steps_per_epoch=2, seed=5, resume=resume, progress=False)

    straight = _coarse_task()
    loop.run(straight, cfg(tmp_path / "a", 3, False), log=lambda s: None)

    first = _coarse_task()
    s1 = loop.run(first, cfg(tmp_path / "b", 2, False), log=lambda s: None)
    assert s1["epoch"] == 1 and (tmp_path / "b" / "last.pt").is_file() and (tmp_path / "b" / "best.pt").is_file()
    resumed = _coarse_task(seed=99)  # different init: everything must come from the checkpoint
    s2 = loop.run(resumed, cfg(tmp_path / "b", 3, True), log=lambda s: None)
    assert s2["epoch"] == 2 and len(s2["history"]) == 3
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k
    rows = list(csv.DictReader((tmp_path / "b" / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert {"loss", "val_loss", "val_dsc", "val_sensitivity", "lr"} <= set(rows[0])
    ck = load_checkpoint(tmp_path / "b" / "last.pt")
    assert ck["loop"]["epoch"] == 2 and ck["model_class"] == "DeepMedic"


def test_early_stopping_and_lr_halving(tmp_path: Path) -> None:
    task = _coarse_task()
    task.validate = lambda: {"val_loss": 1.0}  # never improves after the first epoch
    state = loop.run(task, loop.LoopConfig(out=tmp_path, epochs=20, steps_per_epoch=1, lr_patience=2,
                                           stop_patience=4, progress=False), log=lambda s: None)
    assert state["stopped"] == "early stopping" and state["epoch"] == 4
    assert task.optimizer.param_groups[0]["lr"] == pytest.approx(3e-3 / 4)


# ------------------------------------------------------------------------------------------ export


def test_export_writes_verified_torchscript_that_matches_eager(tmp_path: Path) -> None:
    from AneurysmSegLib.core import manifest as manifest_mod
    from AneurysmSegLib.core import models
    from AneurysmSegLib.training.checkpoints import build_model
    from AneurysmSegLib.training.export import export_models

    c, f = _coarse_task(), _fine_task()
    for task, name in ((c, "c"), (f, "f")):
        loop.run(task, loop.LoopConfig(out=tmp_path / name, epochs=1, steps_per_epoch=1, progress=False),
                 log=lambda s: None)
    manifest_path = export_models(tmp_path / "c", tmp_path / "f", tmp_path / "models")
    manifest = json.loads(manifest_path.read_text())
    for kind in ("coarse", "fine"):
        entry = manifest[kind]
        assert entry["sha256"] == manifest_mod.sha256_file(tmp_path / "models" / entry["file"])
    assert manifest["fine"]["in_channels"] == 2 and manifest["fine"]["voi_size"] == 64
    assert manifest["coarse"]["spacing_mm"] == [0.7] * 3
    assert manifest["training"]["coarse"]["task"]["train_cases"] == 2
    loaded = models.load_models(tmp_path / "models", "cpu")
    g = torch.Generator().manual_seed(1)
    xc, xf = torch.randn(1, 1, 57, 57, 57, generator=g), torch.randn(1, 2, 64, 64, 64, generator=g)
    with torch.no_grad():
        ec = build_model(load_checkpoint(tmp_path / "c" / "best.pt"))(xc)
        ef = build_model(load_checkpoint(tmp_path / "f" / "best.pt"))(xf)
        assert torch.allclose(loaded.coarse(xc), ec, atol=1e-5)
        assert torch.allclose(loaded.fine(xf), ef, atol=1e-5)
    # a modified file is refused
    (tmp_path / "models" / manifest["fine"]["file"]).write_bytes(b"corrupted")
    from AneurysmSegLib.core.errors import ModelError

    with pytest.raises(ModelError):
        models.load_models(tmp_path / "models", "cpu")


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def phantom_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three tiny ADAM-layout phantom cases (one folder of cases, the ADAM release layout)."""
    from AneurysmSegLib.phantom.render import generate_case, write_case

    root = tmp_path_factory.mktemp("adam")
    for i in range(3):
        case = generate_case(2 + i, (64, 64, 48), (1.2, 1.2, 1.2), n_aneurysms=2 if i < 2 else 0, treated=False)
        write_case(case, root / f"c{i}")
    return root


def _train_args(argv: list[str]) -> argparse.Namespace:
    from AneurysmSegLib.cli import train

    p = argparse.ArgumentParser()
    train.configure_parser(p)
    return p.parse_args(argv)


def test_find_cases_accepts_case_and_parent_folders(phantom_cases: Path) -> None:
    refs = find_cases([phantom_cases])
    assert [r.name for r in refs] == ["c0", "c1", "c2"]
    assert [r.name for r in find_cases([phantom_cases / "c1"])] == ["c1"]
    from AneurysmSegLib.core.errors import InputError

    with pytest.raises(InputError):
        find_cases([phantom_cases / "c0" / "orig"])


def test_train_command_end_to_end(phantom_cases: Path, tmp_path: Path) -> None:
    from AneurysmSegLib.cli import train
    from AneurysmSegLib.training.cache import load_coarse, load_fine, load_meta

    cache = tmp_path / "cache"
    common = ["--data", str(phantom_cases), "--folds", "3", "--fold", "2", "--epochs", "1", "--steps-per-epoch", "1",
              "--cache", str(cache), "--no-progress", "--amp", "off", "--seed", "3"]
    assert train.run(_train_args(["fine", "--out", str(tmp_path / "fine"), "--base-filters", "4", "--depth", "3",
                                  "--channels", "1", *common])) == 0
    summary = json.loads((tmp_path / "fine" / "summary.json").read_text())
    assert summary["train_cases"] == 2 and summary["val_cases"] == 1 and summary["hyperparameters"]["in_channels"] == 1
    dirs = sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(dirs) == 3
    metas = [load_meta(d) for d in dirs]
    assert [len(m["aneurysms"]) > 0 for m in metas].count(True) >= 1
    for d, m in zip(dirs, metas):
        fv = load_fine(d)
        assert fv.images.shape[1:] == (2, 88, 88, 88) and len(fv.kinds) == len(m["kinds"])
        an = [k for k, kind in enumerate(fv.kinds) if kind == 0]
        for k in an:  # an aneurysm VOI has its aneurysm at the centre
            c = 44
            assert fv.labels[k, c - 6:c + 6, c - 6:c + 6, c - 6:c + 6].any()
        assert np.isfinite(fv.diameters[an]).all() and np.isnan(fv.diameters[fv.kinds == 1]).all()
        cv = load_coarse(d)
        assert cv.target.shape == cv.image.shape
        assert set(cv.hard.tolist()) <= set(cv.vessel.tolist())
        assert (len(cv.fg) > 0) == (len(m["aneurysms"]) > 0)
    # coarse stage on the same cache (nothing rebuilt), resumable
    args = ["coarse", "--out", str(tmp_path / "coarse"), "--widths", ",".join(map(str, TINY_WIDTHS)),
            "--fc-widths", "8", "--batch", "2", *common]
    mtimes = [(d / "meta.json").stat().st_mtime_ns for d in dirs]
    assert train.run(_train_args(args)) == 0
    assert [(d / "meta.json").stat().st_mtime_ns for d in dirs] == mtimes
    args[args.index("--epochs") + 1] = "2"
    assert train.run(_train_args(args + ["--resume"])) == 0
    rows = list(csv.DictReader((tmp_path / "coarse" / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [0, 1]


# ------------------------------------------------------------------------------------------ evaluation


def test_detection_matching_in_physical_space() -> None:
    from AneurysmSegLib.evaluation.matching import match_detections

    refs = [(np.array([0.0, 0.0, 0.0]), 2.0), (np.array([30.0, 0.0, 0.0]), 5.0)]
    seeds = [np.array([1.0, 1.0, 0.0]), np.array([30.0, 0.0, 6.0]), np.array([60.0, 0.0, 0.0])]
    adam = match_detections(seeds, refs)
    assert (adam.tp, adam.fn, adam.fp) == (1, 1, 2)  # the second seed is 6 mm away: outside the 5 mm radius
    voi = match_detections(seeds, refs, voi_half_mm=12.8)
    assert (voi.tp, voi.fn, voi.fp) == (2, 0, 1)
    treated = [(np.array([60.0, 0.0, 1.0]), 3.0)]
    ign = match_detections(seeds, refs, treated)
    assert (ign.fp, ign.ignored) == (1, 1)
    assert match_detections([], refs).fn == 2 and match_detections(seeds, []).fp == 3


def test_resume_can_replace_the_learning_rate(tmp_path: Path) -> None:
    task = _coarse_task()
    loop.run(task, loop.LoopConfig(out=tmp_path, epochs=1, steps_per_epoch=1, progress=False), log=lambda s: None)
    again = _coarse_task()
    state = loop.run(again, loop.LoopConfig(out=tmp_path, epochs=2, steps_per_epoch=1, progress=False, resume=True,
                                            lr_override=1e-4), log=lambda s: None)
    assert state["epoch"] == 1 and again.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_evaluate_command_writes_every_table(phantom_cases: Path, tmp_path: Path) -> None:
    """train -> export -> evaluate on the same tiny cases: every table is written, counts match the truth."""
    import SimpleITK as sitk
    from AneurysmSegLib.cli import evaluate, export, train
    from AneurysmSegLib.evaluation.metrics import reference_locations

    common = ["--data", str(phantom_cases), "--folds", "3", "--fold", "2", "--epochs", "1", "--steps-per-epoch", "1",
              "--cache", str(tmp_path / "cache"), "--no-progress", "--amp", "off", "--seed", "3"]
    assert train.run(_train_args(["fine", "--out", str(tmp_path / "fine"), "--base-filters", "4", "--depth", "3",
                                  *common])) == 0
    assert train.run(_train_args(["coarse", "--out", str(tmp_path / "coarse"), "--batch", "2", "--fc-widths", "8",
                                  "--widths", ",".join(map(str, TINY_WIDTHS)), *common])) == 0
    p = argparse.ArgumentParser()
    export.configure_parser(p)
    assert export.run(p.parse_args(["--coarse", str(tmp_path / "coarse"), "--fine", str(tmp_path / "fine"),
                                    "--out", str(tmp_path / "models"), "--coarse-threshold", "0.9"])) == 0

    p = argparse.ArgumentParser()
    evaluate.configure_parser(p)
    out, raw = tmp_path / "eval.md", tmp_path / "eval.json"
    assert evaluate.run(p.parse_args(["--data", str(phantom_cases), "--models", str(tmp_path / "models"),
                                      "--cache", str(tmp_path / "cache"), "--out", str(out), "--json", str(raw),
                                      "--device", "cpu", "--tables", "coarse,fine,whole,misses"])) == 0
    text = out.read_text(encoding="utf-8")
    for title in ("## Coarse stage", "## Fine stage inside VOIs", "## Whole volume", "Detector threshold 0.9",
                  "## Where the missed aneurysms go"):
        assert title in text
    numbers = json.loads(raw.read_text())
    group = phantom_cases.name
    n_aneurysms = 0
    for case in sorted(phantom_cases.iterdir()):
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "aneurysms.nii.gz")))
        n_aneurysms += len(reference_locations(labels, (1.2, 1.2, 1.2)))
    assert n_aneurysms == 4
    assert numbers["coarse"][group]["0.5"]["aneurysms"] == n_aneurysms
    assert numbers["fine"][group]["vois"] == n_aneurysms
    assert sum(numbers["fine"][f"all, {name}"]["vois"] for name, _, _ in SIZE_CLASSES) == n_aneurysms
    assert all(0.0 <= d <= 1.0 for d in numbers["fine"][group]["dsc"])
    assert numbers["whole"][group]["cases"] == 3
    # every reference aneurysm has one reason, and "found" agrees with the whole-volume detection
    counts = numbers["misses"][group]["counts"]
    assert sum(counts.values()) == n_aneurysms
    assert counts["found"] == numbers["whole"][group]["tp"]


# ------------------------------------------------------------------------------------------ issue 11


def test_hard_places_are_where_vessels_crowd() -> None:
    arteries = np.zeros((40, 40, 40), bool)
    arteries[20, 20, 2:38] = True  # a straight vessel ...
    arteries[20, 2:20, 20] = True  # ... with a branch leaving it at (20, 20, 20)
    arteries[5, 5, 2:38] = True  # and a lone straight vessel
    vessel = np.flatnonzero(arteries)
    hard = np.stack(np.unravel_index(sampling.hard_places(arteries, vessel), arteries.shape), axis=1)
    assert len(hard) > 0
    assert np.all(np.abs(hard - [20, 20, 20]).max(axis=1) <= 3)  # only at the bifurcation
    assert len(sampling.hard_places(arteries, np.zeros(0, np.int64))) == 0


def test_coarse_background_comes_from_every_pool() -> None:
    v = synthetic_coarse(0)
    v.hard = v.vessel[:3]
    rng = np.random.default_rng(0)
    centres = [sampling.coarse_sample([v], rng, False, bg_mix=(0.0, 1.0, 0.0, 0.0))[1] for _ in range(5)]
    assert all(c.sum() == 0 for c in centres)  # hard places lie outside the target
    x, y = sampling.coarse_sample([v], rng, True)
    assert x.shape == (1, sampling.COARSE_IN, sampling.COARSE_IN, sampling.COARSE_IN) and y.any()


def test_fine_sampling_balances_the_size_classes() -> None:
    vois = synthetic_fine(0, big=24, n_an=6, n_bg=0)
    vois.diameters = np.array([2.0, 2.0, 2.0, 2.0, 4.0, 8.0])  # four small aneurysms, one medium, one large
    crops = [sampling.voi_crop(vois, k, (4, 4, 4), 16)[0] for k in range(6)]
    assert [sampling.size_class(d) for d in (2.9, 3.0, 5.9, 6.0, 20.0)] == [0, 1, 1, 2, 2]

    def shares(balance: bool) -> np.ndarray:
        rng = np.random.default_rng(1)
        counts = np.zeros(3)
        for _ in range(600):
            x, _, kind = sampling.sample_fine([vois], rng, 1.0, 16, 2, 0, balance_sizes=balance)
            k = next(k for k, c in enumerate(crops) if np.array_equal(c, x))  # centred crops: which VOI
            counts[sampling.size_class(vois.diameters[k])] += 1
        return counts / counts.sum()

    assert np.all(np.abs(shares(True) - 1 / 3) < 0.07)
    assert abs(shares(False)[0] - 4 / 6) < 0.07  # uniform over VOIs: the small ones dominate


def test_precision_choices() -> None:
    from AneurysmSegLib.training.precision import Precision, cpu_has_bf16

    cpu = torch.device("cpu")
    assert Precision.choose("off", cpu).dtype is None and Precision.choose("off", cpu).scaler(cpu) is None
    assert Precision.choose("auto", cpu).dtype == (torch.bfloat16 if cpu_has_bf16() else None)
    bf16 = Precision.choose("bf16", cpu)
    assert bf16.scaler(cpu) is None and bf16.name == "bfloat16"  # gradient scaling only for CUDA float16
    with bf16.autocast(cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="CUDA"):
        Precision.choose("fp16", cpu)
    with pytest.raises(ValueError):
        Precision.choose("half", cpu)


def test_initial_weights_from_the_bundled_models_and_from_checkpoints(tmp_path: Path) -> None:
    from AneurysmSegLib.core.errors import InputError
    from AneurysmSegLib.core.manifest import default_model_dir
    from AneurysmSegLib.core.models import load_models
    from AneurysmSegLib.training.run import initial_weights

    hp, state = initial_weights(default_model_dir(), "fine")
    model = SEUNet3D(**hp)
    model.load_state_dict(state)
    x = torch.randn(1, hp["in_channels"], 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), load_models(default_model_dir(), "cpu").fine(x), atol=1e-5)
    task = _coarse_task()
    loop.run(task, loop.LoopConfig(out=tmp_path, epochs=1, steps_per_epoch=1, progress=False), log=lambda s: None)
    hp_c, state_c = initial_weights(tmp_path / "last.pt", "coarse")
    assert hp_c["widths"] == list(TINY_WIDTHS) and state_c.keys() == task.model.state_dict().keys()
    with pytest.raises(InputError, match="coarse network"):
        initial_weights(tmp_path / "last.pt", "fine")
    with pytest.raises(InputError):
        initial_weights(tmp_path / "nothing", "fine")


def test_a_missed_aneurysm_gets_the_first_step_that_lost_it() -> None:
    from AneurysmSegLib.evaluation.misses import REASONS, classify

    base = dict(found=False, roi_voxels=50, peak=0.99, threshold=0.95, diameter_mm=4.0, coarse_mm=0.7,
                fates=["seed"], seed_on_aneurysm=False, overlaps=False)
    assert classify(**{**base, "found": True}) == "found"
    assert classify(**{**base, "roi_voxels": 0}) == "outside the detector region"
    assert classify(**{**base, "peak": 0.5, "fates": []}) == "below the threshold"
    assert classify(**{**base, "peak": 0.5, "fates": [], "diameter_mm": 1.2}) == "too small for the coarse grid"
    assert classify(**{**base, "fates": ["too small"], "diameter_mm": 1.2}) == "too small for the coarse grid"
    # a large sac where only a noise-sized component clears the threshold: the threshold lost it, not the grid
    assert classify(**{**base, "fates": ["too small"]}) == "below the threshold"
    assert classify(**{**base, "fates": ["merged"]}) == "merged with a neighbour"
    assert classify(**{**base, "fates": ["seed", "over the limit"]}) == "merged with a neighbour"
    assert classify(**base) == "lost at VOI placement"
    assert classify(**{**base, "seed_on_aneurysm": True}) == "missed by the fine stage"
    assert classify(**{**base, "seed_on_aneurysm": True, "overlaps": True}) == "segmented with its vessel"
    assert classify(**{**base, "seed_on_aneurysm": True, "rejected": True}) == "dropped by the false-positive reduction"
    assert {REASONS[r][1] for r in REASONS if r != "found"} == {"network", "pipeline", "classifier"}


def test_fine_tuning_must_beat_the_starting_weights(tmp_path: Path) -> None:
    task = _coarse_task()
    start = {k: v.clone() for k, v in task.model.state_dict().items()}
    task.validate = lambda: {"val_loss": 1.0}  # no epoch is better than the starting weights
    state = loop.run(task, loop.LoopConfig(out=tmp_path, epochs=2, steps_per_epoch=1, progress=False,
                                           validate_first=True), log=lambda s: None)
    assert state["initial_metrics"] == {"val_loss": 1.0} and state["best_epoch"] == -1
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert all(torch.equal(best["model"][k], v) for k, v in start.items())  # best.pt = the starting weights
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert any(not torch.equal(last["model"][k], v) for k, v in start.items() if v.is_floating_point())
