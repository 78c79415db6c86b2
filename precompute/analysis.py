"""One analysis of an attention head, used by the precompute job and by the app's live mode alike.

``analyze(model, tokens, head, mean_result)`` runs one forward pass that caches only what it needs, re-runs only
the blocks from the head's layer on (for the "both" and "indirect" effects), and then does every vocabulary-sized
computation in row chunks, keeping only per-token numbers and top-k lists. Definitions follow
``shared/reference/upstream-app.md`` §2.1-2.4:

* r = the head's output (z_h W_O, no bias), mu = per-position mean of r, Delta = r - mu (centred).
* direct / frozen LN: logits - (Delta / sigma_final) W_U; no second forward pass. The same projection is the
  head's direct logit attribution (DLA).
* unfrozen LN: the final LayerNorm scale recomputed from the intervened residual. Because LN is a rescaling of
  the centred residual, every unfrozen variant is ``(sigma_f / sigma') (frozen logits - b_U) + b_U``.
* both: the head's output is replaced by mu and only the blocks after it are re-run (``gpt2_blocks``, from the
  cached resid_mid of the head's layer);
  indirect: both + Delta (only the direct path restored).
* logit lens before the head: (resid_pre[L] centred / ln1 scale) W_U + b_U.
* CSPA: see ``cspa``; its logits are clean - DLA + DLA_cspa (frozen LN).
* KL is KL(clean || intervened) per position.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from . import gpt2_blocks
from .cspa import CSPAConfig, cspa_output, select_kept
from .errors import InvalidInputError
from .models import LoadedModel, unwrap

EFFECTS = ("direct", "both", "indirect")
LN_MODES = ("frozen", "unfrozen")
VARIANTS = tuple(f"{e}_{ln}" for e in EFFECTS for ln in LN_MODES)
PAPER_VARIANT = "direct_frozen"
DEFAULT_CSPA = CSPAConfig()
# Use the sparse form of CSPA's DLA when its cost, T (d_model + S), is below this fraction of a projection's S d_model.
SPARSE_CSPA_DLA = 0.6
_ALIASES = {"delta_loss_direct": "delta_loss_direct_frozen", "kl_direct": "kl_direct_frozen"}


@dataclass
class AnalysisResult:
    """Every per-token quantity of one head on a batch of sequences, as named tensors.

    Shapes: B = batch, S = sequence length, P = S - 1 (predictions with a known next token), k = top-k.

    * ``tokens`` [B,S]; ``loss`` [B,P] clean cross-entropy of predicting token p+1 at position p.
    * for each variant v in VARIANTS (``direct_frozen`` ... ``indirect_unfrozen``) and ``cspa``:
      ``delta_loss_{v}`` and ``kl_{v}`` [B,P]; ``{v}_topk_ids`` / ``{v}_topk_logprobs`` [B,S,k];
      ``{v}_correct_logprob`` / ``{v}_correct_rank`` [B,P] (rank 0 = top prediction).
      ``delta_loss_direct`` / ``kl_direct`` are the paper's variant (direct, frozen LN).
    * ``clean_topk_ids`` / ``clean_topk_logprobs`` [B,S,k]; ``clean_correct_logprob`` / ``clean_correct_rank`` [B,P].
    * ``dla_neg_ids`` / ``dla_neg_values`` and ``dla_pos_ids`` / ``dla_pos_values`` [B,S,k]: most negative and most
      positive direct logit attributions (frozen LN, relative to the mean); ``cspa_dla_*`` the same for CSPA's
      output.
    * ``lens_topk_ids`` / ``lens_topk_logprobs`` [B,S,k], ``lens_correct_logprob`` / ``lens_correct_rank`` [B,P]:
      the logit lens just before the head's layer.
    * ``attention`` [B,S,S] the head's pattern; ``out_norm_rel`` [B,S] = |v_k W_O| / max_s |v_s W_O| per source;
      ``info_attention`` [B,S,S] = A[q,k] * out_norm_rel[k] (info-weighted attention).
    * CSPA kept pairs: ``cspa_kept_pos`` (source position, -1 = none), ``cspa_kept_token``, ``cspa_kept_score``
      (logit-lens score) [B,S,m] sorted by score, and ``cspa_n_kept`` [B,S] the number of kept (k, j) entries.
    """

    tensors: dict[str, Tensor]
    head: tuple[int, int]
    k: int
    variants: tuple[str, ...]
    cspa: CSPAConfig | None
    meta: dict = field(default_factory=dict)

    def __getattr__(self, name: str) -> Tensor:
        tensors = self.__dict__.get("tensors", {})
        key = _ALIASES.get(name, name)
        if key in tensors:
            return tensors[key]
        raise AttributeError(f"AnalysisResult has no field {name!r}; fields: {sorted(tensors)}")

    def __getitem__(self, name: str) -> Tensor:
        return self.tensors[_ALIASES.get(name, name)]

    def fields(self) -> list[str]:
        return sorted(self.tensors)

    def sequence(self, i: int) -> dict[str, Tensor]:
        """The fields of one sequence (the batch dimension dropped)."""
        return {name: t[i] for name, t in self.tensors.items()}


def _validate(m, tokens: Tensor, head: tuple[int, int], mu: Tensor | None, k: int) -> tuple[int, int]:
    cfg = m.cfg
    if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int64, torch.int32):
        raise InvalidInputError("tokens must be an integer tensor of token ids, shape [batch, seq]")
    if tokens.ndim != 2:
        raise InvalidInputError(f"tokens must have shape [batch, seq]; got {tuple(tokens.shape)}")
    b, s = tokens.shape
    if b == 0 or s == 0:
        raise InvalidInputError(f"empty batch: tokens has shape {tuple(tokens.shape)}; need at least one token")
    if s < 2:
        raise InvalidInputError("need at least 2 tokens per sequence (BOS plus one) to measure a next-token loss")
    if s > cfg.n_ctx:
        raise InvalidInputError(f"sequence of {s} tokens is longer than the model's context n_ctx = {cfg.n_ctx}")
    if int(tokens.min()) < 0 or int(tokens.max()) >= cfg.d_vocab:
        raise InvalidInputError(f"token ids must be in [0, {cfg.d_vocab}); got [{int(tokens.min())}, "
                                f"{int(tokens.max())}]")
    layer, h = check_head(m, head)
    if mu is not None:
        if mu.ndim != 2 or mu.shape[1] != cfg.d_model:
            raise InvalidInputError(f"mean_result must have shape [positions, d_model={cfg.d_model}]; got "
                                    f"{tuple(mu.shape)}")
        if mu.shape[0] < s:
            raise InvalidInputError(f"mean_result covers {mu.shape[0]} positions but the sequence has {s} tokens; "
                                    "compute the mean over sequences at least as long")
    if not isinstance(k, int) or k < 1 or k > cfg.d_vocab:
        raise InvalidInputError(f"k must be an integer in [1, {cfg.d_vocab}]; got {k!r}")
    return layer, h


def check_head(m, head) -> tuple[int, int]:
    """(layer, h) as ints, or InvalidInputError naming the model's valid ranges."""
    cfg = m.cfg
    try:
        layer, h = (int(x) for x in head)
    except (TypeError, ValueError):
        raise InvalidInputError(f"head must be a (layer, head) pair, got {head!r}") from None
    if not (0 <= layer < cfg.n_layers and 0 <= h < cfg.n_heads):
        raise InvalidInputError(f"head {layer}.{h} does not exist: the model has layers 0-{cfg.n_layers - 1} and "
                                f"heads 0-{cfg.n_heads - 1} per layer")
    return layer, h


def _ln_scale(x_centred: Tensor, eps: float) -> Tensor:
    return (x_centred.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def _centre(x: Tensor) -> Tensor:
    return x - x.mean(-1, keepdim=True)


def head_output(m, z: Float[Tensor, "batch seq n_heads d_head"], layer: int, h: int) -> Tensor:
    """The head's contribution to the residual stream (no bias): z_h W_O[layer, h]."""
    return z[:, :, h].float() @ m.W_O[layer, h].float()


def mean_result(model, tokens: Int[Tensor, "batch seq"], head: tuple[int, int], batch_size: int = 8
                ) -> Float[Tensor, "seq d_model"]:
    """Per-position mean of the head's output over a batch, shape [seq, d_model] (runs only up to the layer)."""
    m = unwrap(model)
    layer, h = _validate(m, tokens, head, None, 1)
    total = None
    with torch.inference_mode():
        for start in range(0, tokens.shape[0], batch_size):
            chunk = tokens[start:start + batch_size].to(m.cfg.device)
            _, cache = m.run_with_cache(chunk, names_filter=[f"blocks.{layer}.attn.hook_z"], stop_at_layer=layer + 1)
            r = head_output(m, cache[f"blocks.{layer}.attn.hook_z"], layer, h).float().sum(0)
            total = r if total is None else total + r
    return (total / tokens.shape[0]).cpu()


class _Scorer:
    """Turns rows of logits into per-token numbers relative to the clean logits of the same rows."""

    def __init__(self, clean: Tensor, targets: Tensor, k: int):
        self.k = k
        self.targets = targets
        self.clean = clean
        self.clean_lse = torch.logsumexp(clean, -1)
        self.clean_p = torch.softmax(clean, -1)
        self._p_dot_clean: Tensor | None = None

    @property
    def p_dot_clean(self) -> Tensor:
        """sum_v p_clean * l_clean per row (computed once, on first use)."""
        if self._p_dot_clean is None:
            self._p_dot_clean = torch.linalg.vecdot(self.clean_p, self.clean)
        return self._p_dot_clean

    def score(self, logits: Tensor, with_kl: bool = True, kl_dot: Tensor | None = None, topk: bool = True
              ) -> dict[str, Tensor]:
        """Top-k, the correct token's log-prob and rank, and KL(clean || logits) unless ``with_kl`` is False.

        ``kl_dot``: sum_v p_clean (l_clean - l) when the caller has it cheaply (then no vocabulary-sized temporary).
        """
        lse = torch.logsumexp(logits, -1)
        correct_logit = logits.gather(-1, self.targets[:, None])[:, 0]
        out = {"correct_logprob": correct_logit - lse, "correct_rank": (logits > correct_logit[:, None]).sum(-1)}
        if topk:
            top_vals, top_ids = logits.topk(self.k, dim=-1)
            out["topk_ids"], out["topk_logprobs"] = top_ids, top_vals - lse[:, None]
        if kl_dot is not None:
            out["kl"] = kl_dot - self.clean_lse + lse
        elif with_kl:
            # KL(clean || this) = sum p (l_clean - l) - lse_clean + lse
            out["kl"] = (self.clean_p * (self.clean - logits)).sum(-1) - self.clean_lse + lse
        return out


def analyze(
    model,
    tokens: Int[Tensor, "batch seq"],
    head: tuple[int, int],
    mean_result: Float[Tensor, "positions d_model"],
    k: int = 10,
    cspa: CSPAConfig | None = DEFAULT_CSPA,
    effects: tuple[str, ...] = EFFECTS,
    ln_modes: tuple[str, ...] = LN_MODES,
    neighbours: Int[Tensor, "d_vocab k_s"] | None = None,
    chunk_rows: int | None = None,
    topk_groups: tuple[str, ...] | None = None,
) -> AnalysisResult:
    """Analyse head ``head`` = (layer, h) on ``tokens``; see :class:`AnalysisResult` for the fields.

    ``mean_result``: the per-position mean of the head's output (``mean_result()``), covering >= seq positions.
    ``cspa``: CSPA settings, or None to skip CSPA. ``effects`` / ``ln_modes``: which ablation variants to compute
    (the paper's variant ``direct`` with ``frozen`` LN costs no extra forward pass; ``both``/``indirect`` re-run the
    blocks from the head's layer on). ``neighbours``: semantic-neighbour table for CSPA with k_s > 1 (from
    ``semantic.neighbour_table``), -1 padded. ``chunk_rows``: rows per vocabulary-sized chunk (default: about
    256 MB of projections at a time). ``topk_groups``: the ablation variants that get top-k lists (default: all;
    the precompute job asks only for those it stores).
    """
    m = unwrap(model)
    layer, h = _validate(m, tokens, head, mean_result, k)
    bad = [e for e in effects if e not in EFFECTS] + [x for x in ln_modes if x not in LN_MODES]
    if bad:
        raise InvalidInputError(f"unknown effect or LN mode {bad}; effects: {EFFECTS}, LN modes: {LN_MODES}")
    if not effects or not ln_modes:
        raise InvalidInputError("need at least one effect and one LN mode")
    if any(e in ("both", "indirect") for e in effects) and not gpt2_blocks.supported(m):
        raise InvalidInputError("the 'both' and 'indirect' effects re-run GPT-2-style blocks; this model is not "
                                "one. Use effects=('direct',)")
    if cspa is not None and cspa.k_s > 1 and neighbours is None:
        raise InvalidInputError("CSPA with k_s > 1 needs a semantic-neighbour table (semantic.neighbour_table)")
    cfg = m.cfg
    device = m.W_U.device
    tokens = tokens.to(device).long()
    b, s = tokens.shape
    # the forward may run in bf16/fp16 (GPU option); every quantity below is computed in float32
    mu = mean_result[:s].to(device=device, dtype=torch.float32)
    eps = float(getattr(cfg, "eps", 1e-5))
    variants = tuple(f"{e}_{ln}" for e in effects for ln in ln_modes)
    need_rerun = any(e in ("both", "indirect") for e in effects)
    hook_pre, hook_z = f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.attn.hook_z"
    hook_pat, hook_v = f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.attn.hook_v"
    names = [hook_pre, hook_z, hook_pat, hook_v, "ln_final.hook_scale", "ln_final.hook_normalized"]

    with torch.inference_mode():
        # 1. One forward pass, caching only what we need. (TransformerBridge computes the unembedding even with
        # stop_at_layer, so we keep its logits rather than unembedding again.)
        if need_rerun:
            names.append(f"blocks.{layer}.hook_resid_mid")
        clean_logits, cache = m.run_with_cache(tokens, names_filter=names)
        clean_logits = clean_logits.float()
        cache = {name: cache[name].float() for name in names}
        resid_mid = cache[f"blocks.{layer}.hook_resid_mid"] if need_rerun else None
        sigma_f = cache["ln_final.hook_scale"]  # [b, s, 1]
        x_c = cache["ln_final.hook_normalized"] * sigma_f  # centred final residual
        r = head_output(m, cache[hook_z], layer, h)
        delta_c = _centre(r - mu)
        attn = cache[hook_pat][:, h]  # [b, q, k]
        src_out = cache[hook_v][:, :, h] @ m.W_O[layer, h].float()  # v_k W_O, [b, k, d]
        out_norm = src_out.norm(dim=-1)
        out_norm_rel = out_norm / out_norm.max(-1, keepdim=True).values.clamp_min(1e-30)
        info_attention = attn * out_norm_rel[:, None, :]
        pre_c = _centre(cache[hook_pre])
        del cache

        # rows to project onto the vocabulary ourselves (one GEMM per chunk), and per-row LN-scale ratios
        rows: dict[str, Tensor] = {"dla": delta_c / sigma_f, "lens": pre_c / _ln_scale(pre_c, eps)}
        ratios: dict[str, Tensor] = {}
        if "direct" in effects and "unfrozen" in ln_modes:
            ratios["direct"] = sigma_f / _ln_scale(x_c - delta_c, eps)

        # 2. "both" / "indirect": re-run only the blocks after the head, with r replaced by mu.
        if need_rerun:
            both_c = _centre(gpt2_blocks.run_from_mid(m, layer, resid_mid - r + mu))
            rows["both"] = both_c / sigma_f
            ratios["both"] = sigma_f / _ln_scale(both_c, eps)
            ratios["indirect"] = sigma_f / _ln_scale(both_c + delta_c, eps)
            del both_c

        # 3. CSPA (never materialising [b, q, k, d_model]).
        kept, cspa_sparse = None, None
        if cspa is not None:
            cspa_c, kept, (tok_w, tok_ids) = _cspa(m, tokens, attn, src_out, mu, pre_c / sigma_f, cspa, neighbours)
            d_model = cspa_c.shape[-1]
            if len(tok_ids) * (d_model + s) < SPARSE_CSPA_DLA * s * d_model:  # sparse DLA is cheaper than a projection
                cspa_sparse = (tok_w / sigma_f, tok_ids, cspa_c.mean(-1, keepdim=True) / sigma_f)
            else:
                rows["cspa_dla"] = _centre(cspa_c) / sigma_f

        # 4. Vocabulary-sized work in row chunks.
        out = _vocab_stage(m, tokens, clean_logits, rows, ratios, variants, k, chunk_rows, cspa_sparse,
                           topk_groups=topk_groups)

    out["tokens"] = tokens
    out["attention"] = attn
    out["info_attention"] = info_attention
    out["out_norm_rel"] = out_norm_rel
    if kept is not None:
        out.update(kept)
    meta = {"layer": layer, "head": h, "n_ctx": cfg.n_ctx, "d_vocab": cfg.d_vocab}
    if isinstance(model, LoadedModel):
        meta["model"] = model.name
    return AnalysisResult(tensors={n: t.detach() for n, t in out.items()}, head=(layer, h), k=k,
                          variants=variants, cspa=cspa, meta=meta)


def _cspa(m, tokens, attn, src_out, mu, lens_scaled, cfg: CSPAConfig, neighbours):
    """Kept mask and CSPA output (minus mu) for a batch; also the kept pairs to display."""

    b, s = tokens.shape
    device = tokens.device
    excluded = cfg.excluded_token_ids
    if excluded is None:
        excluded = _default_excluded(m)
    excl = torch.zeros(m.cfg.d_vocab, dtype=torch.bool, device=device)
    if len(excluded):
        excl[torch.tensor(list(excluded), dtype=torch.long, device=device)] = True
    if cfg.k_s == 1:
        cand = tokens[:, :, None]
    else:
        table = neighbours.to(device)
        if table.shape[1] < cfg.k_s:
            raise InvalidInputError(f"neighbour table has {table.shape[1]} columns but k_s = {cfg.k_s}")
        cand = table[tokens][:, :, : cfg.k_s]
        cand[:, :, 0] = tokens  # neighbour 0 is always the token itself
    cand_valid = (cand >= 0) & ~excl[tokens][:, :, None]
    safe = cand.clamp(min=0)
    directions = m.W_U.T[safe].float() * cand_valid[..., None]  # [b, k, ks, d]
    scores = torch.einsum("bqd,bkjd->bqkj", lens_scaled, directions)
    keep = select_kept(scores, safe, cand_valid, cfg.k_u)
    cspa_minus_mu, w = cspa_output(attn, src_out, mu, directions, keep, cfg.negative_only, return_weights=True)
    # kept pairs to show, best logit-lens score first
    flat_scores = torch.where(keep, scores, torch.full_like(scores, float("-inf"))).reshape(b, s, -1)
    n_show = min(cfg.max_kept_shown, flat_scores.shape[-1])
    top_scores, top_idx = flat_scores.topk(n_show, dim=-1)
    shown = torch.isfinite(top_scores)
    pos = torch.where(shown, top_idx // cfg.k_s, torch.full_like(top_idx, -1))
    tok = torch.where(shown, safe.reshape(b, -1).gather(-1, top_idx.reshape(b, -1)).reshape(b, s, n_show),
                      torch.full_like(top_idx, -1))
    kept = {
        "cspa_kept_pos": pos,
        "cspa_kept_token": tok,
        "cspa_kept_score": torch.where(shown, top_scores, torch.zeros_like(top_scores)),
        "cspa_n_kept": keep.reshape(b, s, -1).sum(-1),
    }
    return cspa_minus_mu, kept, _token_weights(w, safe, keep)


def _token_weights(w: Tensor, cand: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """CSPA's output as weights on distinct unembedding directions: (weights [b, q, T], token ids [T]).

    sum_t weights[q, t] W_U[:, t] equals the CSPA output minus the mean; T is the number of distinct tokens kept
    anywhere in the batch, usually far fewer than the positions, which makes CSPA's DLA cheap (see _vocab_stage).
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


_EXCLUDED_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _default_excluded(m) -> tuple[int, ...]:
    """BOS + function words of the model's tokenizer, computed once per tokenizer object."""
    from .function_words import function_word_ids

    tok = m.tokenizer
    if tok not in _EXCLUDED_CACHE:
        _EXCLUDED_CACHE[tok] = tuple(function_word_ids(tok))
    return _EXCLUDED_CACHE[tok]


def _vocab_stage(m, tokens, clean_logits: Tensor, rows: dict[str, Tensor],
                 ratios: dict[str, Tensor], variants, k: int, chunk_rows: int | None,
                 cspa_sparse: tuple[Tensor, Tensor, Tensor] | None = None, sub_rows: int | None = None,
                 topk_groups: tuple[str, ...] | None = None) -> dict[str, Tensor]:
    """Project the stacked rows onto the vocabulary chunk by chunk and reduce every variant to per-token numbers.

    ``clean_logits`` come from the model's forward pass (with b_U); ``rows`` hold the inputs of our projections
    (DLA, logit lens, the "both" residual, CSPA's DLA), already divided by the clean final-LN scale.
    ``cspa_sparse`` = (weights [b, s, T], token ids [T], mean [b, s, 1]) gives CSPA's DLA as
    ``weights @ (W_U[:, ids]^T W_U) - mean * colsum(W_U)`` instead of a projection.

    KL(clean || v) = sum p_clean (l_clean - l_v) - lse_clean + lse_v, and l_clean - l_v is DLA (direct) or
    DLA - DLA_cspa (CSPA), so those KLs are dot products with p_clean (no vocabulary-sized temporaries).
    """
    b, s = tokens.shape
    n = b * s
    W_U, b_U = m.W_U.float(), m.b_U.float()
    d_vocab = W_U.shape[1]
    names = list(rows)
    flat = {name: t.reshape(n, -1) for name, t in rows.items()}
    flat_ratio = {name: t.reshape(n, 1) for name, t in ratios.items()}
    clean_flat = clean_logits.reshape(n, d_vocab)
    targets = torch.cat([tokens[:, 1:], tokens[:, :1]], dim=1).reshape(n)  # last column is a dummy
    sparse_rows = sparse_mean = sparse_m = colsum = None
    if cspa_sparse is not None:
        tok_w, tok_ids, mean_x = cspa_sparse
        sparse_rows, sparse_mean = tok_w.reshape(n, -1), mean_x.reshape(n, 1)
        sparse_m = W_U[:, tok_ids].T @ W_U  # [T, d_vocab]
        colsum = W_U.sum(0)
    if chunk_rows is None:
        chunk_rows = max(1, (256 * 2**20) // (4 * d_vocab * (len(names) + 4)))
    if sub_rows is None:  # 16 rows: each vocabulary-sized temporary is ~3 MB and stays in cache
        sub_rows = min(chunk_rows, 16) if W_U.device.type == "cpu" else chunk_rows
    acc: dict[str, list[Tensor]] = {}

    def put(name: str, t: Tensor):
        acc.setdefault(name, []).append(t)

    zero_bias = bool((b_U == 0).all())

    def add_bias(x: Tensor) -> Tensor:
        return x if zero_bias else x + b_U

    def reduce_rows(sl: slice, proj: dict[str, Tensor]) -> None:
        clean = clean_flat[sl]
        scorer = _Scorer(clean, targets[sl], k)
        res = scorer.score(clean, with_kl=False)
        put("loss", -res["correct_logprob"])
        for key, val in res.items():
            put(f"clean_{key}", val)
        dla = proj["dla"]
        for sign, largest in (("neg", False), ("pos", True)):
            vals, ids = dla.topk(k, dim=-1, largest=largest)
            put(f"dla_{sign}_ids", ids)
            put(f"dla_{sign}_values", vals)
        for key, val in scorer.score(add_bias(proj["lens"]), with_kl=False).items():
            put(f"lens_{key}", val)
        both_frozen = add_bias(proj["both"]) if "both" in proj else None
        p_dot_dla = torch.linalg.vecdot(scorer.clean_p, dla)
        direct_frozen = clean - dla
        for effect in dict.fromkeys(v.split("_")[0] for v in variants):
            # frozen-LN logits of this effect, and sum_v p_clean * (l_clean - l) for its KL
            if effect == "direct":
                frozen, kl_dot = direct_frozen, p_dot_dla
            else:
                frozen = both_frozen if effect == "both" else both_frozen + dla
                kl_dot = scorer.p_dot_clean - torch.linalg.vecdot(scorer.clean_p, frozen)
            frozen_rank = None
            for ln in ("frozen", "unfrozen"):
                v = f"{effect}_{ln}"
                if v not in variants:
                    continue
                want_topk = topk_groups is None or v in topk_groups
                if ln == "frozen":
                    res = scorer.score(frozen, kl_dot=kl_dot, topk=want_topk)
                    frozen_rank = res["correct_rank"]
                elif zero_bias:
                    # unfrozen = rho * frozen (rho > 0): same order, so the rank and top-k ids carry over
                    rho = flat_ratio[effect][sl]
                    scaled = rho * frozen
                    lse = torch.logsumexp(scaled, -1)
                    correct = scaled.gather(-1, scorer.targets[:, None])[:, 0]
                    res = {"correct_logprob": correct - lse,
                           "correct_rank": frozen_rank if frozen_rank is not None else
                           (frozen > frozen.gather(-1, scorer.targets[:, None])).sum(-1),
                           # sum p (l_clean - rho l_frozen) = pc - rho (pc - kl_dot), pc = sum p l_clean
                           "kl": scorer.p_dot_clean - rho[:, 0] * (scorer.p_dot_clean - kl_dot)
                           - scorer.clean_lse + lse}
                    if want_topk:
                        vals, ids = scaled.topk(k, dim=-1)
                        res["topk_ids"], res["topk_logprobs"] = ids, vals - lse[:, None]
                    del scaled
                else:
                    res = scorer.score(add_bias(flat_ratio[effect][sl] * (frozen - b_U)), topk=want_topk)
                put(f"kl_{v}", res.pop("kl"))
                for key, val in res.items():
                    put(f"{v}_{key}", val)
        if "cspa_dla" in proj or sparse_rows is not None:
            if sparse_rows is not None:
                cd = sparse_rows[sl] @ sparse_m - sparse_mean[sl] * colsum
            else:
                cd = proj["cspa_dla"]
            cspa_logits = direct_frozen.add_(cd)  # direct_frozen is not needed any more
            res = scorer.score(cspa_logits, kl_dot=p_dot_dla - torch.linalg.vecdot(scorer.clean_p, cd))
            put("kl_cspa", res.pop("kl"))
            for key, val in res.items():
                put(f"cspa_{key}", val)
            for sign, largest in (("neg", False), ("pos", True)):
                vals, ids = cd.topk(k, dim=-1, largest=largest)
                put(f"cspa_dla_{sign}_ids", ids)
                put(f"cspa_dla_{sign}_values", vals)

    # Big chunks for the GEMM (W_U is streamed once per chunk); small sub-chunks for the many elementwise
    # reductions, so their temporaries stay in the CPU cache instead of going to memory and back.
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        c = stop - start
        if names:
            stacked = torch.cat([flat[name][start:stop] for name in names], dim=0) @ W_U
            proj = dict(zip(names, stacked.split(c, dim=0)))
        else:
            proj = {}
        for sub in range(0, c, sub_rows):
            end = min(c, sub + sub_rows)
            reduce_rows(slice(start + sub, start + end), {name: t[sub:end] for name, t in proj.items()})

    out: dict[str, Tensor] = {}
    per_pred = {"loss", "kl_cspa"} | {f"kl_{v}" for v in variants}
    for name, parts in acc.items():
        t = torch.cat(parts, 0)
        t = t.reshape(b, s, *t.shape[1:])
        if name in per_pred or name.endswith("correct_logprob") or name.endswith("correct_rank"):
            t = t[:, :-1]
        out[name] = t
    for v in list(variants) + (["cspa"] if "kl_cspa" in out else []):
        out[f"delta_loss_{v}"] = -out[f"{v}_correct_logprob"] - out["loss"]
    return out
