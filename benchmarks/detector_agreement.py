"""Does the sparse detector give the whole network's answer? Case by case, with its CPU time.

    .venv/bin/python benchmarks/detector_agreement.py /work/runs/train11/data/test-random --cases 16

For each case: ``preprocess`` as the pipeline runs it, then ``detect.run_detector`` over the same boxes
twice, with ``detect.SparseHead`` (what the pipeline runs: DeepMedic's pathways layer by layer, the
subsampled pathway once over the region, the head on region voxels) and with the whole TorchScript
network per box (``sparse_head=False``). Prints the largest probability difference, the seeds of
each at the manifest's threshold (equal count, positions within 1e-4 mm) and the CPU seconds of each
(one thread by default, so that other processes on the machine matter less).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="ADAM-layout folders of cases")
    ap.add_argument("--cases", type=int, default=5, help="cases per folder")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from AneurysmSegLib.core.models import load_models
    from AneurysmSegLib.io.images import read_image
    from AneurysmSegLib.preprocess import coarse_roi
    from AneurysmSegLib.core.pipeline import prepare
    from AneurysmSegLib.stages import detect
    from AneurysmSegLib.training.data import find_cases

    models = load_models(device="cpu")
    refs = [r for f in args.folders for r in find_cases([f])[: args.cases]]
    worst, agree = 0.0, 0
    for ref in refs:
        pre = prepare(read_image(ref.image_path), models)
        roi = coarse_roi(pre)
        run = dict(segment_out=None, context=models.coarse_context, pad_value=detect.detector_padding(pre),
                   device=torch.device("cpu"))
        probs, cpu = [], []
        for sparse in (True, False):
            t = time.process_time()
            prob, boxes = detect.run_detector(models.coarse, pre.coarse.array, roi, sparse_head=sparse, **run)
            cpu.append(time.process_time() - t)
            probs.append(prob)
        seeds = [detect.seeds_from_probability(p, pre.coarse.geometry, models.detection_threshold) for p in probs]
        same = len(seeds[0]) == len(seeds[1]) and all(
            np.allclose(a.position_lps, b.position_lps, atol=1e-4) for a, b in zip(*seeds))
        diff = float(np.abs(probs[0] - probs[1]).max())
        worst, agree = max(worst, diff), agree + same
        print(f"{ref.name}: {boxes} boxes, largest probability difference {diff:.1e}, seeds {len(seeds[0])} / "
              f"{len(seeds[1])} {'the same' if same else 'DIFFER'}, CPU {cpu[0]:.1f} s sparse / {cpu[1]:.1f} s whole")
    print(f"{len(refs)} cases: the same seeds in {agree}, largest probability difference {worst:.1e}")


if __name__ == "__main__":
    main()
