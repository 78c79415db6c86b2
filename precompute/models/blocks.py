"""Re-running the last blocks of a GPT-2-style model from a residual stream, with TransformerLens's processed
weights, so the "both"/"indirect" effects cost only the blocks after the head.

TransformerBridge's ``start_at_layer`` (TransformerLens 4.3) still runs blocks 0..k-1 and discards their output,
so it saves nothing; these few lines do the same maths as the model's blocks (checked against full forward
passes with hooks in tests/test_analysis.py). With ``fold_ln`` every LayerNorm is centring and division by the
RMS. The maths runs in float32 whatever the model's dtype (a bf16/fp16 forward is an option on GPUs).
``analyze`` refuses the "both"/"indirect" effects on models ``supported`` rejects.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .norm import eps_of, layer_norm
from .weights import layer_weight


def supported(m) -> bool:
    c = m.cfg
    return (getattr(c, "architecture", None) == "GPT2LMHeadModel" and c.act_fn == "gelu_new"
            and getattr(c, "positional_embedding_type", "standard") == "standard"
            and not getattr(c, "parallel_attn_mlp", False))


def attention(m, layer: int, x: Tensor, eps: float) -> Tensor:
    """Output of layer ``layer``'s attention (all heads, with b_O) for residual ``x`` [b, s, d]."""
    h = layer_norm(x, eps)

    def w(name):
        return layer_weight(m, name, layer).float()

    q = torch.einsum("bsd,hde->bhse", h, w("W_Q")) + w("b_Q")[None, :, None, :]
    k = torch.einsum("bsd,hde->bhse", h, w("W_K")) + w("b_K")[None, :, None, :]
    v = torch.einsum("bsd,hde->bhse", h, w("W_V")) + w("b_V")[None, :, None, :]
    z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / math.sqrt(m.cfg.d_head))
    return torch.einsum("bhse,hed->bsd", z, w("W_O")) + w("b_O")


def mlp(m, layer: int, x: Tensor, eps: float) -> Tensor:
    def w(name):
        return layer_weight(m, name, layer).float()

    pre = layer_norm(x, eps) @ w("W_in") + w("b_in")
    return F.gelu(pre, approximate="tanh") @ w("W_out") + w("b_out")


def run_from_mid(m, layer: int, resid_mid: Tensor) -> Tensor:
    """The final residual stream (before ln_final), starting from ``resid_mid`` of block ``layer``."""
    eps = eps_of(m)
    x = resid_mid + mlp(m, layer, resid_mid, eps)
    for later in range(layer + 1, m.cfg.n_layers):
        x = x + attention(m, later, x, eps)
        x = x + mlp(m, later, x, eps)
    return x


def run_from_pre(m, layer: int, resid_pre: Tensor) -> Tensor:
    """The final residual stream (before ln_final), starting from ``resid_pre`` of block ``layer``."""
    eps = eps_of(m)
    return run_from_mid(m, layer, resid_pre + attention(m, layer, resid_pre, eps))
