"""CSPA with each of the paper's three interventions on the same tokens (paper §3.3: 76.9% with both, 81.1% OV
only, 95.2% QK only for GPT-2 10.7), for the CSPA page's side-by-side view and ``report --interventions``. Each
is ``analyze``'s CSPA with ``CSPAConfig.interventions`` changed, scored against the same mean ablation (the
direct effect, final LayerNorm frozen)."""

from __future__ import annotations

from dataclasses import replace

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .. import schema
from .analysis import analyze
from .cspa import CSPAConfig, summary_metrics

ALL = (("qk", "ov"), ("qk",), ("ov",))


def compare_interventions(
    model,
    tokens: Int[Tensor, "batch seq"],
    head: tuple[int, int],
    mean_result: Float[Tensor, "positions d_model"],
    cspa: CSPAConfig,
    neighbours: Tensor | None = None,
    batch_size: int = 4,
    progress=None,
) -> dict[str, dict]:
    """``summary_metrics`` of CSPA with each intervention ("qk,ov", "qk", "ov") over every predicted token."""
    parts: dict[str, dict[str, list[Tensor]]] = {",".join(i): {"kl": [], "dl": []} for i in ALL}
    base: dict[str, list[Tensor]] = {"kl": [], "dl": []}
    n = tokens.shape[0]
    for start in range(0, n, batch_size):
        toks = tokens[start : start + batch_size]
        for i, interventions in enumerate(ALL):
            res = analyze(
                model,
                toks,
                head,
                mean_result,
                cspa=replace(cspa, interventions=interventions),
                neighbours=neighbours,
                effects=("direct",),
                ln_modes=("frozen",),
            )
            key = ",".join(interventions)
            parts[key]["kl"].append(res[schema.kl(schema.CSPA)].flatten().cpu())
            parts[key]["dl"].append(res[schema.delta_loss(schema.CSPA)].flatten().cpu())
            if i == 0:
                base["kl"].append(res[schema.kl(schema.PAPER_VARIANT)].flatten().cpu())
                base["dl"].append(res[schema.delta_loss(schema.PAPER_VARIANT)].flatten().cpu())
        if progress:
            progress(f"CSPA three ways: {min(n, start + batch_size)}/{n} sequences", min(1.0, (start + batch_size) / n))
    kl_a, dl_a = torch.cat(base["kl"]), torch.cat(base["dl"])
    return {key: summary_metrics(kl_a, torch.cat(p["kl"]), dl_a, torch.cat(p["dl"])) for key, p in parts.items()}
