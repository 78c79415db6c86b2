"""A survey of every head of a model: which heads copy-suppress, which do (anti-)induction.

``survey_heads(model, tokens)`` returns one row per head with the columns of ``schema.SURVEY_COLUMNS``:

* ``ov_top10`` / ``qk_top10``: ``circuit_ranks`` (effective embedding W_E+mlp0) summarised as the fraction of tokens
  with rank < 10, over all tokens or a seeded sample of ``circuit_rows`` of them (ranks always among all tokens).
* ``delta_loss_direct`` / ``kl_direct``: the paper's ablation (direct effect, frozen final LN, the head's output
  replaced by its per-position mean μ over the first ``n_mean`` sequences), averaged over every predicted token.
* ``cspa_kl_explained``: 1 − mean KL(CSPA) / mean KL(ablation), CSPA at the paper's settings (``cspa``).
* ``anti_induction`` / ``induction``: on BOS + ``repeat_len`` random tokens repeated twice; induction = mean
  attention from a second-half token to the token after its first occurrence; anti-induction = −(mean direct
  effect on the correct next token through that attention alone): A[q, src] (v_src W_O)/σ_q · W_U[:, next].
* ``ioi_copy_suppression``: on the project's IOI prompts, −(mean direct effect on the IO name's logit through
  END→IO attention alone): A[end, io] (v_io W_O)/σ_end · W_U[:, IO]. NaN, with the reason, when the tokenizer has
  too few single-token names.

Cost: one forward pass per batch for all heads together (plus one for μ and one per probe set); each head then costs
two vocabulary projections of its rows (ablation and CSPA), done a layer at a time in row chunks, so no tensor is
ever [heads, batch, seq, vocab]. KL uses Σ p_clean·(l_clean − l) = row · (W_U p_clean): one projection per batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .. import schema
from ..errors import InvalidInputError
from ..models import architecture, hooks
from ..models.heads import dest_scale, head_weights
from ..models.loading import LoadedModel, unwrap
from ..models.weights import effective_W_O
from ..validate import token_ids, whole_number
from . import predicted
from .circuits import effective_embedding, qk_at_distance, qk_normed, ranks_from_factors
from .cspa import CSPAConfig, cspa_for_batch, default_excluded, explained
from .ov_dynamic import THRESHOLD as OV_THRESHOLD
from .ov_dynamic import source_z_scores
from .progress import Stages
from .survey_effects import CleanRows, HeadShifts, TokenDirections, shifted_lse
from .survey_probes import (  # noqa: F401 - repeated_tokens is part of this module's interface
    _all_heads_cache,
    _induction,
    _ioi,
    _post_scales,
    repeated_tokens,
)
from .tuned_lens import TunedLens, fit_tuned_lens

# each stage's rough share of a survey's time (SmolLM2 at the demo's settings), for the overall progress and time left
STAGE_WEIGHTS = {"mean": 1, "lens": 13, "ablation": 40, "probes": 7, "circuits": 22}
SURVEY_LENS_QUALITY_TOKENS = 256  # held-out positions per layer scored for the survey's tuned lens

PATTERN_BYTES = 512 * 2**20


@dataclass
class SurveySettings:
    """Everything that shapes a survey's numbers (recorded with it)."""

    n_mean: int = 32  # sequences whose per-position mean head output is μ
    batch_size: int = 8
    circuit_rows: int | None = 2048  # tokens sampled for ov/qk_top10 (None or >= d_vocab: every token)
    qk_distance: int = 16  # rotary models: qk_top10 for keys this many positions back (circuits.qk_at_distance)
    repeat_len: int = 30
    n_repeat: int = 100
    n_ioi: int = 100
    seed: int = 0
    cspa: CSPAConfig = field(default_factory=CSPAConfig)

    def as_metadata(self) -> dict:
        d = asdict(self)
        d["cspa"] = self.cspa.as_metadata()
        return d


def _mean_z(m, tokens: Tensor, batch_size: int) -> Float[Tensor, "layer seq head d_head"]:
    """z̄ for every head at once: the per-position mean of z_h, divided by the post-attention norm's scale where the
    model has one. The head's mean output μ = z̄ · effective W_O (``weights.effective_W_O``)."""
    L = m.cfg.n_layers
    names = hooks.every_layer(L, hooks.Z) + _post_scales(m)
    total = None
    for start in range(0, tokens.shape[0], batch_size):
        _, cache = _all_heads_cache(m, tokens[start : start + batch_size], names)
        per_layer = []
        for layer in range(L):
            z = cache[hooks.z(layer)]
            scale = dest_scale(m, cache, layer)
            per_layer.append((z if scale is None else z / scale[..., None]).sum(0))
        z_sum = torch.stack(per_layer)  # [L, S, H, dh]
        total = z_sum if total is None else total + z_sum
    return total / tokens.shape[0]


def _ablation_sums(
    m, tokens: Tensor, mean_z: Tensor, st: SurveySettings, lens: TunedLens, progress
) -> dict[str, Tensor]:
    """Per head: sums over predicted tokens of Δloss and KL of the direct ablation, and of CSPA's KL under the logit
    lens (the paper's) and the tuned lens; the pair sums of attention to predicted tokens (tuned lens) and of the
    attended source's z-score in the vector the head moves (``ov_dynamic.source_z_scores``). The vocabulary-sized
    part goes through ``survey_effects.shifted_lse``."""
    L, H = m.cfg.n_layers, m.cfg.n_heads
    W_U = m.W_U.float()
    arch = architecture.of(m)
    cen = arch.centre
    keys = ("abl_dl", "abl_kl", "cspa_kl", "cspa_kl_tuned", "pred_n", "pred_hits", "pred_chance", "z_sum", "z_n")
    sums = {k: torch.zeros(L, H, dtype=torch.float64) for k in keys}
    n_tok = 0
    names = [hooks.FINAL_SCALE] + hooks.every_layer(L, hooks.Z, hooks.PATTERN, hooks.V, hooks.RESID_PRE)
    names += _post_scales(m)
    excluded = torch.zeros(m.cfg.d_vocab, dtype=torch.bool, device=W_U.device)
    excluded[list(default_excluded(m.tokenizer, st.cspa.exclusions))] = True
    u_mean, gram = W_U.mean(1), (W_U @ W_U.T) / W_U.shape[1]  # for z-scores over the vocabulary without it
    # every layer's patterns are cached at once: keep them within PATTERN_BYTES
    s_len = tokens.shape[1]
    batch_size = max(1, min(st.batch_size, PATTERN_BYTES // (4 * L * H * s_len * s_len)))
    n_batches = math.ceil(tokens.shape[0] / batch_size)
    t0, done_rows = time.perf_counter(), 0
    for bi, start in enumerate(range(0, tokens.shape[0], batch_size)):
        toks = tokens[start : start + batch_size].to(W_U.device)
        b, s = toks.shape
        logits, cache = _all_heads_cache(m, toks, names)
        sigma = cache[hooks.FINAL_SCALE]  # [b, s, 1]
        clean = CleanRows.of(logits, toks, W_U)  # predicted positions only
        n = clean.flat.shape[0]
        predicted_rows = torch.ones(b, s, dtype=torch.bool, device=toks.device)
        predicted_rows[:, -1] = False
        dirs = TokenDirections.of(toks, W_U)  # CSPA's token directions, shared by every head of the batch
        content = predicted.content_mask(toks, excluded)
        if progress:
            progress(f"ablation and CSPA: batch {bi + 1}/{n_batches}, forward pass and clean logits", bi / n_batches)
        for layer in range(L):
            z, v = cache[hooks.z(layer)], cache[hooks.v(layer)]
            pattern = cache[hooks.pattern(layer)]
            pre = cache[hooks.resid_pre(layer)]
            pre_scaled = cen(pre) / sigma
            tuned = lens.translate(layer, arch.normalise(pre))  # the tuned lens's prediction rows
            top_tuned = (tuned @ W_U).topk(predicted.TOP, -1).indices  # [b, s, TOP]
            pred = predicted.Predicted.of(toks, top_tuned, content)  # the same for every head of the layer
            W_O = effective_W_O(m, layer).float()
            dest = dest_scale(m, cache, layer)  # a post-attention norm's scale per destination, or None
            zs = z if dest is None else z / dest[..., None]  # what W_O turns into the head's output
            shifts = []
            for h in range(H):
                mz = mean_z[layer, :s, h]
                mu_h = mz @ W_O[h]
                coef = ((zs[:, :, h] - mz) / sigma)[:, :-1].reshape(n, -1)  # the DLA row = coef · centred W_O
                src_out = v[:, :, arch.kv_head(h)] @ W_O[h]
                cspa = []
                for scores in (pre_scaled, tuned):  # the logit lens (the paper's) and the tuned lens
                    batch = cspa_for_batch(
                        m, toks, pattern[:, h], src_out, mu_h, scores, sigma, st.cspa, None, dest, True
                    )
                    if batch.sparse is not None:
                        cspa.append(dirs.sparse(batch.sparse, predicted_rows))
                    else:
                        cspa.append((cen(batch.dense) / sigma)[:, :-1].reshape(n, -1))
                shifts.append(HeadShifts(coef, cen(W_O[h]), cspa))
                pairs = pred.pair_stats(pattern[:, h])
                sums["pred_n"][layer, h] += pairs["n_pairs"]
                sums["pred_hits"][layer, h] += pairs["hits"]
                sums["pred_chance"][layer, h] += pairs["chance"]
                att = pattern[:, h].clone()
                att[..., 0] = 0.0  # the start token left out, as ov_dynamic
                pb, _, pk = torch.nonzero(att > OV_THRESHOLD, as_tuple=True)
                if len(pb):
                    zs_src = source_z_scores(src_out[pb, pk], toks[pb, pk], W_U, u_mean, gram)
                    sums["z_sum"][layer, h] += float(zs_src.double().sum())
                    sums["z_n"][layer, h] += len(zs_src)
            lse_new = shifted_lse(clean.flat, shifts, dirs, W_U)  # [H, 3, n]
            for h, sh in enumerate(shifts):
                dla = sh.dla_rows()  # [n, d]: clean − ablated logits = dla W_U
                diffs = (dla, dla - sh.cspa_rows(0, dirs), dla - sh.cspa_rows(1, dirs))
                kl = [clean.kl(d, lse_new[h, j]) for j, d in enumerate(diffs)]
                dl = clean.delta_loss(dla, lse_new[h, 0])
                sums["abl_dl"][layer, h] += float(dl.double().sum())
                sums["abl_kl"][layer, h] += float(kl[0].double().sum())
                sums["cspa_kl"][layer, h] += float(kl[1].double().sum())
                sums["cspa_kl_tuned"][layer, h] += float(kl[2].double().sum())
            done_rows += n * H
            if progress:
                rate = done_rows / (time.perf_counter() - t0)
                progress(
                    f"ablation and CSPA: batch {bi + 1}/{n_batches}, heads {(layer + 1) * H}/{L * H}, "
                    f"{rate:,.0f} head-tokens/s",
                    (bi + (layer + 1) / L) / n_batches,
                )
        n_tok += n
    out = {k: sums[k] / max(1, n_tok) for k in ("abl_dl", "abl_kl", "cspa_kl", "cspa_kl_tuned")}
    chance = sums["pred_chance"] / sums["pred_n"].clamp_min(1)
    frac = sums["pred_hits"] / sums["pred_n"].clamp_min(1)
    out["predicted_enrichment"] = torch.where(
        (sums["pred_n"] > 0) & (chance > 0), frac / chance.clamp_min(1e-30), torch.full_like(frac, float("nan"))
    )
    out["ov_text_suppression"] = torch.where(
        sums["z_n"] > 0, -sums["z_sum"] / sums["z_n"].clamp_min(1), torch.full_like(frac, float("nan"))
    )
    return out


def _circuits(m, st: SurveySettings, progress) -> tuple[Tensor, Tensor, int]:
    """ov/qk_top10 of every head. The same ranks as ``circuit_ranks`` (``circuit_factors`` + ``ranks_from_factors``),
    with what every head shares computed once: the effective embedding and both normalised sides; per head only
    the sampled rows and the full column side are projected."""
    L, H, V = m.cfg.n_layers, m.cfg.n_heads, m.cfg.d_vocab
    ids = torch.arange(V)
    if st.circuit_rows is not None and st.circuit_rows < V:
        from ..data.tokenization import text_token_ids

        g = torch.Generator().manual_seed(st.seed)
        text = torch.tensor(text_token_ids(m.tokenizer, V))  # tokens that are never text are not sampled
        ids = text[torch.randperm(len(text), generator=g)[: st.circuit_rows]].sort().values
    arch = architecture.of(m)
    W_U = m.W_U.float()
    if progress:
        progress(f"OV/QK circuits: the effective embedding of all {V:,} tokens", 0.0)
    w_ee = effective_embedding(m).float()
    ln_ee = arch.normalise(w_ee)  # keys of QK
    ln_u_rows = arch.normalise(W_U.T[ids.to(W_U.device)])  # sampled queries of QK
    ee_rows = w_ee[ids.to(w_ee.device)]  # sampled sources of OV
    ov, qk = torch.empty(L, H), torch.empty(L, H)
    for layer in range(L):
        keys: dict[int, Tensor] = {}  # the key side over every token, once per key/value head (grouped-query)
        for h in range(H):
            w = head_weights(m, layer, h)
            ov_rows, ov_cols = ee_rows @ w["W_V"].float(), (w["W_O"].float() @ W_U).T
            kv = arch.kv_head(h)
            if kv not in keys:
                keys[kv] = qk_normed(m, layer, ln_ee @ w["W_K"].float(), "k")
            queries = qk_normed(m, layer, ln_u_rows @ w["W_Q"].float(), "q")
            qk_rows, qk_cols = qk_at_distance(m, queries, st.qk_distance, layer), keys[kv]
            ov[layer, h] = (ranks_from_factors(ov_rows, ov_cols, "ov", 512, ids) < 10).double().mean()
            qk[layer, h] = (ranks_from_factors(qk_rows, qk_cols, "qk", 512, ids) < 10).double().mean()
        if progress:
            progress(f"OV/QK circuits: heads {(layer + 1) * H}/{L * H}", (layer + 1) / L)
    return ov, qk, len(ids)


def survey_heads(
    model,
    tokens: Int[Tensor, "batch seq"],
    settings: SurveySettings | None = None,
    progress=None,
    lens_tokens: Int[Tensor, "batch seq"] | None = None,
    **overrides,
):
    """One row per head of ``model`` (a pandas DataFrame; columns ``schema.SURVEY_COLUMNS``), see the module
    docstring. ``tokens``: [batch, seq] sequences, BOS first, for the ablation and CSPA columns. Keyword
    ``overrides`` replace fields of ``settings`` (e.g. ``circuit_rows=None``). ``progress(text, fraction)`` is
    called as it goes. ``lens_tokens``: the sequences the tuned lens is fitted on (default ``tokens``; the last quarter
    held out). ``df.attrs`` holds ``settings`` and ``reasons`` (column -> why it is NaN)."""
    import pandas as pd

    st = settings or SurveySettings()
    if overrides:
        st = SurveySettings(**{**st.__dict__, **overrides})
    m = unwrap(model)
    token_ids(tokens, m.cfg.d_vocab, m.cfg.n_ctx, min_len=2)
    for name in ("n_mean", "batch_size", "repeat_len", "n_repeat", "n_ioi"):
        whole_number(name, getattr(st, name))
    if 1 + 2 * st.repeat_len > m.cfg.n_ctx:
        raise InvalidInputError(
            f"repeated sequences of 1 + 2 x {st.repeat_len} tokens are longer than the "
            f"model's context n_ctx = {m.cfg.n_ctx}"
        )
    if st.cspa.k_s != 1:
        raise InvalidInputError("the survey runs CSPA with k_s = 1 (the paper's setting)")
    L, H = m.cfg.n_layers, m.cfg.n_heads
    reasons: dict[str, str] = {}
    stages = Stages(progress, STAGE_WEIGHTS)
    with torch.inference_mode():
        tokens = tokens.long()
        stages.report("mean")("mean head outputs", 0.0)
        mean_z = _mean_z(m, tokens[: st.n_mean], st.batch_size)
        stages.report("mean")("mean head outputs", 1.0)
        lens = fit_tuned_lens(
            m,
            (tokens if lens_tokens is None else lens_tokens).long(),
            batch_size=st.batch_size,
            quality_tokens=SURVEY_LENS_QUALITY_TOKENS,
            progress=stages.report("lens"),
        )
        sums = _ablation_sums(m, tokens, mean_z, st, lens, stages.report("ablation"))
        induction, anti = _induction(m, st.n_repeat, st.repeat_len, st.seed)
        stages.report("probes")("induction probe on repeated random tokens", 0.5)
        try:
            ioi = _ioi(m, st.n_ioi, st.seed)
        except InvalidInputError as err:
            ioi = torch.full((L, H), float("nan"))
            reasons["ioi_copy_suppression"] = str(err)
        stages.report("probes")("IOI probe", 1.0)
        ov, qk, n_rows = _circuits(m, st, stages.report("circuits"))

    def share(key: str) -> Tensor:
        return torch.tensor(
            [
                [explained(sums["abl_kl"][layer, h : h + 1], sums[key][layer, h : h + 1]) for h in range(H)]
                for layer in range(L)
            ]
        )

    grid = torch.stack(torch.meshgrid(torch.arange(L), torch.arange(H), indexing="ij"), -1).reshape(-1, 2)
    columns = {
        "layer": grid[:, 0].int(),
        "head": grid[:, 1].int(),
        "ov_top10": ov.reshape(-1),
        "qk_top10": qk.reshape(-1),
        "delta_loss_direct": sums["abl_dl"].reshape(-1),
        "kl_direct": sums["abl_kl"].reshape(-1),
        "cspa_kl_explained": share("cspa_kl").reshape(-1),
        "cspa_kl_explained_tuned": share("cspa_kl_tuned").reshape(-1),
        "predicted_enrichment": sums["predicted_enrichment"].reshape(-1),
        "ov_text_suppression": sums["ov_text_suppression"].reshape(-1),
        "anti_induction": anti.reshape(-1),
        "ioi_copy_suppression": ioi.reshape(-1),
        "induction": induction.reshape(-1),
    }
    assert tuple(columns) == schema.SURVEY_COLUMNS
    df = pd.DataFrame({k: v.numpy() if k in schema.SURVEY_INDEX else v.float().numpy() for k, v in columns.items()})
    df.attrs["settings"] = {
        **st.as_metadata(),
        "n_sequences": int(tokens.shape[0]),
        "seq_len": int(tokens.shape[1]),
        "circuit_rows_used": n_rows,
        "qk_rule": f"rotary: keys {st.qk_distance} positions back (queries rotated by the model's rotary embedding)"
        if architecture.of(unwrap(model)).rotary
        else "paper: no positions",
    }
    df.attrs["settings"]["tuned_lens"] = {
        **lens.meta,
        "quality": {str(k): v for k, v in lens.quality.items()},
    }
    df.attrs["reasons"] = reasons
    df.attrs["model"] = dict(model.provenance) if isinstance(model, LoadedModel) else {}
    return df


# the ranking (which head is the strongest copy suppressor) is torch-free, for the app
from .ranking import (  # noqa: E402
    COPY_SUPPRESSION_COLUMNS,
    copy_suppression_ranking,
    ranking_rule,
    strongest_copy_suppressor,
    survey_readout,
)

__all__ = [
    "COPY_SUPPRESSION_COLUMNS",
    "SurveySettings",
    "copy_suppression_ranking",
    "ranking_rule",
    "repeated_tokens",
    "strongest_copy_suppressor",
    "survey_heads",
    "survey_readout",
]
