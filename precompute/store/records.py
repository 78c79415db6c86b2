"""The compact per-sequence record: what artifacts store and what the app shows, for stored and live text alike.

``compact(result)`` keeps exactly the per-head fields ``schema.head_fields`` lists for the result's variants, with
their storage dtypes (floats fp16, ids int32), and turns the dense attention into the top-``k_attn`` sources per
query plus the BOS weight. The precompute job writes these tensors; the app's live mode calls the same function on
its own analysis, so Browse Examples and Test Your Own Examples show the same fields computed the same way.
Numpy helpers for reading a record (dense attention, JSON) are in ``record_arrays`` (no torch needed).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from .. import schema

DEFAULT_K_ATTN = 8
_DTYPES = {schema.F16: torch.float16, schema.I32: torch.int32}
_ATTENTION_FIELDS = (schema.ATTN_TOPK_POS, schema.ATTN_TOPK_WEIGHT, schema.ATTN_BOS)


def compact(result, k_attn: int = DEFAULT_K_ATTN) -> dict[str, Tensor]:
    """Storage form of an ``AnalysisResult`` (batched): see the module docstring and ``artifacts/README.md``."""
    t = result.tensors
    fields = schema.head_fields(result.variants, cspa=result.cspa is not None)
    out = {f.name: t[f.name].to(_DTYPES[f.dtype]) for f in fields if f.quantity not in _ATTENTION_FIELDS}
    attn = t[schema.ATTENTION]
    s = attn.shape[-1]
    if s > 1:
        weights, pos = attn[:, :, 1:].topk(min(k_attn, s - 1), dim=-1)
        pos = pos + 1
    else:
        weights, pos = attn.topk(1, dim=-1)
    out[schema.ATTN_TOPK_POS] = pos.to(torch.int32)
    out[schema.ATTN_TOPK_WEIGHT] = weights.to(torch.float16)
    out[schema.ATTN_BOS] = attn[:, :, 0].to(torch.float16)
    return {name: x.contiguous().cpu() for name, x in out.items()}


def as_arrays(obj):
    """``obj`` with every tensor turned into a numpy array: a record's fields (the form the artifact reader returns
    and the app shows), a dict's values or a dataclass's fields, recursively (what the model boundary hands out)."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, dict):
        return {k: as_arrays(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: as_arrays(getattr(obj, f.name)) for f in dataclasses.fields(obj)})
    return obj
