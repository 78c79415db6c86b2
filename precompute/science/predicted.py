"""Step one of copy suppression measured on text: does the head attend to tokens that are predicted?

For every (destination q, source k) pair where the head attends more than ``THRESHOLD`` to a *content* source
(not the start token, not an excluded function token), is the source's token among the ``TOP`` tokens the
read-out predicts at q (``science.readout``)? Chance is the same question for a content source drawn uniformly
from the same prefix (positions 1..q): the exact expectation, not a sample. The enrichment is the ratio of the
two. Audit on SmolLM2's 24.4 (32 x 128 tokens of CPython's documentation): 1.9 % vs 2.5 % with the logit lens,
30.8 % vs 5.7 % with the tuned lens.

One function, two callers: the precompute job (from the stored attention and prediction fields) and the survey
(from every head's attention pattern).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

THRESHOLD = 0.1
TOP = 10


def predicted_matrix(
    tokens: Int[Tensor, "batch seq"], top_ids: Int[Tensor, "batch seq top"]
) -> Bool[Tensor, "batch q k"]:
    """M[b, q, k]: whether the token at position k is among the predicted ``top_ids`` at q (k <= q only)."""
    s = tokens.shape[1]
    hit = (tokens[:, None, :, None] == top_ids[:, :, None, :]).any(-1)
    return hit & torch.ones(s, s, dtype=torch.bool, device=tokens.device).tril()


def content_mask(tokens: Int[Tensor, "batch seq"], excluded: Bool[Tensor, " d_vocab"]) -> Bool[Tensor, "batch seq"]:
    """Content sources: not position 0 (the start token) and not an excluded token."""
    mask = ~excluded.to(tokens.device)[tokens]
    mask[:, 0] = False
    return mask


@dataclass(frozen=True)
class Predicted:
    """What the pair counts need of a batch, whatever the head: M[b, q, k] (source predicted at q), the content
    prefix [b, q, k], and each destination's chance (the share of its content prefix that is predicted)."""

    matrix: Bool[Tensor, "batch q k"]
    prefix: Bool[Tensor, "batch q k"]
    chance: Float[Tensor, "batch q"]

    @classmethod
    def of(
        cls, tokens: Int[Tensor, "batch seq"], top_ids: Int[Tensor, "batch seq top"], content: Bool[Tensor, "batch seq"]
    ) -> Predicted:
        m = predicted_matrix(tokens, top_ids)
        s = tokens.shape[1]
        prefix = content[:, None, :] & torch.ones(s, s, dtype=torch.bool, device=tokens.device).tril()
        chance = (m & prefix).sum(-1).double() / prefix.sum(-1).clamp_min(1)
        return cls(m, prefix, chance)

    def pair_stats(self, attn: Float[Tensor, "batch q k"], threshold: float = THRESHOLD) -> dict[str, float]:
        """Sums over the pairs (attention > threshold, content source): n, hits (source predicted) and chance
        (the expected hits of a uniform content source of the same prefix). Add these over batches, then
        ``summarise``."""
        pairs = (attn > threshold) & self.prefix
        return {
            "n_pairs": float(pairs.sum()),
            "hits": float((self.matrix & pairs).sum()),
            "chance": float((self.chance[..., None] * pairs).sum()),
        }


def pair_stats(
    tokens: Int[Tensor, "batch seq"],
    top_ids: Int[Tensor, "batch seq top"],
    content: Bool[Tensor, "batch seq"],
    attn: Float[Tensor, "batch q k"],
    threshold: float = THRESHOLD,
) -> dict[str, float]:
    """``Predicted.of(...).pair_stats(attn)`` for one head."""
    return Predicted.of(tokens, top_ids, content).pair_stats(attn, threshold)


def add(total: dict[str, float] | None, part: dict[str, float]) -> dict[str, float]:
    return dict(part) if total is None else {k: total[k] + part[k] for k in total}


def summarise(total: dict[str, float] | None) -> dict:
    """{n_pairs, frac_predicted, frac_chance, enrichment} (NaN where there are no pairs or no chance)."""
    if not total or total["n_pairs"] == 0:
        return {"n_pairs": 0, "frac_predicted": float("nan"), "frac_chance": float("nan"), "enrichment": float("nan")}
    n = total["n_pairs"]
    frac, chance = total["hits"] / n, total["chance"] / n
    return {
        "n_pairs": int(n),
        "frac_predicted": frac,
        "frac_chance": chance,
        "enrichment": frac / chance if chance > 0 else float("nan"),
    }


def from_stored(
    tokens: Int[Tensor, "batch seq"],
    attn_pos: Int[Tensor, "batch seq a"],
    attn_weight: Float[Tensor, "batch seq a"],
    top_ids: Int[Tensor, "batch seq k"],
    excluded: Bool[Tensor, " d_vocab"],
    threshold: float = THRESHOLD,
    top: int = TOP,
    batch_size: int = 16,
) -> dict:
    """The measure from a run's stored fields: the top-a attention sources per query (pairs above ``threshold``
    are among them whenever a >= 9) and the read-out's top-k predictions (``lens_topk_ids``, k >= ``top``)."""
    total = None
    for start in range(0, tokens.shape[0], batch_size):
        t = tokens[start : start + batch_size].long()
        b, s = t.shape
        dense = torch.zeros(b, s, s)
        pos = attn_pos[start : start + batch_size].long()
        w = attn_weight[start : start + batch_size].float()
        valid = pos >= 0
        dense.scatter_(2, pos.clamp(min=0), torch.where(valid, w, torch.zeros_like(w)))
        part = pair_stats(t, top_ids[start : start + batch_size, :, :top].long(), content_mask(t, excluded), dense)
        total = add(total, part)
    out = summarise(total)
    out.update(threshold=threshold, top=top)
    return out
