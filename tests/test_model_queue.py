"""The shared model's queue: first come first served, each waiter told how many are ahead, bounded ("busy")."""

from __future__ import annotations

import threading
import time

import pytest

from precompute.errors import BusyError
from precompute.model_queue import ModelQueue

TIER = "fast"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


def _until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_waiters_go_in_arrival_order_and_hear_how_many_are_ahead():
    q = ModelQueue(max_waiting=5)
    order, heard = [], {i: [] for i in range(3)}
    release = threading.Event()

    def holder():
        with q.turn():
            order.append("holder")
            release.wait(10)

    def waiter(i):
        with q.turn(on_wait=heard[i].append):
            order.append(i)

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    _until(lambda: order == ["holder"])
    for i in range(3):
        threads.append(threading.Thread(target=waiter, args=(i,)))
        threads[-1].start()
        _until(lambda i=i: q.waiting == i + 1)
    assert [h[0] for h in heard.values()] == [1, 2, 3]  # the running one and the earlier arrivals are ahead
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["holder", 0, 1, 2]
    for i, told in heard.items():  # counts down (a count is skipped when the one ahead finished unseen), 0 at the start
        assert told[0] == i + 1 and told[-1] == 0 and told == sorted(set(told), reverse=True), (i, told)
    assert q.waiting == 0


def test_beyond_the_bound_a_caller_is_told_busy_at_once():
    q = ModelQueue(max_waiting=1)
    release, inside = threading.Event(), threading.Event()

    def holder():
        with q.turn():
            inside.set()
            release.wait(10)

    def waiter():
        with q.turn():
            pass

    t1 = threading.Thread(target=holder)
    t1.start()
    inside.wait(10)
    t2 = threading.Thread(target=waiter)
    t2.start()
    _until(lambda: q.waiting == 1)
    told: list[int] = []
    with pytest.raises(BusyError, match="busy: 2 analyses are running or waiting"), q.turn(on_wait=told.append):
        pass
    assert told == [] and q.waiting == 1  # refused at once: it never joined the queue nor waited in it
    release.set()
    t1.join(10), t2.join(10)
    with q.turn():  # free again
        pass
    with pytest.raises(ValueError, match="max_waiting must be a whole number >= 0, got -1"):
        ModelQueue(max_waiting=-1)


def test_max_waiting_zero_refuses_a_second_caller_and_a_failing_waiter_leaves_the_queue_whole():
    q = ModelQueue(max_waiting=0)
    with q.turn(), pytest.raises(BusyError), q.turn():
        pass
    q = ModelQueue(max_waiting=3)
    release, inside = threading.Event(), threading.Event()
    got = []

    def holder():
        with q.turn():
            inside.set()
            release.wait(10)

    def leaver():  # as a Streamlit session stopped while it waits: its notice raises
        def on_wait(ahead):
            raise RuntimeError("session stopped")

        with pytest.raises(RuntimeError), q.turn(on_wait):
            pass

    def stayer():
        with q.turn(on_wait=got.append):
            got.append("ran")

    t = threading.Thread(target=holder)
    t.start()
    inside.wait(10)
    leaver()  # gives up at once
    s = threading.Thread(target=stayer)
    s.start()
    _until(lambda: q.waiting == 1)
    release.set()
    t.join(10), s.join(10)
    assert got == [1, 0, "ran"] and q.waiting == 0


def test_on_wait_runs_outside_the_queues_lock():
    """A waiter's ``on_wait`` (which draws on a page, and may block or raise) holds no lock: while it blocks, other
    callers still read the queue and join it, and the holder can finish."""
    q = ModelQueue(max_waiting=4)
    release, in_callback, let_go, read = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    heard = []

    def holder():
        with q.turn():
            release.wait(30)

    def slow_on_wait(ahead):
        heard.append(ahead)
        if ahead == 1 and not in_callback.is_set():
            in_callback.set()
            let_go.wait(30)

    def waiter():
        with q.turn(slow_on_wait):
            pass

    h = threading.Thread(target=holder)
    h.start()
    _until(lambda: q._busy)
    w = threading.Thread(target=waiter)
    w.start()
    assert in_callback.wait(30)
    reader = threading.Thread(target=lambda: (q.waiting, read.set()))  # needs the lock
    reader.start()
    assert read.wait(30), "the queue's lock was held during on_wait"
    release.set()
    h.join(30)
    let_go.set()
    w.join(30)
    assert not w.is_alive() and heard == [1, 0] and q.waiting == 0 and not q._busy


@pytest.mark.model
def test_one_queue_per_model_whoever_asks(toy, toy_artifacts):
    """A LiveModel and any LiveAnalyzer on the same model take turns in one queue (hooks are the model's state);
    another model has its own."""
    import torch.nn as nn

    from precompute import open_artifacts
    from precompute.live import LiveAnalyzer, LiveModel
    from precompute.model_queue import queue_of

    live = LiveModel(toy, max_waiting=3)
    alone = LiveAnalyzer.for_artifacts(toy, open_artifacts(toy_artifacts))
    assert live.queue is alone.queue is live.analyzer(open_artifacts(toy_artifacts)).queue is queue_of(toy.model)
    assert live.queue.max_waiting == 3
    other = nn.Linear(2, 2)
    assert queue_of(other) is not live.queue and queue_of(other) is queue_of(other)
    with pytest.raises(ValueError, match="max_waiting must be a whole number >= 0"):
        queue_of(other, max_waiting=-1)
    LiveModel(toy)  # the default bound again


@pytest.mark.model
def test_a_model_keeps_one_analyzer_per_set(toy, toy_artifacts):
    from precompute import open_artifacts
    from precompute.live import LiveModel

    live = LiveModel(toy)
    a = live.analyzer(open_artifacts(toy_artifacts))
    assert live.analyzer(open_artifacts(toy_artifacts)) is a  # the same set: the same analyzer, its caches kept
    assert live.analyzer(open_artifacts(toy_artifacts), max_cached=3) is not a  # other settings: another
