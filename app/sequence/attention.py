"""The head's attention around a position: a heatmap that always includes BOS, drawn with plotly (fast, offline)."""

from __future__ import annotations

import html

import plotly.graph_objects as go
import streamlit as st

from app.render.text import literal
from app.render.tokens import display_token
from precompute import schema as F
from precompute.store.record_arrays import dense_attention, floats


def window_bounds(s: int, pos: int, window: int) -> tuple[int, int]:
    """[start, end) of a window of ``window`` positions around ``pos`` inside [1, s) (BOS is always shown)."""
    window = max(1, min(window, s - 1))
    start = max(1, min(pos - window // 2, s - window))
    return start, min(s, start + window)


def attention_view(rec: dict, strings: list[str], pos: int, key: str, head_name: str) -> None:
    s = len(strings)
    c1, c2 = st.columns(2)
    info = c1.toggle(
        "Info-weighted attention",
        value=True,
        key=f"{key}_info",
        help="A[q,k]·‖v_k W_O‖ / max_s ‖v_s W_O‖: attention scaled by how much the source writes.",
    )
    window = 48
    if s > 9:  # a slider needs a range: short sequences are shown whole
        window = c2.slider("Window (tokens)", 8, min(160, s - 1), min(48, s - 1), key=f"{key}_win")
    cols = [0] + list(range(*window_bounds(s, pos, window)))
    rows = [q for q in cols if q > 0] or [0]
    att = dense_attention(rec, info_weighted=info)
    z = att[rows][:, cols]
    label = lambda i: html.escape(f"{i} {display_token(strings[i])!r}")  # noqa: E731 - plotly renders some HTML
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[label(i) for i in cols],
            y=[label(i) for i in rows],
            colorscale="Blues",
            zmin=0,
            zmax=max(float(z.max()), 1e-6),
            hovertemplate="query %{y}<br>source %{x}<br>attention %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Head {head_name}: attention" + (" (info-weighted)" if info else ""),
        height=max(320, 18 * len(rows) + 160),
        yaxis=dict(autorange="reversed"),
        xaxis=dict(tickangle=-60),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    st.plotly_chart(fig, key=f"{key}_attn_fig")
    top = [
        (int(p), float(w))
        for p, w in zip(rec[F.ATTN_TOPK_POS][pos].tolist(), floats(rec[F.ATTN_TOPK_WEIGHT][pos]))
        if p <= pos
    ]
    st.caption(
        f"Position {pos} attends to BOS with {float(rec[F.ATTN_BOS][pos]):.2f}; top sources: "
        + ", ".join(f"{p} {literal(repr(strings[p]))} ({w:.2f})" for p, w in sorted(top, key=lambda x: -x[1])[:5])
        + ". Only the stored top sources per query are non-zero."
    )
