"""Where artifacts are and how the demo build is going, without Streamlit: the launcher and the app's state layer
both read this (the launcher must not load Streamlit to list folders)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / "artifacts"
STATUS = ".build-status.json"
# the demo sets the launcher builds, in the order the picker lists them (after the user's own runs)
DEMO_SETS = ("gpt2-demo", "toy-demo", "smollm2-demo")


def candidate_runs(base: Path | None = None) -> list[str]:
    """Local run folders under ``base`` (default: ``artifacts/``; folders holding a manifest.json): the user's own
    runs newest first, then the launcher's demo sets in ``DEMO_SETS`` order (the quick toy set before the real
    model's, whichever finished last)."""
    base = DEFAULT_DIR if base is None else base
    if not base.exists():
        return []
    runs = [p for p in base.iterdir() if (p / "manifest.json").exists()]
    if (base / "manifest.json").exists():
        runs.append(base)

    def order(p: Path):
        if p.name in DEMO_SETS:
            return (1, DEMO_SETS.index(p.name), 0.0)
        return (0, 0, -(p / "manifest.json").stat().st_mtime)

    return [str(p) for p in sorted(runs, key=order)]


def status_path(base: Path) -> Path:
    return base / STATUS


def write_status(base: Path, **status) -> None:
    base.mkdir(parents=True, exist_ok=True)
    tmp = status_path(base).with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), **status, "time": time.time()}))
    tmp.replace(status_path(base))


def read_status(base: Path) -> dict | None:
    try:
        status = json.loads(status_path(base).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def builder_alive(status: dict) -> bool:
    try:
        os.kill(int(status.get("pid", -1)), 0)
        return True
    except (OSError, ValueError, OverflowError, TypeError):
        return False
