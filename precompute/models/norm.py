"""The LayerNorm maths the analysis needs, in one place.

With ``fold_ln`` every LayerNorm of a processed model is centring followed by division by the RMS (its weights
are folded into the next matrix), and every RMSNorm the division alone, so these few functions are all the
project uses.
"""

from __future__ import annotations

from torch import Tensor


def eps_of(m) -> float:
    """The model's LayerNorm epsilon (1e-5 when the config does not say)."""
    return float(getattr(m.cfg, "eps", 1e-5))


def centre(x: Tensor) -> Tensor:
    return x - x.mean(-1, keepdim=True)


def rms_scale(x_centred: Tensor, eps: float) -> Tensor:
    """The LayerNorm scale sqrt(mean(x^2) + eps) of an already centred residual, keepdim."""
    return (x_centred.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def layer_norm(x: Tensor, eps: float) -> Tensor:
    """Centre, then divide by the RMS: a folded LayerNorm. (A model's own norm, LayerNorm or RMSNorm, is
    ``architecture.of(m).normalise``.)"""
    x = centre(x)
    return x / rms_scale(x, eps)
