"""Handing freed memory back to the system between pipeline stages.

glibc keeps freed heap memory (the many 10-200 MB arrays a stage frees) mapped in the process for
reuse; what one stage freed then sits under the next stage's own peak. ``malloc_trim`` returns it.
Elsewhere (macOS, Windows, other C libraries) this is a no-op: their allocators behave differently
and the pipeline does not depend on it.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Callable, Optional

_TRIM: Optional[Callable[[int], int]] = None
_LOOKED_UP = False


def _malloc_trim() -> Optional[Callable[[int], int]]:
    global _TRIM, _LOOKED_UP
    if not _LOOKED_UP:
        _LOOKED_UP = True
        if sys.platform.startswith("linux"):
            try:
                _TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the process's C library
            except OSError:
                _TRIM = None
    return _TRIM


def release_freed_memory() -> bool:
    """Return freed heap memory to the system (glibc ``malloc_trim(0)``); False where not available."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
