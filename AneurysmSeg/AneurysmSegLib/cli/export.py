"""``aneurysmseg export --coarse RUN --fine RUN --out DIR``: TorchScript files + manifest.json.

RUN is a run folder of ``aneurysmseg train`` (its best.pt is used) or a checkpoint file; the work is
:func:`AneurysmSegLib.training.export.export_models`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coarse", required=True, metavar="RUN_OR_CKPT", help="coarse run folder or checkpoint (.pt)")
    p.add_argument("--fine", required=True, metavar="RUN_OR_CKPT", help="fine run folder or checkpoint (.pt)")
    p.add_argument("--out", required=True, metavar="DIR", help="model folder (e.g. AneurysmSeg/Resources/Models)")
    p.add_argument("--which", choices=["best", "last"], default="best", help="checkpoint of a run folder")
    p.add_argument("--segment-out", type=int, default=45, help="coarse inference output tile (multiple of 3)")
    p.add_argument("--coarse-threshold", type=float, default=0.5,
                   help="detector probability threshold recorded in the manifest (choose it on validation data)")
    p.add_argument("--note", default="", help="free text stored in the manifest's training section")


def run(args: argparse.Namespace) -> int:
    from ..core.manifest import ModelManifest
    from ..training.export import export_models

    export_models(args.coarse, args.fine, args.out, args.which, args.segment_out, args.note, args.coarse_threshold)
    manifest = ModelManifest.read(args.out)
    for kind in ("coarse", "fine"):
        e = manifest[kind]
        print(f"{kind}: {Path(args.out) / e['file']} ({e['size_bytes'] / 1e6:.1f} MB, sha256 {e['sha256'][:12]}...)")
    print(f"manifest: {manifest.model_dir / 'manifest.json'}")
    return 0
