"""Speed and memory of the whole pipeline on a clinical-size scan, against two baselines.

    .venv/bin/python benchmarks/pipeline_speed.py [--threads 2] [--models DIR] [--case-dir DIR]

1. Generates (or reuses, ``--case-dir``) a clinical-size phantom: 512 x 512 x 140 voxels at
   0.35 x 0.35 x 0.5 mm (``phantom.generate_case`` with that shape and spacing).
2. Runs ``pipeline.segment`` on it in a fresh child process, as ``aneurysmseg segment`` would (read,
   load models, segment), and reports wall time per stage and the child's peak resident memory
   (``resource.getrusage(...).ru_maxrss``: everything, torch included, taken when the pipeline returns;
   on Linux also the peak so far when each stage starts, which says in which stage it is reached).
3. Baseline "paper, naive": the same preprocessing and fine stage, but DeepMedic run densely over the
   whole volume at native resolution in the manifest's inference segments; a sample of tiles is
   timed and the total extrapolated (stated in the output).
4. Baseline "nnU-Net-style": a 3D U-Net of nnU-Net's 3d_fullres size (6 stages, 32 base filters
   doubling to a cap of 320, two conv-IN-LeakyReLU per stage, transposed-conv decoder) applied as a
   full-resolution sliding window of 128^3 with 50% overlap; a sample of windows is timed and the
   total extrapolated (without nnU-Net's default 8x mirroring, which would multiply it by 8).

Uses the bundled weights when they exist, otherwise untrained exported models of the paper's
architectures (timing does not depend on the weights). An untrained detector finds nothing useful,
so then the phantom's true aneurysm centres are given as seeds (the detector still runs in full)
and the fine stage sees a realistic number of VOIs. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE_XYZ = (512, 512, 140)
SPACING = (0.35, 0.35, 0.5)
TARGETS = {"total_s": 20.0, "peak_gb": 4.0, "fine_per_voi_s": 0.5, "speedup_vs_nnunet": 10.0}


# ------------------------------------------------------------------------------------------ inputs


def ensure_case(case_dir: Path, seed: int) -> Path:
    """The phantom's ADAM folder (generated once; about a minute on 2 cores)."""
    from AneurysmSegLib.phantom.render import generate_case, write_case

    tof = case_dir / "orig" / "TOF.nii.gz"
    if not tof.is_file():
        t = time.perf_counter()
        case = generate_case(seed, shape_xyz=SHAPE_XYZ, spacing=SPACING)
        write_case(case, case_dir)
        print(f"generated phantom {SHAPE_XYZ} at {SPACING} mm (seed {seed}) in {time.perf_counter() - t:.0f} s",
              file=sys.stderr)
    return case_dir


def ensure_models(model_dir: Path | None, scratch: Path) -> tuple[Path, bool]:
    """(folder, trained): bundled/given weights, else untrained paper-architecture exports."""
    import torch
    from AneurysmSegLib.core import manifest as manifest_mod
    from AneurysmSegLib.core import models as models_mod
    from AneurysmSegLib.networks.deepmedic import DeepMedic
    from AneurysmSegLib.networks.se_unet import SEUNet3D

    folder = model_dir or manifest_mod.default_model_dir()
    if (folder / manifest_mod.MANIFEST_NAME).is_file():
        return folder, True
    folder = scratch / "untrained-models"
    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    models_mod.export_torchscript(DeepMedic().eval(), torch.randn(1, 1, 57, 57, 57), folder / "coarse.pt")
    models_mod.export_torchscript(SEUNet3D().eval(), torch.randn(1, 2, 64, 64, 64), folder / "fine.pt")
    models_mod.write_manifest(folder, coarse={"file": "coarse.pt", "spacing_mm": 0.7, "in_channels": 1},
                              fine={"file": "fine.pt", "spacing_mm": 0.4, "in_channels": 2},
                              training={"description": "untrained (benchmark of the architectures only)"}, metrics={})
    return folder, False


def true_seeds(case_dir: Path, geometry) -> list:
    from AneurysmSegLib.core.result import Seed
    from AneurysmSegLib.evaluation.metrics import read_locations

    rows = read_locations(case_dir / "location.txt")
    return [Seed(tuple(float(v) for v in geometry.index_to_lps(r[:3])), 1.0, "user", f"T{i + 1}")
            for i, r in enumerate(rows)]


# ------------------------------------------------------------------------------- the pipeline run


def _hwm_mb() -> float | None:
    """The process's peak resident memory so far (Linux ``VmHWM``), None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return None


def child_pipeline(case_dir: Path, model_dir: Path, trained: bool, threads: int, precision: str,
                   flip: bool = False) -> dict:
    """What ``aneurysmseg segment`` does, timed; runs in a fresh process so ru_maxrss is its own."""
    import torch

    torch.set_num_threads(threads)
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    from AneurysmSegLib.core.models import load_models
    from AneurysmSegLib.core.pipeline import segment
    from AneurysmSegLib.io.images import read_image

    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    image = read_image(case_dir / "orig" / "TOF.nii.gz")
    t_read = time.perf_counter() - t0
    t = time.perf_counter()
    models = load_models(model_dir, device="cpu")
    t_load = time.perf_counter() - t
    stages: list[list] = []  # [stage, peak memory (MB) when it started]: where the peak is reached

    def progress(fraction: float, message: str) -> None:
        if not stages or stages[-1][0] != message:
            stages.append([message, _hwm_mb()])

    if trained:
        result = segment(image, models, precision=precision, detector_flip=flip, progress=progress)
    else:
        result = segment(image, models, seeds=true_seeds(case_dir, image.geometry), detection_threshold=1.0 + 1e-6,
                         precision=precision, detector_flip=flip, progress=progress)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the statistics below
    assert result is not None
    from AneurysmSegLib.preprocess import coarse_roi, preprocess
    from AneurysmSegLib.preprocess import ROI_MARGIN_MM
    from AneurysmSegLib.stages.detect import cover_boxes

    # Box statistics (recomputed outside the timed and memory-measured run; cheap next to it).
    from AneurysmSegLib.stages.vessels import preprocess_options

    pre = preprocess(image, coarse_spacing=models.coarse_spacing[0], **preprocess_options(models))  # as segment()
    roi = coarse_roi(pre, margin_mm=ROI_MARGIN_MM)
    boxes = cover_boxes(roi)
    return {
        "timings": result.timings, "read_s": t_read, "load_models_s": t_load, "wall_s": wall, "cpu_s": cpu,
        "vois": len(result.seeds), "aneurysms": len(result.aneurysms),
        "peak_rss_mb": peak_mb, "rss_after_imports_mb": rss_imports, "peak_mb_at_stage_start": stages,
        "coarse_shape": list(pre.coarse.array.shape), "roi_fraction": float(roi.mean()),
        "boxes": len(boxes), "box_voxels": int(sum(np.prod(d) for _, d in boxes)),
    }


# ------------------------------------------------------------------------------------- baselines


def time_calls(fn, inputs: list) -> list[float]:
    import torch

    times = []
    with torch.inference_mode():
        for x in inputs:
            t = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t)
    return times


def naive_detection(model_dir: Path, shape_zyx: tuple[int, int, int], samples: int) -> dict:
    """DeepMedic dense over the native grid in the manifest's segments (sample timed, extrapolated)."""
    import torch
    from AneurysmSegLib.core.models import load_models

    models = load_models(model_dir, device="cpu")
    s = models.coarse_segment_out
    tiles = int(np.prod([math.ceil(n / s) for n in shape_zyx]))
    rng = np.random.default_rng(0)
    inputs = [torch.from_numpy(rng.standard_normal((1, 1, s + 48, s + 48, s + 48)).astype(np.float32))
              for _ in range(samples + 1)]
    times = time_calls(models.coarse, inputs)[1:]  # first call: TorchScript warm-up, not counted
    per_tile = float(np.mean(times))
    return {"segment": s, "tiles": tiles, "sampled": samples, "per_tile_s": per_tile, "total_s": per_tile * tiles}


def nnunet_like(max_features: int = 320, base: int = 32, stages: int = 6):
    """A 3D U-Net of nnU-Net 3d_fullres size (PlainConvUNet layout), randomly initialised."""
    import torch
    from torch import nn

    def block(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv3d(cin, cout, 3, stride=stride, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.01, True),
            nn.Conv3d(cout, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.01, True))

    widths = [min(base * 2**i, max_features) for i in range(stages)]

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.ModuleList([block(1 if i == 0 else widths[i - 1], w, 1 if i == 0 else 2) for i, w in enumerate(widths)])
            self.up = nn.ModuleList([nn.ConvTranspose3d(widths[i + 1], widths[i], 2, stride=2) for i in range(stages - 1)])
            self.dec = nn.ModuleList([block(2 * widths[i], widths[i], 1) for i in range(stages - 1)])
            self.head = nn.Conv3d(widths[0], 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for e in self.enc:
                x = e(x)
                skips.append(x)
            x = skips[-1]
            for i in range(stages - 2, -1, -1):
                x = self.dec[i](torch.cat([self.up[i](x), skips[i]], dim=1))
            return self.head(x)

    torch.manual_seed(0)
    return UNet().eval(), widths


def sliding_window_count(shape_zyx: tuple[int, int, int], patch: int = 128, overlap: float = 0.5) -> int:
    """nnU-Net's window count: ceil((size - patch) / step) + 1 steps per axis, step = patch * (1 - overlap)."""
    step = patch * (1 - overlap)
    return int(np.prod([1 if n <= patch else math.ceil((n - patch) / step) + 1 for n in shape_zyx]))


def nnunet_baseline(shape_zyx: tuple[int, int, int], samples: int) -> dict:
    import torch

    net, widths = nnunet_like()
    params = sum(p.numel() for p in net.parameters())
    windows = sliding_window_count(shape_zyx)
    rng = np.random.default_rng(0)
    inputs = [torch.from_numpy(rng.standard_normal((1, 1, 128, 128, 128)).astype(np.float32)) for _ in range(samples)]
    times = time_calls(net, inputs)
    per_window = float(np.mean(times))
    return {"widths": widths, "params_m": params / 1e6, "windows": windows, "sampled": samples,
            "per_window_s": per_window, "total_s": per_window * windows}


# ----------------------------------------------------------------------------------------- report


def markdown(res: dict, naive: dict, nn: dict, trained: bool, threads: int, command: str, precision: str) -> str:
    t = res["timings"]
    fine_per_voi = t.get("fine", 0.0) / max(1, res["vois"])
    naive_total = t.get("preprocess", 0.0) + naive["total_s"] + t.get("fine", 0.0) + t.get("paste", 0.0)
    ours = res["wall_s"]
    speedup = nn["total_s"] / ours
    check = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    load = os.getloadavg()
    lines = [
        f"Command: `{command}`",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch threads {threads}, "
        f"load average during the run {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min).",
        f"Scan: phantom {SHAPE_XYZ[0]} x {SHAPE_XYZ[1]} x {SHAPE_XYZ[2]} at {SPACING[0]} x {SPACING[1]} x {SPACING[2]} mm; "
        f"models: {'bundled trained weights' if trained else 'untrained exports of the paper architectures (true aneurysm centres given as seeds)'}; "
        f"network arithmetic {precision} (baselines float32).",
        "",
        "| stage | wall time (s) |",
        "|---|---|",
        f"| read image | {res['read_s']:.2f} |",
        f"| load + verify models | {res['load_models_s']:.2f} |",
        f"| preprocessing | {t.get('preprocess', 0):.2f} |",
        f"| coarse detection ({res['boxes']} boxes, {res['box_voxels'] / np.prod(res['coarse_shape']) * 100:.0f}% of the "
        f"coarse grid {'x'.join(map(str, res['coarse_shape']))}, around the ROI = {100 * res['roi_fraction']:.1f}%) "
        f"| {t.get('detect', 0):.2f} |",
        f"| fine stage ({res['vois']} VOIs, {fine_per_voi:.2f} s per VOI) | {t.get('fine', 0):.2f} |",
        f"| paste back | {t.get('paste', 0):.2f} |",
        f"| measurements | {t.get('measure', 0):.2f} |",
        f"| **whole run (read to result)** | **{ours:.2f}** |",
        f"| (CPU time of the whole run, all threads) | ({res['cpu_s']:.1f}) |",
        "",
        f"Peak resident memory of the run: {res['peak_rss_mb'] / 1024:.2f} GB "
        f"(of which {res['rss_after_imports_mb'] / 1024:.2f} GB after importing torch and friends); peak so far "
        "when each stage started: " + ", ".join(f"{name} {mb / 1024:.2f} GB" for name, mb in res["peak_mb_at_stage_start"]
                                                 if mb is not None) + ".",
        "",
        "| method | time (s) | how measured | vs ours |",
        "|---|---|---|---|",
        f"| this pipeline | {ours:.1f} | measured | 1x |",
        f"| paper pipeline, naive (DeepMedic dense at native resolution) | {naive_total:.0f} | {naive['sampled']} of "
        f"{naive['tiles']} tiles of {naive['segment']}^3 timed ({naive['per_tile_s']:.2f} s each), extrapolated; "
        f"+ our preprocessing and fine stage | {naive_total / ours:.0f}x slower |",
        f"| nnU-Net-style 3D U-Net, 128^3 sliding window, 50% overlap | {nn['total_s']:.0f} | {nn['sampled']} of "
        f"{nn['windows']} windows timed ({nn['per_window_s']:.1f} s each; widths {nn['widths']}, "
        f"{nn['params_m']:.1f} M parameters), extrapolated; no mirroring | {speedup:.0f}x slower |",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| whole pipeline <= {TARGETS['total_s']:.0f} s | {ours:.1f} s | {check(ours <= TARGETS['total_s'])} |",
        f"| peak memory <= {TARGETS['peak_gb']:.0f} GB | {res['peak_rss_mb'] / 1024:.2f} GB | {check(res['peak_rss_mb'] / 1024 <= TARGETS['peak_gb'])} |",
        f"| fine stage <= {TARGETS['fine_per_voi_s']} s per VOI | {fine_per_voi:.2f} s | {check(fine_per_voi <= TARGETS['fine_per_voi_s'])} |",
        f"| >= {TARGETS['speedup_vs_nnunet']:.0f}x faster than nnU-Net-style | {speedup:.0f}x | {check(speedup >= TARGETS['speedup_vs_nnunet'])} |",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch/SimpleITK threads (default 2)")
    p.add_argument("--models", type=Path, default=None, help="model folder (default: bundled, else untrained exports)")
    p.add_argument("--case-dir", type=Path, default=None, help="reuse/keep the generated phantom here")
    p.add_argument("--seed", type=int, default=7, help="phantom seed (default 7)")
    p.add_argument("--tile-samples", type=int, default=2, help="naive DeepMedic tiles to time (default 2)")
    p.add_argument("--window-samples", type=int, default=1, help="nnU-Net-style windows to time (default 1)")
    p.add_argument("--skip-baselines", action="store_true", help="time the pipeline only")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32", help="pipeline network arithmetic")
    p.add_argument("--flip-tta", action="store_true", help="detector flip test-time augmentation (pipeline only)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table to this file")
    p.add_argument("--child", nargs=3, metavar=("CASE", "MODELS", "TRAINED"), help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        case, model_dir, trained = args.child
        print(json.dumps(child_pipeline(Path(case), Path(model_dir), trained == "1", args.threads, args.precision,
                                        args.flip_tta)))
        return 0

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="aneurysmseg-bench-") as scratch:
        case_dir = ensure_case(args.case_dir or Path(scratch) / "case", args.seed)
        model_dir, trained = ensure_models(args.models, Path(scratch))
        child = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--precision", args.precision,
                                *(["--flip-tta"] if args.flip_tta else []), "--child", str(case_dir),
                                str(model_dir), "1" if trained else "0"], capture_output=True, text=True)
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            return 1
        res = json.loads(child.stdout.strip().splitlines()[-1])
        shape_zyx = (SHAPE_XYZ[2], SHAPE_XYZ[1], SHAPE_XYZ[0])
        print(f"pipeline: {res['wall_s']:.1f} s; timing baselines...", file=sys.stderr)
        if args.skip_baselines:
            print(json.dumps(res, indent=1))
            return 0
        naive = naive_detection(model_dir, shape_zyx, args.tile_samples)
        nn = nnunet_baseline(shape_zyx, args.window_samples)
    command = "python benchmarks/pipeline_speed.py " + " ".join(sys.argv[1:])
    table = markdown(res, naive, nn, trained, args.threads, command.strip(), args.precision)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
