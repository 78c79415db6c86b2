"""OV and QK circuits: any token's top-k bars (from the stored factor matrices) and the global rank statistics."""

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import exports, state
from app.circuit_views import bar_chart, page_tables, qk_distance_note, similar_tokens, token_box
from app.render.text import literal
from precompute import paper
from precompute import schema as F
from precompute.errors import ExplorerError

SESSION = state.page_state("circ")  # this page's own session values (``app.state.session``)

FOCUS = ["source", "destination"]


def _open_token(choice_key: str) -> None:
    """A vocabulary-search result clicked: it becomes the token shown (before the token box is drawn again)."""
    choice = SESSION.get(choice_key)
    if choice is not None:
        SESSION["circ_token"] = choice


def main() -> None:
    arts = state.page_artifacts()
    st.title("OV and QK circuits")
    head = state.head_picker(arts, key="circ_head")
    head_name = head.name
    # a first visit reads the tokenizer, the vocabulary's strings and the factor tables (seconds on a large
    # vocabulary): say so at once
    with st.spinner("Reading the tokenizer and the circuit tables…", show_time=True):
        tok = state.page_tokenizer(arts)
        vocab, f = page_tables(arts.source, head_name)
    if (note := qk_distance_note(arts.summary(head_name))) is not None:
        st.info(note, icon=":material/rotate_right:")
    c1, c2, c3 = st.columns([2, 1, 1])
    state.url.restore("focus", "circ_focus", state.url.choice(FOCUS))
    focus = c2.radio(
        "Focus on the token as",
        FOCUS,
        key="circ_focus",
        help="source: the token attended to; destination: the token being predicted",
    )
    state.url.publish({"focus": ("circ_focus", focus)}, {"focus": FOCUS[0]})
    k = c3.slider("Number of top tokens", 5, 30, 15, key="circ_k")
    with c1:
        token = token_box(tok, vocab, "circ_token")
    with st.expander("Search the vocabulary", expanded=bool(SESSION.get("circ_search"))):
        needle = st.text_input("Tokens containing", key="circ_search", help="Case-insensitive; shows up to 50.")
        if needle:
            hits = [s for s in vocab if needle.lower() in s.lower()][:50]
            if hits:
                st.pills(
                    "Click a token to open it",
                    hits,
                    format_func=repr,
                    key="circ_hit",
                    on_change=_open_token,
                    args=("circ_hit",),
                )
            else:
                st.caption("No token contains that text.")
    similar: set[int] = set()
    if token is not None:
        try:
            near = similar_tokens(arts.source, token)
        except ExplorerError:
            near = {}
        similar = {i for ids in near.values() for i in ids}
        if similar:
            st.caption(
                "Semantically similar tokens (CSPA's neighbours; highlighted in the bars; more on the Semantic "
                "similarity page): " + ", ".join(literal(repr(vocab[i])) for ids in near.values() for i in ids[:8])
            )
        cols = st.columns(2)
        for col, circuit in zip(cols, ("ov", "qk")):
            bar_chart(col, f, tok, vocab, token, circuit, focus, k, similar, key=f"circ_{circuit}")
    st.subheader("Over the whole vocabulary")
    summary = arts.head_summary(head_name)
    cols = st.columns(2)
    for col, circuit in zip(cols, ("ov", "qk")):
        s = summary.ov if circuit == "ov" else summary.qk
        # binned here (40 bins): the page sends 40 bars, not one value per vocabulary token
        ranked = f[F.CIRCUIT_RANKS[circuit]].astype("float64")
        ranked = ranked[ranked >= 0]  # a large vocabulary ranks a sample of its tokens (-1 elsewhere)
        counts, edges = np.histogram(np.log10(ranked + 1), bins=40)
        fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges), marker_line_width=0))
        fig.update_layout(
            title=f"{circuit.upper()}: log10(own rank + 1)"
            + (f", {len(ranked):,} sampled tokens" if len(ranked) < len(vocab) else ""),
            height=320,
            xaxis_title="log10(rank + 1)",
            yaxis_title="tokens",
            margin=dict(l=10, r=10, t=50, b=10),
        )
        col.plotly_chart(fig, key=f"hist_{circuit}")
        rank0, top10 = paper.FIGURE[f"{circuit}_rank0"], paper.FIGURE[f"{circuit}_top10"]
        if len(ranked) < len(vocab):
            col.caption(
                f"The vocabulary has {len(vocab):,} tokens: a seeded sample of {len(ranked):,} of them is ranked "
                "(each among all tokens); the shares below are over the sample."
            )
        col.markdown(
            f"- rank 0: **{rank0.format(s.frac_rank0)}** (paper {rank0.text})"
            f"\n- top 10: **{top10.format(s.frac_top10)}** (paper {top10.text})"
            f"\n- median rank {'n/a' if s.median_rank is None else s.median_rank}, mean "
            + ("n/a" if s.mean_rank is None else f"{s.mean_rank:.1f}")
        )
        dyn = summary.ov_dynamic
        if circuit == "ov" and dyn.n_pairs:
            top_fig, sem_fig = paper.FIGURE["ov_dynamic_top10"], paper.FIGURE["ov_dynamic_semantic"]
            sem = dyn.frac_rank1_9_semantic
            col.markdown(
                f"- on the run's text, {dyn.n_pairs:,} (destination, source) pairs with attention > 10%: the source "
                f"among the 10 most suppressed in **{top_fig.format(dyn.frac_top10)}** (paper {top_fig.text})"
                + (
                    f"; at ranks 1-9 the most suppressed is a semantic neighbour in **{sem_fig.format(sem)}** "
                    f"(paper {sem_fig.text})"
                    if sem is not None
                    else ""
                )
            )
        worst = s.worst_token_ids[:10]
        if worst:
            col.caption("Worst tokens: " + ", ".join(literal(repr(vocab[i])) for i in worst))
    st.subheader("Download")
    ranks = pd.DataFrame(
        {
            "token_id": np.arange(len(vocab)),
            "token": vocab,
            **{
                f"{c}_rank_of_itself": f[F.CIRCUIT_RANKS[c]].astype("int64")
                for c in ("ov", "qk")
                if F.CIRCUIT_RANKS[c] in f
            },
        }
    )
    exports.buttons(
        ranks,
        exports.metadata(
            arts,
            head_name,
            what="OV and QK circuits: each token's rank of itself (0 = most suppressed by OV / most attended by QK; "
            "-1 = not ranked, in a vocabulary above 65,536 tokens of which a sample is ranked)",
        ),
        "circuit-ranks",
        "circ_export",
        data={
            "summary": {
                "ov": summary.ov.as_dict(),
                "qk": summary.qk.as_dict(),
                "ov_dynamic": summary.ov_dynamic.as_dict(),
            },
            "rows": json.loads(ranks.to_json(orient="records")),
        },
    )
    st.caption("Every token of the vocabulary with its OV and QK rank of itself, and the summaries above.")


main()
