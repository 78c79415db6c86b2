"""One layer's processed weights, read from its block.

TransformerBridge's model-level ``W_Q``, ``W_in``… stack every layer's weights into a new tensor on each access
(``m.W_in`` copies 113 MB for GPT-2 small), so ``m.W_in[layer]`` in a loop costs more than the maths it feeds.
``layer_weight`` reads the block's own parameter (no copy), falling back to the stacked property where a block
does not expose it.
"""

from __future__ import annotations

import weakref

import torch
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


_GAINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {layer: the post-attention norm's gain}


def post_attn_gain(m, layer: int) -> Tensor:
    """The gain g of the norm after attention in ``layer`` ([d_model]; Gemma's RMSNorm multiplies by 1 + weight),
    read off the norm itself: its output for a constant input c·1 is g·c/sqrt(c² + eps), which is g to float32
    precision for c = 1e4, whatever the parametrisation."""
    per_model = _GAINS.setdefault(m, {})
    if layer not in per_model:
        norm = m.blocks[layer].ln1_post
        inner = getattr(norm, "_original_component", norm)
        weight = next(inner.parameters())
        c = 1e4
        with torch.no_grad():
            x = torch.full((1, 1, weight.shape[-1]), c, dtype=torch.float64, device=weight.device)
            out = _run_norm(inner, x)
        per_model[layer] = out.reshape(-1).float()
    return per_model[layer]


def _run_norm(inner, x: Tensor) -> Tensor:
    """The norm module applied to ``x`` in its own dtype, returned as float64."""
    dtype = next(inner.parameters()).dtype
    return inner(x.to(dtype)).double()


def effective_W_O(m, layer: int) -> Tensor:
    """W_O of ``layer`` [n_heads, d_head, d_model] as it reaches the residual stream: with the gain of a norm after
    attention folded in (``architecture`` module docstring), else W_O itself."""
    from .architecture import of

    W_O = layer_weight(m, "W_O", layer)
    if not of(m).post_attn_norm:
        return W_O
    return W_O.float() * post_attn_gain(m, layer).to(W_O.device)
