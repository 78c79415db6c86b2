"""CSPA several ways on the same tokens, each scored against the same mean ablation (the direct effect, final
LayerNorm frozen):

* ``compare_interventions``: the paper's three interventions (paper §3.3: 76.9% with both, 81.1% OV only, 95.2%
  QK only for GPT-2 10.7), for the CSPA page's side-by-side view and ``report --interventions``;
* ``compare_readouts``: the paper's CSPA with each read-out of "predicted" (``science.readout``: the logit lens,
  the tuned lens, the final prediction minus the head), for the verdict, ``report`` and the manifest.

Each is ``analyze``'s CSPA with one setting changed."""

from __future__ import annotations

from dataclasses import replace

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .. import schema
from .analysis import analyze
from .cspa import CSPAConfig, explained_interval, summary_metrics
from .tuned_lens import TunedLens

ALL = (("qk", "ov"), ("qk",), ("ov",))


def compare(
    model,
    tokens: Int[Tensor, "batch seq"],
    head: tuple[int, int],
    mean_result: Float[Tensor, "positions d_model"],
    ways: dict[str, tuple[CSPAConfig, str]],
    lens: TunedLens | None = None,
    neighbours: Tensor | None = None,
    batch_size: int = 4,
    progress=None,
    what: str = "CSPA",
) -> dict[str, dict]:
    """``summary_metrics`` of CSPA under each of ``ways`` ({key: (CSPA settings, read-out)}) over every predicted
    token of ``tokens``."""
    parts: dict[str, dict[str, list[Tensor]]] = {key: {"kl": [], "dl": []} for key in ways}
    base: dict[str, list[Tensor]] = {"kl": [], "dl": []}
    n = tokens.shape[0]
    for start in range(0, n, batch_size):
        toks = tokens[start : start + batch_size]
        for i, (key, (cfg, readout)) in enumerate(ways.items()):
            res = analyze(
                model,
                toks,
                head,
                mean_result,
                cspa=cfg,
                neighbours=neighbours,
                effects=("direct",),
                ln_modes=("frozen",),
                readout=readout,
                lens=lens,
            )
            parts[key]["kl"].append(res[schema.kl(schema.CSPA)].flatten().cpu())
            parts[key]["dl"].append(res[schema.delta_loss(schema.CSPA)].flatten().cpu())
            if i == 0:
                base["kl"].append(res[schema.kl(schema.PAPER_VARIANT)].flatten().cpu())
                base["dl"].append(res[schema.delta_loss(schema.PAPER_VARIANT)].flatten().cpu())
        if progress:
            progress(f"{what}: {min(n, start + batch_size)}/{n} sequences", min(1.0, (start + batch_size) / n))
    kl_a, dl_a = torch.cat(base["kl"]), torch.cat(base["dl"])
    out = {key: summary_metrics(kl_a, torch.cat(p["kl"]), dl_a, torch.cat(p["dl"])) for key, p in parts.items()}
    for key, p in parts.items():  # the spread over sequences of the headline share
        lo, hi = explained_interval(kl_a.reshape(n, -1), torch.cat(p["kl"]).reshape(n, -1))
        out[key]["explained_kl_interval"] = [lo, hi]
    return out


def compare_interventions(
    model,
    tokens: Int[Tensor, "batch seq"],
    head: tuple[int, int],
    mean_result: Float[Tensor, "positions d_model"],
    cspa: CSPAConfig,
    neighbours: Tensor | None = None,
    batch_size: int = 4,
    progress=None,
    readout: str = "logit_lens",
    lens: TunedLens | None = None,
) -> dict[str, dict]:
    """``summary_metrics`` of CSPA with each intervention ("qk,ov", "qk", "ov") over every predicted token."""
    ways = {",".join(i): (replace(cspa, interventions=i), readout) for i in ALL}
    return compare(model, tokens, head, mean_result, ways, lens, neighbours, batch_size, progress, "CSPA three ways")


def compare_readouts(
    model,
    tokens: Int[Tensor, "batch seq"],
    head: tuple[int, int],
    mean_result: Float[Tensor, "positions d_model"],
    cspa: CSPAConfig,
    readouts: tuple[str, ...],
    lens: TunedLens | None = None,
    neighbours: Tensor | None = None,
    batch_size: int = 4,
    progress=None,
) -> dict[str, dict]:
    """``summary_metrics`` of CSPA (``cspa``'s interventions) under each read-out in ``readouts``."""
    ways = {r: (cspa, r) for r in readouts}
    return compare(model, tokens, head, mean_result, ways, lens, neighbours, batch_size, progress, "CSPA by read-out")
