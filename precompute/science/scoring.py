"""The vocabulary stage of the analysis: every vocabulary-sized computation, in row chunks, reduced to per-token
numbers and top-k lists at once (nothing [rows, d_vocab] outlives a chunk).

Inputs (:class:`VocabInputs`) are the clean logits of the forward pass and the rows we project ourselves, each
already divided by the clean final-LN scale sigma_f: the head's centred DLA rows, the logit-lens rows, the "both"
residual, CSPA's DLA rows (or CSPA's sparse form), plus the LN-scale ratios sigma_f / sigma' of the unfrozen
variants. One loop (:func:`vocab_stage`) projects a chunk with one GEMM and runs the named steps on small
sub-chunks whose temporaries stay in the CPU cache:

1. ``clean``: loss, correct log-prob and rank, top-k.
2. ``dla``: most negative / positive DLA.
3. ``lens``: the logit lens before the head.
4. ``variants``: for each effect its frozen-LN logits (:func:`effect_logits`), then each LN mode.
5. ``cspa``: CSPA's logits = clean - DLA + DLA_cspa, and CSPA's own DLA top-k.

KL(clean || v) = sum p_clean (l_clean - l_v) - lse_clean + lse_v; where l_clean - l_v is a projection we already
have (DLA, DLA - DLA_cspa) the first term is a dot product with p_clean: no vocabulary-sized temporary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .. import schema
from .row_reductions import count_above
from .row_reductions import topk as row_topk

# CPU sub-chunk rows: each vocabulary-sized temporary is ~3 MB for GPT-2 and stays in cache
SUB_ROWS_CPU = 16
CHUNK_BYTES = 256 * 2**20


@dataclass
class SparseCSPA:
    """CSPA's output minus the mean as weights on T distinct unembedding directions (see ``cspa.token_weights``):
    its DLA is ``weights @ (W_U[:, ids]^T W_U) - mean * colsum(W_U)``, cheaper than a projection when T is small."""

    weights: Float[Tensor, "batch seq T"]
    token_ids: Int[Tensor, " T"]
    mean: Float[Tensor, "batch seq 1"]


@dataclass
class VocabInputs:
    clean_logits: Float[Tensor, "batch seq d_vocab"]
    rows: dict[str, Float[Tensor, "batch seq d_model"]]  # "dla", "lens", optionally "both", "cspa_dla"
    ratios: dict[str, Float[Tensor, "batch seq 1"]] = field(default_factory=dict)  # effect -> sigma_f / sigma'
    cspa_sparse: SparseCSPA | None = None
    # rows given as coefficients on a few directions already projected on the vocabulary (the DLA as
    # (z - z̄)/sigma_f and W_O_h W_U): d_head instead of d_model multiply-adds per entry
    factored: dict[str, tuple[Float[Tensor, "batch seq r"], Float[Tensor, "r d_vocab"]]] = field(default_factory=dict)


class Scorer:
    """Turns rows of logits into per-token numbers relative to the clean logits of the same rows."""

    def __init__(self, clean: Tensor, targets: Tensor, k: int):
        self.k = k
        self.targets = targets
        self.clean = clean
        # one exp pass gives both the log-partition and the probabilities
        peak = clean.amax(-1, keepdim=True)
        e = (clean - peak).exp_()
        total = e.sum(-1, keepdim=True)
        self.clean_lse = (peak + total.log())[:, 0]
        self._e, self._inv_total = e, total[:, 0].reciprocal()  # p_clean = e / total, never materialised

    def p_dot(self, x: Tensor) -> Tensor:
        """sum_v p_clean[r, v] x[r, v] per row (one pass over x; p_clean itself is never divided out)."""
        return torch.linalg.vecdot(self._e, x) * self._inv_total

    @cached_property
    def p_dot_clean(self) -> Tensor:
        """sum_v p_clean l_clean per row (only the variants beyond the paper's need it)."""
        return self.p_dot(self.clean)

    def correct(self, logits: Tensor) -> Tensor:
        return logits.gather(-1, self.targets[:, None])[:, 0]

    def score(
        self,
        logits: Tensor,
        kl_dot: Tensor | None = None,
        with_kl: bool = True,
        topk: bool = True,
        keep: dict | None = None,
    ) -> dict[str, Tensor]:
        """Correct token's log-prob and rank, top-k, and KL(clean || logits) unless ``with_kl`` is False.

        ``kl_dot``: sum_v p_clean (l_clean - l) when the caller has it cheaply. Keys are schema quantities (and
        ``kl``). ``keep``: receives the row maxima and the top-k of ``logits`` for :meth:`score_rescaled`."""
        top = row_topk(logits, self.k) if topk else None
        # the top-k's first column is the row maximum: no separate pass for it
        lse = self.clean_lse if logits is self.clean else _logsumexp(logits, None if top is None else top[0][:, :1])
        correct = self.correct(logits)
        out = {"correct_logprob": correct - lse, "correct_rank": count_above(logits, correct)}
        if top is not None:
            out["topk_ids"], out["topk_logprobs"] = top[1], top[0] - lse[:, None]
        if with_kl:
            if kl_dot is None:
                kl_dot = self.p_dot_clean - self.p_dot(logits)
            out["kl"] = (kl_dot - self.clean_lse + lse).clamp_min_(0.0)  # KL >= 0: float error can dip below
        if keep is not None:
            keep.update(rank=out["correct_rank"], top=top, peak=None if top is None else top[0][:, :1])
        return out

    def score_rescaled(self, frozen: Tensor, rho: Tensor, kl_dot: Tensor, keep: dict, topk: bool) -> dict[str, Tensor]:
        """The scores of ``rho * frozen`` (unfrozen LN with a zero unembedding bias), reusing the frozen logits'
        (``keep`` from :meth:`score`, filled in here if empty): rho > 0 keeps the order, so the rank and the top-k
        ids carry over and the maximum scales; and sum p (l_clean - rho l) = pc - rho (pc - kl_dot)."""
        if topk and keep.get("top") is None:
            keep["top"] = row_topk(frozen, self.k)
            keep["peak"] = keep["top"][0][:, :1]
        if keep.get("peak") is None:
            keep["peak"] = frozen.amax(-1, keepdim=True)
        if keep.get("rank") is None:
            keep["rank"] = count_above(frozen, self.correct(frozen))
        peak = keep["peak"]
        lse = (rho * peak)[:, 0] + (frozen - peak).mul_(rho).exp_().sum(-1).log_()
        out = {
            "correct_logprob": rho[:, 0] * self.correct(frozen) - lse,
            "correct_rank": keep["rank"],
            "kl": (self.p_dot_clean - rho[:, 0] * (self.p_dot_clean - kl_dot) - self.clean_lse + lse).clamp_min_(0.0),
        }
        if topk:
            vals, ids = keep["top"]
            out["topk_ids"], out["topk_logprobs"] = ids, rho * vals - lse[:, None]
        return out


def _logsumexp(x: Tensor, peak: Tensor | None) -> Tensor:
    """log sum_v exp x[r, v] per row; ``peak``: the row maxima [rows, 1] when already known."""
    if peak is None:
        peak = x.amax(-1, keepdim=True)
    return peak[:, 0] + (x - peak).exp_().sum(-1).log_()


class _Collector:
    """Per-row results of every sub-chunk, named by the schema and joined at the end."""

    def __init__(self):
        self.parts: dict[tuple[str, str | None], list[Tensor]] = {}

    def add(self, quantity: str, group: str | None, t: Tensor) -> None:
        self.parts.setdefault((quantity, group), []).append(t)

    def add_scores(self, group: str, res: dict[str, Tensor]) -> None:
        for quantity, t in res.items():
            self.add(quantity, group, t)

    def finish(self, b: int, s: int) -> dict[str, Tensor]:
        out = {}
        for (quantity, group), parts in self.parts.items():
            t = torch.cat(parts, 0).reshape(b, s, *parts[0].shape[1:])
            if schema.SPECS[quantity].shape == schema.PRED:
                t = t[:, :-1]  # the last position has no next token
            out[schema.key(quantity, group)] = t
        return out


def effect_logits(
    effect: str,
    scorer: Scorer,
    proj: dict[str, Tensor],
    b_U: Tensor | None,
    direct: Tensor,
    p_dot_dla: Tensor,
    memo: dict,
) -> tuple[Tensor, Tensor]:
    """Frozen-LN logits of an ablation effect and sum_v p_clean (l_clean - l) for its KL.

    direct: clean - DLA. both: the re-run residual projected (plus b_U). indirect: both + DLA, whose dot product
    with p_clean is the sum of the two already known. ``memo`` holds "both" for "indirect"."""
    if effect == "direct":
        return direct, p_dot_dla
    if "both" not in memo:
        both = proj["both"] if b_U is None else proj["both"] + b_U
        memo["both"] = both, scorer.p_dot(both)
    both, p_dot_both = memo["both"]
    if effect == "both":
        return both, scorer.p_dot_clean - p_dot_both
    return both + proj["dla"], scorer.p_dot_clean - p_dot_both - p_dot_dla


@dataclass
class _RowReducer:
    """What one block of rows of a batch contributes to the fields (``vocab_stage`` steps 1-5), for blocks of
    projected rows handed over one by one."""

    acc: _Collector
    k: int
    bias: Tensor | None  # b_U, or None where it is zero
    variants: tuple[str, ...]
    topk_groups: tuple[str, ...] | None

    def with_bias(self, x: Tensor) -> Tensor:
        return x if self.bias is None else x + self.bias

    def reduce(
        self,
        clean: Tensor,
        targets: Tensor,
        proj: dict[str, Tensor],
        ratios: dict[str, Tensor],
        cspa_dla: Tensor | None,
    ) -> None:
        acc, k = self.acc, self.k
        scorer = Scorer(clean, targets, k)
        # 1. clean
        res = scorer.score(clean, with_kl=False)
        acc.add(schema.LOSS, None, -res["correct_logprob"])
        acc.add_scores(schema.CLEAN, res)
        # 2. the head's DLA
        dla = proj["dla"]
        _dla_topk(acc, dla, schema.DLA_GROUPS, k)
        # 3. logit lens before the head
        acc.add_scores(schema.LENS, scorer.score(self.with_bias(proj["lens"]), with_kl=False))
        # 4. ablation variants
        p_dot_dla = scorer.p_dot(dla)
        direct = clean - dla
        memo: dict = {}
        for effect in dict.fromkeys(v.split("_")[0] for v in self.variants):
            self._ablation(
                scorer,
                effect,
                effect_logits(effect, scorer, proj, self.bias, direct, p_dot_dla, memo),
                ratios.get(effect),
            )
        # 5. CSPA
        if cspa_dla is not None:
            res = scorer.score(direct + cspa_dla, kl_dot=p_dot_dla - scorer.p_dot(cspa_dla))
            acc.add_scores(schema.CSPA, res)
            _dla_topk(acc, cspa_dla, schema.CSPA_DLA_GROUPS, k)

    def _ablation(self, scorer: Scorer, effect: str, logits: tuple[Tensor, Tensor], ratio: Tensor | None) -> None:
        """The scores of one effect under every LN mode asked for (frozen first: the others reuse its pieces)."""
        frozen, kl_dot = logits
        keep: dict = {}
        for ln in schema.LN_MODES:
            v = f"{effect}_{ln}"
            if v not in self.variants:
                continue
            want_topk = self.topk_groups is None or v in self.topk_groups
            if ln == "frozen":
                res = scorer.score(frozen, kl_dot=kl_dot, topk=want_topk, keep=keep)
            elif self.bias is None:
                res = scorer.score_rescaled(frozen, ratio, kl_dot, keep, want_topk)
            else:
                res = scorer.score(ratio * (frozen - self.bias) + self.bias, topk=want_topk)
            self.acc.add_scores(v, res)


def vocab_stage(
    W_U: Tensor,
    b_U: Tensor,
    tokens: Int[Tensor, "batch seq"],
    inputs: VocabInputs,
    variants: tuple[str, ...],
    k: int,
    chunk_rows: int | None = None,
    sub_rows: int | None = None,
    topk_groups: tuple[str, ...] | None = None,
) -> dict[str, Tensor]:
    """Every per-token field of the analysis that needs the vocabulary; see the module docstring.

    ``topk_groups``: the ablation variants that get top-k lists (None = all). Big chunks of rows go through the
    GEMM (W_U is streamed once per chunk); small sub-chunks through the reductions (``_RowReducer``)."""
    b, s = tokens.shape
    n = b * s
    W_U, b_U = W_U.float(), b_U.float()
    d_vocab = W_U.shape[1]
    names = list(inputs.rows)
    flat = {name: t.reshape(n, -1) for name, t in inputs.rows.items()}
    ratios = {name: t.reshape(n, 1) for name, t in inputs.ratios.items()}
    factored = {name: (c.reshape(n, -1), basis) for name, (c, basis) in inputs.factored.items()}
    clean_flat = inputs.clean_logits.reshape(n, d_vocab)
    targets = torch.cat([tokens[:, 1:], tokens[:, :1]], dim=1).reshape(n)  # last column is a dummy
    # sparse CSPA: DLA = [weights, -mean] @ [W_U[:, ids]^T W_U; 1^T W_U]; those T + 1 rows ride along in the first
    # chunk's GEMM (a separate GEMM with so few rows runs at a third of the speed)
    sparse_rows = sparse_w = None
    if inputs.cspa_sparse is not None:
        sp = inputs.cspa_sparse
        sparse_w = torch.cat([sp.weights.reshape(n, -1), -sp.mean.reshape(n, 1)], dim=1)
        sparse_rows = torch.cat([W_U[:, sp.token_ids].T, W_U.new_ones(1, W_U.shape[0])], dim=0)
    sparse = None  # [T + 1, d_vocab] once projected
    if chunk_rows is None:
        chunk_rows = max(1, CHUNK_BYTES // (4 * d_vocab * (len(names) + 4)))
    if sub_rows is None:
        sub_rows = min(chunk_rows, SUB_ROWS_CPU) if W_U.device.type == "cpu" else chunk_rows
    reducer = _RowReducer(_Collector(), k, None if bool((b_U == 0).all()) else b_U, variants, topk_groups)
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        c = stop - start
        parts = [flat[name][start:stop] for name in names]
        if sparse_rows is not None and sparse is None:
            parts.append(sparse_rows)
        proj = {}
        if parts:
            stacked = torch.cat(parts, dim=0) @ W_U
            if len(parts) > len(names):
                sparse = stacked[len(names) * c :]
            proj = dict(zip(names, stacked[: len(names) * c].split(c, dim=0)))
        for sub in range(0, c, sub_rows):
            end = min(c, sub + sub_rows)
            sl = slice(start + sub, start + end)
            rows = {name: t[sub:end] for name, t in proj.items()}
            rows.update({name: coeffs[sl] @ basis for name, (coeffs, basis) in factored.items()})
            cspa_dla = sparse_w[sl] @ sparse if sparse is not None and sparse_w is not None else rows.get("cspa_dla")
            reducer.reduce(clean_flat[sl], targets[sl], rows, {e: r[sl] for e, r in ratios.items()}, cspa_dla)
    out = reducer.acc.finish(b, s)
    for g in schema.groups("ablations", variants, cspa=schema.kl(schema.CSPA) in out):
        out[schema.delta_loss(g)] = -out[schema.correct_logprob(g)] - out[schema.LOSS]
    return out


def _dla_topk(acc: _Collector, dla: Tensor, groups: tuple[str, str], k: int) -> None:
    for g, largest in zip(groups, (False, True)):
        vals, ids = row_topk(dla, k, largest=largest)
        acc.add("dla_ids", g, ids)
        acc.add("dla_values", g, vals)


def shift_effects(
    flat: Float[Tensor, "n d_vocab"],
    lse: Float[Tensor, " n"],
    u_bar: Float[Tensor, "n d_model"],
    w_target: Float[Tensor, "n d_model"],
    rows: Float[Tensor, "k n d_model"],
    W_U: Float[Tensor, "d_model d_vocab"],
    chunk_bytes: int = CHUNK_BYTES,
) -> tuple[Float[Tensor, "k n"], Float[Tensor, "k n"]]:
    """KL(clean ‖ shifted) and Δloss for k shifts of the clean logits ``flat`` at once: shifted = flat − rows W_U
    (each row already divided by the clean final-norm scale). ``lse`` = logsumexp(flat), ``u_bar`` = Σ_v p_v
    W_U[:, v] and ``w_target`` = W_U[:, target] per position, so KL = rows·u_bar − lse + lse' and Δloss =
    lse' − lse + rows·w_target: one projection (in chunks of ``chunk_bytes``) for the new log-partitions only."""
    k, n = rows.shape[:2]
    chunk = max(1, chunk_bytes // (4 * W_U.shape[1] * k))
    lse_new = torch.empty(k, n, device=rows.device)
    for c0 in range(0, n, chunk):
        part = rows[:, c0 : c0 + chunk]
        proj = (part.reshape(-1, part.shape[-1]) @ W_U).view(k, part.shape[1], -1)  # one GEMM
        lse_new[:, c0 : c0 + chunk] = torch.logsumexp(flat[None, c0 : c0 + chunk] - proj, -1)
    kl = torch.einsum("knd,nd->kn", rows, u_bar) - lse + lse_new
    dl = (lse_new - lse) + torch.einsum("knd,nd->kn", rows, w_target)
    return kl, dl
