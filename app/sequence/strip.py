"""The coloured token strip of one sequence (values per position, colour scale, tooltips, links)."""

from __future__ import annotations

import math

import numpy as np

from app.render.colors import diverging, sequential
from app.render.tokens import token_strip
from precompute import schema as F
from precompute.store.record_arrays import floats

NEG, POS = F.DLA_GROUPS
FIXED_SCALE = {"delta_loss": 2.5, "cspa": 2.5, "kl": 1.0, "dla": 1.0}


def values(rec: dict, variant: str, metric: str) -> list[float]:
    """One value per token position (the value about predicting the next token; NaN at the last)."""
    s = rec[F.TOKENS].shape[0]
    nan = [float("nan")]
    if metric == "delta_loss":
        return floats(rec[F.delta_loss(variant)]) + nan
    if metric == "kl":
        return floats(rec[F.kl(variant)]) + nan
    if metric == "cspa":
        return floats(rec[F.delta_loss(F.CSPA)]) + nan
    if metric == "logprob":
        return floats(np.exp(floats(rec[F.correct_logprob(F.CLEAN)]))) + nan
    if metric == "lens":
        return floats(np.exp(floats(rec[F.correct_logprob(F.LENS)]))) + nan
    return floats(rec[F.dla_values(NEG)][:, 0])[:s]


def colours(vals: list[float], metric: str, extreme: bool) -> list[str]:
    """Blue where the head helps (ablating it raises the loss; its DLA is negative), red where it hurts."""
    if metric in ("logprob", "lens"):
        return [sequential(v) for v in vals]
    finite = [abs(v) for v in vals if not math.isnan(v)]
    scale = (max(finite) if finite else 1.0) if extreme else FIXED_SCALE[metric]
    return [diverging(-v if metric == "dla" else v, scale) for v in vals]


def strip_html(rec: dict, strings: list[str], opts: dict, selected: int | None, link_params: dict | None) -> str:
    metric = opts["metric"]
    vals = values(rec, opts["variant"], metric)
    n = len(strings)
    tips = []
    for i, tok in enumerate(strings):
        nxt = repr(strings[i + 1]) if i + 1 < n else "(next token unknown)"
        value = "" if math.isnan(vals[i]) else f"\n{opts['metric_label']}: {vals[i]:+.4f}"
        tips.append(f"({i}) {tok!r} → {nxt}{value}")
    return token_strip(
        strings,
        colours(vals, metric, opts["extreme"]),
        tips,
        selected=selected,
        link_params=link_params,
        show_newlines=opts["newlines"],
    )
