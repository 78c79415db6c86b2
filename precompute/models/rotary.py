"""Rotary position embeddings as the model applies them, for circuits that depend on the query-key distance.

A rotary model rotates each query at position p and each key at position p' before their dot product, so a query
token's score on a key token depends on the distance p - p' (the rotations compose: R(p)^T R(p') = R(p' - p)).
``cos_sin(m, positions)`` asks the model's own rotary module (the Hugging Face ``rotary_emb`` under the bridge)
for its cos and sin tables, so its base, scaling and partial rotary dimension are the model's; ``rotate`` applies
them with the half-rotation convention (``rotate_half``) that the supported families (Llama, Mistral, Qwen2,
GPT-NeoX, SmolLM2) use. Rotating the query side to the distance and leaving the key at position 0 (the identity)
gives the score of a key that distance back. ``tests/test_circuits.py`` checks this against the model's attention
scores in a real forward pass.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import InvalidInputError
from . import architecture


def _rotary_module(m):
    """The model's own rotary embedding module (``rotary_emb``) and its model type."""
    hf = getattr(m, "original_model", None)
    arch = architecture.of(m)  # the convention is decided once per model, with the rest of its architecture
    model_type = arch.model_type
    if not arch.rotate_half:
        raise InvalidInputError(
            f"the rotary convention of model type {model_type!r} is not one this project applies (it knows "
            f"{', '.join(sorted(architecture.ROTATE_HALF))})"
        )
    for name, module in hf.named_modules():
        if name.endswith("rotary_emb"):
            return module, model_type
    raise InvalidInputError(f"model type {model_type!r} has no rotary_emb module to read its rotation from")


def layer_type(m, layer: int | None) -> str | None:
    """The layer's rotary kind where the model's rotation differs per layer (Gemma 3: ``sliding_attention`` layers
    with base 10k, ``full_attention`` ones with 1M), read from its config; None where one rotation serves all."""
    module, _ = _rotary_module(m)
    if not getattr(module, "layer_types", None):  # Gemma 3's rotary module keeps one rotation per layer kind
        return None
    types = getattr(m.original_model.config, "layer_types", None)
    if layer is None or types is None or not 0 <= int(layer) < len(types):
        raise InvalidInputError("this model rotates each layer its own way: name the layer")
    return str(types[int(layer)])


def cos_sin(m, positions: Tensor, layer: int | None = None) -> tuple[Float[Tensor, "n rot"], Float[Tensor, "n rot"]]:
    """The model's cos and sin at ``positions`` ([n] ints) in ``layer``, from its own rotary module (float32)."""
    if not architecture.of(m).rotary:
        raise InvalidInputError("the model has no rotary position embedding")
    module, _ = _rotary_module(m)
    kind = layer_type(m, layer)
    pos = torch.as_tensor(positions, dtype=torch.long).reshape(1, -1)
    dummy = torch.zeros(1, pos.shape[1], 1, dtype=torch.float32)  # only its dtype and device are read
    with torch.inference_mode():
        cos, sin = module(dummy, position_ids=pos) if kind is None else module(dummy, pos, layer_type=kind)
    return cos[0].float(), sin[0].float()


def rotate(x: Float[Tensor, "... d_head"], cos: Float[Tensor, "... rot"], sin: Float[Tensor, "... rot"]) -> Tensor:
    """``x`` rotated by (cos, sin) on its first ``rot`` dimensions, half-rotation convention; the rest passes."""
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    half = rot // 2
    rotated = torch.cat([-x_rot[..., half:], x_rot[..., :half]], dim=-1)
    return torch.cat([x_rot * cos + rotated * sin, x_pass], dim=-1)


def at_distance(
    m, queries: Float[Tensor, "n d_head"], distance: int, layer: int | None = None
) -> Float[Tensor, "n d_head"]:
    """Query vectors rotated so that their dot product with unrotated keys is the score of a key ``distance``
    positions back (query at position ``distance``, key at 0), with ``layer``'s rotation."""
    cos, sin = cos_sin(m, torch.tensor([int(distance)]), layer)
    return rotate(queries.float(), cos[0], sin[0])
