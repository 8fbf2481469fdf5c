"""``aneurysmseg segment INPUT -o OUTPUT``: the command-line front end of the pipeline.

Contract (scripts depend on it)::

    aneurysmseg segment INPUT -o OUTPUT [--seeds FILE] [--seeds-out FILE] [--report FILE.json]
                        [--stl-dir DIR] [--stl-coords LPS|RAS] [--binary] [--device auto|cpu|cuda] [--threads N]

plus ``--no-detect`` (use only the given seeds: the user's correction), ``--detection-threshold`` and
``--models DIR``. INPUT is a NIfTI/NRRD/MetaImage file or a DICOM series folder; OUTPUT the label
image in exactly the input geometry. A folder of cases (ADAM layout ``<case>/orig/TOF.nii.gz`` or
plain image files) as INPUT with a folder as OUTPUT runs a batch. Everything the user gave is checked
(arguments, output locations, seeds, image, models) before the long work, so bad input writes
nothing; every file is written atomically. Seeds files are JSON in physical millimetres, Slicer
markups written in LPS (see ``seeds_io``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import AneurysmSegError, InputError, OutputError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, metavar="INPUT",
                   help="TOF-MRA: NIfTI, NRRD or MHA file, DICOM series folder, or a folder of cases (batch)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTPUT",
                   help="label image (0 background, 1..N per aneurysm) in the input geometry; a folder in batch mode")
    p.add_argument("--seeds", type=Path, metavar="FILE",
                   help="VOI seeds (Slicer .mrk.json in LPS or RAS, or {'coordinate_system', 'seeds'} JSON); "
                        "added to the detected ones, or used alone with --no-detect")
    p.add_argument("--seeds-out", type=Path, metavar="FILE",
                   help="write the seeds used (detected and given) as Slicer markups .mrk.json, LPS")
    p.add_argument("--report", type=Path, metavar="FILE.json",
                   help="JSON report: aneurysms (volume, max diameter, centroid LPS/RAS/voxel, confidence), seeds, timings")
    p.add_argument("--stl-dir", type=Path, metavar="DIR", help="write one closed STL surface per aneurysm here")
    p.add_argument("--stl-coords", choices=("LPS", "RAS"), default="LPS", type=str.upper,
                   help="coordinate system of the STL vertices (default LPS, like Slicer's exports)")
    p.add_argument("--binary", action="store_true", help="write every aneurysm as label 1")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", type=str.lower,
                   help="where the networks run (default: a CUDA GPU when there is one)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch and SimpleITK")
    p.add_argument("--no-detect", action="store_true",
                   help="skip the detector: segment only around the --seeds (fine stage only)")
    p.add_argument("--detection-threshold", type=float, default=None, metavar="P",
                   help="coarse probability above which a region becomes a seed "
                        "(default: the threshold in the models' manifest)")
    p.add_argument("--models", type=Path, metavar="DIR", help="model folder with manifest.json (default: bundled weights)")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="network arithmetic: bfloat16 is about 2x faster on CPUs with AVX512-BF16/AMX and on GPUs")


# ------------------------------------------------------------------------------------ inputs


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def batch_cases(folder: Path) -> list[tuple[str, Path]]:
    """Cases of a batch folder: ADAM subfolders (``<case>/orig/TOF.nii.gz``) and plain image files.

    Empty for a folder that holds neither (for instance a DICOM series folder).
    """
    cases: list[tuple[str, Path]] = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            tof = entry / "orig" / "TOF.nii.gz"
            if tof.is_file():
                cases.append((entry.name, tof))
        elif is_image_file(entry):
            name = entry.name
            for suffix in IMAGE_SUFFIXES:
                if name.lower().endswith(suffix):
                    name = name[: -len(suffix)]
                    break
            cases.append((name, entry))
    return cases


@dataclass
class Outputs:
    """Where one case's results go (None: not asked for)."""

    labels: Path
    seeds: Path | None = None
    report: Path | None = None
    stl_dir: Path | None = None


def check_outputs(out: Outputs) -> None:
    """Raise :class:`OutputError` before any work when an output location cannot be written."""
    from ..io.images import check_writable
    from ..io.seeds import check_json_writable
    from ..io.surfaces import check_folder_writable

    check_writable(out.labels)
    if out.seeds is not None:
        if not out.seeds.name.lower().endswith(".json"):
            raise OutputError(f"{out.seeds.name}: seeds are written as JSON; use a name ending in .mrk.json")
        check_json_writable(out.seeds)
    if out.report is not None:
        if not out.report.name.lower().endswith(".json"):
            raise OutputError(f"{out.report.name}: the report is JSON; use a name ending in .json")
        check_json_writable(out.report)
    if out.stl_dir is not None:
        check_folder_writable(out.stl_dir)
    paths = [p for p in (out.labels, out.seeds, out.report) if p is not None]
    if len({p.resolve() for p in paths}) != len(paths):
        raise OutputError("the label image, seeds and report need different file names")


# ----------------------------------------------------------------------------------- outputs


def model_summary(models: Any) -> dict[str, Any]:
    """What the report says about the models: the manifest's summary and the device they ran on."""
    summary = models.manifest.summary()
    return {"folder": summary.pop("folder"), "device": str(models.device), **summary}


def build_report(result: Any, input_path: Path | str, models: Any) -> dict[str, Any]:
    from .. import __version__

    report = result.to_report()
    report["input"] = str(input_path)
    report["models"] = model_summary(models)
    report["aneurysmseg_version"] = __version__
    return report


def write_results(result: Any, out: Outputs, *, input_path: Path | str, models: Any, binary: bool = False,
                  stl_coords: str = "LPS") -> list[tuple[str, Path]]:
    """Write every requested output of one case atomically; returns (what, path) pairs."""
    from ..io.atomic import write_text_atomic
    from ..io.images import write_label
    from ..io.seeds import write_seeds
    from ..io.surfaces import write_stl

    written: list[tuple[str, Path]] = []
    labels = result.binary() if binary else result.labels
    written.append(("labels", write_label(labels, result.geometry, out.labels)))
    if out.seeds is not None:
        written.append(("seeds", write_seeds(result.seeds, out.seeds, "LPS")))
    if out.report is not None:
        out.report.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(build_report(result, input_path, models), indent=2) + "\n"
        write_text_atomic(out.report, text)
        written.append(("report", out.report))
    if out.stl_dir is not None:
        for path in write_stl(result.labels, result.geometry, out.stl_dir, stl_coords):
            written.append(("surface", path))
    return written


def describe(result: Any) -> list[str]:
    """Human summary lines: one per aneurysm, positions in RAS (what Slicer shows)."""
    lines = [f"{len(result.aneurysms)} aneurysm(s) from {len(result.seeds)} VOI seed(s)"]
    for a in result.aneurysms:
        r = ", ".join(f"{v:.1f}" for v in a.centroid_ras)
        lines.append(f"  {a.id}: volume {a.volume_mm3:.1f} mm3, max diameter {a.max_diameter_mm:.1f} mm, "
                     f"centroid RAS ({r}) mm, confidence {a.confidence:.2f}")
    return lines


# ---------------------------------------------------------------------------------- progress


class ProgressPrinter:
    """A tqdm bar on a terminal; "progress: 0.42 stage" lines otherwise (read by the Slicer module)."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = None
        self.last = -1

    def __call__(self, fraction: float, stage: str) -> None:
        percent = int(round(100 * fraction))
        if self.tty:
            from tqdm import tqdm

            if self.bar is None:
                self.bar = tqdm(total=100, file=self.stream, unit="%", leave=False)
            self.bar.set_description(stage, refresh=False)
            self.bar.update(percent - self.bar.n)
        elif percent != self.last:
            print(f"progress: {fraction:.2f} {stage}", file=self.stream, flush=True)
        self.last = percent

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# --------------------------------------------------------------------------------------- run


def configure_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise InputError("--threads must be at least 1")
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def run(args: argparse.Namespace) -> int:
    if not args.input.exists():
        raise InputError(f"{args.input} does not exist")
    if args.detection_threshold is not None and not 0.0 < args.detection_threshold < 1.0:
        raise InputError("--detection-threshold must lie between 0 and 1")
    if args.no_detect and args.seeds is None:
        raise InputError("--no-detect needs --seeds: without the detector only given seeds are segmented")
    cases = batch_cases(args.input) if args.input.is_dir() else []
    if cases:
        return run_batch(args, cases)
    return run_single(args)


def run_single(args: argparse.Namespace) -> int:
    from ..core.models import load_models
    from ..core.pipeline import segment
    from ..io.images import read_image
    from ..io.seeds import read_seeds

    out = Outputs(args.output, args.seeds_out, args.report, args.stl_dir)
    check_outputs(out)
    seeds = read_seeds(args.seeds) if args.seeds is not None else None
    image = read_image(args.input)
    configure_threads(args.threads)
    models = load_models(args.models, device=args.device)
    progress = ProgressPrinter()
    try:
        result = segment(image, models, seeds=seeds, detect=not args.no_detect,
                         detection_threshold=args.detection_threshold, progress=progress, precision=args.precision)
    finally:
        progress.close()
    assert result is not None  # nothing here cancels
    written = write_results(result, out, input_path=args.input, models=models, binary=args.binary,
                            stl_coords=args.stl_coords)
    for line in describe(result):
        print(line)
    for what, path in written:
        print(f"{what}: {path}")
    print(f"time: {result.timings.get('total', 0.0):.1f} s")
    return 0


def case_outputs(args: argparse.Namespace, name: str) -> Outputs:
    """Per-case outputs of a batch: OUTPUT/<case>.nii.gz, OUTPUT/reports/, OUTPUT/seeds/, STL-DIR/<case>/."""
    root: Path = args.output
    return Outputs(labels=root / f"{name}.nii.gz",
                   seeds=root / "seeds" / f"{name}.mrk.json" if args.seeds_out is not None else None,
                   report=root / "reports" / f"{name}.json" if args.report is not None else None,
                   stl_dir=args.stl_dir / name if args.stl_dir is not None else None)


def run_batch(args: argparse.Namespace, cases: list[tuple[str, Path]]) -> int:
    """Segment every case; a failing case is reported and the others still run."""
    from tqdm import tqdm

    from ..core.models import load_models
    from ..core.pipeline import segment
    from ..io.atomic import write_text_atomic
    from ..io.images import read_image
    from ..io.seeds import check_json_writable
    from ..io.surfaces import check_folder_writable

    if args.seeds is not None:
        raise InputError("--seeds names positions in one scan; it cannot be used with a folder of cases")
    if args.output.name.lower().endswith(IMAGE_SUFFIXES):
        raise OutputError(f"{args.input} is a folder of {len(cases)} cases: OUTPUT must be a folder, not {args.output.name}")
    check_folder_writable(args.output)
    if args.stl_dir is not None:
        check_folder_writable(args.stl_dir)
    if args.report is not None:
        check_json_writable(args.report)
    configure_threads(args.threads)
    models = load_models(args.models, device=args.device)

    summary: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    bar = tqdm(cases, desc="cases", unit="case", file=sys.stderr)
    for name, path in bar:
        bar.set_postfix_str(name)
        try:
            out = case_outputs(args, name)
            check_outputs(out)
            image = read_image(path)
            result = segment(image, models, detect=True, detection_threshold=args.detection_threshold,
                             precision=args.precision)
            assert result is not None
            write_results(result, out, input_path=path, models=models, binary=args.binary, stl_coords=args.stl_coords)
            summary.append({"case": name, "input": str(path), "status": "ok", "labels": str(out.labels),
                            "aneurysm_count": len(result.aneurysms),
                            "seconds": round(result.timings.get("total", 0.0), 2)})
        except (AneurysmSegError, OSError, RuntimeError, ValueError, MemoryError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            failed.append((name, reason))
            summary.append({"case": name, "input": str(path), "status": "failed", "reason": reason})
            tqdm.write(f"{name}: failed: {reason}", file=sys.stderr)
    bar.close()
    ok = len(cases) - len(failed)
    if args.report is not None:
        write_text_atomic(args.report, json.dumps({"input": str(args.input), "cases": summary}, indent=2) + "\n")
    print(f"{len(cases)} case(s): {ok} segmented, {len(failed)} failed; labels in {args.output}")
    for name, reason in failed:
        print(f"  failed {name}: {reason}")
    return 1 if failed else 0
