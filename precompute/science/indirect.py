"""A head's indirect effect without the paths through chosen downstream heads (paper §3.4: 10.7's indirect effect
is small, +0.0008 nats without the path through 11.10).

The indirect effect mean-ablates the head (its output replaced by the per-position mean mu in the residual stream,
every later block re-run) and restores its direct path at the final residual, so only what later components
read from the head changes the logits. Excluding the path through a later head Y keeps Y's output at its clean
value in that re-run: what is left is the effect through every other downstream component. One hooked forward
pass per batch, the same on every architecture (``hooks.attn_out``, ``hooks.z``, ``hooks.FINAL_IN``). With no
heads excluded this is the project's ``indirect`` effect (``analyze``'s ``delta_loss_indirect_*``; tested).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import InvalidInputError
from ..models import architecture, hooks
from ..models.heads import check_head, head_output_from
from ..models.loading import unwrap
from ..validate import token_ids


def indirect_excluding(
    model,
    tokens: Int[Tensor, "batch seq"],
    head: tuple[int, int],
    mean_result: Float[Tensor, "positions d_model"],
    excluded: tuple[tuple[int, int], ...] = (),
) -> dict[str, Float[Tensor, "batch pred"]]:
    """Per-token Δloss of ``head``'s indirect effect with the paths through ``excluded`` heads cut (their outputs
    kept clean): {"frozen": final LN scale of the clean run, "unfrozen": the model's own final LN}."""
    m = unwrap(model)
    token_ids(tokens, m.cfg.d_vocab, m.cfg.n_ctx, min_len=2)
    layer, h = check_head(m, head)
    cut = [check_head(m, y) for y in excluded]
    if any(y[0] <= layer for y in cut):
        raise InvalidInputError("a head whose path is excluded must sit in a later layer than the ablated head")
    tokens = tokens.to(m.cfg.device)
    post = architecture.of(m).post_attn_norm
    z_names = sorted({hooks.z(y[0]) for y in cut} | {hooks.z(layer)})
    scale_names = sorted({hooks.post_attn_scale(y[0]) for y in cut} | {hooks.post_attn_scale(layer)}) if post else []
    with torch.inference_mode():
        clean_logits, cache = m.run_with_cache(tokens, names_filter=z_names + scale_names + [hooks.FINAL_SCALE])
        r = head_output_from(m, {k: cache[k].float() for k in z_names + scale_names}, layer, h)
        mu = mean_result[: tokens.shape[1]].to(device=tokens.device, dtype=torch.float32)
        sigma_f = cache[hooks.FINAL_SCALE].float()
        clean_z = {name: cache[name] for name in z_names}
        grabbed: dict[str, Tensor] = {}

        def ablate(x, hook):
            return x + (mu - r).to(x.dtype)

        def keep_clean(heads_here: list[int]):
            def fn(z, hook):
                z = z.clone()
                z[:, :, heads_here] = clean_z[hook.name][:, :, heads_here].to(z.dtype)
                return z

            return fn

        def restore_direct(x, hook):
            grabbed["x"] = (x.float() + (r - mu)).clone()
            return grabbed["x"].to(x.dtype)

        fwd = [(hooks.attn_out(layer), ablate)]
        if not post:
            for name in sorted({hooks.z(y[0]) for y in cut}):
                fwd.append((name, keep_clean([y[1] for y in cut if hooks.z(y[0]) == name])))
        else:  # after a norm, the excluded heads' outputs (not their z) are kept clean where they reach the stream
            for ly in sorted({y[0] for y in cut}):
                fwd += _keep_clean_outputs(m, cache, ly, [y[1] for y in cut if y[0] == ly])
        fwd.append((hooks.FINAL_IN, restore_direct))
        unfrozen = m.run_with_hooks(tokens, fwd_hooks=fwd).float()
        arch = architecture.of(m)
        resid = arch.centre(grabbed["x"])
        frozen = (resid / sigma_f) @ m.W_U.float() + m.b_U.float()
    targets = tokens[:, 1:, None]

    def ce(logits: Tensor) -> Tensor:
        return -logits.log_softmax(-1)[:, :-1].gather(-1, targets)[..., 0]

    clean = ce(clean_logits.float())
    return {"frozen": (ce(frozen) - clean).cpu(), "unfrozen": (ce(unfrozen) - clean).cpu()}


def _keep_clean_outputs(m, clean_cache, layer: int, heads: list[int]) -> list:
    """Hooks that keep heads ``heads`` of ``layer`` writing their clean output after a post-attention norm: in the
    intervened run their output there (z and the norm's scale of that run) is swapped for the clean run's."""
    seen: dict[str, Tensor] = {}
    clean = {k: clean_cache[k].float() for k in (hooks.z(layer), hooks.post_attn_scale(layer))}
    clean_out = sum(head_output_from(m, clean, layer, h) for h in heads)

    def grab(x, hook):
        seen[hook.name] = x.float()

    def swap(x, hook):
        now = sum(head_output_from(m, seen, layer, h) for h in heads)
        return x + (clean_out - now).to(x.dtype)

    return [(hooks.z(layer), grab), (hooks.post_attn_scale(layer), grab), (hooks.attn_out(layer), swap)]
