"""ADAM-layout cases: finding them on disk, reading labels (label 2 -> background) and k-fold splits.

A case is a folder holding ``orig/TOF.nii.gz`` and ``aneurysms.nii.gz`` (``location.txt`` optional).
``--data`` may name a case folder itself or a folder holding many (the ADAM release, a phantom set);
both are accepted so that the same command trains on phantoms and on real data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.errors import InputError

IMAGE_RELPATH = Path("orig") / "TOF.nii.gz"
LABEL_NAME = "aneurysms.nii.gz"
LOCATION_NAME = "location.txt"
VESSELS_NAME = "vessels.nii.gz"  # phantoms: the arterial tree (real data sets have no such file)
VISIBLE_VESSELS_NAME = "vessels_visible.nii.gz"  # phantoms: the part of the tree that renders above the noise
TREATED_LABEL = 2


@dataclass(frozen=True)
class CaseRef:
    """Paths of one ADAM-layout case; ``name`` is unique within a dataset (folder name)."""

    name: str
    folder: Path

    @property
    def image_path(self) -> Path:
        return self.folder / IMAGE_RELPATH

    @property
    def label_path(self) -> Path:
        return self.folder / LABEL_NAME

    @property
    def location_path(self) -> Path:
        return self.folder / LOCATION_NAME

    @property
    def vessels_path(self) -> Path:
        return self.folder / VESSELS_NAME

    @property
    def visible_vessels_path(self) -> Path:
        return self.folder / VISIBLE_VESSELS_NAME

    def fingerprint(self) -> str:
        """Stable key for the cache: path + size + mtime of the image and label files."""
        parts = [str(self.folder.resolve())]
        for p in (self.image_path, self.label_path):
            st = p.stat()
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def is_case(folder: Path) -> bool:
    return (folder / IMAGE_RELPATH).is_file() and (folder / LABEL_NAME).is_file()


def find_cases(folders: Sequence[str | Path], max_depth: int = 3) -> list[CaseRef]:
    """Every case under the given folders, sorted by path so the order never depends on the disk.

    Raises InputError when a folder does not exist or holds no case, or when two cases share a name
    (their names identify them in splits, caches and tables).
    """
    found: list[CaseRef] = []
    for f in folders:
        root = Path(f)
        if not root.is_dir():
            raise InputError(f"data folder {root} does not exist")
        cases = _walk(root, max_depth)
        if not cases:
            raise InputError(f"{root} holds no ADAM-layout case (a folder with {IMAGE_RELPATH} and {LABEL_NAME})")
        found.extend(cases)
    names = [c.name for c in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        # disambiguate with the parent folder name rather than refusing (two phantom sets both have case_000)
        found = [CaseRef(f"{c.folder.parent.name}/{c.folder.name}", c.folder) for c in found]
        names = [c.name for c in found]
        if len(set(names)) != len(names):
            raise InputError(f"case names are not unique: {dupes[:5]}")
    return found


def _walk(folder: Path, depth: int) -> list[CaseRef]:
    if is_case(folder):
        return [CaseRef(folder.name, folder)]
    if depth <= 0:
        return []
    out: list[CaseRef] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out.extend(_walk(sub, depth - 1))
    return out


def training_labels(labels: np.ndarray) -> np.ndarray:
    """Untreated aneurysm mask (label 1) as bool; treated aneurysms (label 2) become background."""
    labels = np.asarray(labels)
    return (labels > 0) & (labels != TREATED_LABEL)


def kfold_split(names: Sequence[str], folds: int, fold: int, seed: int) -> tuple[list[str], list[str]]:
    """(train, validation) case names of fold ``fold`` of a seeded k-fold split by case.

    The permutation depends only on the sorted names and the seed, so it is identical across
    machines and runs; the folds are disjoint and together cover every case. ``folds == 1`` puts
    every case in training and none in validation (use a separate ``--val`` set then).
    """
    if folds < 1:
        raise InputError("--folds must be >= 1")
    if not 0 <= fold < folds:
        raise InputError(f"--fold must be in 0..{folds - 1}")
    ordered = sorted(names)
    if folds == 1:
        return ordered, []
    if len(ordered) < folds:
        raise InputError(f"{len(ordered)} cases cannot be split into {folds} folds")
    perm = np.random.default_rng(np.random.SeedSequence([int(seed), 0xF01D])).permutation(len(ordered))
    parts = np.array_split(perm, folds)
    val_idx = set(int(i) for i in parts[fold])
    train = [n for i, n in enumerate(ordered) if i not in val_idx]
    val = [n for i, n in enumerate(ordered) if i in val_idx]
    return train, val


def read_vessels(ref: CaseRef, visible: bool = True) -> np.ndarray | None:
    """The case's vessel label as a bool ``[z, y, x]`` array: the visible tree (what artery extraction
    can be asked to find) or, with ``visible=False``, the whole arterial tree; None when the case has
    no such file (real data, phantoms written before the visible label existed)."""
    import SimpleITK as sitk

    path = ref.visible_vessels_path if visible else ref.vessels_path
    if not path.is_file():
        return None
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0
