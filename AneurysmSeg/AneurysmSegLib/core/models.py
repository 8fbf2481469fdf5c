"""Bundled TorchScript weights: export, manifest with sha256, and verified loading.

The manifest (``manifest.json`` next to the weights) is the single source of the model geometry:
spacing, patch sizes and channels are read from it, never assumed. Loading refuses a file whose
sha256 differs from the manifest (corrupted download or a modified file), because a silently wrong
model is worse than none. Nothing is downloaded: hospitals are often offline.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import InputError, ModelError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
COARSE_CONTEXT = 48
DEFAULT_COARSE_FILE = "coarse_deepmedic.pt"
DEFAULT_FINE_FILE = "fine_se_unet.pt"

_HOW_TO_FIX = "run `aneurysmseg export` to write the weights, or reinstall AneurysmSeg to restore the bundled ones"

# (resolved path, mtime_ns, size) -> sha256 verified in this process
_VERIFIED: dict[tuple[str, int, int], str] = {}


def default_model_dir() -> Path:
    """AneurysmSeg/Resources/Models, where the extension bundles its weights."""
    return Path(__file__).resolve().parents[2] / "Resources" / "Models"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA when available else CPU; "cuda" without a usable GPU -> InputError."""
    if isinstance(device, torch.device):
        name = device.type
    else:
        name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(
                "--device cuda was requested but no CUDA GPU is usable by this PyTorch "
                f"(torch {torch.__version__}); use --device cpu or auto"
            )
        return torch.device(device if isinstance(device, torch.device) else name)
    raise InputError(f"unknown device {device!r}: use auto, cpu or cuda")


def export_torchscript(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike, method: str = "script") -> str:
    """Save ``model`` (in eval mode) as TorchScript at ``path`` and return the file's sha256.

    ``method`` is "script" (default; keeps shape-dependent code exact for any input size) or
    "trace". The model is exported in eval mode (its mode is restored afterwards). The saved file
    is loaded back and must reproduce the eager output on ``example_input`` within 1e-5 (relative
    to the output's magnitude when that exceeds 1); otherwise ModelError and no file is left.
    """
    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        return _export(model, example_input.detach(), path, method)
    finally:
        model.train(was_training)


def _export(model: nn.Module, example_input: torch.Tensor, path: Path, method: str) -> str:
    with torch.no_grad():
        expected = model(example_input)
        if method == "script":
            scripted = torch.jit.script(model)
        elif method == "trace":
            scripted = torch.jit.trace(model, example_input)
        else:
            raise ValueError("method must be 'script' or 'trace'")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.jit.save(scripted, tmp)
        reloaded = torch.jit.load(tmp, map_location="cpu").eval()
        with torch.no_grad():
            got = reloaded(example_input.cpu())
        err = float((got - expected.cpu()).abs().max())
        scale = max(1.0, float(expected.abs().max()))
        if not err <= 1e-5 * scale:
            raise ModelError(f"TorchScript export of {path.name} does not reproduce the model (max error {err:.3g})")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return sha256_file(path)


def _entry(model_dir: Path, info: dict, kind: str) -> dict:
    if "file" not in info:
        raise ValueError(f"{kind} manifest entry needs 'file'")
    entry = dict(info)
    f = model_dir / entry["file"]
    if not f.is_file():
        raise ModelError(f"cannot write the manifest: {f} does not exist")
    entry["sha256"] = sha256_file(f)
    entry["size_bytes"] = f.stat().st_size
    sp = entry.get("spacing_mm")
    if sp is None:
        raise ValueError(f"{kind} manifest entry needs 'spacing_mm'")
    entry["spacing_mm"] = [float(sp)] * 3 if isinstance(sp, (int, float)) else [float(s) for s in sp]
    if "in_channels" not in entry:
        raise ValueError(f"{kind} manifest entry needs 'in_channels'")
    return entry


def write_manifest(
    model_dir: str | os.PathLike, coarse: dict, fine: dict, training: dict, metrics: dict
) -> Path:
    """Write ``manifest.json`` describing the coarse and fine TorchScript files in ``model_dir``.

    ``coarse``/``fine`` need ``file``, ``spacing_mm`` (a number for isotropic or [x, y, z]) and
    ``in_channels``, plus whatever architecture hyper-parameters describe them (e.g.
    ``architecture: model.hyperparameters()``). Coarse gets ``context`` 48 and a default
    ``segment_out`` of 45 (inference output tile); fine a default ``voi_size`` of 64. sha256 and
    size are computed here from the files. ``training`` describes data, seeds, commands and
    duration; ``metrics`` the validation metrics. Written atomically; returns its path.
    """
    model_dir = Path(model_dir)
    c = _entry(model_dir, coarse, "coarse")
    c["context"] = COARSE_CONTEXT
    c.setdefault("segment_out", 45)
    if int(c["segment_out"]) % 3:
        raise ValueError("coarse segment_out must be a multiple of 3")
    f = _entry(model_dir, fine, "fine")
    f.setdefault("voi_size", 64)
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "coarse": c,
        "fine": f,
        "training": training,
        "validation_metrics": metrics,
    }
    out = model_dir / MANIFEST_NAME
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out


def read_manifest(model_dir: str | os.PathLike | None = None) -> dict:
    """Parse and check ``manifest.json``; ModelError when missing or malformed."""
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    if not model_dir.is_dir():
        raise ModelError(f"model folder {model_dir} does not exist: {_HOW_TO_FIX}")
    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        raise ModelError(f"model manifest {path} is missing: {_HOW_TO_FIX}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model manifest {path} cannot be read ({exc}): {_HOW_TO_FIX}") from exc
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"model manifest {path} has format_version {manifest.get('format_version') if isinstance(manifest, dict) else None!r}, "
            f"this AneurysmSeg reads {FORMAT_VERSION}: {_HOW_TO_FIX}"
        )
    for kind in ("coarse", "fine"):
        entry = manifest.get(kind)
        missing = [k for k in ("file", "sha256", "spacing_mm", "in_channels") if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise ModelError(f"model manifest {path}: '{kind}' lacks {', '.join(missing)}: {_HOW_TO_FIX}")
    return manifest


def verify_file(path: Path, expected_sha256: str) -> None:
    """ModelError unless ``path`` exists and has the expected sha256 (cached per path/mtime/size)."""
    if not path.is_file():
        raise ModelError(f"model file {path} is missing: {_HOW_TO_FIX}")
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if _VERIFIED.get(key) == expected_sha256:
        return
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ModelError(
            f"model file {path} is corrupted or was modified: sha256 {actual}, expected {expected_sha256} "
            f"(from {MANIFEST_NAME}): {_HOW_TO_FIX}"
        )
    _VERIFIED[key] = actual


def _load_script(path: Path, device: torch.device, saved_with: str | None) -> torch.jit.ScriptModule:
    try:
        module = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError/ValueError variants
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:200]
        versions = f"saved with torch {saved_with}, this is torch {torch.__version__}; " if saved_with else ""
        raise ModelError(
            f"model file {path} is not loadable TorchScript ({type(exc).__name__}: {first}; {versions}"
            f"{_HOW_TO_FIX})"
        ) from exc
    return module.eval()


@dataclass
class LoadedModels:
    """Both verified TorchScript models, their manifest and the device they live on."""

    coarse: torch.jit.ScriptModule
    fine: torch.jit.ScriptModule
    manifest: dict[str, Any]
    device: torch.device
    model_dir: Path = field(default_factory=default_model_dir)

    @property
    def coarse_spacing(self) -> tuple[float, float, float]:
        """Coarse-stage spacing (x, y, z) in mm."""
        return _spacing3(self.manifest["coarse"]["spacing_mm"])

    @property
    def fine_spacing(self) -> tuple[float, float, float]:
        """Fine-stage spacing (x, y, z) in mm."""
        return _spacing3(self.manifest["fine"]["spacing_mm"])

    @property
    def detection_threshold(self) -> float:
        """The detector's probability threshold chosen when the weights were exported (0.5 if unset)."""
        return float(self.manifest["coarse"].get("probability_threshold", 0.5))

    @property
    def voi_size(self) -> int:
        return int(self.manifest["fine"].get("voi_size", 64))

    @property
    def fine_channels(self) -> int:
        return int(self.manifest["fine"]["in_channels"])

    @property
    def coarse_channels(self) -> int:
        return int(self.manifest["coarse"]["in_channels"])

    @property
    def coarse_context(self) -> int:
        return int(self.manifest["coarse"].get("context", COARSE_CONTEXT))

    @property
    def coarse_segment_out(self) -> int:
        """Output tile size (a multiple of 3) for dense coarse inference; input is this + context."""
        return int(self.manifest["coarse"].get("segment_out", 45))


def _spacing3(sp: Any) -> tuple[float, float, float]:
    if isinstance(sp, (int, float)):
        return (float(sp),) * 3
    vals = tuple(float(s) for s in sp)
    if len(vals) != 3:
        raise ModelError(f"manifest spacing_mm {sp!r} must be a number or three numbers")
    return vals  # type: ignore[return-value]


def load_models(model_dir: str | os.PathLike | None = None, device: str | torch.device = "auto") -> LoadedModels:
    """Read the manifest, verify both files' sha256 and load them on ``device`` in eval mode."""
    dev = resolve_device(device)
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    manifest = read_manifest(model_dir)
    loaded = {}
    for kind in ("coarse", "fine"):
        entry = manifest[kind]
        path = model_dir / entry["file"]
        verify_file(path, entry["sha256"])
        loaded[kind] = _load_script(path, dev, manifest.get("torch_version"))
    return LoadedModels(loaded["coarse"], loaded["fine"], manifest, dev, model_dir)
