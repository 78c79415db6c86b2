"""Heads of a loaded model: validating a (layer, head) pair and the head's output."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from ..errors import InvalidInputError


def check_head(m, head) -> tuple[int, int]:
    """(layer, h) as ints, or InvalidInputError naming the model's valid ranges."""
    cfg = m.cfg
    if head is None or isinstance(head, (str, bytes)):
        raise InvalidInputError(f"head must be a (layer, head) pair, got {head!r}")
    try:
        layer, h = (int(x) for x in head)
    except (TypeError, ValueError):
        raise InvalidInputError(f"head must be a (layer, head) pair, got {head!r}") from None
    if not (0 <= layer < cfg.n_layers and 0 <= h < cfg.n_heads):
        raise InvalidInputError(f"head {layer}.{h} does not exist: the model has layers 0-{cfg.n_layers - 1} and "
                                f"heads 0-{cfg.n_heads - 1} per layer")
    return layer, h


def head_output(m, z: Float[Tensor, "batch seq n_heads d_head"], layer: int, h: int
                ) -> Float[Tensor, "batch seq d_model"]:
    """The head's contribution to the residual stream (no bias): z_h W_O[layer, h], in float32."""
    return z[:, :, h].float() @ m.W_O[layer, h].float()
