"""The ``aneurysmseg`` command: a thin dispatcher. Each subcommand lives in its own module that
defines ``configure_parser(parser)`` and ``run(args) -> int``; errors meant for the user become
one line on stderr and a non-zero exit code. SIGTERM (a cluster's time limit, a killed job) is handled
like Ctrl-C: what the run staged is removed and earlier outputs stay as they were."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
import warnings
from typing import Iterator

from ..core.errors import AneurysmSegError, InputWarning

DESCRIPTION = "Segment unruptured cerebral aneurysms in TOF-MRA, and train and evaluate the models that do it."

COMMANDS: dict[str, tuple[str, str]] = {
    "segment": ("AneurysmSegLib.cli.segment", "segment aneurysms in a TOF-MRA (file, DICOM folder or batch folder)"),
    "demo": ("AneurysmSegLib.cli.demo", "segment the bundled sample and write every output to a folder"),
    "phantom": ("AneurysmSegLib.cli.phantom", "write synthetic TOF-MRA cases with ground truth (ADAM layout)"),
    "train": ("AneurysmSegLib.cli.train",
              "train the coarse (DeepMedic) or fine (SE 3D U-Net) network, the vessel network or the finding classifier"),
    "export": ("AneurysmSegLib.cli.export", "export trained checkpoints to TorchScript with a manifest"),
    "evaluate": ("AneurysmSegLib.cli.evaluate", "evaluate models on ADAM-layout cases and write the tables"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aneurysmseg", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).configure_parser(p)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that cleanup (``with`` blocks) runs as for Ctrl-C."""


@contextlib.contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def terminate(signum, frame) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _warnings_as_lines(command: str) -> Iterator[None]:
    """Every :class:`InputWarning` becomes one ``aneurysmseg CMD: warning: ...`` line on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)
        previous = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            if issubclass(category, InputWarning):
                print(f"aneurysmseg {command}: warning: {message}", file=sys.stderr, flush=True)
            else:
                previous(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _sigterm_as_exception(), _warnings_as_lines(args.command):
            return int(importlib.import_module(args._module).run(args) or 0)
    except AneurysmSegError as exc:
        print(f"aneurysmseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"aneurysmseg {args.command}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"aneurysmseg {args.command}: interrupted", file=sys.stderr)
        return 130

