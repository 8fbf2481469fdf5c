"""What the reading checks of io/headers.py cost on a clinical-size scan (512 x 512 x 160).

For int16 and float32 NIfTI (.nii.gz and .nii; float32 also with a zero background, where the NaN/Inf
pass has to decode the file again because ITK shows NaN/Inf as 0) it times ``io.images.read_image`` (header, byte count,
NaN/Inf pass, then ITK) against a bare ``SimpleITK.ReadImage`` of the same file, and times the content
check a refine run makes (``Image.same_scan`` of two equal scans, ``Image.content_key``). Prints a
markdown table; run with ``python benchmarks/read_checks.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from AneurysmSegLib.core.geometry import Geometry, Image
from AneurysmSegLib.io import images


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timings are the best of this many runs")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    base = (rng.normal(100, 20, size=(160, 512, 512))).clip(1, 4000)
    masked = base.copy()
    masked[:, :, :64] = 0  # a zero background (brain-extracted or masked scans)
    geometry = Geometry((0.35, 0.35, 0.5))
    print("| file | sitk.ReadImage (s) | read_image (s) | extra |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for dtype, array, what in ((np.int16, base, ""), (np.float32, base, ""),
                                   (np.float32, masked, ", zero background")):
            for ext in (".nii.gz", ".nii"):
                path = images.write_image(array.astype(dtype), geometry, Path(tmp) / f"scan{ext}",
                                          compress=ext.endswith("gz"))
                bare = best_of(args.repeat, lambda: sitk.ReadImage(str(path)))
                checked = best_of(args.repeat, lambda: images.read_image(path))
                name = f"{np.dtype(dtype).name}{what} {ext} ({path.stat().st_size / 1e6:.0f} MB)"
                print(f"| {name} | {bare:.2f} | {checked:.2f} | {checked - bare:+.2f} |")
    a = Image(base.astype(np.float32), geometry)
    b = Image(a.array.copy(), geometry)
    print(f"\nImage.same_scan of two equal 512 x 512 x 160 float32 scans: "
          f"{best_of(args.repeat, lambda: a.same_scan(b)):.2f} s; "
          f"Image.content_key: {best_of(args.repeat, a.content_key):.2f} s")


if __name__ == "__main__":
    main()
