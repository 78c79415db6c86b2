"""Progress of a long job in stages: each stage reports its own fraction; ``Stages`` turns that into one overall
fraction, with the time spent and an estimate of the time left, for a log line or a progress bar."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

Progress = Callable[[str, float], None]


def duration(seconds: float) -> str:
    """'42 s', '3 min 5 s', '1 h 02 min'."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Stages:
    """``Stages(progress, {"lens": 1, "ablation": 4})``: ``stages.report("lens")(text, frac)`` tells ``progress``
    ``"text · 12 % · 40 s, about 5 min left"`` with the overall fraction, the stages weighted by their expected
    share of the time (the time left is extrapolated from the overall fraction done so far)."""

    def __init__(self, progress: Progress | None, weights: Mapping[str, float], clock=time.perf_counter):
        self.progress = progress
        total = float(sum(weights.values()))
        self.start, self.span, acc = {}, {}, 0.0
        for name, w in weights.items():
            self.start[name], self.span[name] = acc / total, w / total
            acc += w
        self.clock = clock
        self.t0 = clock()

    def report(self, name: str) -> Progress:
        def tell(text: str, frac: float) -> None:
            if self.progress is None:
                return
            done = self.start[name] + self.span[name] * min(1.0, max(0.0, frac))
            spent = self.clock() - self.t0
            left = f", about {duration(spent * (1 - done) / done)} left" if 0.02 <= done < 1.0 else ""
            self.progress(f"{text} · {100 * done:.0f} % · {duration(spent)}{left}", done)

        return tell


def throttled(log: Callable[[str], None], seconds: float = 5.0, clock=time.perf_counter) -> Progress:
    """A ``progress(text, fraction)`` that logs ``text`` at most every ``seconds`` (its first line and the line
    that finishes always), with the time spent and left: a long step's lines for a log, not a flood."""
    t0 = clock()
    last = [None]

    def tell(text: str, frac: float) -> None:
        now = clock()
        if last[0] is not None and now - last[0] < seconds and frac < 1.0:
            return
        last[0] = now
        spent = now - t0
        left = f", about {duration(spent * (1 - frac) / frac)} left" if 0.02 <= frac < 1.0 else ""
        log(f"{text} · {duration(spent)}{left}")

    return tell
