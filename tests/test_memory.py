"""The process-level memory helpers (``models.memory``)."""

import os
import subprocess
import sys

from precompute.models import memory

TIER = "fast"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


def test_prepare_environment_only_before_torch():
    assert "torch" in sys.modules
    assert memory.prepare_environment() is False  # too late in this process: nothing is changed
    code = (
        "import os, sys; from precompute.models import memory; ok = memory.prepare_environment(); "
        "import torch; print(ok, os.environ.get('MKL_DISABLE_FAST_MM'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "MKL_DISABLE_FAST_MM"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert out.stdout.split() == ["True", "1"]


def test_the_app_package_prepares_the_environment():
    code = "import os, app, sys; print('torch' in sys.modules, os.environ.get('MKL_DISABLE_FAST_MM'))"
    env = {k: v for k, v in os.environ.items() if k != "MKL_DISABLE_FAST_MM"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert out.stdout.split() == ["False", "1"]  # set, and importing the app did not import torch


TUNING = """
import torch
from precompute.models import memory
def in_heap(t):
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            return lo <= t.data_ptr() < hi
    return False
assert memory.tune_allocator()
tuned = torch.ones(8 * 2**20 // 4)  # 8 MB: above glibc's default threshold, from the reusable heap once tuned
with memory.fresh_pages():
    fresh = torch.ones(8 * 2**20 // 4)  # its own fresh mapping while the context is active
again = torch.ones(8 * 2**20 // 4)  # the tuned threshold is back
print(in_heap(tuned), in_heap(fresh), in_heap(again), float(tuned.sum() + fresh.sum() + again.sum()) == 3 * 2**21)
"""


def test_tuned_heap_serves_big_blocks_and_fresh_pages_maps_them():
    """In a fresh process (a long-lived one may serve any block from free heap it already has)."""
    out = subprocess.run(
        [sys.executable, "-c", TUNING],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert out.stdout.split() == ["True", "False", "True", "True"]
    assert isinstance(memory.release(), bool)
