"""The survey's vocabulary stage: for every head, the log-partition of the clean logits shifted by the head's
ablation and by CSPA (one per lens), over the whole vocabulary, without ever projecting a d_model row on it.

Everything the survey needs besides these log-partitions is a dot product in d_model (``survey._ablation_sums``):
KL(clean ‖ shifted) = rows·ū − lse + lse' and Δloss = lse' − lse + rows·W_U[:, target], so the only
vocabulary-sized quantity per row is lse' = log Σ_v exp(l_v − dla_v + cspa_v). Three facts make it cheap:

* **The ablation through d_head.** The head's mean-ablation DLA row is (z/s − z̄)/σ · W_O (centred), so its
  logits are ``coef`` [n, d_head] @ (``basis`` [d_head, d_model] @ W_U): d_head multiply-adds per entry instead of
  d_model, and the basis is projected one vocabulary block at a time (never [d_head, d_vocab] whole).
* **CSPA as a few token directions.** With k_s = 1 the CSPA output minus the mean is a combination of the
  unembedding directions of tokens in the batch, a handful per row (``cspa.token_weights``); its logits are a sparse
  [n, T + 1] matrix times G = [W_U[:, ids]; 1]ᵀ W_U, shared by every head and both lenses of the batch.
* **One exponential per entry and shift.** Σ_v exp(l_v − m) exp(−dla_v) exp(cspa_v), with m the clean row maximum:
  exp(l − m) once per block, then a product per head, on row sub-chunks whose temporaries stay in the CPU cache.
  A row whose sum leaves float32's range (a shift of more than ~80 nats) is recomputed exactly.

``tests/test_survey_effects.py`` checks the result against logsumexp of the projected rows."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from .scoring import SparseCSPA

SUB_ROWS = 128  # rows per sub-chunk: [SUB_ROWS, BLOCK] float32 temporaries (2 MB) stay in the cache
BLOCK = 4096  # vocabulary columns per block
G_WHOLE_BYTES = 256 * 2**20  # G is kept whole up to this size, else projected a block at a time
TINY = 1e-30  # a sum below this (or not finite) is recomputed exactly


@dataclass
class CleanRows:
    """A batch's clean logits on its predicted positions, with what turns a shifted log-partition into KL and
    Δloss without another vocabulary pass: lse, ū = Σ_v p_v W_U[:, v] and W_U[:, target] per row."""

    flat: Float[Tensor, "n d_vocab"]
    lse: Float[Tensor, " n"]
    u_bar: Float[Tensor, "n d_model"]
    w_target: Float[Tensor, "n d_model"]

    @classmethod
    def of(cls, logits: Tensor, tokens: Tensor, W_U: Tensor) -> CleanRows:
        """From the clean logits [b, s, d_vocab] of ``tokens`` [b, s] (the last position predicts nothing)."""
        flat = logits[:, :-1].reshape(-1, logits.shape[-1])
        return cls(flat, torch.logsumexp(flat, -1), torch.softmax(flat, -1) @ W_U.T, W_U.T[tokens[:, 1:].reshape(-1)])

    def kl(self, rows: Float[Tensor, "n d_model"], lse_new: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
        """KL(clean ‖ clean − rows W_U) = rows·ū − lse + lse'."""
        return (rows * self.u_bar).sum(-1) - self.lse + lse_new

    def delta_loss(self, rows: Float[Tensor, "n d_model"], lse_new: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
        """The loss's change when the logits become clean − rows W_U: lse' − lse + rows·W_U[:, target]."""
        return lse_new - self.lse + (rows * self.w_target).sum(-1)


@dataclass
class TokenDirections:
    """The batch's distinct token ids and the rows CSPA's sparse weights multiply: W_U[:, id]ᵀ per id, then a row
    of ones (times −mean: the centring of LayerNorm models, ``cspa.SparseCSPA``)."""

    ids: Int[Tensor, " T"]
    rows: Float[Tensor, "T_plus_1 d_model"]

    @classmethod
    def of(cls, tokens: Tensor, W_U: Tensor) -> TokenDirections:
        """The directions of every distinct token id in ``tokens`` (any shape)."""
        ids = torch.unique(tokens.reshape(-1))
        rows = torch.cat([W_U[:, ids.to(W_U.device)].T, W_U.new_ones(1, W_U.shape[0])], 0)
        return cls(ids, rows)

    def sparse(self, sp: SparseCSPA, keep_rows: Tensor) -> Tensor:
        """``sp`` (weights on ``sp.token_ids``, a subset of ``ids``) as a CSR matrix [n, T + 1] over the rows
        ``keep_rows`` ([b, s] bool, row-major) of its batch."""
        b, s, t = sp.weights.shape
        w = torch.cat([sp.weights, -sp.mean], -1).reshape(b * s, t + 1)[keep_rows.reshape(-1)]
        dev = sp.token_ids.device
        cols = torch.searchsorted(self.ids.to(dev), sp.token_ids)
        cols = torch.cat([cols, torch.tensor([len(self.ids)], device=dev)])
        r, c = torch.nonzero(w, as_tuple=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes that sparse CSR is in beta
            return torch.sparse_coo_tensor(
                torch.stack([r, cols[c]]), w[r, c], (w.shape[0], len(self.ids) + 1)
            ).to_sparse_csr()


@dataclass
class HeadShifts:
    """One head's shifts of the clean logits on n rows: the ablation's DLA rows ``coef @ basis`` (d_model) and CSPA's
    DLA rows per lens, each a CSR matrix on ``TokenDirections.rows`` or dense [n, d_model]."""

    coef: Float[Tensor, "n r"]
    basis: Float[Tensor, "r d_model"] | None  # None: ``coef`` is the d_model rows themselves
    cspa: list[Tensor]

    def dla_rows(self) -> Float[Tensor, "n d_model"]:
        return self.coef if self.basis is None else self.coef @ self.basis

    def cspa_rows(self, j: int, dirs: TokenDirections) -> Float[Tensor, "n d_model"]:
        c = self.cspa[j]
        return c @ dirs.rows if c.layout == torch.sparse_csr else c


def _rows_times(c: Tensor, r0: int, r1: int, right: Tensor) -> Tensor:
    """Rows r0:r1 of ``c`` (CSR or dense) times ``right``. A CSR slice is a weighted sum of a few rows of ``right``
    each: ``embedding_bag`` with the CSR's row offsets does it in one call, faster than a sparse matmul."""
    if c.layout != torch.sparse_csr:
        return c[r0:r1] @ right
    crow = c.crow_indices()
    a, b = int(crow[r0]), int(crow[r1])
    if a == b:
        return right.new_zeros(r1 - r0, right.shape[1])
    return F.embedding_bag(c.col_indices()[a:b], right, crow[r0:r1] - a, mode="sum", per_sample_weights=c.values()[a:b])


def shifted_lse(
    flat: Float[Tensor, "n d_vocab"],
    heads: list[HeadShifts],
    dirs: TokenDirections,
    W_U: Float[Tensor, "d_model d_vocab"],
) -> Float[Tensor, "heads k n"]:
    """log Σ_v exp(flat − ablation DLA) (k = 0) and log Σ_v exp(flat − ablation DLA + CSPA DLA_j) (k = 1 + j) for
    every head, row by row (module docstring)."""
    n, V = flat.shape
    k = 1 + (len(heads[0].cspa) if heads else 0)
    peak = flat.amax(-1)
    sums = torch.zeros(len(heads), k, n, dtype=torch.float64, device=flat.device)
    whole_G = dirs.rows.shape[0] * V * 4 <= G_WHOLE_BYTES
    G = dirs.rows @ W_U if whole_G else None
    d_model = W_U.shape[0]
    for c0 in range(0, V, BLOCK):
        c1 = min(V, c0 + BLOCK)
        WUb = W_U[:, c0:c1]
        Gb = G[:, c0:c1].contiguous() if G is not None else dirs.rows @ WUb  # embedding_bag wants rows whole
        Eb = torch.exp(flat[:, c0:c1] - peak[:, None])
        for i, h in enumerate(heads):
            if h.basis is None:
                left, right = -h.coef, WUb
            else:
                r = h.basis.shape[0]
                factored = r * d_model + n * r < n * d_model  # through d_head where that is cheaper
                left, right = (-h.coef, h.basis @ WUb) if factored else (-(h.coef @ h.basis), WUb)
            for r0 in range(0, n, SUB_ROWS):
                r1 = min(n, r0 + SUB_ROWS)
                a = (left[r0:r1] @ right).exp_().mul_(Eb[r0:r1])
                sums[i, 0, r0:r1] += a.sum(-1)
                for j, c in enumerate(h.cspa):
                    cs = _rows_times(c, r0, r1, Gb if c.layout == torch.sparse_csr else WUb)
                    sums[i, 1 + j, r0:r1] += cs.exp_().mul_(a).sum(-1)
    out = peak[None, None].double() + sums.log()
    bad = ~torch.isfinite(out) | (sums < TINY)
    if bad.any():
        _exact(out, bad, flat, heads, dirs, W_U)
    return out.float()


def _exact(out: Tensor, bad: Tensor, flat: Tensor, heads: list[HeadShifts], dirs: TokenDirections, W_U: Tensor) -> None:
    """Recompute the rows whose sum left float32's range with a full projection and logsumexp."""
    for i, j, row in torch.nonzero(bad).tolist():
        h = heads[i]
        shift = -h.dla_rows()[row]
        if j > 0:
            shift = shift + h.cspa_rows(j - 1, dirs)[row]
        out[i, j, row] = torch.logsumexp((flat[row] + shift @ W_U).double(), -1)
