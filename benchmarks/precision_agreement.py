"""How much bfloat16 autocast changes the bundled networks' output, case by case.

    .venv/bin/python benchmarks/precision_agreement.py work-data/val-train work-data/val-shifted --cases 5

Runs ``pipeline.segment`` on each case twice (float32, bfloat16) and prints the number of aneurysms
found by each, the Dice between the two label maps (all labels as one mask) and the wall times. A
check before anyone makes bfloat16 the default: the speed gain is measured in pipeline_speed.py.
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
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from AneurysmSegLib.core.models import load_models
    from AneurysmSegLib.core.pipeline import segment
    from AneurysmSegLib.io.images import read_image
    from AneurysmSegLib.training.data import find_cases

    models = load_models(device="cpu")
    dices, same_count = [], 0
    refs = [r for f in args.folders for r in find_cases([f])[: args.cases]]
    for ref in refs:
        image = read_image(ref.image_path)
        out = {}
        for precision in ("float32", "bfloat16"):
            t = time.perf_counter()
            res = segment(image, models, precision=precision)
            out[precision] = (res, time.perf_counter() - t)
        a, b = (out[p][0].labels > 0 for p in ("float32", "bfloat16"))
        dice = 1.0 if not a.any() and not b.any() else 2 * (a & b).sum() / (a.sum() + b.sum())
        na, nb = (len(out[p][0].aneurysms) for p in ("float32", "bfloat16"))
        same_count += na == nb
        dices.append(dice)
        print(f"{ref.name}: aneurysms float32 {na} / bfloat16 {nb}, Dice between them {dice:.3f}, "
              f"{out['float32'][1]:.1f} s / {out['bfloat16'][1]:.1f} s")
    print(f"{len(refs)} cases: same number of aneurysms in {same_count}, Dice between the two label maps "
          f"mean {np.mean(dices):.3f} (min {np.min(dices):.3f})")


if __name__ == "__main__":
    main()
