"""Timing and memory helpers for the benchmarks (ratios are always measured side by side in one run)."""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time

from precompute.models.memory import cpu_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def timeit(fn, reps: int = 5, warmup: int = 1) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "reps": reps}


def interleaved(fns: dict, reps: int = 5, warmup: int = 1) -> dict:
    """Time several functions round-robin (so machine noise hits all alike): name -> stats."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {
        name: {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "reps": reps}
        for name, ts in times.items()
    }


def _status_mb(key: str, pid: int | str) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory now (MiB)."""
    return _status_mb("VmRSS", pid)


def peak_rss_mb(pid: int | str = "self") -> float:
    """Resident memory high-water mark (MiB)."""
    return _status_mb("VmHWM", pid)


def rss_parts_mb(pid: int | str = "self") -> dict:
    """Resident memory now (MiB), split into anonymous (heap, tensors the process made) and file-backed pages
    (shared libraries' code, memory-mapped files such as the processed-weight cache)."""
    return {"anon": round(_status_mb("RssAnon", pid), 1), "file": round(_status_mb("RssFile", pid), 1)}


def reset_peak() -> None:
    """Reset the process's RSS high-water mark (Linux: write 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def machine() -> dict:
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "maxrss_mb_at_start": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def emit(name: str, result: dict) -> None:
    out = {"benchmark": name, "machine": machine(), **result}
    text = json.dumps(out, indent=2)
    print(text)
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    with open(os.path.join(os.path.dirname(__file__), "results", f"{name}.json"), "w") as fh:
        fh.write(text + "\n")
