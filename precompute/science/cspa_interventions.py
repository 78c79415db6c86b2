"""CSPA several ways on the same tokens, each scored against the same mean ablation (the direct effect, final
LayerNorm frozen):

* ``compare_interventions``: the paper's three interventions (paper §3.3: 76.9% with both, 81.1% OV only, 95.2%
  QK only for GPT-2 10.7), for the CSPA page's side-by-side view and ``report --interventions``;
* ``compare_readouts``: the paper's CSPA with each read-out of "predicted" (``science.readout``: the logit lens,
  the tuned lens, the final prediction minus the head), for the verdict, ``report`` and the manifest.

Each is ``analyze``'s CSPA with one setting changed."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..models import architecture
from ..models.heads import check_head
from ..models.loading import unwrap
from ..models.weights import effective_W_O
from ..summaries import CSPASummary
from . import readout as readouts
from .analysis import _forward
from .cspa import CSPAConfig, cspa_for_batch, explained_interval, summary_metrics
from .survey_effects import CleanRows, HeadShifts, TokenDirections, shifted_lse
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
) -> dict[str, CSPASummary]:
    """``summary_metrics`` of CSPA under each of ``ways`` ({key: (CSPA settings, read-out)}) over every predicted
    token of ``tokens``. One forward pass per batch serves every way: the ablation's and each CSPA's KL and Δloss
    are ``analyze``'s (the direct effect, the final norm frozen), their log-partitions from
    ``survey_effects.shifted_lse`` (tested against ``analyze``)."""
    m = unwrap(model)
    layer, h = check_head(m, head)
    for _, readout in ways.values():
        readouts.check(readout, lens, layer)
    parts: dict[str, dict[str, list[Tensor]]] = {key: {"kl": [], "dl": []} for key in ways}
    base: dict[str, list[Tensor]] = {"kl": [], "dl": []}
    n = tokens.shape[0]
    W_U = m.W_U.float()
    cen = architecture.of(m).centre
    W_Oc = cen(effective_W_O(m, layer)[h].float())
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            toks = tokens[start : start + batch_size].to(W_U.device).long()
            b, s = toks.shape
            fwd = _forward(m, toks, layer, h, mean_result, rerun=False)
            keep = torch.ones(b, s, dtype=torch.bool, device=toks.device)
            keep[:, -1] = False  # the last position predicts nothing
            clean = CleanRows.of(fwd.clean_logits, toks, W_U)
            dla = (fwd.delta_c / fwd.sigma_f)[keep]  # [n, d]: clean − ablated logits = dla W_U
            batches = []
            for cfg, readout in ways.values():
                _, scores = readouts.rows(
                    readout, layer, fwd.pre_c, fwd.eps, fwd.sigma_f, lens, final_c=fwd.x_c, delta_c=fwd.delta_c
                )
                args = (fwd.attn, fwd.src_out, fwd.mu, scores, fwd.sigma_f, cfg, neighbours, fwd.dest_scale)
                batches.append(cspa_for_batch(m, toks, *args, sparse=True))
            used = [bt.sparse.token_ids for bt in batches if bt.sparse is not None]
            dirs = TokenDirections.of(torch.cat(used) if used else toks, W_U)
            forms = [
                dirs.sparse(bt.sparse, keep) if bt.sparse is not None else (cen(bt.dense) / fwd.sigma_f)[keep]
                for bt in batches
            ]
            coef = None if fwd.dla_factors is None else fwd.dla_factors[0][keep]
            shifts = HeadShifts(dla if coef is None else coef, None if coef is None else W_Oc, forms)
            lse_new = shifted_lse(clean.flat, [shifts], dirs, W_U)[0]
            for key, rows, lse_k in [(None, dla, lse_new[0])] + [
                (key, dla - shifts.cspa_rows(j, dirs), lse_new[1 + j]) for j, key in enumerate(ways)
            ]:
                into = base if key is None else parts[key]  # the ablation first, then each way's CSPA
                into["kl"].append(clean.kl(rows, lse_k).clamp_min(0).reshape(b, s - 1).cpu())
                into["dl"].append(clean.delta_loss(rows, lse_k).reshape(b, s - 1).cpu())
            if progress:
                progress(f"{what}: {min(n, start + batch_size)}/{n} sequences", min(1.0, (start + batch_size) / n))
    kl_a, dl_a = torch.cat(base["kl"]).flatten(), torch.cat(base["dl"]).flatten()
    out = {
        key: summary_metrics(kl_a, torch.cat(p["kl"]).flatten(), dl_a, torch.cat(p["dl"]).flatten())
        for key, p in parts.items()
    }
    for key, p in parts.items():  # the spread over sequences of the headline share
        lo, hi = explained_interval(kl_a.reshape(n, -1), torch.cat(p["kl"]).reshape(n, -1))
        out[key] = dataclasses.replace(out[key], explained_kl_interval=(lo, hi))
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
) -> dict[str, CSPASummary]:
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
) -> dict[str, CSPASummary]:
    """``summary_metrics`` of CSPA (``cspa``'s interventions) under each read-out in ``readouts``."""
    ways = {r: (cspa, r) for r in readouts}
    return compare(model, tokens, head, mean_result, ways, lens, neighbours, batch_size, progress, "CSPA by read-out")
