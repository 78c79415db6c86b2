"""Test-only fault points: ``$CSE_FAULT_POINT`` names a moment of the precompute job (``after_mean``,
``after_shard:K``, ``before_manifest``) at which the process kills itself with SIGKILL, so the fault tests kill at
known moments instead of after random sleeps. Unset (always, outside the tests), nothing happens."""

from __future__ import annotations

import os
import signal

FAULT_ENV = "CSE_FAULT_POINT"


def fault_point(name: str) -> None:
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
