"""Activation patching and attribution patching of prompt pairs (used by ``pairs.compare_prompts``).

Denoising: run the corrupted prompts and put one activation of the clean run in place; the effect is reported
as (LD_patched − LD_corrupted) / (LD_clean − LD_corrupted), LD the mean logit difference over the prompts.

* **Cells.** ``resid_pre`` / ``attn_out`` / ``mlp_out``: one layer at one position (every prompt); ``head_z``:
  one head's z at every position; ``head_pattern``: one head's attention pattern; ``head_v``: one head's values
  (under grouped-query attention the key/value head it shares, so every query head reading it is patched).
* **Batched.** The corrupted batch is repeated once per cell of a group and each copy gets its own patch, so one
  forward pass serves ``max_batch // n`` cells (``activation_patching``); ``one_cell`` is the plain reference.
  For GPT-2-style blocks ``patching_fast`` also skips the layers before each patch.
* **Attribution patching.** One corrupted forward and backward pass: each cell's effect is approximated by
  Σ (clean − corrupted) · ∂LD/∂activation over the cell, normalised the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InvalidInputError
from ..models import architecture, hooks
from .logit_diff import logit_diff

HOOKS = {
    "resid_pre": hooks.RESID_PRE,
    "attn_out": hooks.ATTN_OUT,
    "mlp_out": hooks.MLP_OUT,
    "head_z": hooks.Z,
    "head_pattern": hooks.PATTERN,
    "head_v": hooks.V,
}


def cells(m, grid: str, seq: int) -> list[tuple[str, tuple]]:
    """(hook name, index after the batch dimension) of every cell of ``grid``, row-major over the grid."""
    L, H = m.cfg.n_layers, m.cfg.n_heads
    out: list[tuple[str, tuple]] = []
    for layer in range(L):
        hook = hooks.block(layer, HOOKS[grid])
        if grid in ("resid_pre", "attn_out", "mlp_out"):
            out += [(hook, (p,)) for p in range(seq)]
        elif grid == "head_z":
            out += [(hook, (slice(None), h)) for h in range(H)]
        elif grid == "head_pattern":
            out += [(hook, (h,)) for h in range(H)]
        else:
            out += [(hook, (slice(None), architecture.of(m).kv_head(h))) for h in range(H)]
    return out


def grid_shape(m, grid: str, seq: int) -> tuple[int, int]:
    return (m.cfg.n_layers, seq if grid in ("resid_pre", "attn_out", "mlp_out") else m.cfg.n_heads)


def _normalised(change: Tensor, ld_clean: float, ld_corr: float) -> Tensor:
    """A change of the mean LD from the corrupted run's, as a fraction of LD_clean − LD_corrupted."""
    denom = ld_clean - ld_corr
    if abs(denom) < 1e-9:
        raise InvalidInputError(
            "the clean and corrupted prompts give the same logit difference, so patching has "
            "nothing to restore; choose a corrupted prompt that changes the answer"
        )
    return change / denom


def _mean_ld(logits: Tensor, answers: Tensor, copies: int) -> Tensor:
    return logit_diff(logits, answers.repeat(copies, 1)).reshape(copies, -1).mean(-1)


def one_cell(m, inp, cache: dict, hook: str, index: tuple) -> float:
    """LD of the corrupted prompts with one clean activation patched in: one forward pass (the reference)."""
    name = hook  # TransformerBridge hands hooks their canonical names (aliases differ), so bind ours

    def patch(x, hook=None):
        x = x.clone()
        x[(slice(None),) + index] = cache[name][(slice(None),) + index].to(x.dtype)
        return x

    with torch.inference_mode():
        logits = m.run_with_hooks(inp.corrupted.to(m.W_U.device), fwd_hooks=[(name, patch)])
    return float(_mean_ld(logits, inp.answers.to(logits.device), 1)[0])


def activation_patching(
    m,
    inp,
    cache: dict,
    ld_clean: float,
    ld_corr: float,
    max_batch: int = 64,
    progress=None,
    grids=tuple(HOOKS),
    only: list[int] | None = None,
    partial=None,
) -> dict[str, Tensor]:
    """Every grid of activation patching, many cells per hooked forward pass of the whole model (any
    architecture; GPT-2-style blocks have the faster ``patching_fast``). ``only``: the cells to patch (indices in
    the grids' row-major order, ``cell_count``); the others are NaN. ``partial(grids)``: told the grids so far
    (NaN where not yet patched) after every forward pass."""
    n, seq = inp.corrupted.shape
    group = max(1, max_batch // n)
    every = [(g, i, c) for g in grids for i, c in enumerate(cells(m, g, seq))]
    picked = list(range(len(every))) if only is None else sorted(set(only))
    values = torch.full((len(every),), float("nan"))
    dev = m.W_U.device
    answers = inp.answers.to(dev)
    for start in range(0, len(picked), group):
        part = picked[start : start + group]
        chunk = [every[i] for i in part]
        by_hook: dict[str, list[tuple[int, tuple]]] = {}
        for k, (_, _, (hook, index)) in enumerate(chunk):
            by_hook.setdefault(hook, []).append((k, index))

        def patcher(name, by_hook=by_hook):  # bound to our hook name: the bridge passes canonical names, not aliases
            def patch(x, hook=None):
                x = x.clone()
                clean = cache[name]
                for k, index in by_hook[name]:
                    full = (slice(None),) + index
                    x[k * n : (k + 1) * n][full] = clean[full].to(x.dtype)
                return x

            return patch

        with torch.inference_mode():
            batch = inp.corrupted.to(dev).repeat(len(chunk), 1)
            logits = m.run_with_hooks(batch, fwd_hooks=[(h, patcher(h)) for h in by_hook])
            values[part] = _mean_ld(logits, answers, len(chunk)).cpu()
        done = min(len(picked), start + group)
        if progress:
            progress(f"activation patching: {done}/{len(picked)} cells", done / len(picked))
        if partial:
            partial(to_grids(m, values, grids, seq, ld_clean, ld_corr))
    return to_grids(m, values, grids, seq, ld_clean, ld_corr)


def cell_count(m, grids, seq: int) -> int:
    """How many cells ``grids`` have for prompts of ``seq`` tokens."""
    return sum(grid_shape(m, g, seq)[0] * grid_shape(m, g, seq)[1] for g in grids)


def top_cells(attr: dict[str, Tensor], grids, n: int) -> list[int]:
    """The ``n`` cells attribution patching ranks first (largest |effect|; the AtP scheme of Kramár et al. 2024),
    as indices in the grids' row-major order."""
    flat = torch.cat([attr[g].reshape(-1) for g in grids]).abs().nan_to_num(nan=-1.0)
    return sorted(flat.argsort(descending=True, stable=True)[: max(0, int(n))].tolist())


def to_grids(m, values: Tensor, grids, seq: int, ld_clean: float, ld_corr: float) -> dict[str, Tensor]:
    """Patched mean LDs of every cell (grids in order, each row-major) -> normalised grids."""
    out, pos = {}, 0
    for g in grids:
        shape = grid_shape(m, g, seq)
        size = shape[0] * shape[1]
        out[g] = _normalised(values[pos : pos + size] - ld_corr, ld_clean, ld_corr).reshape(shape)
        pos += size
    return out


def attribution_patching(m, inp, cache: dict, ld_clean: float, ld_corr: float, grids=tuple(HOOKS)) -> dict[str, Tensor]:
    """The gradient approximation of every grid: one corrupted forward and backward pass."""
    seq = inp.corrupted.shape[1]
    dev = m.W_U.device
    names = sorted({hook for g in grids for hook, _ in cells(m, g, seq)})
    acts: dict[str, Tensor] = {}

    def leaf(x, hook=None):
        return x.detach().requires_grad_(True)

    def keeper(name):
        def keep(x, hook=None):  # returned, so the pass runs on this very tensor (not only a copy the hook saw)
            x = x.clone()
            x.retain_grad()
            acts[name] = x
            return x

        return keep

    with torch.inference_mode(False), torch.enable_grad():
        logits = m.run_with_hooks(
            inp.corrupted.to(dev), fwd_hooks=[(hooks.EMBED, leaf)] + [(name, keeper(name)) for name in names]
        )
        metric = _mean_ld(logits, inp.answers.to(dev), 1)[0]
        metric.backward()
    missing = [name for name in names if acts.get(name) is None or acts[name].grad is None]
    if missing:
        raise InvalidInputError(
            f"attribution patching needs gradients at {', '.join(missing[:3])}, which this "
            "model's hooks do not carry; use activation patching"
        )
    out = {}
    for g in grids:
        shape = grid_shape(m, g, seq)
        vals = []
        for hook, index in cells(m, g, seq):
            full = (slice(None),) + index
            delta = cache[hook][full] - acts[hook].detach()[full].float()
            vals.append(float((delta * acts[hook].grad[full].float()).sum()))
        out[g] = _normalised(torch.tensor(vals), ld_clean, ld_corr).reshape(shape)
    return out
