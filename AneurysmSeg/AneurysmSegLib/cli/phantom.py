"""``aneurysmseg phantom OUT --cases N --seed S``: write synthetic TOF-MRA cases in the ADAM layout."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="output folder; one case folder P0000, P0001, ... per case")
    p.add_argument("--cases", type=int, default=1, help="number of cases (default 1)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed; case i uses a seed derived from (seed, i)")
    p.add_argument("--start", type=int, default=0, help="index of the first case (to extend a dataset)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), help="matrix size (default 256 256 96)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"), help="voxel size in mm (default: random)")
    p.add_argument("--scanner", choices=("train", "shifted"), default="train",
                   help="scanner parameter distribution: 'shifted' differs from training (generalisation tests)")
    p.add_argument("--aneurysms", type=int, default=None, help="force this many aneurysms per case (and no treated one)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override drawn parameters, e.g. noise=0.05 intensity_range=int1000 (values parsed as JSON)")
    p.add_argument("--kind", default=None, metavar="NAME",
                   help="an input kind of real TOF-MRA (e.g. brain_extracted, cow_crop, vessels_only, uint8; "
                        "'--kind list' prints them all); default: the full head as the generator renders it")
    p.add_argument("--randomise", action="store_true",
                   help="domain-randomised cases for training: random field of view, masking, appearance, voxel size "
                        "and intensity convention per case (a share keeps the realistic look); --shape/--spacing/"
                        "--scanner/--kind do not apply")
    p.add_argument("--max-voxels", type=int, default=None,
                   help="with --randomise: largest grid per case (default 256*256*96); larger draws are cropped")
    p.add_argument("--preview", type=Path, default=None, help="also write MIP, slice and aneurysm close-up pictures of the first case: PREFIX_mip.png, ...")


def _parse_overrides(items: list[str]) -> dict:
    """``KEY=VALUE`` strings -> dict; VALUE is JSON when it parses (numbers, true/false), else a string."""
    import json

    from ..core.errors import InputError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..core.errors import InputError, OutputError
    from ..phantom.kinds import KINDS, describe, make_kind
    from ..phantom.randomise import MAX_VOXELS, randomised_case
    from ..phantom.render import case_seed, generate_case, write_case

    if args.kind == "list":
        for name in KINDS:
            print(f"{name:20s} {describe(name)}")
        return 0
    if args.kind is not None and args.kind not in KINDS:
        raise InputError(f"unknown --kind {args.kind!r}; known: {', '.join(KINDS)}")
    if args.randomise and (args.kind or args.shape or args.spacing or args.scanner != "train"):
        raise InputError("--randomise draws the grid, scanner and kind itself: drop --kind, --shape, --spacing and --scanner")
    if args.max_voxels is not None and (not args.randomise or args.max_voxels < 16 ** 3):
        raise InputError("--max-voxels goes with --randomise and must be at least 4096")
    if args.cases < 1:
        raise InputError("--cases must be at least 1")
    if args.shape is not None and min(args.shape) < 16:
        raise InputError("--shape must be at least 16 voxels along every axis")
    if args.spacing is not None and min(args.spacing) <= 0:
        raise InputError("--spacing must be positive")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {args.out}: {exc}") from exc
    overrides = {} if args.aneurysms is None else {"n_aneurysms": args.aneurysms, "treated": False}
    overrides.update(_parse_overrides(args.set))
    for i in tqdm(range(args.start, args.start + args.cases), desc="phantoms", unit="case"):
        try:
            seed = case_seed(args.seed, i)
            if args.randomise:
                case = randomised_case(seed, args.max_voxels or MAX_VOXELS, **overrides)
            elif args.kind is None:
                case = generate_case(seed, args.shape, args.spacing, args.scanner, **overrides)
            else:
                case = make_kind(args.kind, seed, args.shape, args.spacing, args.scanner, **overrides)
        except ValueError as exc:  # unknown parameter names or values
            raise InputError(str(exc)) from exc
        write_case(case, args.out / f"P{i:04d}")
        if args.preview is not None and i == args.start:
            from ..phantom.preview import save_closeups, save_mip, save_slices

            save_mip(case, f"{args.preview}_mip.png")
            save_slices(case, f"{args.preview}_slices.png")
            save_closeups(case, f"{args.preview}_closeup.png")
    print(f"wrote {args.cases} case(s) to {args.out}")
    return 0
