"""Diverging colour scales for token strips (pure functions; no Streamlit)."""

from __future__ import annotations

import math

# RdBu endpoints and white centre, as RGB
_RED = (178, 24, 43)
_WHITE = (247, 247, 247)
_BLUE = (33, 102, 172)


def diverging(value: float, scale: float) -> str:
    """CSS colour for ``value`` on a red-white-blue scale: blue positive (the head helps), red negative.

    ``scale`` is the magnitude mapped to full colour; values beyond it are clipped. NaN is grey.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)) or scale <= 0:
        return "rgb(220,220,220)"
    t = max(-1.0, min(1.0, value / scale))
    end = _BLUE if t > 0 else _RED
    a = abs(t)
    rgb = tuple(round(w + (e - w) * a) for w, e in zip(_WHITE, end))
    return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})"


def sequential(value: float, vmax: float = 1.0) -> str:
    """White-to-blue for non-negative quantities such as probabilities."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "rgb(220,220,220)"
    a = max(0.0, min(1.0, value / vmax if vmax > 0 else 0.0))
    rgb = tuple(round(w + (e - w) * a) for w, e in zip(_WHITE, _BLUE))
    return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})"


def text_colour(background: str) -> str:
    """Black or white text, whichever reads better on ``background`` (an rgb() string)."""
    r, g, b = (int(x) for x in background[4:-1].split(","))
    return "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#fff"
