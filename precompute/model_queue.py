"""``ModelQueue``: the one model's turns, shared by every session of the app.

A loaded model carries TransformerLens hooks as state, so one analysis runs at a time. The queue is first come,
first served and bounded: at most ``max_waiting`` callers wait behind the running one; one more is refused at once
with ``BusyError`` ("busy, try again") instead of an ever-longer wait. A waiting caller hears how many analyses
are ahead of it (``on_wait(ahead)``) each time that changes, and ``on_wait(0)`` when its turn comes.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import BusyError

DEFAULT_MAX_WAITING = 8
_QUEUES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its one queue
_QUEUES_LOCK = threading.Lock()


def queue_of(model, max_waiting: int | None = None) -> ModelQueue:
    """The one queue of ``model`` (an ``nn.Module``: its hooks are state, so everything that runs it, however many
    analyzers and pages, takes turns in this queue). ``max_waiting``: set its bound (else it keeps its own)."""
    with _QUEUES_LOCK:
        queue = _QUEUES.get(model)
        if queue is None:
            queue = _QUEUES[model] = ModelQueue(DEFAULT_MAX_WAITING if max_waiting is None else max_waiting)
        elif max_waiting is not None:
            queue.max_waiting = ModelQueue(max_waiting).max_waiting  # validated as a new queue's
        return queue


class ModelQueue:
    def __init__(self, max_waiting: int = DEFAULT_MAX_WAITING):
        if not isinstance(max_waiting, int) or max_waiting < 0:
            raise ValueError(f"max_waiting must be a whole number >= 0, got {max_waiting!r}")
        self.max_waiting = max_waiting
        self._cond = threading.Condition()
        self._busy = False
        self._waiting: deque[object] = deque()
        self._version = 0  # bumped (under the lock) at every change a waiter must see

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    @contextmanager
    def turn(self, on_wait: Callable[[int], None] | None = None) -> Iterator[None]:
        """Hold the model for the ``with`` block: at once when it is free, else after the callers ahead.
        ``on_wait`` is called outside the queue's lock (it may draw on a page, or raise to give up)."""
        with self._cond:
            queued = self._busy or bool(self._waiting)
            if queued:
                if len(self._waiting) >= self.max_waiting:
                    raise BusyError(
                        f"The model is busy: {len(self._waiting) + 1} analyses are running or waiting. Try again "
                        "in a moment."
                    )
                ticket = object()
                self._waiting.append(ticket)
            else:
                self._busy = True
        if queued:
            self._wait_for_turn(ticket, on_wait)
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._changed()

    def _changed(self) -> None:
        """Under the lock: the queue changed; wake every waiter to look again."""
        self._version += 1
        self._cond.notify_all()

    def _wait_for_turn(self, ticket: object, on_wait: Callable[[int], None] | None) -> None:
        told = None
        try:
            while True:
                with self._cond:
                    if not self._busy and self._waiting[0] is ticket:
                        self._waiting.popleft()
                        self._busy = True
                        self._changed()  # everyone behind moves up
                        break
                    ahead, seen = self._waiting.index(ticket) + int(self._busy), self._version
                if on_wait is not None and ahead != told:
                    on_wait(ahead)
                    told = ahead
                with self._cond:
                    while self._version == seen:  # a change since ``seen`` is never missed
                        self._cond.wait()
        except BaseException:
            with self._cond:  # a caller that gave up moves everyone behind it up
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                self._changed()
            raise
        if on_wait is not None:
            on_wait(0)
