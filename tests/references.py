"""Straightforward references the tests compare the project against (CSPA materialised, cross-entropy, KL,
the answer tokens' numbers), shared by several test files."""

from __future__ import annotations

import math

import torch

from precompute import CSPAConfig, analyze, mean_result
from precompute.models import hooks
from precompute.models.weights import layer_weight

from .conftest import doc_tokens


def reference(lm, tokens, head, mu, pos, ids, effect, ln_mode, layer_norm=True):
    """(logits clean, logits ablated, DLA clean, DLA ablated) at ``pos`` by hooks and plain tensor maths; the final
    norm centres for LayerNorm models (``layer_norm``), not for RMSNorm ones."""

    def _centre(x):
        return x - x.mean(-1, keepdim=True) if layer_norm else x

    m = lm.model
    layer, h = head
    names = [hooks.z(layer), hooks.FINAL_IN, hooks.FINAL_SCALE]
    with torch.no_grad():
        clean, cache = m.run_with_cache(tokens, names_filter=names)
        r = cache[hooks.z(layer)][0, :, h] @ layer_weight(m, "W_O", layer)[h]  # [seq, d_model]
        mu = mu[: tokens.shape[1]]
        scale = cache[hooks.FINAL_SCALE][0, pos]
        if effect == "direct":
            resid = cache[hooks.FINAL_IN][0, pos] - r[pos] + mu[pos]
            ablated_logits = None
        else:
            got = {}

            def replace(x, hook):
                return x + (mu - r)[None]

            def grab(x, hook):
                got["x"] = x

            ablated_logits = m.run_with_hooks(
                tokens, fwd_hooks=[(hooks.attn_out(layer), replace), (hooks.FINAL_IN, grab)]
            )[0, pos]
            resid = got["x"][0, pos] + ((r[pos] - mu[pos]) if effect == "indirect" else 0)
        resid = _centre(resid)
        if ln_mode == "frozen" or ablated_logits is None or effect == "indirect":
            div = scale if ln_mode == "frozen" else resid.pow(2).mean().add(m.cfg.eps).sqrt()
            ablated_logits = resid / div @ m.W_U + m.b_U
        dla_clean = _centre(r[pos]) / scale @ m.W_U[:, ids]
        dla_ablated = _centre(mu[pos]) / scale @ m.W_U[:, ids]
    return clean[0, pos], ablated_logits, dla_clean, dla_ablated


def _gram_schmidt(vectors):
    basis = []
    for v in vectors:
        w = v.clone()
        for e in basis:
            w = w - (w @ e) * e
        if w.norm() > 1e-6:
            basis.append(w / w.norm())
    return basis


def reference_cspa(m, tokens, head, mu, cfg: CSPAConfig, table=None, scores=None):
    """Naive CSPA: per destination, pick kept (source, neighbour) pairs by the rules, project the materialised
    per-source vectors A[q,k] v_k W_O, and return (clean logits, CSPA logits, kept positions per (b, q)).
    ``scores`` [b, s, d_vocab]: the read-out's scores of "predicted" (default: the paper's logit lens)."""
    layer, h = head
    with torch.inference_mode():
        logits, cache = m.run_with_cache(tokens)
    b_n, s = tokens.shape
    # RMSNorm models do not centre; grouped-query heads read their shared key/value head
    rms = str(m.cfg.normalization_type).upper().startswith("RMS")
    kv = h // (m.cfg.n_heads // (getattr(m.cfg, "n_key_value_heads", None) or m.cfg.n_heads))
    A = cache[f"blocks.{layer}.attn.hook_pattern"][:, h]
    o = cache[f"blocks.{layer}.attn.hook_v"][:, :, kv] @ m.W_O[layer, h]
    r = cache[f"blocks.{layer}.attn.hook_z"][:, :, h] @ m.W_O[layer, h]
    pre = cache[f"blocks.{layer}.hook_resid_pre"]
    pre = pre if rms else pre - pre.mean(-1, keepdim=True)
    sigma = cache["ln_final.hook_scale"]
    resid = cache["ln_final.hook_in"]
    excluded = set(cfg.excluded_token_ids)
    W_U = m.W_U
    cspa_out = torch.zeros_like(r)
    kept_positions = {}
    for b in range(b_n):
        for q in range(s):
            # candidate (k, j, token) entries
            qk, ov = "qk" in cfg.interventions, "ov" in cfg.interventions
            entries = []
            for k in range(q + 1):
                if qk and int(tokens[b, k]) in excluded:  # OV only: no filter, excluded sources included
                    continue
                neigh = (
                    [int(tokens[b, k])]
                    if table is None
                    else [int(tokens[b, k])] + [int(t) for t in table[int(tokens[b, k])][1 : cfg.k_s] if t >= 0]
                )
                for j, t in enumerate(neigh):
                    entries.append((k, j, t))
            score = {
                t: float((pre[b, q] / sigma[b, q]) @ W_U[:, t] if scores is None else scores[b, q, t])
                for _, _, t in entries
            }
            distinct = sorted(set(score.values()), reverse=True)
            first_scores = []
            seen = set()
            for _, _, t in entries:
                if t not in seen:
                    seen.add(t)
                    first_scores.append(score[t])
            first_scores.sort(reverse=True)
            K = cfg.k_u if isinstance(cfg.k_u, int) else math.ceil(cfg.k_u * (q + 1))
            tau = first_scores[K - 1] if len(first_scores) >= K and qk else -math.inf
            kept = [(k, j, t) for k, j, t in entries if score[t] >= tau]
            kept_positions[(b, q)] = sorted({k for k, _, _ in kept})
            assert distinct or not kept
            total = torch.zeros(m.cfg.d_model)
            for k in range(s):
                x = A[b, q, k] * o[b, k]
                mean_part = A[b, q, k] * mu[q]
                dirs = [W_U[:, t] for kk, j, t in sorted(kept) if kk == k]
                if not ov:  # QK only: the whole source where a neighbour is kept, else its mean share
                    total = total + (x if dirs else mean_part)
                    continue
                y = x - mean_part
                proj = torch.zeros_like(y)
                for e in _gram_schmidt(dirs):
                    c = y @ e
                    if cfg.negative_only:
                        c = min(float(c), 0.0)
                    proj = proj + c * e
                total = total + proj + mean_part
            cspa_out[b, q] = total
    new_resid = resid + cspa_out - r
    new_resid = new_resid if rms else new_resid - new_resid.mean(-1, keepdim=True)
    cspa_logits = (new_resid / sigma) @ W_U + m.b_U
    return logits, cspa_logits, kept_positions


def _ce(logits, tokens):
    return -logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]


def _kl(p_logits, q_logits):
    p = p_logits.log_softmax(-1)[:, :-1]
    q = q_logits.log_softmax(-1)[:, :-1]
    return (p.exp() * (p - q)).sum(-1)


def sparse_and_dense_analyses(lm, head, length: int, monkeypatch) -> dict:
    """``analyze`` of ``head`` on two sequences with CSPA's DLA forced dense, then forced sparse."""
    import precompute.science.cspa as cspa_module

    tokens = doc_tokens(lm.tokenizer, 2, length, seed=31)
    mu = mean_result(lm, tokens, head)
    results = {}
    for name, factor in (("dense", 0.0), ("sparse", 1e9)):
        monkeypatch.setattr(cspa_module, "SPARSE_CSPA_DLA", factor)
        results[name] = analyze(lm, tokens, head, mu, k=6, effects=("direct",), ln_modes=("frozen",))
    return results
