"""Any token's top-k OV/QK bars from the stored factor matrices (numpy; the app draws them in milliseconds).

The factors come from ``science.circuits.circuit_factors`` (stored in ``circuits/L.H.safetensors``):
OV[s, t] = ov_src[s] . ov_dst[t] and QK[t, s] = qk_dst[t] . qk_src[s].
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError


def circuit_bars(
    factors: dict, token: int, circuit: str, focus: str, k: int
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Top-k bars for one token: (ids, values, the token's own value, its rank).

    ``focus="source"``: the token is the source (OV: which predictions it suppresses; QK: which predicted
    tokens attend most to it). ``focus="destination"``: the token is the prediction (OV: which sources
    suppress it; QK: which sources it attends to). OV bars are the most negative, QK bars the largest.
    """
    if circuit not in ("ov", "qk") or focus not in ("source", "destination"):
        raise InvalidInputError("circuit must be 'ov' or 'qk' and focus 'source' or 'destination'")
    f = {name: np.asarray(t, dtype=np.float32) for name, t in factors.items() if name.endswith(("src", "dst"))}
    if circuit == "ov":
        values = f["ov_dst"] @ f["ov_src"][token] if focus == "source" else f["ov_src"] @ f["ov_dst"][token]
        rank = int((values < values[token]).sum())
        order = np.argsort(values, kind="stable")[:k]
    else:
        values = f["qk_dst"] @ f["qk_src"][token] if focus == "source" else f["qk_src"] @ f["qk_dst"][token]
        rank = int((values > values[token]).sum())
        order = np.argsort(-values, kind="stable")[:k]
    return order, values[order], float(values[token]), rank
