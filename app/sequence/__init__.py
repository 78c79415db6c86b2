"""One sequence's analysis on screen: the coloured strip, the selected token's details, attention, downloads.

Used by Browse Examples (stored sequences) and Test Your Own Examples (live analysis): both pass a record with
the same fields (``precompute.store.records.compact``), so the two pages cannot drift apart. Modules: ``controls``
(sidebar, bound to the URL), ``strip``, ``details`` (incl. the position as a source), ``attention``, ``downloads``.
"""

from __future__ import annotations

import streamlit as st

from app.sequence.attention import attention_view
from app.sequence.controls import controls, link_state
from app.sequence.details import details, source_view
from app.sequence.downloads import downloads
from app.sequence.strip import clickable_strip, strip_html
from app.state import url
from precompute import schema as F
from precompute.data.tokenization import token_strings

__all__ = ["controls", "show", "strip_html", "compare_strip"]
# the details tabs, by the short name a URL gives them (?tab=source)
TABS = {"details": "Token details", "source": "As a source", "attention": "Attention", "download": "Download"}
TAB_NAMES = {label: short for short, label in TABS.items()}


def show(
    rec: dict,
    tokenizer,
    opts: dict,
    pos: int,
    key: str,
    link_params: dict | None = None,
    name: str = "sequence",
    head_name: str = "",
    readout: str = "logit_lens",
    meta: dict | None = None,
    pos_key: str | None = None,
) -> None:
    """The whole sequence view for one record; ``readout`` names what its prediction fields (``lens``) read;
    ``name`` and ``meta`` name the downloads (``app.exports.metadata``); ``pos_key``: the session key of the page's
    position box, which a click on a token sets without reloading the page (with ``link_params``)."""
    strings = token_strings(tokenizer, rec[F.TOKENS].tolist())
    tab_key = f"{key}_tab"
    url.restore("tab", tab_key, url.mapped(TABS))
    st.session_state.setdefault(tab_key, TABS["details"])
    tab = TAB_NAMES.get(st.session_state[tab_key], "details")
    links = (
        None
        if link_params is None
        else {**url.carried(), **link_state(opts), **link_params, **({"tab": tab} if tab != "details" else {})}
    )
    html_text = strip_html(rec, strings, opts, pos, links)
    if links is not None and pos_key is not None:
        clickable_strip(html_text, key, pos_key)
    else:
        st.markdown(html_text, unsafe_allow_html=True)
    how = "click it to select it" if link_params is not None else "choose the position with the box above"
    st.caption(
        f"Hover a token for its value; {how}. Blue = the head helps (loss rises when it is ablated), red = it hurts."
    )
    tabs = st.tabs(list(TABS.values()), key=tab_key, on_change="rerun")
    active = TAB_NAMES.get(st.session_state.get(tab_key), "details")
    url.publish({"tab": (tab_key, active)}, {"tab": "details"})
    with tabs[0]:
        details(rec, strings, pos, opts, tokenizer, readout)
    with tabs[1]:
        source_view(rec, strings, pos, tokenizer)
    with tabs[2]:
        attention_view(rec, strings, pos, key, head_name)
    with tabs[3]:
        downloads(rec, strings, name, key, meta or {"head": head_name}, tokenizer)


def compare_strip(
    rec: dict, tokenizer, opts: dict, pos: int, head_name: str, link_params: dict | None, pos_key: str | None = None
) -> None:
    """A second head's strip for the same tokens, beside the first (same colour scale and metric)."""
    strings = token_strings(tokenizer, rec[F.TOKENS].tolist())
    links = None if link_params is None else {**url.carried(), **link_state(opts), **link_params}
    st.markdown(f"**Head {head_name}**")
    html_text = strip_html(rec, strings, opts, pos, links)
    if links is not None and pos_key is not None:
        clickable_strip(html_text, "compare", pos_key)
    else:
        st.markdown(html_text, unsafe_allow_html=True)
