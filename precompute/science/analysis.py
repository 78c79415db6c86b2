"""One analysis of an attention head, used by the precompute job and by the app's live mode alike.

``analyze(model, tokens, head, mean_result)`` runs one forward pass that caches only what it needs, re-runs only
the blocks from the head's layer on (for the "both" and "indirect" effects), and then does every vocabulary-sized
computation in row chunks, keeping only per-token numbers and top-k lists. Definitions follow
the authors' ``generate_st_html/model_results.py::get_model_results`` (callummcdougall/SERI-MATS-2023-Streamlit-pages):

* r = the head's output (z_h W_O, no bias), mu = per-position mean of r, Delta = r - mu (centred).
* direct / frozen LN: logits - (Delta / sigma_final) W_U; no second forward pass. The same projection is the
  head's direct logit attribution (DLA). Since mu is the mean of z_h W_O, Delta = (z_h - z̄) W_O with z̄ the
  mean in d_head space (``heads.mean_coefficients``), so the DLA is ((z_h - z̄) / sigma_final) (W_O W_U): d_head
  instead of d_model multiply-adds per vocabulary entry. A mean that no z̄ reproduces (made some other way) is
  projected from d_model as written above.
* unfrozen LN: the final LayerNorm scale recomputed from the intervened residual. Because LN is a rescaling of
  the centred residual, every unfrozen variant is ``(sigma_f / sigma') (frozen logits - b_U) + b_U``.
* both: the head's output is replaced by mu and only the blocks after it are re-run (``models.blocks``, from the
  cached resid_mid of the head's layer, for GPT-2-style and Llama-style blocks; other architectures get one
  forward pass with the head's output replaced at ``hook_attn_out``);
  indirect: both + Delta (only the direct path restored).
* Architectures (``models.architecture``): under RMSNorm nothing is centred (the norms are divisions by the RMS);
  with grouped-query attention a head's values come from its shared key/value head.
* the prediction before the head (``lens`` fields): the read-out's rows times W_U, plus b_U (``readout``; the
  paper's logit lens is (resid_pre[L] centred / its RMS) W_U + b_U).
* CSPA: see ``cspa``, with the read-out's scores as its "predicted" filter; its logits are clean - DLA + DLA_cspa
  (frozen LN).
* KL is KL(clean || intervened) per position.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .. import schema
from ..errors import InvalidInputError
from ..models import architecture, blocks, hooks
from ..models.heads import check_head, dest_scale, head_output_from, mean_coefficients, output_hooks
from ..models.loading import LoadedModel, unwrap
from ..models.norm import eps_of, rms_scale
from ..models.weights import effective_W_O, layer_weight
from ..schema import EFFECTS, LN_MODES, VARIANTS
from ..validate import token_ids, whole_number
from . import readout as readouts
from .cspa import CSPAConfig, cspa_for_batch
from .scoring import VocabInputs, vocab_stage
from .tuned_lens import TunedLens

__all__ = ["AnalysisResult", "EFFECTS", "LN_MODES", "VARIANTS", "analyze", "mean_result"]
DEFAULT_CSPA = CSPAConfig()


@dataclass
class AnalysisResult:
    """Every per-token quantity of one head on a batch of sequences, as named tensors (names: ``schema``).

    Shapes: B = batch, S = sequence length, P = S - 1 (predictions with a known next token), k = top-k.

    * ``tokens`` [B,S]; ``loss`` [B,P] clean cross-entropy of predicting token p+1 at position p.
    * for each variant v in VARIANTS (``direct_frozen`` ... ``indirect_unfrozen``) and ``cspa``:
      ``delta_loss_{v}`` and ``kl_{v}`` [B,P]; ``{v}_topk_ids`` / ``{v}_topk_logprobs`` [B,S,k];
      ``{v}_correct_logprob`` / ``{v}_correct_rank`` [B,P] (rank 0 = top prediction).
      The paper's variant is ``direct_frozen`` (direct effect, frozen final LN).
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

    Fields are read as ``res["loss"]`` or ``res.loss``.
    """

    tensors: dict[str, Tensor]
    head: tuple[int, int]
    k: int
    variants: tuple[str, ...]
    cspa: CSPAConfig | None
    meta: dict = field(default_factory=dict)

    def __getattr__(self, name: str) -> Tensor:
        tensors = self.__dict__.get("tensors", {})
        if name in tensors:
            return tensors[name]
        raise AttributeError(f"AnalysisResult has no field {name!r}; fields: {sorted(tensors)}")

    def __getitem__(self, name: str) -> Tensor:
        return self.tensors[name]

    def fields(self) -> list[str]:
        return sorted(self.tensors)


def _validate(m, tokens: Tensor, head, mu: Tensor | None, k: int) -> tuple[int, int]:
    cfg = m.cfg
    token_ids(tokens, cfg.d_vocab, cfg.n_ctx, min_len=2)
    s = tokens.shape[1]
    layer, h = check_head(m, head)
    if mu is not None:
        if mu.ndim != 2 or mu.shape[1] != cfg.d_model:
            raise InvalidInputError(
                f"mean_result must have shape [positions, d_model={cfg.d_model}]; got {tuple(mu.shape)}"
            )
        if mu.shape[0] < s:
            raise InvalidInputError(
                f"mean_result covers {mu.shape[0]} positions but the sequence has {s} tokens; "
                "compute the mean over sequences at least as long"
            )
    whole_number("k", k, limit=cfg.d_vocab)
    return layer, h


def _check_variants(m, effects, ln_modes, cspa, neighbours) -> None:
    bad = [e for e in effects if e not in EFFECTS] + [x for x in ln_modes if x not in LN_MODES]
    if bad:
        raise InvalidInputError(f"unknown effect or LN mode {bad}; effects: {EFFECTS}, LN modes: {LN_MODES}")
    if not effects or not ln_modes:
        raise InvalidInputError("need at least one effect and one LN mode")
    if cspa is not None and cspa.k_s > 1 and neighbours is None:
        raise InvalidInputError("CSPA with k_s > 1 needs a semantic-neighbour table (semantic.neighbour_table)")


def mean_result(
    model, tokens: Int[Tensor, "batch seq"], head: tuple[int, int], batch_size: int = 8
) -> Float[Tensor, "seq d_model"]:
    """Per-position mean of the head's output over a batch, shape [seq, d_model] (runs only up to the layer)."""
    m = unwrap(model)
    layer, h = _validate(m, tokens, head, None, 1)
    total = None
    with torch.inference_mode():
        for start in range(0, tokens.shape[0], batch_size):
            r = head_outputs(m, tokens[start : start + batch_size], layer, h).sum(0)
            total = r if total is None else total + r
    return (total / tokens.shape[0]).cpu()


def head_outputs(m, tokens: Int[Tensor, "batch seq"], layer: int, h: int) -> Float[Tensor, "batch seq d_model"]:
    """The head's output for a batch (forward only up to the head's layer), float32 on the model's device."""
    names = output_hooks(m, layer)
    _, cache = m.run_with_cache(tokens.to(m.cfg.device), names_filter=names, stop_at_layer=layer + 1)
    return head_output_from(m, cache, layer, h)


def attention_pattern(model, tokens: Int[Tensor, "batch seq"], layer: int, h: int) -> Float[Tensor, "batch q k"]:
    """Head (layer, h)'s attention pattern on ``tokens`` (forward only up to its layer), float32 on the CPU."""
    m = unwrap(model)
    token_ids(tokens, m.cfg.d_vocab, m.cfg.n_ctx)
    layer, h = check_head(m, (layer, h))
    hook = hooks.pattern(layer)
    with torch.inference_mode():
        _, cache = m.run_with_cache(tokens.to(m.cfg.device), names_filter=[hook], stop_at_layer=layer + 1)
    return cache[hook][:, h].float().cpu()


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
    readout: str = "logit_lens",
    lens: TunedLens | None = None,
) -> AnalysisResult:
    """Analyse head ``head`` = (layer, h) on ``tokens``; see :class:`AnalysisResult` for the fields.

    ``mean_result``: the per-position mean of the head's output (``mean_result()``), covering >= seq positions.
    ``cspa``: CSPA settings, or None to skip CSPA. ``effects`` / ``ln_modes``: which ablation variants to compute
    (the paper's variant ``direct`` with ``frozen`` LN costs no extra forward pass; ``both``/``indirect`` re-run the
    blocks from the head's layer on). ``neighbours``: semantic-neighbour table for CSPA with k_s > 1 (from
    ``semantic.neighbour_table``), -1 padded. ``chunk_rows``: rows per vocabulary-sized chunk (default: about
    256 MB of projections at a time). ``topk_groups``: the ablation variants that get top-k lists (default: all;
    the precompute job asks only for those it stores). ``readout``: what "predicted" means (``science.readout``:
    the paper's ``logit_lens``, ``tuned_lens`` with ``lens``, or ``final_minus_head``) for CSPA's QK filter and the
    ``lens`` prediction fields.
    """
    m = unwrap(model)
    layer, h = _validate(m, tokens, head, mean_result, k)
    _check_variants(m, effects, ln_modes, cspa, neighbours)
    readouts.check(readout, lens, layer)
    tokens = tokens.to(m.W_U.device).long()
    variants = tuple(f"{e}_{ln}" for e in effects for ln in ln_modes)
    with torch.inference_mode():
        fwd = _forward(m, tokens, layer, h, mean_result, rerun=any(e != "direct" for e in effects))
        panel, scores = readouts.rows(
            readout, layer, fwd.pre_c, fwd.eps, fwd.sigma_f, lens, final_c=fwd.x_c, delta_c=fwd.delta_c
        )
        inputs = _vocab_inputs(m, fwd, effects, ln_modes, panel)
        kept = {}
        if cspa is not None:
            batch = cspa_for_batch(
                m, tokens, fwd.attn, fwd.src_out, fwd.mu, scores, fwd.sigma_f, cspa, neighbours, fwd.dest_scale
            )
            if batch.sparse is not None:
                inputs.cspa_sparse = batch.sparse
            else:
                inputs.rows["cspa_dla"] = architecture.of(m).centre(batch.dense) / fwd.sigma_f
            kept = batch.kept
        out = vocab_stage(m.W_U, m.b_U, tokens, inputs, variants, k, chunk_rows, topk_groups=topk_groups)
    out[schema.TOKENS] = tokens
    out[schema.ATTENTION] = fwd.attn
    out[schema.INFO_ATTENTION] = fwd.attn * fwd.out_norm_rel[:, None, :]
    out[schema.OUT_NORM_REL] = fwd.out_norm_rel
    out.update(kept)
    meta = {"layer": layer, "head": h, "n_ctx": m.cfg.n_ctx, "d_vocab": m.cfg.d_vocab, "readout": readout}
    if isinstance(model, LoadedModel):
        meta["model"] = model.name
    return AnalysisResult(
        tensors={n: t.detach() for n, t in out.items()}, head=(layer, h), k=k, variants=variants, cspa=cspa, meta=meta
    )


@dataclass
class _Forward:
    """What the analysis keeps of the one forward pass (float32)."""

    clean_logits: Tensor  # [b, s, d_vocab]
    sigma_f: Tensor  # clean final-LN scale [b, s, 1]
    x_c: Tensor  # centred final residual [b, s, d]
    delta_c: Tensor  # centred (head output - mean) [b, s, d]
    pre_c: Tensor  # centred resid_pre of the head's layer
    attn: Tensor  # the head's pattern [b, q, k]
    src_out: Tensor  # v_k W_O per source [b, k, d]
    out_norm_rel: Tensor  # [b, k]
    mu: Tensor  # the mean result cut to the sequence [s, d]
    eps: float
    both_c: Tensor | None  # centred final residual with the head mean-ablated everywhere (re-run), or None
    # Delta = (z - z̄) W_O_h: the DLA rows as d_head coefficients and W_O_h W_U (None: mu is not the mean of
    # z W_O_h, so the DLA is projected from d_model)
    dla_factors: tuple[Tensor, Tensor] | None = None
    dest_scale: Tensor | None = None  # [b, s, 1] the post-attention norm's clean scale, where the model has one


_UNEMBEDDINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (key, W_O_h W_U), one head


def _head_unembedding(m, layer: int, h: int, W_O_h: Tensor) -> Float[Tensor, "d_head d_vocab"]:
    """W_O_h W_U (W_O_h already centred as the analysis centres), kept for the last head analysed on each model:
    the live page and the precompute job analyse one head many times (15 ms for GPT-2 small each time)."""
    W_U, W_O = m.W_U, layer_weight(m, "W_O", layer)
    key = (layer, h, W_U.data_ptr(), W_U._version, W_O.data_ptr(), W_O._version, tuple(W_U.shape))
    hit = _UNEMBEDDINGS.get(m)
    if hit is not None and hit[0] == key:
        return hit[1]
    basis = W_O_h @ W_U.float()
    _UNEMBEDDINGS[m] = (key, basis)
    return basis


def _rerun_generic(m, tokens, layer: int, r: Tensor, mu: Tensor) -> Tensor:
    """The final residual stream (before ln_final) with the head's output replaced by ``mu`` everywhere: one
    forward pass changing ``blocks.L.hook_attn_out`` (sequential and parallel residual blocks alike)."""
    grabbed = {}

    def replace(x, hook):
        return x + (mu - r).to(x.dtype)

    def grab(x, hook):
        grabbed["x"] = x.float()

    m.run_with_hooks(tokens, fwd_hooks=[(hooks.attn_out(layer), replace), (hooks.FINAL_IN, grab)])
    return grabbed["x"]


def _forward(m, tokens, layer: int, h: int, mean_result: Tensor, rerun: bool) -> _Forward:
    """One forward pass caching only what we need, then (for both/indirect) the blocks after the head re-run."""
    hook_pre, hook_z, hook_pat = hooks.resid_pre(layer), hooks.z(layer), hooks.pattern(layer)
    hook_v, hook_mid = hooks.v(layer), hooks.resid_mid(layer)
    names = [hook_pre, *output_hooks(m, layer), hook_pat, hook_v, hooks.FINAL_SCALE, hooks.FINAL_NORMALIZED]
    fast = rerun and architecture.of(m).resumable
    names += [hook_mid] if fast else []
    # TransformerBridge computes the unembedding even with stop_at_layer, so its logits are kept
    clean_logits, cache = m.run_with_cache(tokens, names_filter=names)
    cache = {name: cache[name].float() for name in names}
    mu = mean_result[: tokens.shape[1]].to(device=tokens.device, dtype=torch.float32)
    sigma_f = cache[hooks.FINAL_SCALE]
    r = head_output_from(m, cache, layer, h)
    W_O_h = effective_W_O(m, layer)[h].float()
    src_out = cache[hook_v][:, :, architecture.of(m).kv_head(h)] @ W_O_h
    # a norm after attention: each destination's output is divided by that norm's clean scale there (else None)
    scale = dest_scale(m, cache, layer)
    z_h = cache[hook_z][:, :, h] if scale is None else cache[hook_z][:, :, h] / scale
    out_norm = src_out.norm(dim=-1)
    cen = architecture.of(m).centre
    both_c = None
    if fast:
        both_c = cen(blocks.run_from_mid(m, layer, cache[hook_mid] - r + mu))
    elif rerun:
        both_c = cen(_rerun_generic(m, tokens, layer, r, mu))
    z_bar = mean_coefficients(mu, W_O_h)
    dla_factors = None if z_bar is None else ((z_h - z_bar) / sigma_f, _head_unembedding(m, layer, h, cen(W_O_h)))
    return _Forward(
        clean_logits=clean_logits.float(),
        sigma_f=sigma_f,
        dla_factors=dla_factors,
        x_c=cache[hooks.FINAL_NORMALIZED] * sigma_f,
        delta_c=cen(r - mu),
        pre_c=cen(cache[hook_pre]),
        attn=cache[hook_pat][:, h],
        src_out=src_out,
        out_norm_rel=out_norm / out_norm.max(-1, keepdim=True).values.clamp_min(1e-30),
        mu=mu,
        eps=eps_of(m),
        both_c=both_c,
        dest_scale=scale,
    )


def _vocab_inputs(m, fwd: _Forward, effects, ln_modes, lens_rows: Tensor) -> VocabInputs:
    """The rows to project onto the vocabulary (divided by sigma_f), the read-out's prediction rows (``lens``) and
    the LN-scale ratios of unfrozen variants."""
    rows = {"lens": lens_rows}
    factored = {}
    if fwd.dla_factors is not None:  # a d_head-sized projection instead of a d_model-sized one
        factored["dla"] = fwd.dla_factors
    else:
        rows["dla"] = fwd.delta_c / fwd.sigma_f
    ratios = {}
    if "direct" in effects and "unfrozen" in ln_modes:
        ratios["direct"] = fwd.sigma_f / rms_scale(fwd.x_c - fwd.delta_c, fwd.eps)
    if fwd.both_c is not None:
        rows["both"] = fwd.both_c / fwd.sigma_f
        ratios["both"] = fwd.sigma_f / rms_scale(fwd.both_c, fwd.eps)
        ratios["indirect"] = fwd.sigma_f / rms_scale(fwd.both_c + fwd.delta_c, fwd.eps)
    return VocabInputs(clean_logits=fwd.clean_logits, rows=rows, ratios=ratios, factored=factored)
