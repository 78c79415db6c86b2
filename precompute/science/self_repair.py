"""Self-repair (paper §3.7): ablate some heads and see which downstream components make up for them.

``self_repair(model, prompts, answers, heads)``: the heads (default for GPT-2: the name movers 9.9, 9.6, 10.0) are
mean-ablated (their z replaced by its mean over the prompts, per position) or resample-ablated (each prompt gets
the z of the next prompt in the set). For every downstream component c — heads of later layers, MLPs from the
first ablated layer on — x_c is its direct contribution to the mean logit difference on the clean run and y_c
after the ablation (each run scaled by its own final-norm scale). Its share of the compensation is
(y_c − x_c) / Σ_{i∈C} (y_i − x_i) (the paper: 10.7 and 11.10 together explain 39% of IOI self-repair under
name-mover ablation). In a model with a norm after attention (Gemma 2/3) the heads' outputs are replaced where they
reach the stream, after the norm with its scale frozen at the clean run's (``architecture`` module docstring).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .. import paper
from ..errors import InvalidInputError
from ..models import architecture, hooks
from ..models.heads import check_head, dest_scale
from ..models.loading import unwrap
from ..models.weights import effective_W_O
from .logit_diff import ld_directions, logit_diff, project
from .pairs import prepare_pairs

METHODS = ("mean", "resample")


@dataclass
class SelfRepair:
    heads: tuple[tuple[int, int], ...]
    method: str
    ld_clean: float
    ld_ablated: float
    direct_effect: float  # Σ of the ablated heads' clean direct contributions
    head_change: Tensor  # [L, H]: y − x for downstream heads, NaN elsewhere
    mlp_change: Tensor  # [L]: y − x for downstream MLPs, NaN elsewhere
    head_share: Tensor  # [L, H]: share of the total compensation
    mlp_share: Tensor  # [L]
    total: float  # Σ (y − x) over downstream components


def default_heads(model) -> tuple[tuple[int, int], ...]:
    """The heads to ablate by default: GPT-2 small's name movers (``paper.NAME_MOVERS``) on GPT-2 small's
    architecture and shape (``architecture.of(m).paper_model``), else none (the caller chooses)."""
    return paper.NAME_MOVERS if architecture.of(unwrap(model)).paper_model else ()


def _run(m, tokens: Tensor, fwd: list) -> tuple[Tensor, dict[str, Tensor]]:
    L = m.cfg.n_layers
    keep: dict[str, Tensor] = {}

    def keeper(name):
        def fn(x, hook=None):
            keep[name] = x.detach().float()

        return fn

    names = [hooks.FINAL_SCALE] + hooks.every_layer(L, hooks.Z, hooks.MLP_OUT)
    names += hooks.every_layer(L, hooks.POST_ATTN_SCALE) if architecture.of(m).post_attn_norm else []
    logits = m.run_with_hooks(tokens, fwd_hooks=fwd + [(n, keeper(n)) for n in names])
    return logits, keep


def _head_outputs(m, cache: dict, layer: int) -> Tensor:
    """[n, s, H, d_model]: every head's contribution to the stream in ``layer`` (through a post-attention norm's
    scale, frozen at this run's value, where the model has one)."""
    z = cache[hooks.z(layer)]
    scale = dest_scale(m, cache, layer)
    if scale is not None:
        z = z / scale[..., None]
    return torch.einsum("nshe,hed->nshd", z, effective_W_O(m, layer).float())


def _contributions(m, cache: dict, dirs: Tensor) -> tuple[Tensor, Tensor]:
    L = m.cfg.n_layers
    scale = cache[hooks.FINAL_SCALE][:, -1]
    heads = project(
        m, torch.stack([_head_outputs(m, cache, layer)[:, -1].transpose(0, 1) for layer in range(L)]), scale, dirs
    )
    mlps = project(m, torch.stack([cache[hooks.mlp_out(layer)][:, -1] for layer in range(L)]), scale, dirs)
    return heads, mlps


def self_repair(model, prompts, answers, heads=None, method: str = "mean") -> SelfRepair:
    m = unwrap(model)
    heads = tuple(check_head(m, h) for h in (heads if heads is not None else default_heads(m)))
    if not heads:
        raise InvalidInputError("name the heads to ablate, e.g. 9.9, 9.6, 10.0")
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {METHODS}, got {method!r}")
    inp = prepare_pairs(m, prompts, prompts, answers)
    if method == "resample" and inp.clean.shape[0] < 2:
        raise InvalidInputError(
            "resample ablation takes each prompt's activations from another prompt: give at least two prompts"
        )
    dev = m.W_U.device
    tokens, ans = inp.clean.to(dev), inp.answers.to(dev)
    L, H = m.cfg.n_layers, m.cfg.n_heads
    with torch.inference_mode():
        logits, clean = _run(m, tokens, [])
        dirs = ld_directions(m, ans)
        x_heads, x_mlps = _contributions(m, clean, dirs)
        by_layer: dict[int, list[int]] = {}
        for layer, h in heads:
            by_layer.setdefault(layer, []).append(h)

        def ablater(layer):
            z_clean = clean[hooks.z(layer)]
            source = z_clean.mean(0, keepdim=True).expand_as(z_clean) if method == "mean" else z_clean.roll(1, dims=0)

            def fn(x, hook=None):
                x = x.clone()
                for h in by_layer[layer]:
                    x[:, :, h] = source[:, :, h].to(x.dtype)
                return x

            return fn

        def replacer(layer):
            """With a norm after attention: the heads' contributions replaced where they reach the stream (after
            the norm, its scale frozen at the clean run's), as every other ablation in the project."""
            out = _head_outputs(m, clean, layer)[:, :, by_layer[layer]].sum(2)  # [n, s, d]
            source = out.mean(0, keepdim=True).expand_as(out) if method == "mean" else out.roll(1, dims=0)

            def fn(x, hook=None):
                return x + (source - out).to(x.dtype)

            return fn

        if architecture.of(m).post_attn_norm:
            fwd = [(hooks.attn_out(layer), replacer(layer)) for layer in by_layer]
        else:
            fwd = [(hooks.z(layer), ablater(layer)) for layer in by_layer]
        ablated_logits, ablated = _run(m, tokens, fwd)
        y_heads, y_mlps = _contributions(m, ablated, dirs)
    first = min(layer for layer, _ in heads)
    down_heads = torch.zeros(L, H, dtype=torch.bool)
    down_heads[first + 1 :] = True
    for layer, h in heads:
        down_heads[layer, h] = False
    down_mlps = torch.arange(L) >= first
    head_change = torch.where(down_heads, (y_heads - x_heads).cpu(), torch.tensor(float("nan")))
    mlp_change = torch.where(down_mlps, (y_mlps - x_mlps).cpu(), torch.tensor(float("nan")))
    total = float(head_change.nan_to_num().sum() + mlp_change.nan_to_num().sum())
    denom = total if abs(total) > 1e-12 else float("nan")
    return SelfRepair(
        heads=heads,
        method=method,
        ld_clean=float(logit_diff(logits, ans).mean()),
        ld_ablated=float(logit_diff(ablated_logits, ans).mean()),
        direct_effect=float(sum(x_heads[layer, h] for layer, h in heads)),
        head_change=head_change,
        mlp_change=mlp_change,
        head_share=head_change / denom,
        mlp_share=mlp_change / denom,
        total=total,
    )
