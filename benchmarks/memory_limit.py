"""Run a benchmark's child process under a memory limit that, like a container's, counts page cache.

A Linux memory cgroup (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``) is made for the child, when this
process may write the cgroup tree (root in a container, usually). Clean page cache is dropped first where
``/proc/sys/vm/drop_caches`` is writable, so that the files the child maps (libraries, the processed-weight cache)
are read anew and charged to its cgroup, not to whoever read them before.

    with MemoryLimit(1000) as limit:
        proc = subprocess.Popen(cmd, preexec_fn=limit.enter)
        ...
        limit.report()  # limit_mib, cgroup, max_usage_mib, hit_limit_times, oom_kills, page_cache_dropped
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


class LimitUnavailable(RuntimeError):
    pass


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _counters(path: Path) -> dict[str, int]:
    """A cgroup file of ``name value`` lines (memory.events, memory.oom_control); {} if absent or malformed."""
    try:
        return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines() if line.strip())}
    except (OSError, ValueError):
        return {}


class MemoryLimit:
    """A fresh memory cgroup limited to ``limit_mib`` MiB (page cache included), removed on exit."""

    def __init__(self, limit_mib: int, root: Path = CGROUP_ROOT, drop_page_cache: bool = True):
        if int(limit_mib) <= 0:
            raise ValueError(f"the limit must be a positive number of MiB, got {limit_mib!r}")
        self.limit_mib = int(limit_mib)
        self.root = Path(root)
        self.v2 = (self.root / "cgroup.controllers").exists()
        self.drop_page_cache = drop_page_cache
        self.page_cache_dropped = False
        self.dir: Path | None = None

    def __enter__(self) -> MemoryLimit:
        parent = self.root if self.v2 else self.root / "memory"
        self.dir = parent / f"cse-bench-{uuid.uuid4().hex[:8]}"
        try:
            self.dir.mkdir()
            limit_file = "memory.max" if self.v2 else "memory.limit_in_bytes"
            (self.dir / limit_file).write_text(str(self.limit_mib * 2**20))
        except OSError as err:
            self._remove()
            self.dir = None
            raise LimitUnavailable(
                f"cannot make a memory cgroup under {parent} ({err.strerror or err}); run as "
                "root, or in a container that delegates its cgroup tree"
            ) from None
        if self.drop_page_cache:
            try:
                os.sync()
                DROP_CACHES.write_text("1")
                self.page_cache_dropped = True
            except OSError:
                pass
        return self

    def enter(self) -> None:
        """For ``preexec_fn``: move the (forked) child into the cgroup before it execs."""
        (self.dir / "cgroup.procs").write_text(str(os.getpid()))

    def report(self) -> dict:
        d = self.dir
        if self.v2:
            events = _counters(d / "memory.events")
            peak, hits, ooms = _read_int(d / "memory.peak"), events.get("max"), events.get("oom_kill")
        else:
            peak, hits = _read_int(d / "memory.max_usage_in_bytes"), _read_int(d / "memory.failcnt")
            ooms = _counters(d / "memory.oom_control").get("oom_kill")
        return {
            "limit_mib": self.limit_mib,
            "cgroup": "v2" if self.v2 else "v1",
            "max_usage_mib": None if peak is None else round(peak / 2**20, 1),
            "hit_limit_times": hits,
            "oom_kills": ooms,
            "page_cache_dropped": self.page_cache_dropped,
        }

    def _remove(self) -> None:
        if self.dir is not None:
            with contextlib.suppress(OSError):
                self.dir.rmdir()

    def __exit__(self, *exc) -> None:
        self._remove()
