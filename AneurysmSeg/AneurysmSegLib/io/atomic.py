"""The one way files are written: through a temporary sibling, then renamed into place.

A reader (or a crash) never sees a half-written file; a folder that cannot take a new file is found
before long work starts (:func:`ensure_can_create`), not after it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from ..core.errors import OutputError


def ensure_can_create(path: str | Path) -> Path:
    """Raise :class:`OutputError` unless the nearest existing folder above ``path`` accepts a new file.

    Tested by creating and removing a probe file: permission bits alone lie when running as root or
    on read-only mounts. Returns that folder.
    """
    path = Path(path)
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: {folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".aneurysmseg-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: folder {folder} is not writable ({exc.strerror})") from None
    return folder


def write_atomic(path: str | Path, write: Callable[[str], None], suffix: str = "") -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (``suffix`` keeps a format's extension),
    then rename it to ``path``; the parent folder is created. OutputError, and nothing left behind, when
    writing fails."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder {path.parent}: {exc.strerror}") from None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".part{suffix}")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except (RuntimeError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise OutputError(f"writing {path} failed: {getattr(exc, 'strerror', None) or first}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """UTF-8 text written atomically (:func:`write_atomic`)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return write_atomic(path, write)
