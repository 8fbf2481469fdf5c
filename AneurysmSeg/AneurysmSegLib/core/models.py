"""TorchScript weights: export with a manifest (sha256, geometry), and verified loading on a device.

The manifest (``manifest.json`` next to the weights) is the single source of the model geometry:
spacing, patch sizes and channels are read from it, never assumed. Loading refuses a file whose
sha256 differs from the manifest (corrupted download or a modified file), because a silently wrong
model is worse than none. Nothing is downloaded: hospitals are often offline.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import InputError, ModelError
from ..stages.fp_reduction import FindingClassifier
from .manifest import COARSE_CONTEXT, FINDING_CLASSIFIER, FORMAT_VERSION, HOW_TO_FIX, MANIFEST_NAME, ModelManifest, sha256_file

# (resolved path, mtime_ns, size) -> sha256 verified in this process
_VERIFIED: dict[tuple[str, int, int], str] = {}


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


def _entry(model_dir: Path, info: dict, kind: str, network: bool = True) -> dict:
    if "file" not in info:
        raise ValueError(f"{kind} manifest entry needs 'file'")
    entry = dict(info)
    f = model_dir / entry["file"]
    if not f.is_file():
        raise ModelError(f"cannot write the manifest: {f} does not exist")
    entry["sha256"] = sha256_file(f)
    entry["size_bytes"] = f.stat().st_size
    if not network:
        return entry
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


def add_manifest_entry(model_dir: str | os.PathLike, key: str, info: dict, network: bool = True) -> Path:
    """Add (or replace) the ``key`` entry of ``model_dir``'s manifest.json (e.g. ``vessels``, the learnt
    artery tree): ``info`` as for :func:`write_manifest` (``network=False``: a file that is not a network,
    such as the finding classifier, needs no spacing or channels), sha256 and size computed here; the
    other entries are kept as they are. Written atomically; returns its path."""
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        raise ModelError(f"cannot add '{key}' to {path}: it does not exist (export the networks first)")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest[key] = _entry(model_dir, info, key, network)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_manifest(model_dir: str | os.PathLike | None = None) -> dict:
    """The checked manifest as a plain dict (see :class:`ModelManifest` for the typed view)."""
    return ModelManifest.read(model_dir).data


def verify_file(path: Path, expected_sha256: str) -> None:
    """ModelError unless ``path`` exists and has the expected sha256 (cached per path/mtime/size)."""
    if not path.is_file():
        raise ModelError(f"model file {path} is missing: {HOW_TO_FIX}")
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if _VERIFIED.get(key) == expected_sha256:
        return
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ModelError(
            f"model file {path} is corrupted or was modified: sha256 {actual}, expected {expected_sha256} "
            f"(from {MANIFEST_NAME}): {HOW_TO_FIX}"
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
            f"{HOW_TO_FIX})"
        ) from exc
    return module.eval()


@dataclass
class LoadedModels:
    """Both verified TorchScript models, their manifest and the device they live on.

    Geometry and defaults come from ``manifest`` (the weights' own), exposed here for the stages."""

    coarse: torch.jit.ScriptModule
    fine: torch.jit.ScriptModule
    manifest: ModelManifest
    device: torch.device
    vessels: torch.jit.ScriptModule | None = None  #: the learnt artery tree (None: the half-maximum rule)
    #: the false-positive reduction (None: every finding is kept, as before it existed)
    finding_classifier: FindingClassifier | None = None

    @property
    def model_dir(self) -> Path:
        return self.manifest.model_dir

    coarse_spacing = property(lambda self: self.manifest.coarse_spacing)
    fine_spacing = property(lambda self: self.manifest.fine_spacing)
    detection_threshold = property(lambda self: self.manifest.detection_threshold)
    voi_size = property(lambda self: self.manifest.voi_size)
    fine_channels = property(lambda self: self.manifest.fine_channels)
    coarse_channels = property(lambda self: self.manifest.coarse_channels)
    coarse_context = property(lambda self: self.manifest.coarse_context)
    coarse_segment_out = property(lambda self: self.manifest.coarse_segment_out)


def load_models(model_dir: str | os.PathLike | None = None, device: str | torch.device = "auto") -> LoadedModels:
    """Read the manifest, verify the files' sha256 and load them on ``device`` in eval mode (the
    vessel network and the finding classifier only when the manifest has them)."""
    dev = resolve_device(device)
    manifest = ModelManifest.read(model_dir)
    loaded = {}
    for kind in ("coarse", "fine", "vessels"):
        entry = manifest.get(kind)
        if entry is None:  # only "vessels" is optional (the manifest reader checked the others)
            continue
        path = manifest.model_dir / entry["file"]
        verify_file(path, entry["sha256"])
        loaded[kind] = _load_script(path, dev, manifest.get("torch_version"))
    classifier = None
    screen = manifest.finding_classifier
    if screen is not None:
        path = manifest.model_dir / screen["file"]
        verify_file(path, screen["sha256"])
        classifier = FindingClassifier.read(path, float(screen["score_threshold"]))
    return LoadedModels(loaded["coarse"], loaded["fine"], manifest, dev, loaded.get("vessels"), classifier)
