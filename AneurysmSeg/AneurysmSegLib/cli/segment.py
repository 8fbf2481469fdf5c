"""``aneurysmseg segment INPUT -o OUTPUT``: the command-line front end of the pipeline.

Contract (scripts depend on it)::

    aneurysmseg segment INPUT -o OUTPUT [--seeds FILE] [--seeds-out FILE] [--report FILE.json]
                        [--stl-dir DIR] [--stl-coords LPS|RAS] [--binary] [--device auto|cpu|cuda] [--threads N]
                        [--format labels|seg-nrrd|dicom-seg] [--seg-nrrd F] [--dicom-seg F] [--dicom-sr F]
                        [--csv F] [--adam-result F] [--part I --num-parts N] [--no-resume]

plus ``--no-detect`` (use only the given seeds: the user's correction), ``--detection-threshold``,
``--max-voxels N`` and ``--models DIR``. INPUT is a NIfTI/NRRD/MetaImage file or a DICOM series folder; OUTPUT the label
image in exactly the input geometry, or (``--format``) a Slicer .seg.nrrd or a DICOM SEG. A folder of
cases (ADAM layout ``<case>/orig/TOF.nii.gz``, DICOM series folders, plain image files) as INPUT with a
folder as OUTPUT runs a batch: part I of N of the sorted cases, finished cases skipped, a CSV per case
and one for the cohort (see ``io.cohort`` and docs/outputs.md). Everything the user gave is checked
(arguments, output locations, seeds, image, models) before the long work, so bad input writes
nothing; one case's files are written as one unit (``io.atomic.OutputSet``), never over an input. Seeds files are JSON in physical millimetres, Slicer
markups written in LPS (see ``io.seeds``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..core.errors import AneurysmSegError, InputError, InputWarning, OutputError
from ..io.exports import FORMATS, Exports
from ..io.headers import DEFAULT_MAX_VOXELS

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
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for torch and SimpleITK (at most the cores this process may use)")
    p.add_argument("--max-voxels", type=int, default=None, metavar="N",
                   help=f"refuse a scan whose header claims more voxels than this, before reading it "
                        f"(default {DEFAULT_MAX_VOXELS:,} = 1024 x 1024 x 512); raise it for a larger real scan "
                        "on a machine with the memory")
    p.add_argument("--no-detect", action="store_true",
                   help="skip the detector: segment only around the --seeds (fine stage only)")
    p.add_argument("--detection-threshold", type=float, default=None, metavar="P",
                   help="coarse probability above which a region becomes a seed "
                        "(default: the threshold in the models' manifest)")
    p.add_argument("--models", type=Path, metavar="DIR", help="model folder with manifest.json (default: bundled weights)")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="network arithmetic: bfloat16 is about 2x faster on CPUs with AVX512-BF16/AMX and on GPUs")
    p.add_argument("--flip-tta", action="store_true",
                   help="test-time augmentation of the detector: also run it on the scan mirrored left-right and "
                        "average (twice the detection time; figures in docs/evaluation.md)")
    p.add_argument("--no-fp-reduction", action="store_true",
                   help="keep every detector finding: skip the finding classifier of the weights' manifest "
                        "(false-positive reduction; figures in docs/evaluation.md)")
    out = p.add_argument_group("output formats (file names in single mode, folders in batch mode)")
    out.add_argument("--format", choices=tuple(FORMATS), default=None,
                     help="what OUTPUT is: a label image (default), a Slicer .seg.nrrd, or a DICOM SEG "
                          "(default: from OUTPUT's name; in batch mode the per-case file type)")
    out.add_argument("--seg-nrrd", type=Path, metavar="PATH",
                     help="also a Slicer segmentation (.seg.nrrd): segment names, colours, terminology")
    out.add_argument("--dicom-seg", type=Path, metavar="PATH",
                     help="also a DICOM SEG referencing the input DICOM series (input must be DICOM)")
    out.add_argument("--dicom-sr", type=Path, metavar="PATH",
                     help="also a DICOM SR measurement report (TID 1500) referencing the DICOM SEG")
    out.add_argument("--csv", type=Path, metavar="PATH",
                     help="one CSV row per aneurysm: every measurement, confidence, input-check warnings "
                          "(batch mode always writes OUTPUT/tables/<case>.csv and OUTPUT/aneurysms.csv)")
    out.add_argument("--adam-result", type=Path, metavar="PATH",
                     help="ADAM challenge result.txt: one aneurysm centre per line, voxel coordinates "
                          "(batch: PATH/<case>/result.txt)")
    cohort = p.add_argument_group("cohorts (batch mode)")
    cohort.add_argument("--part", type=int, default=0, metavar="I",
                        help="run part I (0-based) of --num-parts: cases I, I+N, I+2N... of the sorted cohort")
    cohort.add_argument("--num-parts", type=int, default=1, metavar="N",
                        help="split the cohort into N parts run by independent jobs (e.g. a SLURM array)")
    cohort.add_argument("--no-resume", action="store_true",
                        help="segment finished cases again (default: skip cases an earlier run finished)")


# ------------------------------------------------------------------------------------ inputs


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def batch_cases(folder: Path) -> list[tuple[str, Path]]:
    """Cases of a batch folder: ADAM subfolders (``<case>/orig/TOF.nii.gz``), subfolders holding a
    DICOM series (``<case>/*.dcm`` or DICOM files of any name), and plain image files.

    Empty for a folder that holds none of these (for instance a DICOM series folder itself).
    """
    from ..io.images import is_dicom_file

    cases: list[tuple[str, Path]] = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            tof = entry / "orig" / "TOF.nii.gz"
            if tof.is_file():
                cases.append((entry.name, tof))
            elif any(is_dicom_file(f) for f in sorted(entry.iterdir())[:3] if f.is_file()):
                cases.append((entry.name, entry))
        elif is_image_file(entry):
            cases.append((case_name(entry), entry))
    return cases


def check_case_names(cases: list[tuple[str, Path]]) -> None:
    """Raise :class:`InputError` when case names cannot name output files safely: a name that is only
    dots (``...nii.gz`` would put files in the parent folder) or has a path separator, or two cases whose
    names differ at most in case (``a.nii.gz`` and ``a.mha`` would overwrite each other's outputs)."""
    seen: dict[str, Path] = {}
    for name, path in cases:
        if not name.strip(". ") or any(c in name for c in "/\\\0"):
            raise InputError(f"{path.name}: the case name {name!r} cannot name output files "
                             "(it would point outside the output folder); rename it")
        key = name.casefold()
        if key in seen:
            raise InputError(f"{seen[key].name} and {path.name} would both write the outputs of case {name!r} "
                             f"(one would overwrite the other); rename one of them")
        seen[key] = path


@dataclass
class Outputs:
    """Where one case's results go (None: not asked for)."""

    labels: Path | None
    seeds: Path | None = None
    report: Path | None = None
    stl_dir: Path | None = None
    exports: Exports = field(default_factory=Exports)

    def requested(self) -> list[Path]:
        return [p for p in (self.labels, self.seeds, self.report, self.stl_dir) if p is not None] + self.exports.paths()


def input_files(path: Path) -> list[Path]:
    """What a run reads and must never overwrite: the file, or every file of a (DICOM) folder."""
    if path.is_dir():
        return [p for p in sorted(path.iterdir()) if p.is_file()]
    return [path]


def check_outputs(out: Outputs, dicom_files: Any = None, input_name: str = "the input",
                  inputs: Sequence[Path] = ()) -> None:
    """Raise :class:`OutputError` before any work when an output location cannot be written or is
    (or resolves to) one of the ``inputs``."""
    from ..io.atomic import refuse_inputs
    from ..io.exports import check_exports
    from ..io.images import check_writable
    from ..io.seeds import check_json_writable
    from ..io.surfaces import check_folder_writable

    refuse_inputs([out.labels, out.seeds, out.report, *out.exports.paths()], inputs)
    if out.labels is not None:
        check_writable(out.labels)
    check_exports(out.exports, dicom_files, input_name)
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
    paths = [p for p in (out.labels, out.seeds, out.report, *out.exports.paths()) if p is not None]
    if len({p.resolve() for p in paths}) != len(paths):
        raise OutputError("every output (label image, seeds, report, tables, segmentations) needs its own file name")


# ----------------------------------------------------------------------------------- outputs


def model_summary(models: Any) -> dict[str, Any]:
    """What the report says about the models: the manifest's summary and the device they ran on."""
    summary = models.manifest.summary()
    return {"folder": summary.pop("folder"), "device": str(models.device), **summary}


def build_report(result: Any, input_path: Path | str, models: Any) -> dict[str, Any]:
    from .. import __version__

    report = result.to_report()
    report["input"] = {"path": str(input_path), **report.get("input", {})}
    report["models"] = model_summary(models)
    report["aneurysmseg_version"] = __version__
    return report


def write_results(result: Any, out: Outputs, *, input_path: Path | str, models: Any, binary: bool = False,
                  stl_coords: str = "LPS", case: str = "", dicom_files: Any = None,
                  detection_threshold: float | None = None) -> list[tuple[str, Path]]:
    """Write every requested output of one case as one unit (:class:`~AneurysmSegLib.io.atomic.OutputSet`):
    all appear together or none does, STL files of aneurysms an earlier run found and this one did not
    are removed, and no output may replace an input. Returns (what, path) pairs."""
    from ..io.atomic import OutputSet, write_text_atomic
    from ..io.exports import algorithm_of, write_exports
    from ..io.images import write_label
    from ..io.seeds import write_seeds
    from ..io.surfaces import write_stl

    written: list[tuple[str, Path]] = []
    with OutputSet(inputs=input_files(Path(input_path))) as outputs:
        if out.labels is not None:
            labels = result.binary() if binary else result.labels
            written.append(("labels", write_label(labels, result.geometry, out.labels, outputs=outputs)))
        algorithm = algorithm_of(models, detection_threshold) if out.exports.dicom_seg is not None else None
        written += write_exports(result, out.exports, case=case or Path(input_path).name, algorithm=algorithm,
                                 dicom_files=dicom_files, warnings=getattr(result, "warnings", ()) or (),
                                 outputs=outputs)
        if out.seeds is not None:
            written.append(("seeds", write_seeds(result.seeds, out.seeds, "LPS", outputs=outputs)))
        if out.report is not None:
            text = json.dumps(build_report(result, input_path, models), indent=2) + "\n"
            written.append(("report", write_text_atomic(out.report, text, outputs)))
        if out.stl_dir is not None:
            for path in write_stl(result.labels, result.geometry, out.stl_dir, stl_coords, outputs=outputs):
                written.append(("surface", path))
    return written


def describe(result: Any) -> list[str]:
    """Human summary lines: one per aneurysm, positions in RAS (what Slicer shows)."""
    lines = [f"{len(result.aneurysms)} aneurysm(s) from {len(result.seeds)} VOI seed(s)"]
    for a in result.aneurysms:
        r = ", ".join(f"{v:.1f}" for v in a.centroid_ras)
        lines.append(f"  {a.id}: volume {a.volume_mm3:.1f} mm3, max diameter {a.max_diameter_mm:.1f} mm, "
                     f"centroid RAS ({r}) mm, confidence {a.confidence:.2f}"
                     + (f", finding score {a.finding_score:.2f}" if a.finding_score is not None else ""))
    if result.rejected:
        lines.append(f"  {len(result.rejected)} detector finding(s) dropped by the false-positive reduction "
                     f"(scores {', '.join(f'{a.finding_score:.2f}' for a in result.rejected)}; see the report)")
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


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, e.g. a cluster job)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def configure_threads(threads: int | None) -> None:
    """Set torch's and SimpleITK's thread counts; more than the usable cores is clamped with a warning
    (tens of thousands of threads crash the process instead of speeding it up)."""
    if threads is None:
        return
    if threads < 1:
        raise InputError("--threads must be at least 1")
    cores = usable_cores()
    if threads > cores:
        warnings.warn(f"--threads {threads} is more than the {cores} CPU core(s) this process may use; "
                      f"using {cores}", InputWarning, stacklevel=2)
        threads = cores
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def max_voxels(args: argparse.Namespace) -> int:
    limit = DEFAULT_MAX_VOXELS if args.max_voxels is None else args.max_voxels
    if limit < 1:
        raise InputError("--max-voxels must be a positive number of voxels")
    return limit



def run(args: argparse.Namespace) -> int:
    if not args.input.exists():
        raise InputError(f"{args.input} does not exist")
    if args.detection_threshold is not None and not 0.0 < args.detection_threshold < 1.0:
        raise InputError("--detection-threshold must lie between 0 and 1")
    if args.no_detect and args.seeds is None:
        raise InputError("--no-detect needs --seeds: without the detector only given seeds are segmented")
    max_voxels(args)
    cases = batch_cases(args.input) if args.input.is_dir() else []
    if cases:
        return run_batch(args, cases)
    return run_single(args)


def run_single(args: argparse.Namespace) -> int:
    from ..core.models import load_models
    from ..core.pipeline import segment
    from ..io.images import dicom_series, read_image
    from ..io.seeds import read_seeds

    out = single_outputs(args)
    series = dicom_series(args.input)
    dicom_files = series.files if series is not None else None
    check_outputs(out, dicom_files, args.input.name, input_files(args.input))
    seeds = read_seeds(args.seeds) if args.seeds is not None else None
    image = read_image(args.input, max_voxels=max_voxels(args))
    configure_threads(args.threads)
    models = load_models(args.models, device=args.device)
    progress = ProgressPrinter()
    try:
        result = segment(image, models, seeds=seeds, detect=not args.no_detect,
                         detection_threshold=args.detection_threshold, progress=progress, precision=args.precision,
                         detector_flip=args.flip_tta, fp_reduction=not args.no_fp_reduction)
    finally:
        progress.close()
    assert result is not None  # nothing here cancels
    written = write_results(result, out, input_path=args.input, models=models, binary=args.binary,
                            stl_coords=args.stl_coords, case=case_name(args.input), dicom_files=dicom_files,
                            detection_threshold=args.detection_threshold)
    for line in describe(result):
        print(line)
    if out.exports.dicom_seg is not None and not result.aneurysms:
        print("DICOM SEG/SR: not written, no aneurysm was found (a DICOM SEG needs at least one segment)")
    for what, path in written:
        print(f"{what}: {path}")
    print(f"time: {result.timings.get('total', 0.0):.1f} s")
    return 0


def case_name(path: Path) -> str:
    """A case's name: the file name without its image suffix, or the folder's name."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def single_outputs(args: argparse.Namespace) -> Outputs:
    """Outputs of one scan: OUTPUT in its --format plus every extra file asked for."""
    from ..io.exports import format_of

    fmt = format_of(args.output, args.format)
    exports = Exports(seg_nrrd=args.seg_nrrd, dicom_seg=args.dicom_seg, dicom_sr=args.dicom_sr, csv=args.csv,
                      adam_result=args.adam_result)
    if fmt == "seg-nrrd":
        if exports.seg_nrrd is not None:
            raise InputError("--format seg-nrrd makes OUTPUT the .seg.nrrd: --seg-nrrd is not needed")
        exports.seg_nrrd = args.output
    elif fmt == "dicom-seg":
        if exports.dicom_seg is not None:
            raise InputError("--format dicom-seg makes OUTPUT the DICOM SEG: --dicom-seg is not needed")
        exports.dicom_seg = args.output
    return Outputs(labels=args.output if fmt == "labels" else None, seeds=args.seeds_out, report=args.report,
                   stl_dir=args.stl_dir, exports=exports)


def case_outputs(args: argparse.Namespace, name: str) -> Outputs:
    """Per-case outputs of a batch: OUTPUT/<case>.<format>, OUTPUT/tables/<case>.csv, OUTPUT/reports/,
    OUTPUT/seeds/, STL-DIR/<case>/, and <folder>/<case>.dcm (DICOM SEG/SR), <folder>/<case>/result.txt."""
    from ..io.cohort import case_table

    root: Path = args.output
    fmt = args.format or "labels"
    main = root / f"{name}{FORMATS[fmt]}"
    exports = Exports(
        seg_nrrd=main if fmt == "seg-nrrd" else (args.seg_nrrd / f"{name}.seg.nrrd" if args.seg_nrrd else None),
        dicom_seg=main if fmt == "dicom-seg" else (args.dicom_seg / f"{name}.dcm" if args.dicom_seg else None),
        dicom_sr=args.dicom_sr / f"{name}.dcm" if args.dicom_sr is not None else None,
        csv=case_table(root, name),
        adam_result=args.adam_result / name / "result.txt" if args.adam_result is not None else None)
    return Outputs(labels=main if fmt == "labels" else None,
                   seeds=root / "seeds" / f"{name}.mrk.json" if args.seeds_out is not None else None,
                   report=root / "reports" / f"{name}.json" if args.report is not None else None,
                   stl_dir=args.stl_dir / name if args.stl_dir is not None else None,
                   exports=exports)


def run_batch(args: argparse.Namespace, cases: list[tuple[str, Path]]) -> int:
    """Segment this part's cases with the models loaded once; a failing case is reported and the others
    still run; cases an earlier run finished are skipped (unless --no-resume)."""
    from tqdm import tqdm

    from ..core.models import load_models
    from ..core.pipeline import segment
    from ..io.atomic import same_file, write_text_atomic
    from ..io.cohort import is_done, mark_done, part_of, write_cohort_table
    from ..io.images import dicom_series, read_image
    from ..io.seeds import check_json_writable
    from ..io.surfaces import check_folder_writable

    if args.seeds is not None:
        raise InputError("--seeds names positions in one scan; it cannot be used with a folder of cases")
    if args.output.name.lower().endswith(IMAGE_SUFFIXES):
        raise OutputError(f"{args.input} is a folder of {len(cases)} cases: OUTPUT must be a folder, not {args.output.name}")
    if same_file(args.output, args.input):
        raise OutputError(f"OUTPUT {args.output} is the input folder: the outputs would replace or join "
                          "the scans; choose another folder")
    check_case_names(cases)
    if args.csv is not None:
        raise InputError("in batch mode every case's table is OUTPUT/tables/<case>.csv and the cohort's "
                         "OUTPUT/aneurysms.csv; --csv is for a single scan")
    if args.dicom_sr is not None and args.dicom_seg is None and args.format != "dicom-seg":
        raise InputError("a DICOM SR measurement report references a DICOM SEG: ask for one too (--dicom-seg)")
    mine = part_of(cases, args.part, args.num_parts)
    check_folder_writable(args.output)
    for folder in (args.stl_dir, args.seg_nrrd, args.dicom_seg, args.dicom_sr, args.adam_result):
        if folder is not None:
            check_folder_writable(folder)
    if args.report is not None:
        check_json_writable(args.report)
    configure_threads(args.threads)
    models = load_models(args.models, device=args.device)  # once for every case of this part

    summary: list[dict[str, Any]] = []
    failed: list[tuple[str, str]] = []
    skipped = 0
    bar = tqdm(mine, desc=f"cases (part {args.part} of {args.num_parts})" if args.num_parts > 1 else "cases",
               unit="case", file=sys.stderr)
    for name, path in bar:
        bar.set_postfix_str(name)
        out = case_outputs(args, name)
        if not path.is_dir() and (args.format or "labels") != "dicom-seg":
            out.exports.dicom_seg = out.exports.dicom_sr = None  # DICOM SEG/SR only for the DICOM cases
        if not args.no_resume and is_done(args.output, name, out.requested()):
            skipped += 1
            tqdm.write(f"{name}: done by an earlier run, skipped", file=sys.stderr)
            summary.append({"case": name, "input": str(path), "status": "skipped (done earlier)"})
            continue
        try:
            series = dicom_series(path)
            dicom_files = series.files if series is not None else None
            check_outputs(out, dicom_files, name, input_files(path))
            image = read_image(path, max_voxels=max_voxels(args))
            result = segment(image, models, detect=True, detection_threshold=args.detection_threshold,
                             precision=args.precision, detector_flip=args.flip_tta,
                             fp_reduction=not args.no_fp_reduction)
            assert result is not None
            written = write_results(result, out, input_path=path, models=models, binary=args.binary,
                                    stl_coords=args.stl_coords, case=name, dicom_files=dicom_files,
                                    detection_threshold=args.detection_threshold)
            record = {"case": name, "input": str(path), "status": "ok", "aneurysm_count": len(result.aneurysms),
                      "warnings": list(result.warnings), "seconds": round(result.timings.get("total", 0.0), 2),
                      "part": args.part}
            mark_done(args.output, name, out.requested(), [p for _, p in written], record)
            summary.append({**record, "outputs": {what: str(p) for what, p in written}})
        except (AneurysmSegError, OSError, RuntimeError, ValueError, MemoryError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            failed.append((name, reason))
            summary.append({"case": name, "input": str(path), "status": "failed", "reason": reason})
            tqdm.write(f"{name}: failed: {reason}", file=sys.stderr)
    bar.close()
    table = write_cohort_table(args.output)
    ok = len(mine) - len(failed) - skipped
    if args.report is not None:
        write_text_atomic(args.report, json.dumps({"input": str(args.input), "part": args.part,
                                                   "num_parts": args.num_parts, "cases": summary}, indent=2) + "\n")
    part = f" (part {args.part} of {args.num_parts}: {len(mine)} of {len(cases)} cases)" if args.num_parts > 1 else ""
    done_earlier = f", {skipped} skipped (done earlier)" if skipped else ""
    print(f"{len(mine)} case(s){part}: {ok} segmented, {len(failed)} failed{done_earlier}; "
          f"outputs in {args.output}, cohort table {table}")
    for name, reason in failed:
        print(f"  failed {name}: {reason}")
    return 1 if failed else 0
