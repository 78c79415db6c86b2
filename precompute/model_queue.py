"""``ModelQueue``: the one model's turns, shared by every session of the app.

A loaded model carries TransformerLens hooks as state, so one analysis runs at a time. The queue is first come,
first served and bounded: at most ``max_waiting`` callers wait behind the running one; one more is refused at once
with ``BusyError`` ("busy, try again") instead of an ever-longer wait. A waiting caller hears how many analyses
are ahead of it (``on_wait(ahead)``) each time that changes, and ``on_wait(0)`` when its turn comes.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import BusyError

DEFAULT_MAX_WAITING = 8


class ModelQueue:
    def __init__(self, max_waiting: int = DEFAULT_MAX_WAITING):
        if not isinstance(max_waiting, int) or max_waiting < 0:
            raise ValueError(f"max_waiting must be a whole number >= 0, got {max_waiting!r}")
        self.max_waiting = max_waiting
        self._cond = threading.Condition()
        self._busy = False
        self._waiting: deque[object] = deque()

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    @contextmanager
    def turn(self, on_wait: Callable[[int], None] | None = None) -> Iterator[None]:
        """Hold the model for the ``with`` block: at once when it is free, else after the callers ahead."""
        with self._cond:
            if self._busy or self._waiting:
                if len(self._waiting) >= self.max_waiting:
                    raise BusyError(
                        f"The model is busy: {len(self._waiting) + 1} analyses are running or waiting. Try again "
                        "in a moment."
                    )
                ticket = object()
                self._waiting.append(ticket)
                told = None
                try:
                    while self._busy or self._waiting[0] is not ticket:
                        ahead = self._waiting.index(ticket) + int(self._busy)
                        if on_wait is not None and ahead != told:
                            on_wait(ahead)
                            told = ahead
                        self._cond.wait()
                finally:
                    self._waiting.remove(ticket)
                    self._cond.notify_all()  # a caller that gave up moves everyone behind it up
                if on_wait is not None:
                    on_wait(0)
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
