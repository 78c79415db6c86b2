"""The logit difference of prompt pairs and the projection of residual-stream vectors onto it, shared by
``pairs``, ``patching`` and ``self_repair``."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from ..models import architecture


def logit_diff(logits: Tensor, answers: Tensor) -> Tensor:
    """logit(right) − logit(wrong) at the final position, [n]."""
    last = logits[:, -1].float()
    return last.gather(-1, answers[:, :1])[:, 0] - last.gather(-1, answers[:, 1:])[:, 0]


def ld_directions(m, answers: Tensor) -> Float[Tensor, "n d_model"]:
    W_U = m.W_U.float()
    return (W_U[:, answers[:, 0]] - W_U[:, answers[:, 1]]).T


def project(m, x: Tensor, scale: Tensor, dirs: Tensor) -> Tensor:
    """Mean over prompts of the final-position vectors ``x`` [..., n, d] as they reach the logit difference."""
    x = architecture.of(m).centre(x)
    return ((x / scale) * dirs).sum(-1).mean(-1)
