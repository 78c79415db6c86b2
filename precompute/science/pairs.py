"""Prompt pairs: the exploratory analysis that found the negative heads, for any supported model.

``compare_prompts(model, clean, corrupted, answers)`` takes n prompt pairs (token tensors [n, S], or strings
tokenised with BOS first) and answer pairs [n, 2] (right, wrong: token ids or one-token strings) and returns a
:class:`PairAnalysis`:

* ``logit_diff_clean`` / ``logit_diff_corrupted`` [n]: logit(right) − logit(wrong) at the final position.
* ``lens_logit_diff`` [2·n_layers + 1]: the accumulated residual stream at the final position — before every
  attention layer and every MLP, and the final one — divided by the clean run's final-norm scale (after centring
  under LayerNorm) and projected on each prompt's logit-difference direction W_U[:, right] − W_U[:, wrong],
  averaged over the prompts (the point after the last MLP equals the mean logit difference minus the unembedding
  bias's share).
* ``layer_dla`` [2·n_layers] (attention 0, MLP 0, attention 1, …) and ``head_dla`` [n_layers, n_heads]: each
  component's direct contribution to the mean logit difference, scaled the same way, on the clean prompts.
* activation patching (``patching``, denoising) and attribution patching (``attribution``), in
  ``science.patching``: grids ``resid_pre``, ``attn_out``, ``mlp_out`` [n_layers, S] and ``head_z``,
  ``head_pattern``, ``head_v`` [n_layers, n_heads], as the normalised metric
  (LD_patched − LD_corrupted) / (LD_clean − LD_corrupted), LD the mean logit difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import InvalidInputError
from ..models import architecture, hooks
from ..models.loading import unwrap
from ..models.weights import effective_W_O
from ..validate import token_ids
from .logit_diff import ld_directions, logit_diff, project
from .pairs_settings import DEFAULT_TOP_CELLS  # noqa: F401 - the page's default (torch-free)

GRIDS = ("resid_pre", "attn_out", "mlp_out", "head_z", "head_pattern", "head_v")


@dataclass
class PairInputs:
    clean: Int[Tensor, "n seq"]
    corrupted: Int[Tensor, "n seq"]
    answers: Int[Tensor, "n 2"]  # right, wrong


@dataclass
class PairAnalysis:
    """Everything ``compare_prompts`` computes (see the module docstring); ``patch[g]`` / ``attr[g]`` for g in
    GRIDS, ``labels`` the position labels (tokens of the first clean prompt), ``lens_labels`` / ``layer_labels``
    the names of the lens points and the layer components."""

    inputs: PairInputs
    logit_diff_clean: Float[Tensor, " n"]
    logit_diff_corrupted: Float[Tensor, " n"]
    lens_logit_diff: Float[Tensor, " points"]
    layer_dla: Float[Tensor, " components"]
    head_dla: Float[Tensor, "layer head"]
    labels: list[str]
    lens_labels: list[str]
    layer_labels: list[str]
    patch: dict[str, Tensor] = field(default_factory=dict)
    attr: dict[str, Tensor] = field(default_factory=dict)
    patched_cells: int = 0  # cells activation-patched (the others NaN in ``patch``)
    total_cells: int = 0  # cells of the chosen grids

    @property
    def ld_clean(self) -> float:
        return float(self.logit_diff_clean.mean())

    @property
    def ld_corrupted(self) -> float:
        return float(self.logit_diff_corrupted.mean())


def _one_token(tokenizer, text: str, what: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise InvalidInputError(
            f"{what} {text!r} is {len(ids)} tokens, not one; logit differences need one-token "
            "answers (try it with or without a leading space)"
        )
    return int(ids[0])


def prepare_pairs(model, clean, corrupted, answers) -> PairInputs:
    """Token tensors from strings or tensors, checked: equal shapes, one-token answers, ids in the vocabulary."""
    from ..data.tokenization import encode

    m = unwrap(model)
    tok = m.tokenizer

    def as_tokens(prompts, what):
        if isinstance(prompts, Tensor):
            return prompts.long()
        if isinstance(prompts, str) or not prompts:
            raise InvalidInputError(f"{what} prompts must be a list of strings or a [n, seq] tensor")
        rows = [encode(tok, p) for p in prompts]
        lengths = sorted({len(r) for r in rows})
        if len(lengths) > 1:
            raise InvalidInputError(
                f"the {what} prompts have different lengths ({', '.join(map(str, lengths))} "
                "tokens, BOS included); every prompt must have as many tokens as the others"
            )
        return torch.tensor(rows)

    c, k = as_tokens(clean, "clean"), as_tokens(corrupted, "corrupted")
    if c.ndim != 2 or k.ndim != 2 or c.shape[0] == 0:
        raise InvalidInputError("prompts must be [n, seq] with n >= 1")
    if c.shape != k.shape:
        raise InvalidInputError(
            f"clean prompts are {tuple(c.shape)} tokens but corrupted ones {tuple(k.shape)}: "
            "each pair must have the same number of tokens (positions are patched one to one)"
        )
    if isinstance(answers, Tensor):
        a = answers.long()
    else:
        a = torch.tensor(
            [[_one_token(tok, right, "answer"), _one_token(tok, wrong, "wrong answer")] for right, wrong in answers]
        )
    if a.shape != (c.shape[0], 2):
        raise InvalidInputError(
            f"answers must be [n, 2] (right, wrong) for n = {c.shape[0]} pairs; got {tuple(a.shape)}"
        )
    for t in (c, k):
        token_ids(t, m.cfg.d_vocab, m.cfg.n_ctx)
    token_ids(a, m.cfg.d_vocab)
    return PairInputs(c, k, a)


def clean_hooks(L: int, post_attn_norm: bool = False) -> list[str]:
    """The clean run's hooks: with ``post_attn_norm``, the post-attention norm's scales too (head contributions)."""
    names = [hooks.FINAL_SCALE] + hooks.every_layer(
        L, hooks.RESID_PRE, hooks.ATTN_OUT, hooks.MLP_OUT, hooks.RESID_POST, hooks.Z, hooks.PATTERN, hooks.V
    )
    return names + (hooks.every_layer(L, hooks.POST_ATTN_SCALE) if post_attn_norm else [])


def compare_prompts(
    model,
    clean,
    corrupted,
    answers,
    patching: bool = True,
    attribution: bool = True,
    max_batch: int = 64,
    progress=None,
    grids: tuple[str, ...] = GRIDS,
    top_n: int | None = None,
    partial=None,
) -> PairAnalysis:
    """See the module docstring. ``max_batch``: sequences per forward pass when patching (many patches per pass).
    ``progress(text, fraction)`` is called as the patching goes. ``grids``: the patching grids to compute.
    ``top_n``: activation-patch only the ``top_n`` cells attribution patching ranks first by |effect| (AtP, Kramár
    et al. 2024; attribution is computed first whatever ``attribution`` says), the others NaN; None: every cell.
    ``partial(patch_grids)``: told the activation-patching grids so far after each forward pass."""
    from ..data.tokenization import token_strings
    from . import patching as P

    m = unwrap(model)
    if not grids or any(g not in GRIDS for g in grids):
        raise InvalidInputError(f"grids must be drawn from {', '.join(GRIDS)}")
    inp = prepare_pairs(m, clean, corrupted, answers)
    L = m.cfg.n_layers
    dev = m.W_U.device
    with torch.inference_mode():
        post = architecture.of(m).post_attn_norm
        logits, cache = m.run_with_cache(inp.clean.to(dev), names_filter=clean_hooks(L, post))
        cache = {k: v.float() for k, v in cache.items()}
        ld_clean = logit_diff(logits, inp.answers.to(dev))
        ld_corr = logit_diff(m(inp.corrupted.to(dev)), inp.answers.to(dev))
        dirs = ld_directions(m, inp.answers.to(dev))
        scale = cache[hooks.FINAL_SCALE][:, -1]

        def last(name):
            return cache[name][:, -1]

        points = [last(hooks.resid_pre(0))]
        lens_labels, layer_labels, comps = ["embed"], [], []
        for layer in range(L):
            points += [last(hooks.resid_pre(layer)) + last(hooks.attn_out(layer)), last(hooks.resid_post(layer))]
            lens_labels += [f"{layer}_attn", f"{layer}_mlp"]
            comps += [last(hooks.attn_out(layer)), last(hooks.mlp_out(layer))]
            layer_labels += [f"attn {layer}", f"mlp {layer}"]
        lens = project(m, torch.stack(points), scale, dirs)
        layer_dla = project(m, torch.stack(comps), scale, dirs)
        # each head's contribution as it reaches the stream: z (divided by a post-attention norm's scale) W_O
        z = torch.stack(
            [
                last(hooks.z(layer)) / (last(hooks.post_attn_scale(layer))[:, :, None] if post else 1.0)
                for layer in range(L)
            ]
        )  # [L, n, H, dh]
        W_O = torch.stack([effective_W_O(m, layer).float() for layer in range(L)])
        results = torch.einsum("lnhe,lhed->lhnd", z, W_O)
        head_dla = project(m, results, scale, dirs)
    out = PairAnalysis(
        inp,
        ld_clean.cpu(),
        ld_corr.cpu(),
        lens.cpu(),
        layer_dla.cpu(),
        head_dla.cpu(),
        token_strings(m.tokenizer, inp.clean[0].tolist()),
        lens_labels,
        layer_labels,
    )
    out.total_cells = P.cell_count(m, grids, inp.clean.shape[1])
    if top_n is not None and top_n < 0:
        raise InvalidInputError(f"top_n must be a whole number of cells, got {top_n}")
    ranked = patching and top_n is not None and top_n < out.total_cells
    if attribution or ranked:
        if progress:
            progress("attribution patching: one forward and one backward pass", 0.0)
        out.attr = P.attribution_patching(m, inp, cache, out.ld_clean, out.ld_corrupted, grids)
    if patching:
        only = P.top_cells(out.attr, grids, top_n) if ranked and top_n is not None else None
        out.patched_cells = out.total_cells if only is None else len(only)
        args = (out.ld_clean, out.ld_corrupted, max_batch, progress, grids, only, partial)
        if architecture.of(m).resumable:  # resume each patch at its layer (same numbers, ~3x faster on CPU)
            from .patching_fast import activation_patching_fast

            out.patch = activation_patching_fast(m, inp, *args)
        else:
            out.patch = P.activation_patching(m, inp, cache, *args)
    if not attribution:
        out.attr = {}
    return out
