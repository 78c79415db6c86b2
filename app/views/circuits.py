"""OV and QK circuits: any token's top-k bars (from the stored factor matrices) and the global rank statistics."""

import html
import math

import plotly.graph_objects as go
import streamlit as st

from app import state
from app.render.text import literal
from precompute.science.circuit_bars import circuit_bars
from precompute import schema as F
from precompute.errors import ExplorerError
from precompute.jobs.report import PAPER
from precompute.data.tokenization import token_strings

arts = state.page_artifacts()
st.title("OV and QK circuits")
head = state.head_picker(arts, key="circ_head")
head_name = f"{head[0]}.{head[1]}"
tok = state.page_tokenizer(arts)


@st.cache_resource(max_entries=4, show_spinner="Loading circuit tables…")
def factors(source: str, head_name: str):
    return {k: (v.astype("float32") if v.dtype.kind == "f" else v) for k, v in
            state.open_source(source).circuits(head_name).items()}


@st.cache_resource(max_entries=2, show_spinner=False)
def neighbours(source: str) -> dict:
    return state.open_source(source).semantic()


@st.cache_resource(max_entries=2, show_spinner=False)
def vocabulary(source: str) -> list[str]:
    t = state.open_source(source).tokenizer
    return token_strings(t, range(len(t)))


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


try:
    vocab = vocabulary(arts.source)
    f = factors(arts.source, head_name)
except ExplorerError as err:
    st.error(f"The circuit tables cannot be read: {literal(err)}")
    st.stop()
c1, c2, c3 = st.columns([2, 1, 1])
raw = c1.text_input("Token (include its leading space, e.g. ` token`; quotes are optional)",
                    value=default_token(vocab), key="circ_token")
focus = c2.radio("Focus on the token as", ["source", "destination"], key="circ_focus",
                 help="source: the token attended to; destination: the token being predicted")
k = c3.slider("Number of top tokens", 5, 30, 15, key="circ_k")
text = strip_quotes(raw)
token = None
if not text:
    st.warning("Type a token to see its bars.")
else:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = token_strings(tok, ids)
    st.caption("Tokenisation: " + " | ".join(literal(repr(p)) for p in pieces))
    if len(ids) == 1:
        token = ids[0]
    else:
        needle = text.strip().lower()
        suggestions = [s for s in vocab if needle and s.strip().lower().startswith(needle)][:12]
        st.error(f"{literal(repr(text))} is {len(ids)} tokens, not one. Circuits are per token: pick one of its pieces or a "
                 "single-token suggestion.")
        options = list(dict.fromkeys(pieces + suggestions))
        pick = st.selectbox("Use instead", options, key="circ_suggest")
        token = vocab.index(pick) if pick in vocab else None

with st.expander("Search the vocabulary"):
    needle = st.text_input("Tokens containing", key="circ_search", help="Case-insensitive; shows up to 50.")
    if needle:
        hits = [s for s in vocab if needle.lower() in s.lower()][:50]
        if hits:
            st.caption(" · ".join(literal(repr(h)) for h in hits))
            st.caption("Copy one into the token box above (with its leading space, if any).")
        else:
            st.caption("No token contains that text.")

similar: list[int] = []
if token is not None:
    try:
        nb = neighbours(arts.source)
        similar = [int(i) for name in ("equivalents", "superstrings", "substrings")
                   for i in nb[name][token].tolist() if i >= 0 and int(i) != token]
    except ExplorerError:
        similar = []
    if similar:
        st.caption("Semantically similar tokens (CSPA's neighbours; highlighted in the bars): " +
                   ", ".join(literal(repr(vocab[i])) for i in similar[:15]))

if token is not None:
    titles = {("ov", "source"): "OV: which predictions does this source suppress?",
              ("ov", "destination"): "OV: which sources suppress this prediction?",
              ("qk", "source"): "QK: which predicted tokens attend most to this source?",
              ("qk", "destination"): "QK: which sources does this prediction attend to?"}
    cols = st.columns(2)
    for col, circuit in zip(cols, ("qk", "ov")):
        ids_, vals, own, rank = circuit_bars(f, token, circuit, focus, k)
        # numbered labels stay unique even when two tokens decode to the same text (byte fragments)
        labels = [html.escape(f"{n + 1}. {s!r}") for n, s in enumerate(token_strings(tok, ids_.tolist()))]
        values = vals.tolist()
        colours = ["#f5a623" if i == token else "#f8d49a" if i in similar else "#4c78a8" for i in ids_.tolist()]
        if token not in ids_.tolist():
            labels.append(html.escape(f"{rank + 1}. {vocab[token]!r}"))
            values.append(own)
            colours.append("#f5a623")
        fig = go.Figure(go.Bar(x=values[::-1], y=labels[::-1], orientation="h", marker_color=colours[::-1],
                               text=[f"{v:.2f}" for v in values[::-1]], textposition="auto"))
        fig.update_layout(title=titles[(circuit, focus)], height=30 * len(labels) + 120,
                          margin=dict(l=10, r=10, t=50, b=10))
        col.plotly_chart(fig, key=f"circ_{circuit}")
        col.caption(f"{literal(repr(vocab[token]))} itself is number {rank + 1} (rank {rank}, orange). Values: "
                    + ("logit change (OV, output normalised to unit RMS)" if circuit == "ov" else
                       "attention score (QK, LayerNorm-scaled inputs, no biases)"))

st.subheader("Over the whole vocabulary")
summary = arts.summary(head_name)
paper = {"ov": (PAPER["OV: token suppressed most (rank 0)"][1], PAPER["OV: token in its own 10 most suppressed"][1]),
         "qk": (PAPER["QK: token is the top key (argmax)"][1], PAPER["QK: token among the top 10 keys"][1])}
cols = st.columns(2)
for col, circuit in zip(cols, ("ov", "qk")):
    s = summary.get(circuit, {})
    ranks = f[F.CIRCUIT_RANKS[circuit]]
    fig = go.Figure(go.Histogram(x=[math.log10(r + 1) for r in ranks.tolist()], nbinsx=40))
    fig.update_layout(title=f"{circuit.upper()}: rank of the token itself (log10(rank + 1))", height=320,
                      xaxis_title="log10(rank + 1)", yaxis_title="tokens", margin=dict(l=10, r=10, t=50, b=10))
    col.plotly_chart(fig, key=f"hist_{circuit}")
    col.markdown(f"- rank 0: **{100 * s.get('frac_rank0', float('nan')):.2f}%** (paper {100 * paper[circuit][0]:.2f}%)"
                 f"\n- top 10: **{100 * s.get('frac_top10', float('nan')):.2f}%** (paper {100 * paper[circuit][1]:.2f}%)"
                 f"\n- median rank {s.get('median_rank', 'n/a')}, mean {s.get('mean_rank', float('nan')):.1f}")
    worst = s.get("worst_token_ids", [])[:10]
    if worst:
        col.caption("Worst tokens: " + ", ".join(literal(repr(vocab[i])) for i in worst))
