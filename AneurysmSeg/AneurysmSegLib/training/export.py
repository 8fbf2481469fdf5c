"""Trained checkpoints -> the TorchScript files and manifest.json the pipeline loads.

The manifest records sha256, spacing, patch sizes, channels, the training description (data, command
lines, seeds, duration) and the validation metrics; ``models.load_models`` verifies the sha256 before
loading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checkpoints import build_model, load_checkpoint, resolve_checkpoint


def run_description(ckpt_path: Path, ck: dict[str, Any]) -> dict[str, Any]:
    """What the manifest says about a run: summary.json when present, else the checkpoint's record."""
    summary_path = ckpt_path.parent / "summary.json"
    loop_state = ck.get("loop", {})
    desc: dict[str, Any] = {
        "checkpoint": ckpt_path.name,
        "epoch": loop_state.get("epoch"),
        "best_epoch": loop_state.get("best_epoch"),
        "training_minutes": round(float(loop_state.get("elapsed_s", 0.0)) / 60.0, 2),
        **{k: v for k, v in ck.get("extra", {}).items()},
    }
    task = dict(ck.get("task", {}))
    for key in ("train_cases", "val_cases"):
        if isinstance(task.get(key), list):
            task[key] = len(task[key])
    desc["task"] = task
    if summary_path.is_file():
        s = json.loads(summary_path.read_text())
        for key in ("train_cases", "val_cases", "epochs_done", "stopped", "cache_minutes", "training_minutes"):
            if key in s:
                desc[key] = s[key]
    return desc


def export_models(coarse: str | Path, fine: str | Path, out: str | Path, which: str = "best",
                  segment_out: int = 45, note: str = "", coarse_threshold: float = 0.5,
                  record: Path | None = None) -> Path:
    """Export both checkpoints to ``out`` and write the manifest; returns the manifest path.

    The weights and manifest appear together or not at all (:class:`~AneurysmSegLib.io.atomic.OutputSet`:
    a failure leaves no folder and no file behind). ``record`` (by default the package's
    :data:`~AneurysmSegLib.core.manifest.RELEASE_RECORD` when ``out`` is the bundled model folder) is
    written in the same step with the checksums of what was exported."""
    from ..core.manifest import MANIFEST_NAME, RELEASE_RECORD, default_model_dir
    from ..io.atomic import OutputSet

    out = Path(out)
    if record is None and out.resolve() == default_model_dir().resolve():
        record = RELEASE_RECORD
    cpath, fpath = resolve_checkpoint(coarse, which), resolve_checkpoint(fine, which)
    with OutputSet(inputs=[cpath, fpath]) as outputs:
        staged = outputs.stage(out / MANIFEST_NAME).parent  # the folder's files are staged side by side
        manifest = _export(cpath, fpath, staged, segment_out, note, coarse_threshold)
        for name in (p.name for p in staged.iterdir()):
            outputs.stage(out / name)
        if record is not None:
            from ..core.manifest import release_record_text

            outputs.stage(record).write_text(release_record_text(staged), encoding="utf-8")
    return out / manifest.name


def _export(cpath: Path, fpath: Path, out: Path, segment_out: int, note: str, coarse_threshold: float) -> Path:
    import torch

    from ..core import models
    from ..core.manifest import DEFAULT_COARSE_FILE, DEFAULT_FINE_FILE
    from ..preprocess import COARSE_SPACING_MM, FINE_SPACING_MM, VOI_SIZE

    cck, fck = load_checkpoint(cpath), load_checkpoint(fpath)
    cmodel, fmodel = build_model(cck), build_model(fck)
    g = torch.Generator().manual_seed(0)
    cin = int(cck["hyperparameters"].get("in_channels", 1))
    fin = int(fck["hyperparameters"].get("in_channels", 2))
    models.export_torchscript(cmodel, torch.randn(1, cin, 66, 66, 66, generator=g), out / DEFAULT_COARSE_FILE)
    models.export_torchscript(fmodel, torch.randn(1, fin, VOI_SIZE, VOI_SIZE, VOI_SIZE, generator=g),
                              out / DEFAULT_FINE_FILE)
    cdesc, fdesc = run_description(cpath, cck), run_description(fpath, fck)
    coarse_entry = {
        "file": DEFAULT_COARSE_FILE, "spacing_mm": COARSE_SPACING_MM, "in_channels": cin,
        "architecture": "DeepMedic", "hyperparameters": cck["hyperparameters"], "segment_out": int(segment_out),
        "training_segment": [57, 9], "output": "logits (N, 2, D-48, H-48, W-48); softmax channel 1 = aneurysm region",
        "probability_threshold": float(coarse_threshold),
        "input": "z-scored image on the coarse grid (preprocess.preprocess)",
        "labels": "adaptively dilated aneurysms (training.sampling.adaptive_dilation)",
    }
    fine_entry = {
        "file": DEFAULT_FINE_FILE, "spacing_mm": FINE_SPACING_MM, "in_channels": fin, "voi_size": VOI_SIZE,
        "architecture": "SEUNet3D", "hyperparameters": fck["hyperparameters"],
        "output": "logits (N, 1, 64, 64, 64); sigmoid > 0.5 = aneurysm", "probability_threshold": 0.5,
        "input": "preprocess.voi_channels(pre, centre, 64, 0.4, channels)",
        "loss": f"WDL beta={fck.get('task', {}).get('beta')}",
    }
    training = {"coarse": cdesc, "fine": fdesc, "note": note,
                "description": "trained with `aneurysmseg train` on ADAM-layout folders; see docs/training.md"}
    metrics = {"coarse": cck.get("loop", {}).get("best_metrics", {}),
               "fine": fck.get("loop", {}).get("best_metrics", {})}
    return models.write_manifest(out, coarse_entry, fine_entry, training, metrics)
