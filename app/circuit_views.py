"""Pieces shared by the OV/QK circuits page and the Semantic similarity page: the cached circuit tables, the
vocabulary, the token box (with its tokenisation preview and suggestions) and one bar chart of a circuit."""

from __future__ import annotations

import html

import plotly.graph_objects as go
import streamlit as st

from app import state
from app.render.text import literal
from precompute import schema as F
from precompute.data.tokenization import token_strings
from precompute.science.circuit_bars import circuit_bars
from precompute.summaries import HeadSummary

TITLES = {
    ("ov", "source"): "OV: which predictions does this source suppress?",
    ("ov", "destination"): "OV: which sources suppress this prediction?",
    ("qk", "source"): "QK: which predicted tokens attend most to this source?",
    ("qk", "destination"): "QK: which sources does this prediction attend to?",
}
OWN, SIMILAR, OTHER = "#f5a623", "#f8d49a", "#4c78a8"
TOKEN_CHARS = 200  # the longest token text a link may carry


@st.cache_resource(max_entries=4, show_spinner="Loading circuit tables…")
def factors(source: str, head_name: str):
    return {
        k: (v.astype("float32") if v.dtype.kind == "f" else v)
        for k, v in state.open_source(source).circuits(head_name).items()
    }


@st.cache_resource(max_entries=2, show_spinner=False)
def neighbours(source: str) -> dict:
    return state.open_source(source).semantic()


@st.cache_resource(max_entries=2, show_spinner=False)
def vocabulary(source: str) -> list[str]:
    t = state.open_source(source).tokenizer
    return token_strings(t, range(len(t)))


def page_tables(source: str, head_name: str) -> tuple[list[str], dict]:
    """(vocabulary, circuit factors) for a page, or the error and a stop."""
    from precompute.errors import ExplorerError

    try:
        return vocabulary(source), factors(source, head_name)
    except ExplorerError as err:
        st.error(f"The circuit tables cannot be read: {literal(err)}")
        st.stop()


def default_token(vocab: list[str]) -> str:
    """' token' where the vocabulary has it (GPT-2), else the first word-like token (e.g. the toy's words)."""
    if " token" in vocab:
        return " token"
    return next((s for s in vocab if s.startswith(" ") and s[1:].isalpha() and len(s) >= 5), vocab[0])


def strip_quotes(text: str) -> str:
    t = text.strip("\n")
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    return t


def token_box(tok, vocab: list[str], key: str, default: str | None = None) -> int | None:
    """The token box (kept in the URL as ``?token=``): a single token's id, or None after saying why (with pieces
    and suggestions to pick)."""
    state.url.restore("token", key, state.url.text(TOKEN_CHARS))
    st.session_state.setdefault(key, default or default_token(vocab))
    raw = st.text_input("Token (include its leading space, e.g. ` token`; quotes are optional)", key=key)
    state.url.publish({"token": (key, raw)})
    text = strip_quotes(raw)
    if not text:
        st.warning("Type a token to see its bars.")
        return None
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = token_strings(tok, ids)
    st.caption("Tokenisation: " + " | ".join(literal(repr(p)) for p in pieces))
    if len(ids) == 1:
        return ids[0]
    needle = text.strip().lower()
    suggestions = [s for s in vocab if needle and s.strip().lower().startswith(needle)][:12]
    st.error(
        f"{literal(repr(text))} is {len(ids)} tokens, not one. Circuits are per token: pick one of its pieces "
        "or a single-token suggestion."
    )
    options = list(dict.fromkeys(pieces + suggestions))
    pick = st.selectbox("Use instead", options, key=f"{key}_suggest", format_func=repr)  # a space shows as ' '
    return vocab.index(pick) if pick in vocab else None


def token_with_neighbours(source: str, vocab: list[str], ov_ranks=None) -> str:
    """A token to open the Semantic page on: one the head suppresses (its OV rank of itself, ``ov_ranks``, lowest)
    among word-like tokens that have equivalents; ' token' where the vocabulary has it and the head suppresses it
    (rank < 10); without ranks, the first word-like token with equivalents."""
    if " token" in vocab and (ov_ranks is None or 0 <= int(ov_ranks[vocab.index(" token")]) < 10):
        return " token"
    eq = neighbours(source)["equivalents"]
    best, best_rank = None, None
    for i, s in enumerate(vocab):
        if s.startswith(" ") and s[1:].isalpha() and len(s) >= 4 and int((eq[i] >= 0).sum()) > 1:
            if ov_ranks is None:
                return s
            rank = int(ov_ranks[i])
            if rank < 0:  # not ranked (a sample of a large vocabulary)
                continue
            if best_rank is None or rank < best_rank:
                best, best_rank = s, rank
    return best if best is not None else default_token(vocab)


def similar_tokens(source: str, token: int, limit: int | None = None) -> dict[str, list[int]]:
    """The token's semantic neighbours by kind (itself left out)."""
    nb = neighbours(source)
    out = {kind: [int(i) for i in nb[kind][token].tolist() if i >= 0 and int(i) != token] for kind in F.SEMANTIC_KINDS}
    if limit is not None:
        flat, left = [], limit
        for kind in F.SEMANTIC_KINDS:
            out[kind] = out[kind][: max(0, left)]
            left -= len(out[kind])
            flat += out[kind]
    return out


def bar_chart(
    col, f: dict, tok, vocab: list[str], token: int, circuit: str, focus: str, k: int, highlight: set[int], key: str
) -> None:
    """One circuit's top-k bars for ``token``; the token orange, its neighbours light orange."""
    ids_, vals, own, rank = circuit_bars(f, token, circuit, focus, k)
    # numbered labels stay unique even when two tokens decode to the same text; plotly renders some HTML
    labels = [html.escape(f"{n + 1}. {s!r}") for n, s in enumerate(token_strings(tok, ids_.tolist()))]
    values = vals.tolist()
    colours = [OWN if i == token else SIMILAR if i in highlight else OTHER for i in ids_.tolist()]
    if token not in ids_.tolist():
        labels.append(html.escape(f"{rank + 1}. {vocab[token]!r}"))
        values.append(own)
        colours.append(OWN)
    fig = go.Figure(
        go.Bar(
            x=values[::-1],
            y=labels[::-1],
            orientation="h",
            marker_color=colours[::-1],
            text=[f"{v:.2f}" for v in values[::-1]],
            textposition="auto",
        )
    )
    fig.update_layout(
        title=TITLES[(circuit, focus)], height=30 * len(labels) + 120, margin=dict(l=10, r=10, t=50, b=10)
    )
    col.plotly_chart(fig, key=key)
    col.caption(
        f"{literal(repr(vocab[token]))} itself is number {rank + 1} (rank {rank}, orange). Values: "
        + (
            "logit change (OV, output normalised to unit RMS)"
            if circuit == "ov"
            else "attention score (QK, LayerNorm-scaled inputs, no biases)"
        )
    )


def qk_distance_note(summary: dict) -> str | None:
    """On a rotary model, which query-key distance the stored QK side is for (None for learned positions)."""
    dist = summary.get("qk_distance")
    if not dist:
        return None
    at = ", ".join(
        f"{d}: {100 * v.frac_top10:.1f}%"
        for d, v in HeadSummary.of(summary).qk_at().items()
        if v.frac_top10 is not None
    )
    return (
        f"Rotary positions: the QK bars and ranks are for a key {int(dist['used'])} positions before the query (the "
        f"head's attended median on the run's text). QK top 10 at other distances: {at}. (The paper's QK, on GPT-2's "
        "learned positions, has no distance.)"
    )
