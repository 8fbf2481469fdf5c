"""Fit the site classifier (stages/site_table.py) on phantom cases whose generator recorded each site.

    aneurysmseg phantom work-data/sites --cases 30 --seed 11 --shape 288 288 96
    aneurysmseg phantom work-data/sites-varied --cases 20 --seed 13 --shape 288 288 96 --set 'anatomy="varied"'
    .venv/bin/python benchmarks/fit_site_table.py work-data/sites [more folders] [--write]

For every case: the pipeline's preprocessing with the bundled models (core.pipeline.prepare, so the
landmark is the one the pipeline computes: stages/location.site_landmark, on the half-maximum tree), and
per untreated aneurysm of params.json its true site and true neck centre. About 10-15 s per case on the
2-core machine. Prints the leave-one-case-out accuracy (site group, fine site with side, side) and,
with --write, rewrites AneurysmSeg/AneurysmSegLib/stages/site_table.py with the table fitted on all.
"""

from __future__ import annotations

import argparse
import json
import pprint
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "AneurysmSeg"))


from AneurysmSegLib.core import pipeline  # noqa: E402
from AneurysmSegLib.core.models import load_models  # noqa: E402
from AneurysmSegLib.io.images import read_image  # noqa: E402
from AneurysmSegLib.stages import location as L  # noqa: E402

TABLE = ROOT / "AneurysmSeg" / "AneurysmSegLib" / "stages" / "site_table.py"


def samples(folders: list[str]) -> list[tuple[str, str, str, object, str]]:
    models = load_models(device="cpu")
    out = []
    for d in folders:
        for case in sorted(Path(d).glob("*/params.json")):
            truth = [a for a in json.loads(case.read_text())["aneurysms"]
                     if not a.get("treated") and "neck_centre_lps" in a]
            if not truth:
                continue
            origin = L.site_landmark(pipeline.prepare(read_image(case.parent / "orig" / "TOF.nii.gz"), models))
            if origin is None:
                print(f"{case.parent}: no trunk found", file=sys.stderr)
                continue
            for a in truth:
                key, side = L.split_site(a["site"])
                feats, found_side = L.site_features(a["neck_centre_lps"], origin)
                out.append((f"{d}/{case.parent.name}", key, side, feats, found_side))
            print(f"{case.parent}: {len(truth)} aneurysms", file=sys.stderr, flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+")
    ap.add_argument("--write", action="store_true", help=f"rewrite {TABLE.relative_to(ROOT)}")
    args = ap.parse_args()
    rows = samples(args.data)
    group = fine = side = 0
    for case in sorted({r[0] for r in rows}):
        table = L.fit_sites([(k, f) for c, k, s, f, fs in rows if c != case])
        for c, k, s, f, fs in rows:
            if c == case:
                pred, true = L.location_of(L.classify_site(f, table), fs), L.location_of(k, s)
                group += pred.group == true.group
                fine += pred.site == true.site and pred.side == true.side
                side += pred.side == true.side
    n = max(len(rows), 1)
    print(f"{len(rows)} aneurysms, leave-one-case-out: site group {group / n:.2f}, fine site {fine / n:.2f}, "
          f"side {side / n:.2f}")
    table = L.fit_sites([(k, f) for c, k, s, f, fs in rows])
    if args.write:
        TABLE.write_text(
            '"""Site classifier table, fitted on phantom truth by benchmarks/fit_site_table.py.\n\n'
            'Per site: mean and SD of |L-R|, A-P, I-S offsets from the landmark (location.site_landmark: the\n'
            'carotid pair\'s midpoint on the half-maximum tree), in mm; prior = share of samples. Fitted on\n'
            f'{", ".join(args.data)} ({len(rows)} aneurysms; leave-one-case-out: site group {group / n:.2f}, '
            f'fine site {fine / n:.2f}, side {side / n:.2f})."""\n\n'
            "SITE_TABLE = " + pprint.pformat(table, width=110, sort_dicts=True) + "\n", encoding="utf-8")
        print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
