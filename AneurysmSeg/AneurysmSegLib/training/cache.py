"""Per-case cache: the expensive part (reading, preprocessing, resampling) done once per case.

A case becomes a folder ``<cache>/<name>-<fingerprint>/`` holding

* ``coarse.npz``: the z-scored coarse-grid image (float16), the adaptively dilated target and the
  candidate centres for foreground/background segments;
* ``fine_img.npy`` (K, 2, B, B, B) float16 and ``fine_lbl.npy`` (K, B, B, B) uint8: large VOIs made
  by ``preprocess.voi_channels`` (exactly the inference inputs) around each aneurysm and around
  background vessel points; memory-mapped when training;
* ``meta.json``: aneurysm centres (LPS) and radii, VOI kinds, geometry and the cache version.

Several training processes may share a cache: a case is claimed with an exclusive lock file and
written to a temporary folder that is renamed into place, so nothing half-written is ever read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage

from ..core.geometry import Geometry
from .data import CaseRef, training_labels
from .sampling import CoarseVolume, FineVOIs, adaptive_dilation, hard_places

CACHE_VERSION = 4
FINE_BIG = 88  #: cached VOI edge: 64 + 2 x 12 voxels of jitter (4.8 mm per axis at 0.4 mm)
BG_VOIS_WITH_ANEURYSM = 2
BG_VOIS_NORMAL = 3
BG_MIN_DISTANCE_MM = 12.0
HEAD_SUBSAMPLE = 40000


def preprocess_version() -> str:
    """The preprocessing's explicit version: a cache made by another preprocessing is never reused
    (the network must see exactly what inference will feed it), and a comment edit keeps the cache."""
    from ..preprocess import PREPROCESS_VERSION

    return str(PREPROCESS_VERSION)


def case_dir(ref: CaseRef, cache: Path) -> Path:
    """Keyed by folder name + fingerprint (resolved path, sizes, mtimes) + cache and preprocessing
    versions, not by the display name, so the same case is found however the folders were listed."""
    return Path(cache) / f"{ref.folder.name}-{ref.fingerprint()}-v{CACHE_VERSION}-p{preprocess_version()}"


def _case_rng(ref: CaseRef) -> np.random.Generator:
    return np.random.default_rng(int(ref.fingerprint(), 16) % (2**63))


def _components(mask: np.ndarray, geom: Geometry) -> list[tuple[np.ndarray, float]]:
    """(centre LPS, max radius mm) of each 26-connected component, sorted by position."""
    sp = np.asarray(geom.spacing_zyx)
    lab, _ = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 3))
    out = []
    for i, box in enumerate(ndimage.find_objects(lab), start=1):
        idx = np.argwhere(lab[box] == i) + [s.start for s in box]
        c = idx.mean(axis=0)
        r = float(np.sqrt((((idx - c) * sp) ** 2).sum(axis=1)).max() + 0.5 * sp.max())
        out.append((geom.index_to_lps(c[::-1]), r))
    return out


def background_centres(arteries: np.ndarray, geom: Geometry, avoid_lps: Sequence[np.ndarray], n: int,
                       rng: np.random.Generator, min_distance_mm: float = BG_MIN_DISTANCE_MM) -> list[np.ndarray]:
    """``n`` LPS points on the coarse artery mask, favouring bifurcations and bends (many vessel
    voxels nearby), at least ``min_distance_mm`` from every aneurysm centre."""
    if not arteries.any() or n <= 0:
        return []
    density = ndimage.uniform_filter(arteries.astype(np.float32), size=7)
    idx = np.flatnonzero(arteries)
    w = density.ravel()[idx].astype(np.float64) ** 2
    pts = geom.index_to_lps(np.stack(np.unravel_index(idx, arteries.shape), axis=1)[:, ::-1].astype(float))
    for a in avoid_lps:
        w[np.linalg.norm(pts - np.asarray(a)[None], axis=1) < min_distance_mm] = 0.0
    out: list[np.ndarray] = []
    for _ in range(n):
        if w.sum() <= 0:
            break
        j = int(rng.choice(len(idx), p=w / w.sum()))
        out.append(pts[j])
        w[np.linalg.norm(pts - pts[j][None], axis=1) < min_distance_mm] = 0.0  # spread them out
    return out


def read_labels(path: Path) -> np.ndarray:
    """Label image as an array (not through io.read_image: an all-zero label of a normal case is valid)."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def build_case(ref: CaseRef, out_dir: Path, fine_big: int = FINE_BIG) -> None:
    """Preprocess one case and write its cache files into ``out_dir`` (which must exist)."""
    from .. import preprocess as pp
    from ..io import images as io

    image = io.read_image(ref.image_path)
    labels = read_labels(ref.label_path)
    if labels.shape != image.array.shape:
        from ..core.errors import InputError

        raise InputError(f"{ref.name}: {ref.label_path.name} has shape {labels.shape}, the image {image.array.shape}")
    mask = training_labels(np.rint(labels).astype(np.int16))
    pre = pp.preprocess(image)
    cg, cshape = pre.coarse.geometry, pre.coarse.array.shape
    rng = _case_rng(ref)

    # ---- coarse: adaptive dilation on the native grid (physical radii), then onto the coarse grid
    dil = adaptive_dilation(mask, image.geometry.spacing_zyx)
    target = pp.resample(dil.astype(np.float32), image.geometry, cg, cshape, linear=True) > 0.5
    comps = _components(mask, image.geometry)
    for centre, _ in comps:  # never lose an aneurysm to resampling
        ijk = np.rint(cg.lps_to_index(centre)).astype(int)[::-1]
        if np.all(ijk >= 0) and np.all(ijk < np.array(cshape)):
            target[tuple(ijk)] = True
    head, arteries = pre.coarse_head, pre.coarse_arteries
    near_art = ndimage.binary_dilation(arteries, iterations=2)
    bright = (pre.coarse.array > pre.artery_threshold) & head & ~near_art & ~target
    head_idx = np.flatnonzero(head & ~target)
    if len(head_idx) > HEAD_SUBSAMPLE:
        head_idx = np.sort(rng.choice(head_idx, HEAD_SUBSAMPLE, replace=False))
    z = pre.coarse.array
    np.savez(out_dir / "coarse.npz", image=z.astype(np.float16), target=target.astype(np.uint8),
             fg=np.flatnonzero(target).astype(np.int64), vessel=np.flatnonzero(arteries & ~target).astype(np.int64),
             bright=np.flatnonzero(bright).astype(np.int64), head=head_idx.astype(np.int64),
             fill=np.float32(np.percentile(z, 0.5)), arteries=np.packbits(arteries.ravel()),
             head_mask=np.packbits(head.ravel()), shape=np.array(cshape, dtype=np.int64))

    # ---- fine: large VOIs around aneurysms and background vessel points
    centres = [c for c, _ in comps]
    n_bg = BG_VOIS_WITH_ANEURYSM if comps else BG_VOIS_NORMAL
    bgs = background_centres(arteries, cg, centres, n_bg, rng)
    mask_f = mask.astype(np.float32)
    imgs, lbls, kinds = [], [], []
    for kind, c in [(0, c) for c in centres] + [(1, c) for c in bgs]:
        x, g = pp.voi_channels(pre, c, size=fine_big, channels=2)
        y = pp.resample(mask_f, image.geometry, g, (fine_big,) * 3, linear=True) > 0.5
        imgs.append(x.astype(np.float16))
        lbls.append(y.astype(np.uint8))
        kinds.append(kind)
    k = len(kinds)
    np.save(out_dir / "fine_img.npy", np.stack(imgs) if k else np.zeros((0, 2) + (fine_big,) * 3, np.float16))
    np.save(out_dir / "fine_lbl.npy", np.stack(lbls) if k else np.zeros((0,) + (fine_big,) * 3, np.uint8))
    meta = {
        "version": CACHE_VERSION, "name": ref.name, "folder": str(ref.folder),
        "aneurysms": [{"centre_lps": [float(v) for v in c], "radius_mm": r} for c, r in comps],
        "background_lps": [[float(v) for v in c] for c in bgs],
        "kinds": kinds, "fine_big": fine_big,
        "coarse_geometry": asdict(cg), "image_geometry": asdict(image.geometry),
        "artery_threshold": pre.artery_threshold, "preprocess_version": preprocess_version(),
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))


def ensure_cached(refs: Sequence[CaseRef], cache: str | Path, fine_big: int = FINE_BIG,
                  progress: Callable[[int, int, str], None] | None = None, stale_s: float = 1800.0,
                  any_preprocess: bool = False) -> list[Path]:
    """Build whatever is missing; returns the case cache folders in the order of ``refs``.

    ``any_preprocess`` reuses a case cached by another version of preprocess.py (the newest such
    folder) instead of rebuilding it: for continuing work while preprocessing evolves; the version
    used is in each folder's meta.json.

    Cases claimed by another process (lock file) are skipped and waited for, so two trainings
    started together split the work instead of doing it twice.
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    dirs = [case_dir(r, cache) for r in refs]
    if any_preprocess:
        dirs = [_any_version(d) for d in dirs]
    pending = [i for i, d in enumerate(dirs) if not (d / "meta.json").is_file()]
    done = len(refs) - len(pending)
    while pending:
        progressed = False
        for i in list(pending):
            d = dirs[i]
            if (d / "meta.json").is_file():
                pending.remove(i)
                done += 1
                progressed = True
                continue
            lock = d.with_name(d.name + ".lock")
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    if time.time() - lock.stat().st_mtime > stale_s:
                        lock.unlink()
                except FileNotFoundError:
                    pass
                continue
            try:
                tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".tmp-"))
                try:
                    build_case(refs[i], tmp, fine_big)
                    if d.exists():
                        shutil.rmtree(d)
                    os.replace(tmp, d)
                finally:
                    if tmp.exists():
                        shutil.rmtree(tmp, ignore_errors=True)
            finally:
                os.close(fd)
                lock.unlink(missing_ok=True)
            pending.remove(i)
            done += 1
            progressed = True
            if progress is not None:
                progress(done, len(refs), refs[i].name)
        if pending and not progressed:
            time.sleep(1.0)
    return dirs


def _memmapped(d: Path, z: Any, key: str) -> np.ndarray:
    """``coarse_<key>.npy`` beside the npz, memory-mapped: a hundred coarse volumes would otherwise
    hold gigabytes of RAM while each step reads a few 57^3 segments."""
    path = d / f"coarse_{key}.npy"
    if not path.is_file():
        fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{key}", suffix=".npy")
        os.close(fd)
        np.save(tmp, z[key])
        os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def _any_version(d: Path) -> Path:
    """``d`` if complete, else the newest complete folder of the same case made by another
    preprocessing version, else ``d`` (to be built)."""
    if (d / "meta.json").is_file():
        return d
    stem = d.name.rsplit("-p", 1)[0]
    others = [p for p in d.parent.glob(stem + "-p*") if p.is_dir() and (p / "meta.json").is_file()]
    return max(others, key=lambda p: (p / "meta.json").stat().st_mtime) if others else d


def load_coarse(d: Path, mmap: bool = True) -> CoarseVolume:
    z = np.load(d / "coarse.npz")
    meta = json.loads((d / "meta.json").read_text())
    image = _memmapped(d, z, "image") if mmap else z["image"]
    target = _memmapped(d, z, "target") if mmap else z["target"]
    arteries, _ = load_masks(d)
    return CoarseVolume(name=meta["name"], image=image, target=target, fg=z["fg"], vessel=z["vessel"],
                        bright=z["bright"], head=z["head"], fill=float(z["fill"]),
                        hard=hard_places(arteries, z["vessel"]))


def load_fine(d: Path) -> FineVOIs:
    meta = json.loads((d / "meta.json").read_text())
    labels = np.load(d / "fine_lbl.npy", mmap_mode="r")
    kinds = np.asarray(meta["kinds"], dtype=int)
    from ..preprocess.grids import FINE_SPACING_MM

    spacing = float(meta.get("fine_spacing_mm", FINE_SPACING_MM))
    diameters = np.array([_label_diameter(labels[k], spacing) if kind == 0 else np.nan
                          for k, kind in enumerate(kinds)], dtype=float)
    return FineVOIs(name=meta["name"], images=np.load(d / "fine_img.npy", mmap_mode="r"), labels=labels,
                    kinds=kinds, diameters=diameters)


def _label_diameter(label: np.ndarray, spacing_mm: float) -> float:
    """Equivalent diameter (mm) of the aneurysm at the centre of an aneurysm VOI's label."""
    lab, n = ndimage.label(np.asarray(label) > 0, structure=ndimage.generate_binary_structure(3, 3))
    if n == 0:
        return float("nan")
    centre = tuple(s // 2 for s in lab.shape)
    keep = lab[centre]
    if keep == 0:  # the centre of mass of a curved sac may fall outside it: take the largest component
        keep = int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
    volume = float((lab == keep).sum()) * spacing_mm ** 3
    return float((6.0 * volume / np.pi) ** (1.0 / 3.0))


def load_masks(d: Path) -> tuple[np.ndarray, np.ndarray]:
    """(arteries, head) bool masks on the coarse grid, as preprocess made them."""
    z = np.load(d / "coarse.npz")
    shape = tuple(int(v) for v in z["shape"])
    n = int(np.prod(shape))
    return (np.unpackbits(z["arteries"])[:n].reshape(shape).astype(bool),
            np.unpackbits(z["head_mask"])[:n].reshape(shape).astype(bool))


def load_meta(d: Path) -> dict:
    return json.loads((d / "meta.json").read_text())
