"""The naive ways we compare against: the original app's approach, written out plainly."""

from __future__ import annotations

import torch

from precompute.models.architecture import of
from precompute.science.cspa import select_kept


def materialised_cspa(attn, src_out, mu, directions, keep, negative_only: bool):
    """CSPA as the original code did it: the [batch, q, k, d_model] per-source tensors, projected pair by pair
    (k_s = 1). Returns the CSPA output minus the mean, like ``precompute.science.cspa.cspa_output``."""
    x = attn[..., None] * src_out[:, None, :, :]  # [b, q, k, d]
    m = attn[..., None] * mu[None, :, None, :]  # [b, q, k, d]
    u = directions[:, :, 0, :]  # [b, k, d]
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    coef = ((x - m) * u[:, None]).sum(-1)  # [b, q, k]
    if negative_only:
        coef = coef.clamp(max=0.0)
    proj = coef[..., None] * u[:, None] * keep[..., 0, None]  # [b, q, k, d]
    x_tilde = proj + m
    return x_tilde.sum(2) - mu[None]


def naive_analysis(m, tokens, head, mu, cspa_inputs):
    """run_with_cache of everything, a second full forward with an ablation hook, a third with CSPA's output
    (the head's output replaced inside the layer's attention output, which every architecture's bridge has)."""
    layer, h = head
    s = tokens.shape[1]
    with torch.inference_mode():
        logits, cache = m.run_with_cache(tokens)
        r = cache[f"blocks.{layer}.attn.hook_z"][:, :, h] @ m.W_O[layer, h]

        def ablate(x, hook):
            return x + (mu[:s] - r)

        ablated = m.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_attn_out", ablate)])
        attn, src_out, directions, keep = cspa_inputs(cache)
        cspa_out = materialised_cspa(attn, src_out, mu[:s], directions, keep, True) + mu[:s]

        def cspa_hook(x, hook):
            return x + (cspa_out - r)

        cspa_logits = m.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_attn_out", cspa_hook)])
        for lg in (logits, ablated, cspa_logits):
            lg.log_softmax(-1).topk(10, -1)
    return logits, ablated, cspa_logits


def cspa_inputs_from_cache(m, tokens, head, excluded_ids):
    """What CSPA needs from a forward pass: attention, per-source outputs, unembedding directions, kept mask."""
    layer, h = head

    def get(cache):
        attn = cache[f"blocks.{layer}.attn.hook_pattern"][:, h]
        src_out = cache[f"blocks.{layer}.attn.hook_v"][:, :, of(m).kv_head(h)] @ m.W_O[layer, h]
        pre = of(m).centre(cache[f"blocks.{layer}.hook_resid_pre"])
        lens_scaled = pre / cache["ln_final.hook_scale"]
        excl = torch.zeros(m.cfg.d_vocab, dtype=torch.bool)
        excl[list(excluded_ids)] = True
        cand = tokens[:, :, None]
        valid = ~excl[tokens][:, :, None]
        directions = m.W_U.T[cand] * valid[..., None]
        scores = torch.einsum("bqd,bkjd->bqkj", lens_scaled, directions)
        keep = select_kept(scores, cand, valid, 0.05)
        return attn, src_out, directions, keep

    return get
