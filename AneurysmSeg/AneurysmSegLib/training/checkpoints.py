"""Training checkpoints: only tensors and plain data in, read back with ``weights_only=True``.

A pickled checkpoint can run any code when it is loaded; ``torch.load(weights_only=True)`` refuses
everything but tensors and plain containers, so :func:`plain` turns what the trainer saves into
exactly that (numpy numbers to Python numbers, paths to text) and :func:`load_checkpoint` refuses a
file holding anything else before a single object of it is built.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import ModelError


def plain(value: Any, where: str = "checkpoint") -> Any:
    """``value`` as tensors, numbers, text, None and dicts/lists/tuples of them (what weights_only reads)."""
    if isinstance(value, np.generic):  # first: np.float64 is also a float, but pickles as a numpy global
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor, torch.dtype, torch.Size)):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {plain(k, where): plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(f"{where} holds a {type(value).__name__}; a checkpoint holds only tensors and plain data")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by :func:`training.loop.save_checkpoint` (model, optimizer and loop state),
    read with ``weights_only=True``: ModelError, and nothing of it executed, for anything else."""
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        named = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        raise ModelError(f"checkpoint {path} holds more than tensors and plain data and was refused unread "
                         f"(loading it could run code{'; it names ' + named.group(1) if named else ''}); "
                         "only checkpoints written by `aneurysmseg train` are accepted") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ModelError(f"checkpoint {path} cannot be read as a PyTorch checkpoint: {first}") from None
    if not isinstance(ck, dict) or "model" not in ck:
        raise ModelError(f"checkpoint {path} is not a training checkpoint of `aneurysmseg train`")
    return ck


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
