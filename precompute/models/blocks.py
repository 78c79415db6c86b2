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
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidInputError
from . import architecture
from .norm import eps_of, layer_norm
from .weights import layer_weight


class GPT2Blocks:
    """GPT-2-style blocks (``architecture.RERUN_GPT2``), their maths written here once: LayerNorm folded (centring
    and division by the RMS), attention with biases, a gelu-tanh MLP; run in float32 whatever the model's dtype.
    ``science.circuits`` builds GPT-2's effective embedding from the same pieces."""

    name = architecture.RERUN_GPT2

    @staticmethod
    def _w(m, name: str, layer: int) -> Tensor:
        return layer_weight(m, name, layer).float()

    def attention(self, m, layer: int, x: Tensor, eps: float) -> Tensor:
        """Output of layer ``layer``'s attention (all heads, with b_O) for residual ``x`` [b, s, d]."""
        h = layer_norm(x, eps)
        q = torch.einsum("bsd,hde->bhse", h, self._w(m, "W_Q", layer)) + self._w(m, "b_Q", layer)[None, :, None, :]
        k = torch.einsum("bsd,hde->bhse", h, self._w(m, "W_K", layer)) + self._w(m, "b_K", layer)[None, :, None, :]
        v = torch.einsum("bsd,hde->bhse", h, self._w(m, "W_V", layer)) + self._w(m, "b_V", layer)[None, :, None, :]
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / math.sqrt(m.cfg.d_head))
        return torch.einsum("bhse,hed->bsd", z, self._w(m, "W_O", layer)) + self._w(m, "b_O", layer)

    def self_attention(self, m, layer: int, x: Tensor, eps: float) -> Tensor:
        """What layer ``layer``'s heads write when each attends only to its own token [n, d] (the OV path, no
        biases: the effective embedding of the paper's §3.1)."""
        v = torch.einsum("nd,hde->nhe", layer_norm(x, eps), self._w(m, "W_V", layer))
        return torch.einsum("nhe,hed->nd", v, self._w(m, "W_O", layer))

    def mlp(self, m, layer: int, x: Tensor, eps: float) -> Tensor:
        pre = layer_norm(x, eps) @ self._w(m, "W_in", layer) + self._w(m, "b_in", layer)
        return F.gelu(pre, approximate="tanh") @ self._w(m, "W_out", layer) + self._w(m, "b_out", layer)

    def run_from_mid(self, m, layer: int, resid_mid: Tensor) -> Tensor:
        eps = eps_of(m)
        x = resid_mid + self.mlp(m, layer, resid_mid, eps)
        for later in range(layer + 1, m.cfg.n_layers):
            x = x + self.attention(m, later, x, eps)
            x = x + self.mlp(m, later, x, eps)
        return x

    def run_from_pre(self, m, layer: int, resid_pre: Tensor) -> Tensor:
        return self.run_from_mid(m, layer, resid_pre + self.attention(m, layer, resid_pre, eps_of(m)))


class DecoderLayers:
    """Llama-style decoder layers (``architecture.RERUN_LAYERS``): the model's own layers called in turn, with the
    rotary embedding and causal mask built as the Hugging Face model builds them. The inner model is found once per
    model and kept (weakly)."""

    name = architecture.RERUN_LAYERS

    def __init__(self) -> None:
        self._inner: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def inner(self, m):
        got = self._inner.get(m)
        if got is None:
            got = architecture.hf_decoder(m)
            self._inner[m] = got
        return got

    @staticmethod
    def _run(inner, first: int, x: Tensor) -> Tensor:
        """Decoder layers ``first``.. of ``inner`` on residual ``x`` [b, s, d] (positions 0..s-1)."""
        from transformers.masking_utils import create_causal_mask

        pos = torch.arange(x.shape[1], device=x.device)[None]
        mask = create_causal_mask(
            config=inner.config, inputs_embeds=x, attention_mask=None, past_key_values=None, position_ids=pos
        )
        rotary = inner.rotary_emb(x, position_ids=pos)
        for layer in inner.layers[first:]:
            x = layer(
                x,
                attention_mask=mask,
                position_embeddings=rotary,
                position_ids=pos,
                past_key_values=None,
                use_cache=False,
            )
            if isinstance(x, tuple):
                x = x[0]
        return x

    def run_from_mid(self, m, layer: int, resid_mid: Tensor) -> Tensor:
        inner = self.inner(m)
        block = inner.layers[layer]
        x = resid_mid.to(next(block.parameters()).dtype)
        x = x + block.mlp(block.post_attention_layernorm(x))
        return self._run(inner, layer + 1, x).float()

    def run_from_pre(self, m, layer: int, resid_pre: Tensor) -> Tensor:
        inner = self.inner(m)
        return self._run(inner, layer, resid_pre.to(next(inner.layers[layer].parameters()).dtype)).float()


GPT2 = GPT2Blocks()
RUNNERS: dict[str, GPT2Blocks | DecoderLayers] = {GPT2.name: GPT2, architecture.RERUN_LAYERS: DecoderLayers()}


def runner(m) -> GPT2Blocks | DecoderLayers:
    """The block runner of ``m``'s architecture (``architecture.of(m).rerun``); InvalidInputError where its last
    blocks cannot be re-run on their own (the analysis then runs whole forward passes)."""
    got = RUNNERS.get(architecture.of(m).rerun or "")
    if got is None:
        raise InvalidInputError(f"{architecture.of(m).name}'s blocks cannot be re-run on their own")
    return got


def run_from_mid(m, layer: int, resid_mid: Tensor) -> Tensor:
    """The final residual stream (before ln_final), starting from ``resid_mid`` of block ``layer``."""
    return runner(m).run_from_mid(m, layer, resid_mid)


def run_from_pre(m, layer: int, resid_pre: Tensor) -> Tensor:
    """The final residual stream (before ln_final), starting from ``resid_pre`` of block ``layer``."""
    return runner(m).run_from_pre(m, layer, resid_pre)
