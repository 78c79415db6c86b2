"""How the process's C heap is used and given back (Linux glibc; no-ops elsewhere).

* ``tune_allocator()``: by default glibc serves every block above a (dynamic, at most 32 MB) threshold with a
  fresh ``mmap`` and unmaps it on free, so the analysis's vocabulary-sized temporaries (3 MB per sub-chunk,
  55 MB per projection GEMM for GPT-2) page-fault anew every time: about 20 ms of the 140 ms vocabulary stage at
  128 tokens here (BENCHMARKS.md §1). Tuned, blocks up to 256 MB come from the heap and are reused; the heap is
  not trimmed on every free; all threads share the main arena. Called by ``load_model`` for CPU models and by the app at
  start.
* ``prepare_environment()``: for long-running processes (the app server), before torch is imported: MKL's own
  buffer cache off (``MKL_DISABLE_FAST_MM=1``, read when torch loads MKL). It kept ≈ 50 MiB of GEMM buffers
  after each analysis that ``release`` cannot return; the tuned heap makes MKL's allocations as cheap (the
  analysis's time did not change, measured).
* ``server_environment()``: the environment ``python -m app.launch`` starts the server with: the above, and
  glibc's one-arena setting from the first allocation on (``MALLOC_ARENA_MAX=1``; ``tune_allocator`` in the
  app only reaches threads made after it). Server RSS after a live analysis −13 MiB, −20 MiB after browsing
  on (three runs each, BENCHMARKS.md §4).
* ``release()``: loading and processing GPT-2 weights peaks at several times the final size, and the heap keeps
  freed pages; this returns them (every free page, not only the top). Used after loading a model and after each
  live analysis, where the app's memory budget matters.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def libc():
    """The C library when it has glibc's malloc_trim (Linux), else None; loaded once."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        return lib if hasattr(lib, "malloc_trim") else None
    except OSError:
        return None


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 256 * 2**20
TRIM_THRESHOLD = 512 * 2**20
ARENA_MAX = 1


def tune_allocator() -> bool:
    """Serve blocks up to 256 MB from the reusable heap, trim it only past 512 MB free (or on ``release``), and
    keep one arena: each new thread (each Streamlit script run) otherwise gets an arena of its own, and
    ``malloc_trim`` never shrinks the top of those, so an analysis run there kept 12-57 MiB (measured). True if
    glibc took every setting."""
    lib = libc()
    if lib is None or not hasattr(lib, "mallopt"):
        return False
    return all(
        bool(lib.mallopt(param, value))
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_ARENA_MAX, ARENA_MAX),
        )
    )


PROCESS_ENV = {"MKL_DISABLE_FAST_MM": "1"}
SERVER_ENV = {**PROCESS_ENV, "MALLOC_ARENA_MAX": str(ARENA_MAX)}


def server_environment(environ) -> dict[str, str]:
    """``environ`` with ``SERVER_ENV``'s settings added where it has none (a value set by the user is kept)."""
    return {**SERVER_ENV, **environ}


def prepare_environment() -> bool:
    """Set ``PROCESS_ENV`` (unless already set) if torch is not imported yet; True if it took effect."""
    if "torch" in sys.modules:
        return False
    for name, value in PROCESS_ENV.items():
        os.environ.setdefault(name, value)
    return True


@contextlib.contextmanager
def fresh_pages():
    """While active, memory that is allocated but never written costs no resident pages: a block above 128 KB
    that the heap cannot serve is its own fresh ``mmap`` (glibc's default before tuning), and what the heap can
    serve was just given back to the kernel (``release``), so it reads as zero pages until written. The tuned
    threshold comes back afterwards."""
    release()
    lib = libc()
    tuned = lib is not None and hasattr(lib, "mallopt") and bool(lib.mallopt(M_MMAP_THRESHOLD, 128 * 1024))
    try:
        yield
    finally:
        if tuned:
            lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release() -> bool:
    """Collect garbage and trim the C heap; True if the heap was trimmed."""
    gc.collect()
    lib = libc()
    if lib is None:
        return False
    return bool(lib.malloc_trim(0))


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), e.g. 'Intel(R) Xeon(R) CPU @ 2.80GHz'."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
