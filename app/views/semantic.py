"""Semantic similarity: a token's neighbours by the paper's rules (equivalents, superstrings, substrings) and the
head's OV and QK bars on both sides, with the neighbours highlighted: does the head treat them like the token?"""

import streamlit as st

from app import state
from app.circuit_views import (
    bar_chart,
    page_tables,
    qk_distance_note,
    similar_tokens,
    token_box,
    token_with_neighbours,
)
from app.render.text import literal
from precompute import schema as F
from precompute.errors import ExplorerError


def main() -> None:
    arts = state.page_artifacts()
    st.title("Semantic similarity")
    head = state.head_picker(arts, key="sem_head")
    head_name = head.name
    tok = state.page_tokenizer(arts)
    st.markdown(
        "CSPA with K_s > 1 lets the head suppress a token's *semantic neighbours* too. The neighbours come "
        "from the paper's string rules: **equivalents** (space, case, plural and other inflections, suffixes), "
        "**superstrings** and **substrings** (pieces of at least 3 characters). Below, the head's OV and QK "
        "bars for the token, with its neighbours in light orange."
    )
    vocab, f = page_tables(arts.source, head_name)
    c1, c2, c3 = st.columns([2, 1, 1])
    k = c2.slider("Number of top tokens", 5, 30, 20, key="sem_k")
    max_similar = c3.slider("Max semantically similar tokens", 1, 15, 10, key="sem_max")
    with c1:
        # opens on a token the head suppresses (a token it leaves alone would show nothing of copy suppression)
        ranks = f.get(F.CIRCUIT_RANKS["ov"])
        token = token_box(tok, vocab, "sem_token", default=token_with_neighbours(arts.source, vocab, ranks))
    if token is None:
        st.stop()
    try:
        near = similar_tokens(arts.source, token, limit=max_similar)
    except ExplorerError as err:
        st.error(f"The semantic-neighbour table cannot be read: {literal(err)}")
        st.stop()
    cols = st.columns(3)
    for col, (kind, title) in zip(
        cols, (("equivalents", "Equivalents"), ("superstrings", "Superstrings"), ("substrings", "Substrings"))
    ):
        col.markdown(f"**{title}**")
        ids = near[kind]
        col.code("\n".join(repr(vocab[i]) for i in ids) if ids else "(none)", language=None)
    highlight = {i for ids in near.values() for i in ids}
    n_near = len(highlight)
    st.caption(
        f"{n_near} {'neighbour' if n_near == 1 else 'neighbours'} shown (the token itself excluded); CSPA uses the "
        "token, then these in order, cut to K_s."
    )
    if (note := qk_distance_note(arts.summary(head_name))) is not None:
        st.caption(note)
    for circuit in ("ov", "qk"):
        left, right = st.columns(2)
        for col, focus in ((left, "source"), (right, "destination")):
            bar_chart(col, f, tok, vocab, token, circuit, focus, k, highlight, key=f"sem_{circuit}_{focus}")


main()
