"""CSPA, copy-suppression-preserving ablation (paper §3.3; the authors'
``cspa/cspa_functions.py::get_cspa_results`` in callummcdougall/SERI-MATS-2023-Streamlit-pages).

At every destination q, CSPA keeps only the part of the head's output that is copy suppression of tokens the
residual stream predicts, and mean-ablates the rest:

* **Which pairs are kept.** A source k <= q is a candidate unless its token is excluded (BOS, function words).
  Each candidate source carries up to ``k_s`` directions: the unembeddings of its semantic neighbours s*_{k,j}
  (j = 0 is the token itself). The logit-lens score of a neighbour at q is
  ``LL[q, s*] = (resid_pre[q] - mean) / sigma_final[q] . W_U[:, s*]`` (the residual before the head's layer, scaled
  by the final-LN scale). Among the *distinct* neighbour tokens with a candidate source, the top
  ``K = ceil(k_u * (q + 1))`` (or ``k_u`` when it is an integer) set a threshold; every (k, j) whose score reaches
  it is kept, on every occurrence of that token. Excluded, future and padding entries are never kept.
* **What is kept of a pair.** The source's share of the output relative to the mean,
  ``A[q,k] (v_k W_O - mu[q])``, is projected onto the span of its kept directions (Gram-Schmidt in j order). With
  ``negative_only`` the coefficients along the orthonormalised directions are clipped to <= 0, so only
  suppression survives. Pairs with nothing kept contribute ``A[q,k] mu[q]``: mean ablation.
* Because sum_k A[q,k] = 1, the CSPA output is ``mu[q] + sum_{k,j} w[q,k,j] u_{k,j}``.

Never materialised: the [batch, q, k, d_model] tensor of the original code. With k_s = 1 every coefficient is a
scalar, ``coef[q,k] = A[q,k] ((v_k W_O - mu[q]) . u_k) / |u_k|``, and memory is O(batch * seq^2). With k_s > 1 the
Gram-Schmidt coefficients come from a Cholesky factor of each source's kept Gram matrix (O(batch * seq^2 * k_s^2)).

``cspa_for_batch`` is what ``analyze`` calls: candidates, scores, the kept mask, the output, the kept pairs to
show, and the output as weights on distinct tokens (``token_weights``) for a cheap DLA.
"""

from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from .. import schema
from ..errors import InvalidInputError
from ..models import architecture
from ..paper import explained_top_bucket
from ..summaries import CSPASummary
from .scoring import SparseCSPA

INTERVENTIONS = ("qk", "ov")  # what CSPA restricts: which sources count (qk) and what of them is kept (ov)


@dataclass(frozen=True)
class CSPAConfig:
    """Hyperparameters of CSPA. Defaults are the paper's setting (K_u = 5%, K_s = 1, negative components only).

    k_u: a fraction in (0, 1] of the q + 1 positions (float), or a fixed count of distinct tokens (int >= 1).
    k_s: semantic neighbours per source token, the token itself included (1 = the token only).
    negative_only: keep only the suppressive (negative) components.
    exclusions: which list gives the excluded source tokens when ``excluded_token_ids`` is None: ``paper`` (the
        paper's FUNCTION_STR_TOKS, default) or ``extended`` (the project's longer list); see
        ``data.function_words``.
    excluded_token_ids: source tokens never kept; None = BOS plus the ``exclusions`` list for the model's
        tokenizer (``function_words.function_word_ids``).
    max_kept_shown: how many kept (source, token, score) pairs per destination the result records.
    interventions: ``("qk", "ov")`` (the paper's CSPA, 76.9% for 10.7), ``("qk",)`` (QK only, 95.2%: a source's
        whole output is kept where some neighbour of its token is kept, else mean-ablated) or ``("ov",)`` (OV only,
        81.1%: no QK filter; every source k <= q is projected onto all its neighbours' unembeddings).
    """

    k_u: float | int = 0.05
    k_s: int = 1
    negative_only: bool = True
    excluded_token_ids: tuple[int, ...] | None = None
    exclusions: str = "paper"
    max_kept_shown: int = 8
    interventions: tuple[str, ...] = INTERVENTIONS

    def __post_init__(self):
        chosen = tuple(self.interventions) if isinstance(self.interventions, (tuple, list)) else ()
        if not chosen or any(x not in INTERVENTIONS for x in chosen) or len(set(chosen)) != len(chosen):
            raise InvalidInputError(
                f"CSPA interventions must be qk,ov, qk or ov (the paper's three), got {self.interventions!r:.60}"
            )
        object.__setattr__(self, "interventions", tuple(x for x in INTERVENTIONS if x in chosen))
        if isinstance(self.k_u, bool) or not isinstance(self.k_u, (int, float)):
            raise InvalidInputError(f"CSPA k_u must be a fraction in (0, 1] or a positive integer, got {self.k_u!r}")
        if isinstance(self.k_u, float) and not (0.0 < self.k_u <= 1.0):
            raise InvalidInputError(f"CSPA k_u as a fraction must be in (0, 1], got {self.k_u}")
        if isinstance(self.k_u, int) and self.k_u < 1:
            raise InvalidInputError(f"CSPA k_u as a count must be >= 1, got {self.k_u}")
        if not isinstance(self.k_s, int) or self.k_s < 1:
            raise InvalidInputError(f"CSPA k_s must be an integer >= 1, got {self.k_s!r}")
        if self.exclusions not in ("paper", "extended"):
            raise InvalidInputError(f"CSPA exclusions must be 'paper' or 'extended', got {self.exclusions!r}")
        if self.max_kept_shown < 1:
            raise InvalidInputError(f"CSPA max_kept_shown must be >= 1, got {self.max_kept_shown}")

    def as_metadata(self) -> dict:
        d = asdict(self)
        d["excluded_token_ids"] = (
            f"the {self.exclusions} list (BOS included)"
            if self.excluded_token_ids is None
            else len(self.excluded_token_ids)
        )
        return d


def keep_counts(k_u: float | int, seq_len: int) -> Int[Tensor, " seq"]:
    """K per destination position: ceil(k_u * (q + 1)) for a fraction, k_u for a count."""
    q = torch.arange(seq_len)
    if isinstance(k_u, int):
        return torch.full((seq_len,), k_u, dtype=torch.long)
    return torch.ceil(k_u * (q + 1) - 1e-9).long().clamp(min=1)


def first_occurrence(cand: Int[Tensor, "batch n"], valid: Bool[Tensor, "batch n"]) -> Bool[Tensor, "batch n"]:
    """True where cand[b, i] is valid and no valid entry before i (in flattened order) holds the same token."""
    b, n = cand.shape
    big = int(cand.max().item()) + 2 if cand.numel() else 2
    key = torch.where(valid, cand + 1, torch.zeros_like(cand)) + torch.arange(b, device=cand.device)[:, None] * big
    flat = key.reshape(-1)
    idx = torch.arange(flat.numel(), device=cand.device)
    _, inverse = torch.unique(flat, return_inverse=True)
    first_idx = torch.full(
        (int(inverse.max().item()) + 1 if flat.numel() else 1,), flat.numel(), dtype=torch.long, device=cand.device
    )
    first_idx = first_idx.scatter_reduce(0, inverse, idx, reduce="amin")
    return (first_idx[inverse] == idx).reshape(b, n) & valid


def select_kept(
    scores: Float[Tensor, "batch q k ks"],
    cand: Int[Tensor, "batch k ks"],
    cand_valid: Bool[Tensor, "batch k ks"],
    k_u: float | int,
) -> Bool[Tensor, "batch q k ks"]:
    """The kept mask: (k, j) entries whose neighbour token is among the top-K distinct tokens at q (see module doc).

    ``cand_valid`` is False for padding neighbours and for excluded source tokens; future sources (k > q) are
    masked here.
    """
    b, s, _, ks = scores.shape
    device = scores.device
    causal = torch.ones(s, s, dtype=torch.bool, device=device).tril()  # [q, k], k <= q
    valid = cand_valid[:, None, :, :] & causal[None, :, :, None]  # [b, q, k, ks]
    first = first_occurrence(cand.reshape(b, s * ks), cand_valid.reshape(b, s * ks)).reshape(b, 1, s, ks)
    neg_inf = torch.finfo(scores.dtype).min
    sel = torch.where(valid & first, scores, torch.full_like(scores, neg_inf)).reshape(b, s, s * ks)
    k_per_q = keep_counts(k_u, s).to(device)
    k_max = int(min(k_per_q.max().item(), s * ks))
    top = sel.topk(k_max, dim=-1).values  # [b, q, k_max]
    idx = (k_per_q.clamp(max=k_max) - 1)[None, :, None].expand(b, s, 1)
    tau = top.gather(-1, idx)  # [b, q, 1]
    keep = (scores.reshape(b, s, s * ks) >= tau) & valid.reshape(b, s, s * ks)
    return keep.reshape(b, s, s, ks)


def cspa_output(
    attn: Float[Tensor, "batch q k"],
    src_out: Float[Tensor, "batch k d_model"],
    mu: Float[Tensor, "q d_model"],
    directions: Float[Tensor, "batch k ks d_model"],
    keep: Bool[Tensor, "batch q k ks"],
    negative_only: bool,
    return_weights: bool = False,
    dest_scale: Float[Tensor, "batch q 1"] | None = None,
):
    """The CSPA head output minus the mean, ``sum_{k,j} w[q,k,j] u_{k,j}``, without a [b, q, k, d] tensor.

    ``src_out`` is v_k W_O per source (no bias), ``directions`` the unembeddings of each source's neighbours.
    ``dest_scale``: a post-attention norm's clean scale per destination, dividing what each source moves there.
    With ``return_weights`` also returns w [b, q, k, ks] (zero wherever nothing is kept).
    """
    b, s, _, ks = keep.shape
    keepf = keep.to(src_out.dtype)
    a: Float[Tensor, "batch k ks"] = torch.einsum("bkd,bkjd->bkj", src_out, directions)
    m: Float[Tensor, "batch q k ks"] = torch.einsum("qd,bkjd->bqkj", mu, directions)
    moved = a[:, None] if dest_scale is None else a[:, None] / dest_scale[..., None]  # [b, q|1, k, ks]
    proj = attn[..., None] * (moved - m) * keepf  # U_kept y, [b, q, k, ks]
    if ks == 1:
        sq_norm = directions[..., 0, :].pow(2).sum(-1).clamp_min(1e-30)  # [b, k]
        coef = proj[..., 0] / sq_norm.sqrt()[:, None, :]  # along the unit direction
        if negative_only:
            coef = coef.clamp(max=0.0)
        w = (coef / sq_norm.sqrt()[:, None, :])[..., None]
    else:
        gram = torch.einsum("bkid,bkjd->bkij", directions, directions)  # [b, k, ks, ks]
        eye = torch.eye(ks, dtype=gram.dtype, device=gram.device)
        kk = keepf[..., :, None] * keepf[..., None, :]
        g = gram[:, None] * kk + eye * (1.0 - keepf)[..., None]  # masked Gram, identity where dropped
        g = g + eye * (1e-9 * g.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True)[..., None])
        chol = torch.linalg.cholesky(g)
        coef = torch.linalg.solve_triangular(chol, proj[..., None], upper=False)  # Gram-Schmidt coefficients
        if negative_only:
            coef = coef.clamp(max=0.0)
        w = torch.linalg.solve_triangular(chol.transpose(-1, -2), coef, upper=True)[..., 0] * keepf
    out = torch.einsum("bqkj,bkjd->bqd", w, directions)
    return (out, w) if return_weights else out


def explained(delta_ablation: Tensor, delta_cspa: Tensor) -> float:
    """1 - mean(cspa) / mean(ablation); NaN when the ablation's mean is zero."""
    denom = float(delta_ablation.double().mean())
    return float("nan") if denom == 0.0 else 1.0 - float(delta_cspa.double().mean()) / denom


def explained_interval(
    kl_ablation: Float[Tensor, "seqs preds"],
    kl_cspa: Float[Tensor, "seqs preds"],
    n_boot: int = 400,
    level: float = 0.9,
) -> tuple[float, float]:
    """A ``level`` bootstrap interval of ``explained`` (KL) over sequences: sequences drawn with replacement
    ``n_boot`` times (a fixed seed, so a page shows the same interval every time), the central ``level`` of the
    resampled shares. With one sequence the interval is that sequence's share."""
    a, c = kl_ablation.double().sum(-1), kl_cspa.double().sum(-1)  # per sequence
    n = a.numel()
    if n == 0:
        return float("nan"), float("nan")
    idx = torch.randint(0, n, (n_boot, n), generator=torch.Generator().manual_seed(0))
    shares = 1.0 - c[idx].sum(-1) / a[idx].sum(-1)
    lo, hi = torch.quantile(shares, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=shares.dtype)).tolist()
    return float(lo), float(hi)


def summary_metrics(
    kl_ablation: Tensor, kl_cspa: Tensor, dl_ablation: Tensor, dl_cspa: Tensor, n_buckets: int = 100
) -> CSPASummary:
    """Effect explained by KL, net loss and absolute loss, plus the percentile curve (paper §3.3).

    Inputs are flat tensors over the same set of tokens. The curve sorts tokens by the ablation's Δloss into
    ``n_buckets`` equal-count buckets and gives each bucket's mean ablation and CSPA Δloss.
    """
    kl_a, kl_c = kl_ablation.reshape(-1).double(), kl_cspa.reshape(-1).double()
    dl_a, dl_c = dl_ablation.reshape(-1).double(), dl_cspa.reshape(-1).double()
    if not (kl_a.numel() == kl_c.numel() == dl_a.numel() == dl_c.numel()):
        raise InvalidInputError("summary_metrics needs four tensors over the same tokens")
    n = dl_a.numel()
    order = dl_a.argsort()
    n_b = max(1, min(n_buckets, n))
    buckets = torch.tensor_split(order, n_b)
    curve_a = [float(dl_a[i].mean()) for i in buckets if len(i)]
    curve_c = [float(dl_c[i].mean()) for i in buckets if len(i)]
    return CSPASummary(
        n_tokens=n,
        explained_kl=explained(kl_a, kl_c),
        explained_top_bucket=explained_top_bucket(curve_a, curve_c),
        explained_loss_net=explained(dl_a, dl_c),
        explained_loss_abs=explained(dl_a.abs(), dl_c.abs()),
        mean_kl_ablation=float(kl_a.mean()) if n else float("nan"),
        mean_kl_cspa=float(kl_c.mean()) if n else float("nan"),
        mean_delta_loss_ablation=float(dl_a.mean()) if n else float("nan"),
        mean_delta_loss_cspa=float(dl_c.mean()) if n else float("nan"),
        curve_ablation=tuple(curve_a),
        curve_cspa=tuple(curve_c),
    )


# Use the sparse form of CSPA's DLA when its cost, T (d_model + S), is below this fraction of a projection's S d_model.
SPARSE_CSPA_DLA = 0.6
_EXCLUDED_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_excluded(tokenizer, which: str = "paper") -> tuple[int, ...]:
    """BOS + the ``which`` exclusion list on ``tokenizer``, computed once per tokenizer object and list."""
    from ..data.function_words import exclusion_ids

    per_tok = _EXCLUDED_CACHE.setdefault(tokenizer, {})
    if which not in per_tok:
        per_tok[which] = tuple(exclusion_ids(tokenizer, which)[0])
    return per_tok[which]


@dataclass
class CSPABatch:
    """CSPA on one batch: its output minus the mean (dense, or as token weights when that is cheaper) and the
    kept pairs to display (schema fields ``cspa_kept_*``, ``cspa_n_kept``)."""

    dense: Float[Tensor, "batch q d_model"] | None
    sparse: SparseCSPA | None
    kept: dict[str, Tensor]


def cspa_for_batch(
    m,
    tokens: Int[Tensor, "batch seq"],
    attn: Float[Tensor, "batch q k"],
    src_out: Float[Tensor, "batch k d_model"],
    mu: Float[Tensor, "q d_model"],
    lens_scaled: Float[Tensor, "batch q d_model"],
    sigma_f: Float[Tensor, "batch q 1"],
    cfg: CSPAConfig,
    neighbours: Int[Tensor, "d_vocab k_s"] | None,
    dest_scale: Float[Tensor, "batch q 1"] | None = None,
    sparse: bool | None = None,
) -> CSPABatch:
    """CSPA of one head on a batch. ``lens_scaled`` = centred resid_pre of the head's layer / sigma_f.
    ``dest_scale``: in a model with a norm after attention, its clean scale at each destination (the head's output
    there is Σ_k A[q,k] src_out[k] / dest_scale[q]); None where there is no such norm. ``sparse``: the output as
    weights on token directions (True), as dense rows (False), or whichever makes its DLA cheaper (None); the QK-only
    intervention is always dense."""
    b, s = tokens.shape
    device = tokens.device
    excluded = (
        cfg.excluded_token_ids if cfg.excluded_token_ids is not None else default_excluded(m.tokenizer, cfg.exclusions)
    )
    excl = torch.zeros(m.cfg.d_vocab, dtype=torch.bool, device=device)
    if len(excluded):
        excl[torch.tensor(list(excluded), dtype=torch.long, device=device)] = True
    if cfg.k_s == 1:
        cand = tokens[:, :, None]
    else:
        if neighbours is None:
            raise InvalidInputError("CSPA with k_s > 1 needs a semantic-neighbour table (semantic.neighbour_table)")
        table = neighbours.to(device)
        if table.shape[1] < cfg.k_s:
            raise InvalidInputError(f"neighbour table has {table.shape[1]} columns but k_s = {cfg.k_s}")
        cand = table[tokens][:, :, : cfg.k_s]
        cand[:, :, 0] = tokens  # neighbour 0 is always the token itself
    qk, ov = "qk" in cfg.interventions, "ov" in cfg.interventions
    # OV only has no QK filter: every source, excluded tokens too, keeps all its neighbours
    cand_valid = (cand >= 0) & ~excl[tokens][:, :, None] if qk else cand >= 0
    safe = cand.clamp(min=0)
    directions = m.W_U.T[safe].float() * cand_valid[..., None]  # [b, k, ks, d]
    scores = torch.einsum("bqd,bkjd->bqkj", lens_scaled, directions)
    if qk:
        keep = select_kept(scores, safe, cand_valid, cfg.k_u)
    else:
        causal = torch.ones(s, s, dtype=torch.bool, device=device).tril()
        keep = cand_valid[:, None, :, :] & causal[None, :, :, None]
    kept = _kept_pairs(scores, safe, keep, cfg)
    if not ov:  # QK only: a source's whole output (relative to the mean) where any neighbour is kept, else the mean
        share = attn * keep.any(-1).to(attn.dtype)  # [b, q, k]
        moved = torch.einsum("bqk,bkd->bqd", share, src_out)
        dense = (moved if dest_scale is None else moved / dest_scale) - share.sum(-1, keepdim=True) * mu
        return CSPABatch(dense, None, kept)
    out_minus_mu, w = cspa_output(
        attn, src_out, mu, directions, keep, cfg.negative_only, return_weights=True, dest_scale=dest_scale
    )
    tok_w, tok_ids = token_weights(w, safe, keep)
    d_model = out_minus_mu.shape[-1]
    if sparse is None:
        sparse = len(tok_ids) * (d_model + s) < SPARSE_CSPA_DLA * s * d_model  # sparse DLA is cheaper than dense
    if sparse:
        # the centring a LayerNorm model's final norm applies; an RMSNorm model's applies none
        mean = out_minus_mu.mean(-1, keepdim=True) if architecture.of(m).centres else torch.zeros_like(sigma_f)
        return CSPABatch(None, SparseCSPA(tok_w / sigma_f, tok_ids, mean / sigma_f), kept)
    return CSPABatch(out_minus_mu, None, kept)


def _kept_pairs(scores: Tensor, cand: Tensor, keep: Tensor, cfg: CSPAConfig) -> dict[str, Tensor]:
    """The kept (source position, token, score) entries per destination, best logit-lens score first."""
    b, s = cand.shape[:2]
    flat_scores = torch.where(keep, scores, torch.full_like(scores, float("-inf"))).reshape(b, s, -1)
    n_show = min(cfg.max_kept_shown, flat_scores.shape[-1])
    top_scores, top_idx = flat_scores.topk(n_show, dim=-1)
    shown = torch.isfinite(top_scores)
    none = torch.full_like(top_idx, -1)
    tok = cand.reshape(b, -1).gather(-1, top_idx.reshape(b, -1)).reshape(b, s, n_show)
    return {
        schema.CSPA_KEPT_POS: torch.where(shown, top_idx // cfg.k_s, none),
        schema.CSPA_KEPT_TOKEN: torch.where(shown, tok, none),
        schema.CSPA_KEPT_SCORE: torch.where(shown, top_scores, torch.zeros_like(top_scores)),
        schema.CSPA_N_KEPT: keep.reshape(b, s, -1).sum(-1),
    }


def token_weights(
    w: Float[Tensor, "batch q k ks"], cand: Int[Tensor, "batch k ks"], keep: Bool[Tensor, "batch q k ks"]
) -> tuple[Float[Tensor, "batch q T"], Int[Tensor, " T"]]:
    """CSPA's output as weights on distinct unembedding directions: (weights [b, q, T], token ids [T]).

    sum_t weights[q, t] W_U[:, t] equals the CSPA output minus the mean; T is the number of distinct tokens kept
    anywhere in the batch, usually far fewer than the positions, which makes CSPA's DLA cheap.
    """
    b, s, _, ks = w.shape
    ids = cand.reshape(b, s * ks)
    used = keep.reshape(b, s, s * ks).any(dim=1)  # [b, k*ks]
    uniq = torch.unique(ids[used]) if used.any() else ids.new_zeros(0)
    lookup = torch.full((int(ids.max()) + 2,), len(uniq), dtype=torch.long, device=w.device)
    lookup[uniq] = torch.arange(len(uniq), device=w.device)
    col = torch.where(used, lookup[ids], torch.full_like(ids, len(uniq)))  # [b, k*ks]
    weights = torch.zeros(b, s, len(uniq) + 1, dtype=w.dtype, device=w.device)
    weights.scatter_add_(2, col[:, None, :].expand(b, s, s * ks), w.reshape(b, s, s * ks))
    return weights[..., :-1], uniq


def cspa_rows(m, tokens, attn, src_out, mu, scores, sigma_f, cfg: CSPAConfig, neighbours=None, dest_scale=None):
    """CSPA's output minus the mean as rows over d_model divided by sigma_f (whose ``W_U`` projection is CSPA's DLA),
    dense whichever form ``cspa_for_batch`` chose: for callers that add several heads' rows or stack them."""
    batch = cspa_for_batch(m, tokens, attn, src_out, mu, scores, sigma_f, cfg, neighbours, dest_scale)
    if batch.sparse is not None:
        sp = batch.sparse
        return sp.weights @ m.W_U.float()[:, sp.token_ids].T - sp.mean
    return architecture.of(m).centre(batch.dense) / sigma_f
