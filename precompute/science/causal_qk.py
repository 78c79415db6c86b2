"""A causal test of the QK side of copy suppression: make the residual stream at a destination "predict" a token
that appeared earlier, and see whether the head starts attending to that token's earlier positions.

For a destination q and a content token t that occurs at earlier positions P_t (1 <= k < q), add
``scale * |resid_pre[q]| * u_t`` to the residual stream before the head's layer at q only, where u_t is t's unit
unembedding (centred as the model's norms centre), and measure the attention from q to P_t, minus the clean
attention. Only q's query changes (keys and values of earlier positions are computed from their own residuals),
so the rise is the head's QK response to "t is predicted here". Chance: the same boost along the unit
unembedding of a random other token t' (one that does not occur in the prefix) and its rise on the same P_t.
A copy-suppression head's rise is far above chance; a head whose attention ignores the prediction shows both
rises near zero.
"""

from __future__ import annotations

import torch
from jaxtyping import Int
from torch import Tensor

from ..models import architecture, hooks
from ..models.heads import check_head
from ..models.loading import unwrap
from ..validate import token_ids

SCALE = 0.5  # the boost's norm relative to the residual stream's at the destination
PER_SEQUENCE = 4  # destinations tried per sequence
MAX_SEQUENCES = 16


def _trials(tokens: Tensor, excluded: Tensor, per_seq: int, g: torch.Generator) -> list[tuple[int, int, int, int]]:
    """(sequence, destination q, token t, control token t') per trial: q in the second half of the sequence, t a
    content token of positions 1..q-1, t' a random token absent from the prefix."""
    out = []
    b, s = tokens.shape
    d_vocab = excluded.shape[0]
    for i in range(b):
        qs = torch.randperm(s - s // 2, generator=g)[:per_seq] + s // 2
        for q in qs.tolist():
            prefix = tokens[i, 1:q]
            content = sorted({int(x) for x in prefix.tolist() if not bool(excluded[int(x)])})
            if not content:
                continue
            t = content[int(torch.randint(len(content), (1,), generator=g))]
            seen = set(tokens[i, : q + 1].tolist())
            for _ in range(100):
                c = int(torch.randint(d_vocab, (1,), generator=g))
                if c not in seen and not bool(excluded[c]):
                    break
            out.append((i, q, t, c))
    return out


def causal_qk(
    model,
    tokens: Int[Tensor, "batch seq"],
    head: tuple[int, int],
    excluded: Tensor,
    scale: float = SCALE,
    per_sequence: int = PER_SEQUENCE,
    max_sequences: int = MAX_SEQUENCES,
    seed: int = 0,
    batch_size: int = 8,  # TransformerBridge computes the logits even when it stops early: 200 MB a batch
) -> dict:
    """{n_trials, rise (mean attention gained by the boosted token's earlier positions), control_rise (the same
    positions under a random other token's boost), clean (their mean clean attention), scale}. ``excluded``: a
    bool [d_vocab] of tokens that are never content (the CSPA exclusions)."""
    m = unwrap(model)
    token_ids(tokens, m.cfg.d_vocab, m.cfg.n_ctx, min_len=4)
    layer, h = check_head(m, head)
    arch = architecture.of(m)
    tokens = tokens[:max_sequences].long().cpu()
    g = torch.Generator().manual_seed(seed)
    trials = _trials(tokens, excluded.cpu(), per_sequence, g)
    if not trials:
        return {"n_trials": 0, "scale": scale}
    W_U = m.W_U.float()
    hook_pre, hook_pat = hooks.resid_pre(layer), hooks.pattern(layer)

    def attended(i: int, q: int, t: int, pattern: Tensor) -> float:
        where = (tokens[i, :q] == t).nonzero()[:, 0]
        return float(pattern[q, where[where >= 1].to(pattern.device)].sum())

    with torch.inference_mode():
        # clean: one pass per distinct sequence
        seqs = sorted({i for i, _, _, _ in trials})
        clean_pat: dict[int, Tensor] = {}
        for start in range(0, len(seqs), batch_size):
            part_seqs = seqs[start : start + batch_size]
            _, cache = m.run_with_cache(
                tokens[part_seqs].to(m.cfg.device), names_filter=[hook_pat], stop_at_layer=layer + 1
            )
            for j, i in enumerate(part_seqs):
                clean_pat[i] = cache[hook_pat][j, h].float()
        clean = [attended(i, q, t, clean_pat[i]) for i, q, t, _ in trials]
        # boosted: the token t's and a random token's unembedding added at q; the sequence cut after q (attention
        # from q reads positions <= q only), trials of similar q batched together
        order = sorted(range(len(trials)), key=lambda j: trials[j][1])
        boosted = [0.0] * len(trials)
        control = [0.0] * len(trials)
        for start in range(0, len(order), batch_size):
            part = [trials[j] for j in order[start : start + batch_size]]
            n = len(part)
            length = max(q for _, q, _, _ in part) + 1
            toks = torch.stack([tokens[i, :length] for i, _, _, _ in part]).repeat(2, 1).to(m.cfg.device)
            q_idx = torch.tensor([q for _, q, _, _ in part] * 2, device=toks.device)
            dirs = arch.centre(W_U.T[torch.tensor([t for _, _, t, _ in part] + [c for _, _, _, c in part])])
            dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            rows_idx = torch.arange(2 * n, device=toks.device)

            def boost(x, hook, dirs=dirs, q_idx=q_idx, rows_idx=rows_idx):
                x = x.clone()
                at = x[rows_idx, q_idx]
                x[rows_idx, q_idx] = at + scale * at.norm(dim=-1, keepdim=True) * dirs.to(x.dtype)
                return x

            grabbed: dict[str, Tensor] = {}

            def grab(x, hook, grabbed=grabbed):
                grabbed["p"] = x[:, h].float()

            m.run_with_hooks(toks, fwd_hooks=[(hook_pre, boost), (hook_pat, grab)], stop_at_layer=layer + 1)
            pattern = grabbed["p"]  # [2n, q, k]
            for j, (i, q, t, _) in enumerate(part):
                boosted[order[start + j]] = attended(i, q, t, pattern[j])
                control[order[start + j]] = attended(i, q, t, pattern[n + j])
    rows = list(zip(clean, boosted, control, strict=True))
    got = torch.tensor(rows, dtype=torch.float64)
    return {
        "n_trials": len(rows),
        "clean": float(got[:, 0].mean()),
        "rise": float((got[:, 1] - got[:, 0]).mean()),
        "control_rise": float((got[:, 2] - got[:, 0]).mean()),
        "scale": scale,
    }
