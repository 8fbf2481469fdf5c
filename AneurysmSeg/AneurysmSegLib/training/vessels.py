"""Training of the learnt artery tree (``aneurysmseg train vessels``): patch cache, loop, export.

Data: ADAM-layout cases with a visible-vessel label (``vessels_visible.nii.gz``, written by
``aneurysmseg phantom``). Each case is preprocessed as the pipeline does (``preprocess.preprocess``, the
classical branch), its features (``Preprocessed.vessel_features``) and its target (the visible vessels
plus untreated aneurysm sacs, resampled linearly onto the coarse grid: the share of each coarse voxel
that is vessel) cut into cubic patches around vessel voxels, around bright voxels that are not vessel
(scalp fat, sinuses, noise) and anywhere in the head, and cached on disk (one ``.npz`` per case, keyed
on the case's fingerprint and ``PREPROCESS_VERSION``). Every ``val_every``-th case (in path order) is
held out for validation.

Loss: binary cross-entropy against the soft target plus soft Dice. Deterministic: the network is
initialised from ``seed``, the batch of step ``s`` is drawn from ``(seed, s)`` alone, so a run resumed
from ``last.pt`` continues exactly as if it had not stopped. Checkpoints (``last.pt``, ``best.pt`` by
validation Dice) hold tensors and plain data only (``training.checkpoints``); ``metrics.csv`` logs the
loss and the validation figures.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from ..core.errors import InputError, ModelError
from ..io.images import read_image
from ..networks.vessel_unet import VesselUNet
from .. import preprocess as pp
from ..preprocess.vessels import RISE_SCALE, tree_from_probability
from .checkpoints import load_checkpoint, plain
from .data import CaseRef, find_cases, read_vessels, training_labels
from .run import initial_weights

#: Patches per case: around vessel voxels, around bright non-vessel voxels, anywhere in the head.
PER_CASE = {"vessel": 24, "bright": 12, "head": 12}
#: A voxel is "bright" when it rises this many noise SDs over the local tissue (feature 1 x RISE_SCALE).
BRIGHT_SD = 3.0
#: Validation thresholds tried on the probability (the best is exported).
THRESHOLDS = (0.3, 0.4, 0.5, 0.6)


@dataclass
class VesselTrainConfig:
    """One training run of the vessel network."""

    data: Sequence[str]  #: ADAM-layout folders with vessels_visible.nii.gz
    out: str | Path  #: run folder: last.pt, best.pt, metrics.csv, summary.json
    cache: str | Path | None = None  #: patch cache folder (default <out>/cache)
    steps: int = 3000
    batch: int = 4
    patch: int = 32  #: patch edge (coarse voxels, a multiple of 4)
    lr: float = 2e-3
    seed: int = 0
    widths: Sequence[int] = (8, 16, 16)
    val_every: int = 8  #: every n-th case is validation
    eval_every: int = 250  #: steps between validations and checkpoints
    max_minutes: float | None = None  #: stop (after a checkpoint) once this much CPU time is spent
    stop_at: int | None = None  #: pause after this step (resume later with ``resume``)
    threads: int = 1
    resume: bool = False
    init_from: str | Path | None = None  #: start from these weights (a vessel run's checkpoint or a model folder)
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# the patch cache
# ------------------------------------------------------------------------------------------------
def case_target(ref: CaseRef, pre: pp.Preprocessed) -> np.ndarray:
    """float32 on the coarse grid: the share of each voxel that is visible vessel or aneurysm sac."""
    visible = read_vessels(ref, visible=True)
    if visible is None:
        raise InputError(f"case {ref.folder} has no {ref.visible_vessels_path.name}: the vessel network "
                         "learns the visible vessel tree (write the cases with `aneurysmseg phantom`)")
    import SimpleITK as sitk

    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(ref.label_path)))
    truth = (visible | training_labels(labels)).astype(np.float32)
    return pp.resample(truth, pre.image.geometry, pre.coarse.geometry, pre.coarse.array.shape, linear=True)


def _centres(rng: np.random.Generator, mask: np.ndarray, n: int) -> np.ndarray:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return np.zeros((0, 3), dtype=int)
    pick = rng.choice(idx, size=n, replace=idx.size < n)
    return np.stack(np.unravel_index(np.sort(pick), mask.shape), axis=1)


def _cut(array: np.ndarray, centre: Sequence[int], size: int) -> np.ndarray:
    """The ``size``^3 block of the last three axes centred on ``centre``, zero-padded outside."""
    out = np.zeros(array.shape[:-3] + (size,) * 3, dtype=array.dtype)
    lo = [int(c) - size // 2 for c in centre]
    src, dst = [], []
    for a, n in zip(lo, array.shape[-3:]):
        s0, s1 = max(a, 0), min(a + size, n)
        src.append(slice(s0, s1))
        dst.append(slice(s0 - a, s1 - a))
    out[(Ellipsis, *dst)] = array[(Ellipsis, *src)]
    return out


def case_patches(ref: CaseRef, patch: int, seed: int) -> dict[str, np.ndarray]:
    """Features (float16) and targets (uint8, share x 255) of one case's patches (see PER_CASE)."""
    pre = pp.preprocess(read_image(ref.image_path))
    feats = pre.vessel_features()
    target = case_target(ref, pre)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(ref.fingerprint(), 16) % (2 ** 32)]))
    bright = (feats[1] * RISE_SCALE > BRIGHT_SD) & (target < 0.1)
    centres = np.concatenate([_centres(rng, target > 0.5, PER_CASE["vessel"]),
                              _centres(rng, bright, PER_CASE["bright"]),
                              _centres(rng, pre.coarse_head, PER_CASE["head"])])
    x = np.stack([_cut(feats, c, patch) for c in centres]).astype(np.float16)
    y = np.stack([_cut(target, c, patch) for c in centres])
    return {"x": x, "y": np.round(np.clip(y, 0, 1) * 255).astype(np.uint8)}


def build_cache(refs: Sequence[CaseRef], cache: Path, patch: int, seed: int,
                log: Callable[[str], None] = _stderr) -> list[Path]:
    """One ``.npz`` per case (made once; an interrupted build resumes where it stopped)."""
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ref in enumerate(refs):
        path = cache / f"{ref.fingerprint()}-p{patch}-s{seed}-v{pp.PREPROCESS_VERSION}.npz"
        if not path.is_file():
            t = time.process_time()
            data = case_patches(ref, patch, seed)
            tmp = path.with_name(path.stem + ".tmp.npz")
            np.savez(tmp, **data)
            tmp.replace(path)
            log(f"cache {i + 1}/{len(refs)} {ref.name}: {len(data['x'])} patches, {time.process_time() - t:.1f} CPU s")
        paths.append(path)
    return paths


def _load(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for p in paths:
        with np.load(p) as d:
            xs.append(d["x"])
            ys.append(d["y"])
    return np.concatenate(xs), np.concatenate(ys)


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------
def vessel_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy against the soft target plus soft Dice over the batch."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = 1.0 - (2.0 * (p * target).sum() + 1.0) / (p.sum() + target.sum() + 1.0)
    return bce + dice


def _batch(x: np.ndarray, y: np.ndarray, seed: int, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of step ``step``: patches and flips drawn from ``(seed, step)`` alone."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xF1A5, int(step)]))
    idx = rng.integers(0, len(x), size)
    xb, yb = x[idx].astype(np.float32), y[idx].astype(np.float32)[:, None] / 255.0
    for axis in (2, 3, 4):
        flip = rng.random(size) < 0.5
        xb[flip] = np.flip(xb[flip], axis=axis)
        yb[flip] = np.flip(yb[flip], axis=axis)
    return torch.from_numpy(np.ascontiguousarray(xb)), torch.from_numpy(np.ascontiguousarray(yb))


@torch.no_grad()
def validate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Loss and Dice (target share > 0.5 vs probability > t, for each t of THRESHOLDS) on all patches."""
    model.eval()
    inter = {t: 0.0 for t in THRESHOLDS}
    size = {t: 0.0 for t in THRESHOLDS}
    truth_sum, loss = 0.0, 0.0
    for i in range(0, len(x), 8):
        xb = torch.from_numpy(x[i:i + 8].astype(np.float32))
        yb = torch.from_numpy(y[i:i + 8].astype(np.float32)[:, None] / 255.0)
        logits = model(xb)
        loss += float(vessel_loss(logits, yb)) * len(xb)
        p = torch.sigmoid(logits)
        truth = yb > 0.5
        truth_sum += float(truth.sum())
        for t in THRESHOLDS:
            inter[t] += float(((p > t) & truth).sum())
            size[t] += float((p > t).sum())
    model.train()
    out = {"val_loss": loss / max(1, len(x))}
    for t in THRESHOLDS:
        out[f"dice@{t}"] = 2.0 * inter[t] / max(1.0, size[t] + truth_sum)
    return out


def _save(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(plain({"kind": "vessels", "model": model.state_dict(), "optimizer": opt.state_dict(), **state}), tmp)
    tmp.replace(path)


def train_vessels(cfg: VesselTrainConfig, log: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Build the cache, train, keep ``best.pt`` (validation Dice) and ``last.pt``; returns the summary."""
    if cfg.patch % 4:
        raise InputError("--patch must be a multiple of 4")
    torch.set_num_threads(max(1, int(cfg.threads)))
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    refs = find_cases(cfg.data)
    val_refs = refs[cfg.val_every - 1::cfg.val_every] if cfg.val_every > 0 else []
    train_refs = [r for r in refs if r not in val_refs]
    cache = Path(cfg.cache) if cfg.cache else out / "cache"
    x, y = _load(build_cache(train_refs, cache, cfg.patch, cfg.seed, log))
    vx, vy = _load(build_cache(val_refs, cache, cfg.patch, cfg.seed, log)) if val_refs else (x[:0], y[:0])
    log(f"vessels: {len(train_refs)} training cases ({len(x)} patches), {len(val_refs)} validation cases "
        f"({len(vx)} patches)")
    ck = load_checkpoint(out / "last.pt") if cfg.resume and (out / "last.pt").is_file() else None
    init = initial_weights(cfg.init_from, "vessels") if cfg.init_from and ck is None else None
    hp = ck["hyperparameters"] if ck is not None else init[0] if init is not None else None
    model = VesselUNet(**hp, seed=cfg.seed) if hp else VesselUNet(widths=cfg.widths, seed=cfg.seed)
    if init is not None:
        model.load_state_dict(init[1])
        log(f"initial weights from {cfg.init_from}")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state = {"step": 0, "best": -1.0, "best_step": 0, "cpu_s": 0.0, "best_threshold": 0.5}
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = {k: ck[k] for k in state}
        log(f"resumed at step {state['step']}")
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    config.update(out=str(Path(cfg.out).resolve()), cache=str(cache.resolve()), data=[str(Path(d).resolve()) for d in cfg.data],
                  init_from=str(Path(cfg.init_from).resolve()) if cfg.init_from else None)
    common = {"config": config, "hyperparameters": model.hyperparameters(),
              "preprocess_version": pp.PREPROCESS_VERSION, "train_cases": [r.name for r in train_refs],
              "val_cases": [r.name for r in val_refs]}
    metrics = out / "metrics.csv"
    fields = ["step", "loss", "lr", "cpu_s", "val_loss"] + [f"dice@{t}" for t in THRESHOLDS]
    if not metrics.is_file() or not cfg.resume:
        with metrics.open("w", newline="") as f:
            csv.writer(f).writerow(fields)
    model.train()
    c0, running = time.process_time() - float(state["cpu_s"]), []
    while state["step"] < cfg.steps and (cfg.stop_at is None or state["step"] < cfg.stop_at):
        for group in opt.param_groups:  # cosine decay to 5 %, a function of the step alone
            group["lr"] = cfg.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * state["step"] / cfg.steps)))
        xb, yb = _batch(x, y, cfg.seed, int(state["step"]), cfg.batch)
        loss = vessel_loss(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(float(loss.detach()))
        state["step"] += 1
        state["cpu_s"] = time.process_time() - c0
        over = cfg.max_minutes is not None and state["cpu_s"] > 60.0 * cfg.max_minutes
        if state["step"] % cfg.eval_every == 0 or state["step"] in (cfg.steps, cfg.stop_at) or over:
            v = validate(model, vx, vy) if len(vx) else {"val_loss": float("nan")}
            dices = {t: v.get(f"dice@{t}", 0.0) for t in THRESHOLDS}
            t_best = max(dices, key=dices.get)
            row = {"step": state["step"], "loss": float(np.mean(running)), "lr": opt.param_groups[0]["lr"],
                   "cpu_s": state["cpu_s"], **v}
            running = []
            with metrics.open("a", newline="") as f:
                csv.writer(f).writerow([f"{row.get(k, float('nan')):.6g}" for k in fields])
            log("step {step} loss {loss:.4f} val_loss {val_loss:.4f} ".format(**row)
                + " ".join(f"dice@{t} {d:.3f}" for t, d in dices.items()) + f" cpu {state['cpu_s']:.0f}s")
            if dices[t_best] > state["best"]:
                state.update(best=dices[t_best], best_step=state["step"], best_threshold=t_best)
                _save(out / "best.pt", model, opt, {**state, **common})
            _save(out / "last.pt", model, opt, {**state, **common})
            if over:
                log(f"stopped: {cfg.max_minutes} CPU minutes spent")
                break
    summary = {**common, **state, "command": cfg.command}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if val_refs and (out / "best.pt").is_file():
        summary = choose_threshold(out, log=log)
    return summary


#: Thresholds tried on the input grid of the validation cases (:func:`choose_threshold`).
INPUT_GRID_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def choose_threshold(run: str | Path, which: str = "best", log: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """The probability threshold with the best mean vessel Dice on the *input grid* of the run's
    validation cases (the pipeline's mask there: ``preprocess.arteries_on`` with the learnt tree at that
    threshold), stored in the checkpoint (``best_threshold``, exported into the manifest) and in
    summary.json.

    The patch validation of the loop scores coarse voxels; thin vessels cover less than half a coarse
    voxel, so the threshold that serves the input grid can differ from the one that serves the patches.
    """
    from ..stages.vessels import VesselSegmenter

    run = Path(run)
    path = run / f"{which}.pt"
    ck = load_checkpoint(path)
    hp = ck["hyperparameters"]
    model = VesselUNet(in_channels=hp["in_channels"], widths=hp["widths"], negative_slope=hp["negative_slope"], seed=None)
    model.load_state_dict(ck["model"])
    segmenter = VesselSegmenter(model.eval())
    refs = {r.name: r for r in find_cases(ck["config"]["data"])}
    scores: dict[float, list[float]] = {t: [] for t in INPUT_GRID_THRESHOLDS}
    for name in ck["val_cases"]:
        ref = refs[name]
        image = read_image(ref.image_path)
        pre = pp.preprocess(image, vessels=segmenter)
        import SimpleITK as sitk

        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(ref.label_path)))
        truth = read_vessels(ref, visible=True) | training_labels(labels)
        z = pp.zscored_on(pre, image.geometry, image.array.shape)
        for t in INPUT_GRID_THRESHOLDS:
            tree = tree_from_probability(pre.coarse_vessels, t, pre.coarse.geometry.spacing_zyx)
            at_t = replace(pre, coarse_arteries=tree, vessel_threshold=t, _sitk_trees={})
            mask = pp.arteries_on(at_t, image.geometry, image.array.shape, zscored=z)
            scores[t].append(2.0 * float((mask & truth).sum()) / max(1, int(mask.sum()) + int(truth.sum())))
    means = {t: float(np.mean(v)) for t, v in scores.items()}
    best = max(means, key=means.get)
    log("input-grid vessel Dice on the validation cases: " + " ".join(f"{t}: {d:.3f}" for t, d in means.items()))
    ck["best_threshold"] = best
    ck["input_grid_dice"] = {str(t): d for t, d in means.items()}
    torch.save(plain(ck), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    summary.update(best_threshold=best, input_grid_dice=ck["input_grid_dice"])
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------
VESSEL_FILE = "vessels_unet.pt"


def export_vessels(run: str | Path, model_dir: str | Path, which: str = "best", record: Path | None = None) -> Path:
    """TorchScript of the run's ``best.pt`` (or ``last.pt``) into ``model_dir`` and its ``vessels``
    entry in ``model_dir``'s manifest.json (file, sha256, spacing, threshold, hyperparameters,
    training); returns the TorchScript path. The coarse and fine entries are left as they are.
    ``record`` (by default the package's release record when ``model_dir`` is the bundled folder) is
    rewritten with the checksums of the folder, as ``aneurysmseg export`` does."""
    from ..core.manifest import RELEASE_RECORD, default_model_dir, release_record_text
    from ..core.models import add_manifest_entry, export_torchscript

    ck_path = Path(run) / f"{which}.pt"
    if not ck_path.is_file():
        raise ModelError(f"{ck_path} does not exist: train first (`aneurysmseg train vessels`)")
    ck = load_checkpoint(ck_path)
    hp = ck["hyperparameters"]
    model = VesselUNet(in_channels=hp["in_channels"], widths=hp["widths"], negative_slope=hp["negative_slope"], seed=None)
    model.load_state_dict(ck["model"])
    model.eval()
    path = Path(model_dir) / VESSEL_FILE
    export_torchscript(model, torch.zeros(1, hp["in_channels"], 16, 16, 16), path)
    entry = {
        "file": VESSEL_FILE, "spacing_mm": ck["config"].get("extra", {}).get("spacing_mm", pp.COARSE_SPACING_MM),
        "in_channels": hp["in_channels"], "architecture": "VesselUNet", "hyperparameters": hp,
        "probability_threshold": float(ck["best_threshold"]),
        "input": "preprocess vessel features on the coarse grid (Preprocessed.vessel_features)",
        "output": "logits (N, 1, D, H, W); sigmoid = share of the voxel that is visible vessel",
        "preprocess_version": int(ck["preprocess_version"]),
        "training": {"command": ck["config"].get("command", ""), "steps": int(ck["step"]),
                     "cpu_s": round(float(ck["cpu_s"]), 1), "seed": ck["config"]["seed"],
                     "data": ck["config"]["data"], "train_cases": len(ck["train_cases"]),
                     "val_cases": len(ck["val_cases"]),
                     "validation_dice": round(float(ck["best"]), 4),
                     "validation_dice_input_grid": ck.get("input_grid_dice")},
    }
    if ck["config"].get("init_from"):
        entry["training"]["init_from"] = ck["config"]["init_from"]
    add_manifest_entry(model_dir, "vessels", entry)
    if record is None and Path(model_dir).resolve() == default_model_dir().resolve():
        record = RELEASE_RECORD
    if record is not None:
        record.write_text(release_record_text(model_dir), encoding="utf-8")
    return path
