"""Giving freed memory back to the operating system.

Loading and processing GPT-2 weights peaks at several times the final size; glibc keeps the freed pages in its
arenas, so the process stays large long after. ``release()`` asks glibc to return them (Linux only; a no-op
elsewhere). Used after loading a model and after each live analysis, where the app's memory budget matters.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import lru_cache


@lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        return lib if hasattr(lib, "malloc_trim") else None
    except OSError:
        return None


def release() -> bool:
    """Collect garbage and trim the C heap; True if the heap was trimmed."""
    gc.collect()
    lib = _libc()
    if lib is None:
        return False
    return bool(lib.malloc_trim(0))
