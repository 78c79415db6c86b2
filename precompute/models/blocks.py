"""Re-running the last blocks of a model from a residual stream, with TransformerLens's processed weights, so the
"both"/"indirect" effects and activation patching cost only the blocks after the intervention.

TransformerBridge's ``start_at_layer`` (TransformerLens 4.3) still runs blocks 0..k-1 and discards their output,
so it saves nothing. Two ways instead (``architecture.of(m).rerun`` says which applies):

* GPT-2-style blocks (``RERUN_GPT2``): these few lines do the same maths as the model's blocks (checked against
  full forward passes with hooks in tests/test_analysis.py). With ``fold_ln`` every LayerNorm is centring and
  division by the RMS. The maths runs in float32 whatever the model's dtype (a bf16/fp16 forward is an option on
  GPUs).
* Llama-style decoder layers (``RERUN_LAYERS``, ``architecture.HF_LAYER_MODELS``: Llama, Mistral, Qwen2;
  SmolLM2 is a Llama): the model's own
  layers are called in turn (TransformerBridge's blocks, the very modules its forward pass runs), with the
  rotary embedding and causal mask built as the Hugging Face model builds them; bit for bit the forward pass's
  residual stream (tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import architecture
from .norm import eps_of, layer_norm
from .weights import layer_weight


def _layers(m):
    """The Hugging Face inner model whose layers are re-run, or None for GPT-2-style blocks re-run by hand."""
    return architecture.hf_decoder(m) if architecture.of(m).rerun == architecture.RERUN_LAYERS else None


def _hf_run(inner, first: int, x: Tensor) -> Tensor:
    """Decoder layers ``first``.. of a Llama-style model on residual ``x`` [b, s, d] (positions 0..s-1)."""
    from transformers.masking_utils import create_causal_mask

    pos = torch.arange(x.shape[1], device=x.device)[None]
    mask = create_causal_mask(
        config=inner.config, inputs_embeds=x, attention_mask=None, past_key_values=None, position_ids=pos
    )
    rotary = inner.rotary_emb(x, position_ids=pos)
    for layer in inner.layers[first:]:
        x = layer(
            x, attention_mask=mask, position_embeddings=rotary, position_ids=pos, past_key_values=None, use_cache=False
        )
        if isinstance(x, tuple):
            x = x[0]
    return x


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
    inner = _layers(m)
    if inner is not None:
        block = inner.layers[layer]
        dtype = next(block.parameters()).dtype
        x = resid_mid.to(dtype)
        x = x + block.mlp(block.post_attention_layernorm(x))
        return _hf_run(inner, layer + 1, x).float()
    eps = eps_of(m)
    x = resid_mid + mlp(m, layer, resid_mid, eps)
    for later in range(layer + 1, m.cfg.n_layers):
        x = x + attention(m, later, x, eps)
        x = x + mlp(m, later, x, eps)
    return x


def run_from_pre(m, layer: int, resid_pre: Tensor) -> Tensor:
    """The final residual stream (before ln_final), starting from ``resid_pre`` of block ``layer``."""
    inner = _layers(m)
    if inner is not None:
        return _hf_run(inner, layer, resid_pre.to(next(inner.layers[layer].parameters()).dtype)).float()
    eps = eps_of(m)
    return run_from_mid(m, layer, resid_pre + attention(m, layer, resid_pre, eps))
