"""The coloured token strip of one sequence (values per position, colour scale, tooltips, links)."""

from __future__ import annotations

import functools
import math

import numpy as np
import streamlit as st

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


# The strip as a Streamlit component (components v2, no build step): the same escaped HTML, and a click on a token
# link selects it in this session without reloading the page (a modified click still follows the link: a new tab).
_CLICK_JS = """
export default function(component) {
  const { data, setTriggerValue, parentElement } = component;
  let holder = parentElement.querySelector('div.cse-holder');
  if (!holder) {
    holder = document.createElement('div');
    holder.className = 'cse-holder';
    parentElement.appendChild(holder);
  }
  holder.innerHTML = data;
  holder.querySelectorAll('a.cse-tok[data-pos]').forEach((a) => {
    a.onclick = (e) => {
      if (e.ctrlKey || e.metaKey || e.shiftKey || e.altKey || e.button !== 0) return;
      e.preventDefault();
      setTriggerValue('pos', Number(a.dataset.pos));
    };
  });
}
"""
_CLICKABLE = st.components.v2.component("cse_token_strip", js=_CLICK_JS)


def _select(strip_key: str, pos_key: str) -> None:
    """A token was clicked: its position becomes ``pos_key``'s value (before that widget is drawn again)."""
    value = st.session_state.get(strip_key)
    pos = value.get("pos") if isinstance(value, dict) else getattr(value, "pos", None)
    if pos is not None:
        st.session_state[pos_key] = int(pos)


def clickable_strip(html_text: str, key: str, pos_key: str) -> None:
    """``html_text`` (a strip made by ``strip_html`` with links) where a click sets ``st.session_state[pos_key]``."""
    strip_key = f"{key}_strip"
    _CLICKABLE(data=html_text, key=strip_key, on_pos_change=functools.partial(_select, strip_key, pos_key))
