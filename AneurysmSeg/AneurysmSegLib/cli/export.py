"""``aneurysmseg export --coarse RUN --fine RUN [--vessels RUN] [--finding-classifier RUN] --out DIR``: TorchScript files + manifest.json.

RUN is a run folder of ``aneurysmseg train`` (its best.pt is used) or a checkpoint file; the work is
:func:`AneurysmSegLib.training.export.export_models`. ``--vessels`` alone adds the learnt artery tree
(a run folder of ``aneurysmseg train vessels``) to the folder's existing manifest
(:func:`AneurysmSegLib.training.vessels.export_vessels`); ``--finding-classifier`` likewise adds the
false-positive reduction fitted by ``aneurysmseg train fpr`` (:func:`AneurysmSegLib.training.fp_reduction.export_classifier`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coarse", metavar="RUN_OR_CKPT", help="coarse run folder or checkpoint (.pt)")
    p.add_argument("--fine", metavar="RUN_OR_CKPT", help="fine run folder or checkpoint (.pt)")
    p.add_argument("--vessels", metavar="RUN", help="vessel run folder (`aneurysmseg train vessels`): adds its network "
                   "to the manifest (alone: to the folder's existing manifest)")
    p.add_argument("--finding-classifier", metavar="RUN", help="run folder of `aneurysmseg train fpr`: adds the "
                   "false-positive reduction (its coefficients and the threshold chosen on validation) to the manifest")
    p.add_argument("--out", required=True, metavar="DIR", help="model folder (e.g. AneurysmSeg/Resources/Models)")
    p.add_argument("--which", choices=["best", "last"], default="best", help="checkpoint of a run folder")
    p.add_argument("--segment-out", type=int, default=45, help="coarse inference output tile (multiple of 3)")
    p.add_argument("--coarse-threshold", type=float, default=0.5,
                   help="detector probability threshold recorded in the manifest (choose it on validation data)")
    p.add_argument("--note", default="", help="free text stored in the manifest's training section")


def run(args: argparse.Namespace) -> int:
    from ..core.manifest import ModelManifest
    from ..training.export import export_models

    from ..core.errors import InputError

    if (args.coarse is None) != (args.fine is None) or \
            (args.coarse is None and args.vessels is None and args.finding_classifier is None):
        raise InputError("give --coarse and --fine together, and/or --vessels, and/or --finding-classifier")
    if args.coarse is not None:
        export_models(args.coarse, args.fine, args.out, args.which, args.segment_out, args.note, args.coarse_threshold)
    if args.vessels is not None:
        from ..training.vessels import export_vessels

        export_vessels(args.vessels, args.out, args.which)
    if args.finding_classifier is not None:
        from ..training.fp_reduction import export_classifier

        export_classifier(args.finding_classifier, args.out)
    manifest = ModelManifest.read(args.out)
    for kind in ("coarse", "fine", "vessels", "finding_classifier"):
        e = manifest.get(kind)
        if e is None:
            continue
        print(f"{kind}: {Path(args.out) / e['file']} ({e['size_bytes'] / 1e6:.1f} MB, sha256 {e['sha256'][:12]}...)")
    print(f"manifest: {manifest.model_dir / 'manifest.json'}")
    return 0
