"""Activation patching for GPT-2-style and Llama-style blocks without re-running what a patch cannot change.

A patch at layer l leaves layers < l as in the corrupted run, so each cell starts from the corrupted run's cached
residual stream at its layer (before the attention for ``resid_pre``, after it for attention-level patches, after
the MLP for ``mlp_out``), the patch is applied there, and only the blocks from that point on are re-run by hand
(``models.blocks``, checked against hooked forward passes). Only the final position is normalised and projected,
and only on the two answer directions. Same numbers as ``patching.activation_patching`` (tested); used when
``architecture.of(m).resumable``.

Head-level patches are written through the head's output: z_h' W_O − z_h W_O added after the attention, with
z_h' = the clean z (``head_z``), clean pattern × corrupted values (``head_pattern``) or corrupted pattern × clean
values (``head_v``; with grouped-query attention the values belong to a key/value head, so every query head that
reads it changes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..models import architecture, blocks, hooks
from ..models.norm import eps_of, rms_scale
from ..models.weights import layer_weight
from .logit_diff import ld_directions
from .patching import grid_shape, to_grids

CACHED = (
    hooks.RESID_PRE,
    hooks.RESID_MID,
    hooks.RESID_POST,
    hooks.ATTN_OUT,
    hooks.MLP_OUT,
    hooks.Z,
    hooks.PATTERN,
    hooks.V,
)


def _cache(m, tokens: Tensor) -> dict[str, Tensor]:
    names = hooks.every_layer(m.cfg.n_layers, *CACHED)
    _, cache = m.run_with_cache(tokens, names_filter=names)
    return {k: v.float() for k, v in cache.items()}


def _resumes_at(m, grid: str, layer: int) -> tuple[str, int]:
    """Where a cell's run resumes: before the attention of ``layer`` ('pre'), after it ('mid'), or at the end."""
    if grid == "resid_pre":
        return "pre", layer
    if grid == "mlp_out":
        return ("pre", layer + 1) if layer + 1 < m.cfg.n_layers else ("final", layer)
    return "mid", layer


def _start(m, grid: str, layer: int, j: int, clean: dict, corr: dict) -> tuple[str, int, Tensor]:
    """(where the run resumes: 'pre' | 'mid' | 'final', layer, the patched residual stream there)."""

    def c(name, src):
        return src[hooks.block(layer, name)]

    if grid == "resid_pre":
        x = c(hooks.RESID_PRE, corr).clone()
        x[:, j] = c(hooks.RESID_PRE, clean)[:, j]
        return "pre", layer, x
    if grid == "attn_out":
        x = c(hooks.RESID_MID, corr).clone()
        x[:, j] += c(hooks.ATTN_OUT, clean)[:, j] - c(hooks.ATTN_OUT, corr)[:, j]
        return "mid", layer, x
    if grid == "mlp_out":
        x = c(hooks.RESID_POST, corr).clone()
        x[:, j] += c(hooks.MLP_OUT, clean)[:, j] - c(hooks.MLP_OUT, corr)[:, j]
        return ("pre", layer + 1, x) if layer + 1 < m.cfg.n_layers else ("final", layer, x)
    z = c(hooks.Z, corr)
    kv = architecture.of(m).kv_head(j)  # grouped-query attention: the key/value head query head j reads
    w_o = layer_weight(m, "W_O", layer).float()
    if grid == "head_v":  # the values of key/value head kv: every query head reading it changes
        sharing = [h for h in range(m.cfg.n_heads) if architecture.of(m).kv_head(h) == kv]
        pattern, v = c(hooks.PATTERN, corr), c(hooks.V, clean)[:, :, kv]
        delta = sum((torch.einsum("bqk,bke->bqe", pattern[:, h], v) - z[:, :, h]) @ w_o[h] for h in sharing)
        return "mid", layer, c(hooks.RESID_MID, corr) + delta
    if grid == "head_z":
        new = c(hooks.Z, clean)[:, :, j]
    else:
        new = torch.einsum("bqk,bke->bqe", c(hooks.PATTERN, clean)[:, j], c(hooks.V, corr)[:, :, kv])
    return "mid", layer, c(hooks.RESID_MID, corr) + (new - z[:, :, j]) @ w_o[j]


def activation_patching_fast(
    m,
    inp,
    ld_clean: float,
    ld_corr: float,
    max_batch: int = 64,
    progress=None,
    grids: tuple[str, ...] = (),
    only: list[int] | None = None,
    partial=None,
) -> dict[str, Tensor]:
    """``patching.activation_patching``'s numbers (``only`` and ``partial`` the same), resuming at each layer."""
    n, seq = inp.corrupted.shape
    dev = m.W_U.device
    eps = eps_of(m)
    cen = architecture.of(m).centre
    with torch.inference_mode():
        clean, corr = _cache(m, inp.clean.to(dev)), _cache(m, inp.corrupted.to(dev))
        answers = inp.answers.to(dev)
        dirs = ld_directions(m, answers)
        bias = (m.b_U[answers[:, 0]] - m.b_U[answers[:, 1]]).float()
        todo = [
            (g, layer, j)
            for g in grids
            for layer in range(grid_shape(m, g, seq)[0])
            for j in range(grid_shape(m, g, seq)[1])
        ]  # the row-major order of ``patching.cells``
        values = torch.full((len(todo),), float("nan"))
        picked = range(len(todo)) if only is None else sorted(set(only))
        groups: dict[tuple[str, int], list[int]] = {}
        for i in picked:
            g, layer, _ = todo[i]
            groups.setdefault(_resumes_at(m, g, layer), []).append(i)
        total = sum(len(v) for v in groups.values())
        per_pass = max(1, max_batch // n)
        done = 0
        for (kind, layer), members in sorted(groups.items(), key=lambda kv: kv[0][1]):
            for s0 in range(0, len(members), per_pass):
                part = members[s0 : s0 + per_pass]
                # start states built per pass, not for every cell at once (972 × n × S × d_model for GPT-2)
                x = torch.cat([_start(m, *todo[i], clean, corr)[2] for i in part])
                if kind == "pre":
                    x = blocks.run_from_pre(m, layer, x)
                elif kind == "mid":
                    x = blocks.run_from_mid(m, layer, x)
                last = cen(x[:, -1])  # centred for LayerNorm models, as is for RMSNorm ones
                normed = (last / rms_scale(last, eps)).view(len(part), n, -1)
                values[part] = ((normed * dirs).sum(-1) + bias).mean(-1).cpu()
                done += len(part)
                if progress:
                    progress(f"activation patching: {done}/{total} cells", done / total)
                if partial:
                    partial(to_grids(m, values, grids, seq, ld_clean, ld_corr))
    return to_grids(m, values, grids, seq, ld_clean, ld_corr)
