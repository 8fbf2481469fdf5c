"""The model manifest (``manifest.json`` beside the weights): the one reader of it, torch-free.

The manifest is the single source of the model geometry (spacings, patch sizes, channels) and of the
defaults that come with the weights (the detector threshold chosen on validation data). Every front
end (CLI, Slicer panel, evaluation) takes them from the manifest of the weights actually used, through
:class:`ModelManifest`, so that retrained weights bring their own geometry and threshold. No torch
here: the Slicer panel reads it at start-up, before PyTorch is installed.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
COARSE_CONTEXT = 48  #: DeepMedic's receptive field minus one (voxels) when a manifest does not say
DEFAULT_COARSE_FILE = "coarse_deepmedic.pt"
DEFAULT_FINE_FILE = "fine_se_unet.pt"
DEFAULT_DETECTION_THRESHOLD = 0.5  #: used only when a manifest has no validated threshold
#: optional entry: the false-positive reduction's classifier (stages/fp_reduction.py), a sha256-checked file
FINDING_CLASSIFIER = "finding_classifier"

HOW_TO_FIX = "run `aneurysmseg export` to write the weights, or reinstall AneurysmSeg to restore the bundled ones"


#: sha256 of the bundled manifest and weights as `aneurysmseg export` wrote them, kept inside the
#: package: the bundled folder is checked against this record, not only against its own manifest (which
#: whoever changes the weights can rewrite too). See docs/model-integrity.md.
RELEASE_RECORD = Path(__file__).resolve().with_name("bundled_weights.py")  # a .py: installed with the code


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


def _spacing3(sp: Any) -> tuple[float, float, float]:
    if isinstance(sp, (int, float)):
        return (float(sp),) * 3
    vals = tuple(float(s) for s in sp)
    if len(vals) != 3:
        raise ModelError(f"manifest spacing_mm {sp!r} must be a number or three numbers")
    return vals  # type: ignore[return-value]


def release_record(path: Path | None = None) -> dict[str, str]:
    """File name -> sha256 of the bundled export (manifest.json and the weights); {} when not recorded."""
    try:
        tree = ast.parse((path or RELEASE_RECORD).read_text(encoding="utf-8"))
        files = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                     and any(isinstance(t, ast.Name) and t.id == "FILES" for t in node.targets))
    except (OSError, ValueError, SyntaxError, StopIteration):
        return {}
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def release_record_text(model_dir: str | os.PathLike) -> str:
    """The record of an exported folder (what :data:`RELEASE_RECORD` holds for the bundled weights)."""
    folder = Path(model_dir)
    data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    names = [MANIFEST_NAME] + [str(data[kind]["file"]) for kind in ("coarse", "fine", "vessels", FINDING_CLASSIFIER)
                               if kind in data]
    lines = "".join(f"    {name!r}: {sha256_file(folder / name)!r},\n" for name in names)
    return ('"""sha256 of the bundled weights as `aneurysmseg export` wrote them into Resources/Models.\n\n'
            "Written by the export, kept inside the package so that the bundled folder is checked against\n"
            'it rather than against itself (docs/model-integrity.md). Do not edit by hand.\n"""\n\n'
            f"FILES = {{\n{lines}}}\n")


@dataclass(frozen=True)
class ModelManifest:
    """A checked manifest and the folder it describes; dict-style access reads the raw JSON.

    ``release`` is True when the manifest is the one recorded in the package for the bundled weights
    (the bundled folder must be; another folder may be a copy of it)."""

    data: dict[str, Any]
    model_dir: Path
    release: bool = False

    @classmethod
    def read(cls, model_dir: str | os.PathLike | None = None) -> "ModelManifest":
        """Parse and check ``manifest.json`` in ``model_dir`` (default: the bundled weights); ModelError
        naming the problem and the fix when it is missing or malformed."""
        folder = Path(model_dir) if model_dir is not None else default_model_dir()
        if not folder.is_dir():
            raise ModelError(f"model folder {folder} does not exist: {HOW_TO_FIX}")
        path = folder / MANIFEST_NAME
        if not path.is_file():
            raise ModelError(f"model manifest {path} is missing: {HOW_TO_FIX}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"model manifest {path} cannot be read ({exc}): {HOW_TO_FIX}") from exc
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            found = data.get("format_version") if isinstance(data, dict) else None
            raise ModelError(f"model manifest {path} has format_version {found!r}, "
                             f"this AneurysmSeg reads {FORMAT_VERSION}: {HOW_TO_FIX}")
        for kind in ("coarse", "fine"):
            entry = data.get(kind)
            missing = [k for k in ("file", "sha256", "spacing_mm", "in_channels")
                       if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise ModelError(f"model manifest {path}: '{kind}' lacks {', '.join(missing)}: {HOW_TO_FIX}")
        vessels = data.get("vessels")  # optional: the learnt artery tree (manifests before it have none)
        if vessels is not None:
            missing = [k for k in ("file", "sha256", "spacing_mm", "in_channels")
                       if not isinstance(vessels, dict) or k not in vessels]
            if missing:
                raise ModelError(f"model manifest {path}: 'vessels' lacks {', '.join(missing)}: {HOW_TO_FIX}")
        screen = data.get(FINDING_CLASSIFIER)  # optional: manifests before it keep every finding
        if screen is not None:
            missing = [k for k in ("file", "sha256", "score_threshold") if not isinstance(screen, dict) or k not in screen]
            if missing:
                raise ModelError(f"model manifest {path}: '{FINDING_CLASSIFIER}' lacks {', '.join(missing)}: {HOW_TO_FIX}")
        record = release_record()
        release = bool(record) and sha256_file(path) == record.get(MANIFEST_NAME)
        if not release and folder.resolve() == default_model_dir().resolve():
            raise ModelError(f"the bundled model manifest {path} is not the one exported with this AneurysmSeg "
                             f"(its sha256 differs from {RELEASE_RECORD.name} in the package): the bundled weights "
                             f"were modified; {HOW_TO_FIX}")
        return cls(data, folder, release)

    # raw access, for what has no property (training description, sha256, file names)
    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def coarse_spacing(self) -> tuple[float, float, float]:
        """Coarse-stage spacing (x, y, z) in mm."""
        return _spacing3(self.data["coarse"]["spacing_mm"])

    @property
    def fine_spacing(self) -> tuple[float, float, float]:
        """Fine-stage spacing (x, y, z) in mm."""
        return _spacing3(self.data["fine"]["spacing_mm"])

    @property
    def detection_threshold(self) -> float:
        """The detector's probability threshold chosen when the weights were exported."""
        return float(self.data["coarse"].get("probability_threshold", DEFAULT_DETECTION_THRESHOLD))

    @property
    def voi_size(self) -> int:
        return int(self.data["fine"].get("voi_size", 64))

    @property
    def fine_channels(self) -> int:
        return int(self.data["fine"]["in_channels"])

    @property
    def coarse_channels(self) -> int:
        return int(self.data["coarse"]["in_channels"])

    @property
    def coarse_context(self) -> int:
        return int(self.data["coarse"].get("context", COARSE_CONTEXT))

    @property
    def coarse_segment_out(self) -> int:
        """Output tile size (a multiple of 3) for dense coarse inference; input is this + context."""
        return int(self.data["coarse"].get("segment_out", 45))

    @property
    def vessels(self) -> dict[str, Any] | None:
        """The learnt artery tree's entry (file, sha256, threshold, ...); None when the weights have none."""
        entry = self.data.get("vessels")
        return dict(entry) if isinstance(entry, dict) else None

    @property
    def vessel_threshold(self) -> float:
        """The vessel probability above which a voxel is artery (0.5 when the entry does not say)."""
        return float((self.vessels or {}).get("probability_threshold", 0.5))

    @property
    def finding_classifier(self) -> dict[str, Any] | None:
        """The false-positive reduction's entry (file, sha256, score_threshold); None: keep every finding."""
        entry = self.data.get(FINDING_CLASSIFIER)
        return dict(entry) if isinstance(entry, dict) else None

    def summary(self) -> dict[str, Any]:
        """What a report says about the weights: files, sha256, geometry, how they were trained."""
        keep = ("file", "sha256", "spacing_mm", "in_channels", "segment_out", "context", "voi_size")
        training = self.data.get("training", {})
        return {
            "folder": str(self.model_dir),
            "created_utc": self.data.get("created_utc"),
            "coarse": {k: self.data["coarse"][k] for k in keep if k in self.data["coarse"]},
            "fine": {k: self.data["fine"][k] for k in keep if k in self.data["fine"]},
            **({"vessels": {k: self.data["vessels"][k] for k in keep + ("probability_threshold",)
                            if k in self.data["vessels"]}} if self.vessels else {}),
            **({FINDING_CLASSIFIER: {k: self.data[FINDING_CLASSIFIER][k] for k in ("file", "sha256", "score_threshold")}}
               if self.finding_classifier else {}),
            "checked_against": "the checksums recorded in the AneurysmSeg package (its bundled weights)"
            if self.release else "the folder's own manifest.json (weights exported outside this release)",
            "training": training.get("description", training) if isinstance(training, dict) else training,
        }
