"""``science.progress``: the overall fraction of a job in weighted stages and its time left, on a fake clock."""

import pytest

from precompute.science.progress import Stages, duration

TIER = "fast"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0 s"), (59.4, "59 s"), (60, "1 min 0 s"), (185, "3 min 5 s"), (3720, "1 h 02 min")]
)
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_stages_weight_each_stage_and_extrapolate_the_time_left():
    clock = [0.0]
    told = []
    stages = Stages(lambda text, frac: told.append((text, frac)), {"a": 1, "b": 3}, clock=lambda: clock[0])
    clock[0] = 10.0
    stages.report("a")("first", 1.0)  # a is a quarter of the work: 10 s for 25 %, 30 s left
    clock[0] = 25.0
    stages.report("b")("second", 0.5)  # 25 % + 3/4 x 0.5 = 62.5 %
    clock[0] = 40.0
    stages.report("b")("third", 1.0)
    assert told[0] == ("first · 25 % · 10 s, about 30 s left", 0.25)
    assert told[1][1] == pytest.approx(0.625) and told[1][0].startswith("second · 62 % · 25 s, about 15 s left")
    assert told[2] == ("third · 100 % · 40 s", 1.0)  # done: no time left said
    Stages(None, {"a": 1}).report("a")("nobody listens", 0.5)  # no callback: nothing happens


def test_throttled_logs_the_first_line_then_at_most_every_interval_and_the_last():
    from precompute.science.progress import throttled

    clock = [0.0]
    lines = []
    tell = throttled(lines.append, seconds=5.0, clock=lambda: clock[0])
    for t, frac in ((1.0, 0.1), (3.0, 0.2), (6.5, 0.5), (7.0, 0.6), (8.0, 1.0)):
        clock[0] = t
        tell(f"at {t}", frac)
    assert lines == ["at 1.0 · 1 s, about 9 s left", "at 6.5 · 6 s, about 6 s left", "at 8.0 · 8 s"]
