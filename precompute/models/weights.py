"""One layer's processed weights, read from its block.

TransformerBridge's model-level ``W_Q``, ``W_in``… stack every layer's weights into a new tensor on each access
(``m.W_in`` copies 113 MB for GPT-2 small), so ``m.W_in[layer]`` in a loop costs more than the maths it feeds.
``layer_weight`` reads the block's own parameter (no copy), falling back to the stacked property where a block
does not expose it.
"""

from __future__ import annotations

from torch import Tensor

_ATTN = frozenset({"W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"})


def layer_weight(m, name: str, layer: int) -> Tensor:
    """``m.<name>[layer]`` without stacking every layer: e.g. ``layer_weight(m, "W_O", 10)`` is [n_heads, d_head,
    d_model]."""
    part = "attn" if name in _ATTN else "mlp"
    try:
        value = getattr(getattr(m.blocks[layer], part), name)
    except (AttributeError, IndexError, TypeError):
        value = None
    return value if value is not None else getattr(m, name)[layer]
