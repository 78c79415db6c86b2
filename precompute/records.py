"""The compact per-sequence record: what artifacts store and what the app shows, for stored and live text alike.

``compact(result)`` turns an :class:`~precompute.analysis.AnalysisResult` into named tensors with storage dtypes
(floats fp16, ids int32) and sparse attention (top-``k_attn`` sources per query plus the BOS weight). The precompute
job writes exactly these tensors; the app's live mode calls the same function on its own analysis, so Browse
Examples and Test Your Own Examples show the same fields computed the same way.

Which top-k lists are kept: clean, ``direct_frozen`` (the paper's ablation), ``cspa``, the logit lens, and DLA of
the head and of CSPA's output. For the other ablation variants only per-token numbers are kept (Δloss, KL, the
correct token's log-prob and rank).
Numpy helpers for reading a record (dense attention, JSON) are in ``record_arrays`` (no torch needed).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .analysis import AnalysisResult

TOPK_GROUPS = ("clean", "direct_frozen", "cspa", "lens")
# the ablation variants among TOPK_GROUPS: what ``analyze(topk_groups=...)`` needs to compute for a record
STORED_TOPK_VARIANTS = ("direct_frozen",)
DEFAULT_K_ATTN = 8


def compact(result: AnalysisResult, k_attn: int = DEFAULT_K_ATTN) -> dict[str, Tensor]:
    """Storage form of ``result`` (batched): see the module docstring and ``artifacts/README.md``."""
    t = result.tensors
    out: dict[str, Tensor] = {}
    for name, x in t.items():
        if name in ("attention", "info_attention", "tokens"):
            continue
        if "_topk_" in name and name.split("_topk_")[0] not in TOPK_GROUPS:
            continue
        if x.dtype.is_floating_point:
            out[name] = x.to(torch.float16)
        else:
            out[name] = x.to(torch.int32)
    attn = t["attention"]
    s = attn.shape[-1]
    ka = min(k_attn, s)
    weights, pos = attn[:, :, 1:].topk(min(ka, max(1, s - 1)), dim=-1) if s > 1 else attn.topk(1, dim=-1)
    out["attn_topk_pos"] = (pos + (1 if s > 1 else 0)).to(torch.int32)
    out["attn_topk_weight"] = weights.to(torch.float16)
    out["attn_bos"] = attn[:, :, 0].to(torch.float16)
    # info-weighted attention is A[q,k] * out_norm_rel[k]: out_norm_rel (kept above) is enough to rebuild it
    return {name: x.contiguous().cpu() for name, x in out.items()}


def as_arrays(record: dict[str, Tensor]) -> dict:
    """The record as numpy arrays (the form the artifact reader returns and the app shows)."""
    return {name: x.detach().cpu().numpy() for name, x in record.items()}
