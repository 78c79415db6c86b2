"""Heads of a loaded model: validating a (layer, head) pair and the head's output."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import InvalidInputError


def check_head(m, head) -> tuple[int, int]:
    """(layer, h) as ints, or InvalidInputError naming the model's valid ranges."""
    cfg = m.cfg
    if head is None or isinstance(head, (str, bytes)):
        raise InvalidInputError(f"head must be a (layer, head) pair, got {head!r}")
    try:
        layer, h = (int(x) for x in head)
    except (TypeError, ValueError):
        raise InvalidInputError(f"head must be a (layer, head) pair, got {head!r}") from None
    if not (0 <= layer < cfg.n_layers and 0 <= h < cfg.n_heads):
        raise InvalidInputError(
            f"head {layer}.{h} does not exist: the model has layers 0-{cfg.n_layers - 1} and "
            f"heads 0-{cfg.n_heads - 1} per layer"
        )
    return layer, h


def head_output(
    m,
    z: Float[Tensor, "batch seq n_heads d_head"],
    layer: int,
    h: int,
    post_scale: Float[Tensor, "batch seq 1"] | None = None,
) -> Float[Tensor, "batch seq d_model"]:
    """The head's contribution to the residual stream (no bias), in float32: z_h W_O[layer, h], or, in a model with
    a norm after attention, z_h (W_O ⊙ g) / σ with that norm's clean scale σ per position (``post_scale``, from
    ``hooks.post_attn_scale``; ``architecture`` docstring)."""
    from . import hooks
    from .architecture import of
    from .weights import effective_W_O

    out = z[:, :, h].float() @ effective_W_O(m, layer)[h].float()
    if of(m).post_attn_norm:
        if post_scale is None:
            raise InvalidInputError(
                "this model has a norm after attention: a head's output needs that norm's scale "
                f"({hooks.post_attn_scale(layer)})"
            )
        out = out / post_scale.float()
    return out


def output_hooks(m, layer: int) -> list[str]:
    """The hooks ``head_output_from`` reads: z, and the post-attention norm's scale where the model has one."""
    from . import hooks
    from .architecture import of

    return [hooks.z(layer)] + ([hooks.post_attn_scale(layer)] if of(m).post_attn_norm else [])


def dest_scale(m, cache, layer: int) -> Float[Tensor, "batch seq 1"] | None:
    """The post-attention norm's clean scale in ``layer`` from a cache holding ``output_hooks(m, layer)`` (a head's
    output at each position is divided by it), or None where the model has no such norm."""
    from . import hooks
    from .architecture import of

    return cache[hooks.post_attn_scale(layer)] if of(m).post_attn_norm else None


def head_output_from(m, cache, layer: int, h: int) -> Float[Tensor, "batch seq d_model"]:
    """``head_output`` from a cache holding ``output_hooks(m, layer)``."""
    from . import hooks

    return head_output(m, cache[hooks.z(layer)], layer, h, dest_scale(m, cache, layer))


def head_weights(m, layer: int, h: int) -> dict[str, Float[Tensor, ...]]:
    """W_Q, W_K, W_V [d_model, d_head] and W_O [d_head, d_model] of one head (K and V from the key/value head it
    shares under grouped-query attention; W_O as it reaches the stream, ``weights.effective_W_O``)."""
    from .architecture import of
    from .weights import effective_W_O, layer_weight

    kv = of(m).kv_head(h)
    return {
        "W_Q": layer_weight(m, "W_Q", layer)[h],
        "W_K": layer_weight(m, "W_K", layer)[kv],
        "W_V": layer_weight(m, "W_V", layer)[kv],
        "W_O": effective_W_O(m, layer)[h],  # with a post-attention norm's gain folded in
    }


def mean_coefficients(
    mu: Float[Tensor, "seq d_model"], W_O_h: Float[Tensor, "d_head d_model"], rtol: float = 1e-5
) -> Float[Tensor, "seq d_head"] | None:
    """z̄ with z̄ W_O_h = mu, when ``mu`` is a head's mean output (``mean_result`` averages z W_O_h, so it lies in
    W_O_h's row space up to float32 rounding); None when no z̄ reproduces ``mu`` to ``rtol`` of its largest entry
    (a mean made another way), so callers fall back to working in d_model."""
    W = W_O_h.double()
    target = mu.double()
    # SVD-based least squares: a head's W_O can be rank-deficient (the toy's planted head is)
    coeffs = torch.linalg.lstsq(W.T, target.T, driver="gelsd").solution.T
    scale = float(target.abs().max())
    if float((coeffs @ W - target).abs().max()) > rtol * max(scale, 1e-30) and scale > 0:
        return None
    return coeffs.to(mu.dtype)
