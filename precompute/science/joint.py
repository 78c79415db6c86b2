"""Several heads at once: their direct effects mean-ablated together, and CSPA of all of them together, as one
head is measured (paper §3.3's mean ablation and CSPA; the direct effect with the final norm frozen is linear, so a
set's ablation and CSPA are the sums of each head's rows). Copy suppression can be shared: GPT-2's 10.7 with
11.10, SmolLM2's 24.4 with 23.3 (ablated together, more than the sum of each alone).

``joint_effect(model, tokens, heads, means, cspa, readouts, lens)`` returns, over every predicted token, the
``summary_metrics`` of the set's CSPA against the set's ablation (without its curves), the set's mean Δloss, and
each head's own mean Δloss alone, so the two can be compared.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .. import schema
from ..errors import InvalidInputError
from ..models import architecture, hooks
from ..models.heads import check_head, dest_scale, head_output_from, output_hooks
from ..models.loading import unwrap
from ..models.norm import eps_of
from ..models.weights import effective_W_O
from ..validate import token_ids
from . import readout as readouts
from .cspa import CSPAConfig, cspa_rows, summary_metrics
from .scoring import shift_effects
from .tuned_lens import TunedLens

JOINT_CHUNK_BYTES = 64 * 2**20  # each vocabulary-sized temporary of the shifted log-partitions


def group_key(heads) -> str:
    """ "24.4+23.3": a set of heads as one name (in the order given)."""
    return "+".join(schema.head_key(h) for h in heads)


def parse_groups(text: str) -> tuple[tuple[tuple[int, int], ...], ...]:
    """'24.4+23.3,10.7+11.10' -> (((24, 4), (23, 3)), ((10, 7), (11, 10))): each group two or more distinct heads."""
    groups = []
    for part in str(text).split(","):
        if not part.strip():
            continue
        heads = tuple(schema.parse_head(h) for h in part.split("+"))
        if len(heads) < 2 or len(set(heads)) != len(heads):
            raise InvalidInputError(f"group {part.strip()!r:.40} must name two or more different heads, e.g. 24.4+23.3")
        groups.append(heads)
    return tuple(groups)


def joint_effect(
    model,
    tokens: Int[Tensor, "batch seq"],
    heads: tuple[tuple[int, int], ...],
    means: dict[tuple[int, int], Float[Tensor, "positions d_model"]],
    cspa: CSPAConfig,
    readout_of: dict[tuple[int, int], str] | None = None,
    lens: TunedLens | None = None,
    neighbours: Tensor | None = None,
    batch_size: int = 4,
    progress=None,
) -> dict:
    """The set ``heads`` ablated together and under CSPA together (each head's CSPA with its own read-out,
    ``readout_of``, default the logit lens), over every predicted token of ``tokens``; see the module docstring."""
    m = unwrap(model)
    token_ids(tokens, m.cfg.d_vocab, m.cfg.n_ctx, min_len=2)
    heads = tuple(check_head(m, h) for h in heads)
    if len(heads) < 2 or len(set(heads)) != len(heads):
        raise InvalidInputError("a joint effect needs two or more different heads")
    readout_of = readout_of or {}
    for one in heads:
        if one not in means:
            raise InvalidInputError(f"head {schema.head_key(one)} has no mean result")
        readouts.check(readout_of.get(one, "logit_lens"), lens, one[0])
    arch = architecture.of(m)
    W_U = m.W_U.float()
    layers = sorted({h[0] for h in heads})
    names = [hooks.FINAL_SCALE, hooks.FINAL_NORMALIZED]
    names += [
        n
        for layer in layers
        for n in (*output_hooks(m, layer), hooks.v(layer), hooks.pattern(layer), hooks.resid_pre(layer))
    ]
    parts: dict[str, list[Tensor]] = {"kl_a": [], "kl_c": [], "dl_a": [], "dl_c": []}
    alone: dict[tuple[int, int], list[Tensor]] = {one: [] for one in heads}
    n = tokens.shape[0]
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            toks = tokens[start : start + batch_size].long().to(W_U.device)
            b, s = toks.shape
            logits, cache = m.run_with_cache(toks, names_filter=names)
            cache = {k: cache[k].float() for k in names}
            sigma = cache[hooks.FINAL_SCALE]
            x_c = cache[hooks.FINAL_NORMALIZED] * sigma
            dla_rows, cspa_total = [], None
            for layer, h in heads:
                mu = means[(layer, h)][:s].to(W_U.device, torch.float32)
                W_O_h = effective_W_O(m, layer)[h].float()
                delta_c = arch.centre(head_output_from(m, cache, layer, h) - mu)
                src_out = cache[hooks.v(layer)][:, :, arch.kv_head(h)] @ W_O_h
                dest = dest_scale(m, cache, layer)  # a norm after attention: its scale, else None
                pre_c = arch.centre(cache[hooks.resid_pre(layer)])
                r = readout_of.get((layer, h), "logit_lens")
                _, scores = readouts.rows(r, layer, pre_c, eps_of(m), sigma, lens, final_c=x_c, delta_c=delta_c)
                rows = cspa_rows(
                    m, toks, cache[hooks.pattern(layer)][:, h], src_out, mu, scores, sigma, cspa, neighbours, dest
                )
                dla_rows.append(delta_c / sigma)
                cspa_total = rows if cspa_total is None else cspa_total + rows
            dla_total = torch.stack(dla_rows).sum(0)
            flat = logits[:, :-1].float().reshape(-1, logits.shape[-1])
            targets = toks[:, 1:].reshape(-1)
            lse = torch.logsumexp(flat, -1)
            u_bar = torch.softmax(flat, -1) @ W_U.T
            w_target = W_U.T[targets]
            k = flat.shape[0]
            stacked = torch.stack(
                [dla_total[:, :-1].reshape(k, -1), (dla_total - cspa_total)[:, :-1].reshape(k, -1)]
                + [d[:, :-1].reshape(k, -1) for d in dla_rows]
            )
            kl, dl = shift_effects(flat, lse, u_bar, w_target, stacked, W_U, JOINT_CHUNK_BYTES)
            parts["kl_a"].append(kl[0].cpu())
            parts["kl_c"].append(kl[1].cpu())
            parts["dl_a"].append(dl[0].cpu())
            parts["dl_c"].append(dl[1].cpu())
            for i, one in enumerate(heads):
                alone[one].append(dl[2 + i].cpu())
            if progress:
                done = min(n, start + batch_size)
                progress(f"{group_key(heads)} together: {done}/{n} sequences", done / n)
    summary = summary_metrics(*(torch.cat(parts[k]) for k in ("kl_a", "kl_c", "dl_a", "dl_c")))
    out = summary.without_curves().as_dict()
    out["mean_delta_loss_alone"] = {schema.head_key(k): float(torch.cat(v).double().mean()) for k, v in alone.items()}
    return out


def mean_results_for(model, tokens: Int[Tensor, "batch seq"], heads, have: dict, batch_size: int = 8) -> dict:
    """``have`` plus the per-position mean output of every head in ``heads`` that it lacks, over ``tokens`` (the
    paper's μ, as ``analysis.mean_result``)."""
    from .analysis import mean_result

    out = dict(have)
    for h in heads:
        if h not in out:
            out[h] = mean_result(model, tokens, h, batch_size=batch_size)
    return out
