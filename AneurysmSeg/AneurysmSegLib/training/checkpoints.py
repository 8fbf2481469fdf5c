"""Reading training checkpoints back: which file of a run folder, the eager model it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by :func:`training.loop.save_checkpoint` (model, optimizer and loop state)."""
    return torch.load(path, map_location=map_location, weights_only=False)


def resolve_checkpoint(path: str | Path, which: str = "best") -> Path:
    """A checkpoint file, or ``<run>/<which>.pt`` (falling back to the other one)."""
    from ..core.errors import InputError

    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        for name in (f"{which}.pt", "best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
    raise InputError(f"{path}: no checkpoint (expected a .pt file or a run folder with best.pt/last.pt)")


def build_model(ck: dict[str, Any]):
    """Rebuild the eager model of a checkpoint and load its weights (eval mode)."""
    from ..core.errors import ModelError
    from ..networks import DeepMedic, SEUNet3D

    classes = {"DeepMedic": DeepMedic, "SEUNet3D": SEUNet3D}
    cls = classes.get(ck.get("model_class", ""))
    if cls is None:
        raise ModelError(f"checkpoint holds an unknown model class {ck.get('model_class')!r}")
    model = cls(**ck["hyperparameters"])
    model.load_state_dict(ck["model"])
    return model.eval()
