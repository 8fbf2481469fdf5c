"""``aneurysmseg demo --output demo-output``: segment the bundled sample and write every output.

Writes the label image, the seeds (Slicer markups), the JSON report, one STL per aneurysm, a MIP
picture with the outlines and a close-up of each aneurysm with its neck and measurements (necks.png), prints where each is, and compares with the sample's ground truth
(``aneurysms.nii.gz`` beside ``orig/``) when it is there. Runs exactly what ``segment`` runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def default_sample() -> Path:
    """The bundled sample scan (AneurysmSeg/Resources/Sample, ADAM layout)."""
    root = Path(__file__).resolve().parents[2] / "Resources" / "Sample"
    direct = root / "orig" / "TOF.nii.gz"
    if direct.is_file():
        return direct
    found = sorted(root.glob("**/orig/TOF.nii.gz"))
    return found[0] if found else direct


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", type=Path, default=Path("demo-output"), help="output folder (default demo-output)")
    p.add_argument("--sample", type=Path, default=None,
                   help="scan to segment (default: the bundled sample, AneurysmSeg/Resources/Sample/orig/TOF.nii.gz)")
    p.add_argument("--models", type=Path, metavar="DIR", help="model folder with manifest.json (default: bundled weights)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", type=str.lower)
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch and SimpleITK")


def run(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    from ..core.errors import InputError, OutputError
    from ..core.models import load_models
    from ..core.pipeline import segment
    from ..io.images import read_image
    from ..io.pictures import save_mip_picture, save_neck_picture
    from ..io.surfaces import check_folder_writable
    from .segment import Outputs, ProgressPrinter, check_outputs, configure_threads, describe, write_results

    sample = args.sample or default_sample()
    if not sample.exists():
        raise InputError(f"the sample scan {sample} is missing; reinstall AneurysmSeg or pass --sample")
    out_dir: Path = args.output
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} is a file; give a folder for the demo outputs")
    check_folder_writable(out_dir)
    outputs = Outputs(labels=out_dir / "aneurysms-labels.nii.gz", seeds=out_dir / "seeds.mrk.json",
                      report=out_dir / "report.json", stl_dir=out_dir / "stl")
    check_outputs(outputs)
    image = read_image(sample)
    configure_threads(args.threads)
    models = load_models(args.models, device=args.device)

    print(f"segmenting {sample} ({' x '.join(map(str, image.shape_xyz))} voxels, "
          f"{' x '.join(f'{s:.2f}' for s in image.geometry.spacing)} mm) on {models.device}")
    progress = ProgressPrinter()
    try:
        result = segment(image, models, progress=progress)
    finally:
        progress.close()
    assert result is not None
    # Clear earlier STL files so the folder matches this run.
    if outputs.stl_dir is not None and outputs.stl_dir.is_dir():
        for old in outputs.stl_dir.glob("aneurysm_*.stl"):
            old.unlink()
    written = write_results(result, outputs, input_path=sample, models=models)

    truth_path = sample.parent.parent / "aneurysms.nii.gz"
    reference = None
    comparison: list[str] = []
    if truth_path.is_file():
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(truth_path)))
        if reference.shape == result.labels.shape:
            comparison = compare(result.labels, reference, image.geometry.spacing_zyx)
        else:
            comparison = [f"ground truth {truth_path} has another size; not compared"]
            reference = None
    picture = save_mip_picture(image, result.labels, out_dir / "mip.png",
                               title=f"AneurysmSeg demo: {len(result.aneurysms)} aneurysm(s)", reference=reference)
    written.append(("picture", picture))
    written.append(("necks", save_neck_picture(image, result.labels, result.aneurysms, out_dir / "necks.png")))

    for line in describe(result):
        print(line)
    for line in comparison:
        print(line)
    times = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
    print(f"timings: {times}")
    print(f"outputs in {out_dir}:")
    for what, path in written:
        print(f"  {what:8s} {path}")
    return 0


def compare(labels, reference, spacing_zyx) -> list[str]:
    """ADAM metrics against the ground truth: detection (TP/FN/FP) and whole-volume DSC, HD95."""
    from ..evaluation.metrics import detection, segmentation_scores

    det = detection(labels, reference, spacing_zyx)
    lines = [f"ground truth: {det.tp + det.fn} aneurysm(s); found {det.tp}, missed {det.fn}, "
             f"false positives {det.fp}"]
    if (reference == 1).any() or (labels > 0).any():
        s = segmentation_scores(labels > 0, reference, spacing_zyx)
        lines.append("whole volume: " + ", ".join(f"{k.upper()} {v:.2f}" for k, v in s.items()))
    return lines
