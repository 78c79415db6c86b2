"""OV and QK circuits of a head over the whole vocabulary (paper §3.1-3.2; the authors'
``utils.get_effective_embedding`` and ``ov_qk_circuits/section_41_42.ipynb`` in
callummcdougall/SERI-MATS-2023-Streamlit-pages).

**Effective embedding** (``EMBEDDINGS``), all without positional embeddings and biases of attention:

* ``W_E``: the token embedding alone.
* ``mlp0``: MLP0's output only, with layer-0 attention fixed to self (the original app's OV/QK page).
* ``W_E+mlp0`` (default, the paper's §3.1/3.2 statistics): W_E + self-attention of layer 0 + MLP0's output.
* ``mlp0_noattn`` / ``W_E+mlp0_noattn``: the same with layer-0 attention removed instead of fixed to self (the
  variant the paper's appendix describes).

With weights processed by ``load_model`` (fold_ln), "LN" below is centring then division by the RMS (division
by the RMS alone for RMSNorm models). GPT-2-style models compute the effective embedding by hand as above; other
architectures (rotary, parallel, gated MLPs) run the model's own block 0 on each token alone, so layer-0 attention
attends to the token itself (rotary at position 0 is the identity; learned position embeddings are zeroed) and
its output biases are included. Grouped-query heads use the key/value head they share.

**Circuits**, factored so nothing vocabulary x vocabulary is ever held in memory (rows in chunks):

* OV: ``M_OV[s, t] = W_EE[s] W_V W_O W_U[:, t]``; rows are source tokens.
  ``ov_rank[s] = #{t ≠ s : M[s,t] ≤ M[s,s]}`` (0 = the token suppresses itself most; ties count against it, so a
  constant row is no preference). Row scaling does not change these ranks; the stored factor rows are
  normalised so that the OV output has unit RMS (the original app's convention for drawing bars).
* QK: ``M_QK[t, s] = LN(W_U[:, t]) W_Q W_K^T LN(W_EE[s])^T / sqrt(d_head)``; rows are query (predicted) tokens,
  columns key (source) tokens. ``qk_rank[t] = #{s ≠ t : M[t,s] ≥ M[t,t]}`` (0 = the token attends most to itself).
  Both sides are normalised to norm sqrt(d_model) as LayerNorm would do (paper App. K.1). No Q/K biases. Models
  with QK-norm (Gemma 3) pass each query and key vector through it (``qk_normed``), as their attention does.
  **Rotary models** (Llama, NeoX, SmolLM2…) rotate queries and keys by their positions, so the score depends on the
  distance: ``qk_at_distance`` rotates the query side by the model's own rotation for a key that many positions
  back (``models.rotary``; the key at position 0 is unrotated). GPT-2 (learned absolute positions) keeps the
  paper's position-blind definition. ``attended_distances`` gives the distances the head attends over on a run's
  text, from its stored attention; the run records ranks at ``QK_DISTANCES`` and at the attended median.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .. import schema
from ..errors import InvalidInputError
from ..models import architecture, blocks, hooks, rotary
from ..models.heads import check_head, head_weights
from ..models.loading import unwrap
from ..models.norm import eps_of
from ..summaries import RankSummary

QK_DISTANCES = (1, 4, 16, 64)  # query-key distances at which a rotary model's QK circuit is ranked
EXACT_RANK_VOCAB = 65_536  # a run ranks every token of a vocabulary up to this size (GPT-2, SmolLM2)


def ranked_rows(tokenizer, d_vocab: int, seed: int = 0) -> Int[Tensor, " n"] | None:
    """The tokens whose circuit ranks a run computes: None (every token) up to ``EXACT_RANK_VOCAB`` tokens; above,
    a seeded sample of EXACT_RANK_VOCAB² / d_vocab text tokens (``data.tokenization.text_token_ids``; 16,384 of
    Gemma 3's 262,144), sorted, so that the work stays that of a 65,536-token vocabulary. Ranks are always among
    all tokens; the summaries' fractions are over the sample."""
    if d_vocab <= EXACT_RANK_VOCAB:
        return None
    from ..data.tokenization import text_token_ids

    text = torch.tensor(text_token_ids(tokenizer, d_vocab))
    n = min(len(text), EXACT_RANK_VOCAB**2 // d_vocab)
    g = torch.Generator().manual_seed(seed)
    return text[torch.randperm(len(text), generator=g)[:n]].sort().values


def ranks_of(rows: Tensor, cols: Tensor, circuit: str, ids: Tensor | None, d_vocab: int) -> Int[Tensor, " d_vocab"]:
    """Every token's diagonal rank (``ranks_from_factors``) where ``ids`` is None, else those of ``ids`` and −1
    (not ranked) for the other tokens."""
    if ids is None:
        return ranks_from_factors(rows, cols, circuit)
    out = torch.full((d_vocab,), -1, dtype=torch.long)
    out[ids] = ranks_from_factors(rows, cols, circuit, ids=ids)
    return out


EMBEDDINGS = ("W_E", "mlp0", "W_E+mlp0", "mlp0_noattn", "W_E+mlp0_noattn")
DEFAULT_EMBEDDING = "W_E+mlp0"
CIRCUITS = ("ov", "qk")


def effective_embedding(
    model, embedding: str = DEFAULT_EMBEDDING, chunk: int = 8192
) -> Float[Tensor, "d_vocab d_model"]:
    """The effective embedding ``embedding`` (one of EMBEDDINGS) for every token."""
    m = unwrap(model)
    if embedding not in EMBEDDINGS:
        raise InvalidInputError(f"unknown embedding {embedding!r}; choose one of {EMBEDDINGS}")
    W_E = m.W_E
    if embedding == "W_E":
        return W_E.clone()
    if architecture.of(m).rerun != blocks.GPT2.name:  # the model's own block 0 where its maths is not GPT-2's
        return _block0_embedding(m, embedding, chunk=min(chunk, 1024))
    eps = eps_of(m)
    with_attn = not embedding.endswith("_noattn")
    include_we = embedding.startswith("W_E+")
    out = torch.empty_like(W_E)  # the model's dtype; computed in float32 (``blocks.GPT2Blocks``)
    with torch.inference_mode():
        for start in range(0, W_E.shape[0], chunk):
            e = W_E[start : start + chunk].float()
            mid = e + blocks.GPT2.self_attention(m, 0, e, eps) if with_attn else e  # each head attends to itself
            mlp = blocks.GPT2.mlp(m, 0, mid, eps)
            out[start : start + chunk] = (mid + mlp if include_we else mlp).to(out.dtype)
    return out


def _block0_embedding(m, embedding: str, chunk: int) -> Float[Tensor, "d_vocab d_model"]:
    """The effective embedding from the model's own block 0, run on every token alone (see the module docstring)."""
    d_vocab = m.cfg.d_vocab
    grab = hooks.mlp_out(0) if embedding.startswith("mlp0") else hooks.resid_post(0)
    fwd = []
    if hooks.POS_EMBED in m.hook_dict:
        fwd.append((hooks.POS_EMBED, lambda x, hook: torch.zeros_like(x)))
    if embedding.endswith("_noattn"):
        fwd.append((hooks.attn_out(0), lambda x, hook: torch.zeros_like(x)))
    out = torch.empty(d_vocab, m.cfg.d_model)
    got = {}

    def keep(x, hook):
        got["x"] = x[:, 0].float()

    with torch.inference_mode():
        for start in range(0, d_vocab, chunk):
            ids = torch.arange(start, min(d_vocab, start + chunk), device=m.W_E.device)[:, None]
            m.run_with_hooks(ids, fwd_hooks=fwd + [(grab, keep)], stop_at_layer=1)
            out[start : start + len(ids)] = got["x"].cpu()
    return out.to(m.W_E.device)


def circuit_factors(
    model, head: tuple[int, int], embedding: str = DEFAULT_EMBEDDING, w_ee: Tensor | None = None
) -> dict[str, Float[Tensor, "d_vocab d_head"]]:
    """The four [d_vocab, d_head] factor matrices the app uses to draw any token's bars in milliseconds.

    * ``ov_src`` = W_EE W_V (rows scaled so the OV output W_EE W_V W_O has unit RMS), ``ov_dst`` = (W_O W_U)^T:
      ``OV[s, t] = ov_src[s] . ov_dst[t]``.
    * ``qk_dst`` = LN(W_U^T) W_Q / d_head^(1/4), ``qk_src`` = LN(W_EE) W_K / d_head^(1/4):
      ``QK[t, s] = qk_dst[t] . qk_src[s]`` (attention score of query token t on key token s).

    ``w_ee``: the effective embedding when the caller has it (the survey computes it once per model).
    """
    m = unwrap(model)
    layer, h = check_head(m, head)
    arch = architecture.of(m)
    w = head_weights(m, layer, h)
    with torch.inference_mode():
        if w_ee is None:
            w_ee = effective_embedding(m, embedding)
        ov_src = w_ee @ w["W_V"]
        out_rms = (ov_src @ w["W_O"]).pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)
        ov_src = ov_src / out_rms
        ov_dst = (w["W_O"] @ m.W_U).T
        quarter = float(m.cfg.d_head) ** 0.25
        qk_dst = qk_normed(m, layer, arch.normalise(m.W_U.T) @ w["W_Q"], "q") / quarter
        qk_src = qk_normed(m, layer, arch.normalise(w_ee) @ w["W_K"], "k") / quarter
    return dict(
        zip(
            schema.CIRCUIT_FACTORS, (ov_src.contiguous(), ov_dst.contiguous(), qk_dst.contiguous(), qk_src.contiguous())
        )
    )


def ranks_from_factors(
    rows: Tensor, cols: Tensor, circuit: str, chunk: int = 2048, ids: Tensor | None = None
) -> Int[Tensor, " n"]:
    """Diagonal rank of every row of ``rows @ cols.T``, in row chunks (OV: most negative = 0; QK: largest = 0).

    ``ids``: only these rows (token ids), e.g. a sample of a large vocabulary; ranks are still among all columns.
    ``rows`` holds either every token's row or, when it has exactly ``len(ids)`` rows, those tokens' rows in order."""
    if circuit not in CIRCUITS:
        raise InvalidInputError(f"unknown circuit {circuit!r}; choose 'ov' or 'qk'")
    ids = torch.arange(rows.shape[0]) if ids is None else ids.long().cpu()
    cut = rows.shape[0] == len(ids)
    n = len(ids)
    ranks = torch.empty(n, dtype=torch.long)
    with torch.inference_mode():
        for start in range(0, n, chunk):
            idx = ids[start : start + chunk].to(rows.device)
            block = (rows[start : start + chunk] if cut else rows[idx]) @ cols.T  # [c, d_vocab]
            diag = block[torch.arange(len(idx)), idx][:, None]
            # ties count against the diagonal (the token itself excluded): a constant row shows no preference
            compare = torch.le if circuit == "ov" else torch.ge
            if block.device.type == "cpu" and block.dtype == torch.float32 and block.shape[1] < 2**24:
                better = torch.empty_like(block)  # summing a float buffer beats converting a bool one (exact)
                compare(block, diag, out=better)
            else:
                better = compare(block, diag)
            ranks[start : start + chunk] = (
                better.sum(-1, dtype=torch.float32 if better.is_floating_point() else torch.int32).long() - 1
            ).cpu()
    return ranks


def circuit_ranks(
    model,
    head: tuple[int, int],
    circuit: str = "ov",
    embedding: str = DEFAULT_EMBEDDING,
    factors: dict[str, Tensor] | None = None,
) -> Int[Tensor, " d_vocab"]:
    """Rank of the diagonal in each row of the full OV or QK circuit of ``head``; LongTensor [d_vocab]."""
    if circuit not in CIRCUITS:
        raise InvalidInputError(f"unknown circuit {circuit!r}; choose 'ov' or 'qk'")
    f = factors if factors is not None else circuit_factors(model, head, embedding)
    if circuit == "ov":
        return ranks_from_factors(f["ov_src"], f["ov_dst"], "ov")
    return ranks_from_factors(f["qk_dst"], f["qk_src"], "qk")


def rank_summary(ranks: Tensor, n_worst: int = 20, ids: Tensor | None = None) -> RankSummary:
    """Fraction with rank 0 and rank < 10 (the paper's top 10), median and mean rank, and the ``n_worst`` token ids.
    ``ids``: the token of each entry of ``ranks`` (default: entry i is token i)."""
    ids = torch.arange(len(ranks)) if ids is None else ids.long()
    r = ranks.double()
    if r.numel() == 0:
        raise InvalidInputError("no tokens left to summarise")
    order = r.argsort(descending=True)[:n_worst]
    worst = ids[order]
    return RankSummary(
        n_tokens=int(r.numel()),
        frac_rank0=float((r == 0).double().mean()),
        frac_top10=float((r < 10).double().mean()),
        median_rank=float(r.median()),
        mean_rank=float(r.mean()),
        worst_token_ids=tuple(worst.tolist()),
        worst_ranks=tuple(ranks[order].tolist()),
    )


def qk_at_distance(
    model, qk_dst: Float[Tensor, "n d_head"], distance: int, layer: int | None = None
) -> Float[Tensor, "n d_head"]:
    """The QK circuit's query side for keys ``distance`` positions back: rotated by the model's rotary embedding
    in ``layer`` (``models.rotary.at_distance``; Gemma 3 rotates sliding and global layers differently) on rotary
    models, unchanged elsewhere (learned absolute positions: the paper's definition, which leaves positions out)."""
    m = unwrap(model)
    if not architecture.of(m).rotary:
        return qk_dst
    if isinstance(distance, bool) or not isinstance(distance, int) or distance < 0:
        raise InvalidInputError(f"a query-key distance is a whole number >= 0, got {distance!r}")
    return rotary.at_distance(m, qk_dst, distance, layer).to(qk_dst.dtype)


def qk_normed(m, layer: int, x: Float[Tensor, "n d_head"], side: str) -> Float[Tensor, "n d_head"]:
    """Query (``side`` "q") or key ("k") vectors of ``layer`` as its attention sees them: through the model's
    QK-norm (per-head RMSNorm with a gain, Gemma 3, Qwen3, OLMo2) where it has one, else unchanged."""
    if not architecture.of(m).qk_norm:
        return x
    norm = getattr(m.blocks[layer].attn, f"{side}_norm")
    with torch.inference_mode():
        return norm(x.float()).float()


def attended_distances(
    pos: Int[Tensor, "n seq k"], weight: Float[Tensor, "n seq k"], quantiles=(0.1, 0.25, 0.5, 0.75, 0.9)
) -> dict | None:
    """The distances q - k the head attends over, from its stored top-k attention (source positions ``pos``,
    weights ``weight``; position 0, the start token, and padding left out): attention-weighted quantiles, the
    median first. None when no attention reaches a source past the start token."""
    n, s, k = pos.shape
    q = torch.arange(s)[None, :, None]
    valid = (pos >= 1) & (pos <= q)
    d = (q - pos)[valid]
    w = weight.float()[valid]
    total = float(w.sum())
    if total <= 0:
        return None
    hist = torch.bincount(d, weights=w.double(), minlength=s)
    cdf = hist.cumsum(0) / hist.sum()
    at = {f"p{round(100 * x)}": int(torch.searchsorted(cdf, torch.tensor(x, dtype=cdf.dtype))) for x in quantiles}
    return {"median": max(1, at.get("p50", 1)), "quantiles": at, "weight_share": total / float(weight.float().sum())}
